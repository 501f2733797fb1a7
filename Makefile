# mpiswim: the two commands of the README are `make run` and `make test`.
# On a cluster, use the site MPI instead of the MPI wheel (README "On a cluster"):
#   make venv EXTRAS=test,analysis MPI4PY_FROM_SOURCE=1
# (and `make run MPIEXEC=mpirun` to run with the site's launcher).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= mpi,test,analysis
MPIEXEC ?= $(BIN)/mpiexec
RANKS ?= 4
OUT ?= runs/default.h5

.PHONY: venv run test test-fast bench lint clean peers side-by-side side-by-side-bodies

# pip runs with -q (its output is pages of "Collecting ..."), so one line says what is happening first.
# Measured: 30 s with the wheels already on the machine; about 3 minutes from a fresh clone that downloads them.
$(BIN)/mpiswim: pyproject.toml
	@echo "make: installing mpiswim and its dependencies (JAX, MuJoCo, numba, MPICH, h5py, matplotlib: about 1.3 GB) into $(VENV); 30 s to 3 minutes, quietly"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
ifdef MPI4PY_FROM_SOURCE
	$(BIN)/pip install -q --no-binary=mpi4py mpi4py
endif
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(BIN)/mpiswim

# A short Swimmer-v5 pool run on the embedded default config (replaces $(OUT)). --out is given because
# the config has no [run] out: on its own the run would go to runs/<[run] name>.h5, runs/swimmer-default.h5.
run: venv
	$(MPIEXEC) -n $(RANKS) $(BIN)/mpiswim train --out $(OUT) --force

test: venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# Every module's logic in-process, without the tests marked `slow` (MPI jobs, training subprocesses): under a
# minute on 2 cores, for an answer while working. `make test` runs these and the slow ones.
test-fast: venv
	$(BIN)/pytest -q -m "not slow"

# Throughput against bare MuJoCo and MPI/checkpoint costs; see docs/performance.md.
bench: venv
	$(BIN)/mpiswim bench

# The peers of the side-by-side (extra `peers`: SB3, sb3-contrib), torch first as a CPU build.
# TORCH is what pip is given for torch: elsewhere e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.13.0
peers: venv
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[$(EXTRAS),peers]"

# ARS, PPO, TD3 and mpiswim on Swimmer-v5, 3 seeds each (runs already logged in results/side_by_side/ are
# skipped), then the table in docs/results.md and docs/img/side_by_side.png. See analysis/side_by_side.py.
side-by-side: peers
	nice $(BIN)/python analysis/side_by_side.py all
	$(BIN)/python analysis/side_by_side.py report

# sb3-contrib ARS with RL Zoo's settings on Hopper-v5 and HalfCheetah-v5, seeds 0-2, one run at a time (up to
# 900 CPU-s each; runs already logged are skipped), beside mpiswim's committed ARS runs. See
# analysis/side_by_side_bodies.py and docs/results.md.
side-by-side-bodies: peers
	nice $(BIN)/python analysis/side_by_side_bodies.py all --cpu-cap 900
	$(BIN)/python analysis/side_by_side_bodies.py report

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# The SLURM batch scripts (slurm/) against a real one-node SLURM on this machine:
# installs Debian's slurm-wlm and munge if missing (apt-get, needs root), starts
# private daemons, runs a plain job, a time-limit/requeue/resume job and a job array,
# then stops everything it started and waits until it has exited. About 1-2 minutes
# on an idle machine, up to 7 under heavy load. See docs/slurm.md.
.PHONY: slurm-test
slurm-test: venv
	bash slurm/test_slurm.sh

# The batch script on a real two-node SLURM cluster on this machine (nodes n1, n2 in their own
# network, UTS and mount namespaces joined by a private bridge; needs root, installs slurm-wlm
# and munge if missing): both launchers across the nodes, 1 x 4 against 2 x 2 placement, a
# lost node with each launcher. Tears everything down and checks it is gone. See docs/slurm.md.
.PHONY: cluster-test
cluster-test: venv
	bash slurm/test_cluster.sh
