#!/usr/bin/env bash
# `make slurm-test`: mpiswim's batch scripts against a real one-node SLURM.
#
# Installs Debian's SLURM (slurmctld, slurmd, client) and munge if missing, starts a
# private munged, slurmctld and slurmd on this machine (own key, socket, ports,
# state and logs in a temporary directory; /etc is not touched), then:
#   1. plain:   slurm/pool.sbatch on a tiny config, launched with the venv's mpiexec
#               (MPICH hydra) inside the allocation; the checkpoint is complete;
#   2. requeue: slurm/pool.sbatch (srun --mpi=pmi2) with a 1-minute time limit on a
#               run of about 1.5 minutes of work: SLURM signals it, it checkpoints,
#               requeues itself and resumes until done; the result equals an
#               uninterrupted `mpiexec -n 2` run of the same config bit for bit;
#   3. sweep:   slurm/sweep.sbatch as a 3-task job array: one file per index, one
#               seed each, different scores.
# Whatever happens, it cancels its jobs, stops the daemons it started and removes
# its directory (MPISWIM_SLURM_KEEP=1 keeps the directory for a look).
#
# Needs root (apt-get, daemons). Environment: VENV (default .venv), SLURM_TEST_PORT
# (slurmctld's port, default 16817; slurmd uses the next one), SLURM_TEST_LAUNCHER
# (the launcher of test 2: srun, the default, or mpiexec), and pool.sbatch's own
# MPISWIM_SRUN_MPI (e.g. pmix for an Open MPI site venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(cd "${VENV:-$repo/.venv}" && pwd)
ctld_port=${SLURM_TEST_PORT:-16817}
slurmd_port=$(( ctld_port + 1 ))
started=$(date +%s)

say() { echo "slurm-test [+$(( $(date +%s) - started ))s]: $*"; }
passed=0
failed=0
pass() { passed=$(( passed + 1 )); say "PASS: $*"; }
fail() { failed=$(( failed + 1 )); say "FAIL: $*"; }

[[ $(id -u) == 0 ]] || { say "needs root (it installs packages and starts slurmctld/slurmd)"; exit 2; }
[[ -x $venv/bin/mpiswim ]] || { say "no mpiswim in $venv: run \`make venv\` first (make slurm-test does)"; exit 2; }

# --- 0. packages -----------------------------------------------------------------------
# slurm-wlm = slurmctld + slurmd + slurm-client; skipped when they are all there.
installed=1
for tool in slurmctld slurmd sbatch munged; do command -v "$tool" >/dev/null || installed=0; done
if (( ! installed )); then
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
fi
say "$(slurmctld -V), munge $(munged --version 2>&1 | awk '{print $1}' | sed 's/munge-//')"

for port in "$ctld_port" "$slurmd_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        say "port $port is in use (another SLURM?): set SLURM_TEST_PORT to a free port pair"; exit 2
    fi
done

# --- the private cluster ------------------------------------------------------------
state=$(mktemp -d /tmp/mpiswim-slurm-test.XXXXXX)
chmod 755 "$state"
mkdir -p "$state"/{munge,log,spool/ctld,spool/d,work}
mkdir -m 700 "$state/munge-key"
export SLURM_CONF=$state/slurm.conf
ref_pid=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if [[ -f $state/slurmctld.pid ]]; then
        scancel --user=root 2>/dev/null
        for _ in $(seq 30); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 1; done
    fi
    [[ -n $ref_pid ]] && kill "$ref_pid" 2>/dev/null
    for daemon in slurmd slurmctld; do
        [[ -f $state/$daemon.pid ]] && kill "$(cat "$state/$daemon.pid")" 2>/dev/null
    done
    [[ -f $state/munge/munged.pid ]] && kill "$(cat "$state/munge/munged.pid")" 2>/dev/null
    sleep 1
    if (( status != 0 || failed > 0 )); then
        for f in "$state"/log/slurmctld.log "$state"/log/slurmd.log "$state"/work/*.out; do
            [[ -f $f ]] && { echo "----- last lines of $f"; tail -n 25 "$f"; }
        done
    fi
    if [[ ${MPISWIM_SLURM_KEEP:-0} == 1 ]]; then
        say "kept $state"
    else
        rm -rf "$state"
    fi
    say "daemons stopped, test directory removed; took $(( $(date +%s) - started ))s"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# munged with its own key and socket (the socket's directory must be world-searchable).
dd if=/dev/urandom of="$state/munge-key/munge.key" bs=1024 count=1 status=none
chmod 400 "$state/munge-key/munge.key"
munged --socket="$state/munge/munge.sock" --key-file="$state/munge-key/munge.key" \
    --pid-file="$state/munge/munged.pid" --seed-file="$state/munge-key/munged.seed" \
    --log-file="$state/log/munged.log"

# A one-node cluster. CPUs=8 on a 2-core machine (SlurmdParameters=config_overrides
# makes slurmd accept more CPUs than it finds): SLURM counts CPUs as slots, so several
# 2-rank jobs run at once, oversubscribing the cores as `mpiexec -n 4` does on a laptop.
# No cgroups (proctrack/linuxproc, task/none): this also runs in containers. Accounting
# goes to a job-completion text file, which `sacct -c` reads (no slurmdbd/database).
# cred_expire=10 shortens SLURM's wait before a requeued job may start again (the
# default is 120 s); sched_interval/bf_interval make the scheduler look every 2 s.
node=$(hostname -s)
cat > "$SLURM_CONF" <<EOF
ClusterName=mpiswim-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.txt
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld
slurmd
for _ in $(seq 60); do
    [[ $(sinfo -h -o %T 2>/dev/null) == idle ]] && break
    sleep 0.5
done
[[ $(sinfo -h -o %T) == idle ]] || { say "the node did not come up: $(sinfo -h -o '%T %E')"; exit 1; }
say "one-node cluster up: $(sinfo -h -o 'partition %P, node %N, %c CPUs, %T')"

# --- helpers ----------------------------------------------------------------------------
export PATH=$venv/bin:$PATH  # as after `source .venv/bin/activate`; sbatch passes it to the jobs
work=$state/work
cd "$work"

# Wait until a job (or every task of an array) has left the queue.
wait_job() {
    local id=$1 limit=$2 t=0
    while [[ -n $(squeue -h -j "$id" 2>/dev/null) ]]; do
        (( t >= limit )) && { say "job $id still queued or running after ${limit}s"; return 1; }
        sleep 2; t=$(( t + 2 ))
    done
}
job_state() { scontrol show job "$1" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -n 1; }
check() { "$venv/bin/python" "$repo/slurm/check_runs.py" "$@"; }

# A config from the embedded default with some values changed.
make_config() {
    local file=$1 iterations=$2 T=$3 episodes=$4 seed=$5
    mpiswim config | sed -e "s/^iterations = .*/iterations = $iterations/" -e "s/^T = .*/T = $T/" \
        -e "s/^seed = .*/seed = $seed/" -e "s/^iterate_episodes = .*/iterate_episodes = $episodes/" \
        -e "s/^evaluate_episodes = .*/evaluate_episodes = $episodes/" > "$file"
}
make_config tiny.toml 4 40 2 0
# ~150 x 0.55 s of work on 2 idle cores: longer than one 1-minute allocation can hold.
make_config long.toml 150 500 4 7

# --- 1. a plain pool run ---------------------------------------------------------------------
plain=$(MPISWIM_LAUNCHER=mpiexec sbatch --parsable --job-name=plain --ntasks=2 --time=5 "$repo/slurm/pool.sbatch" tiny.toml)
say "1. plain: submitted job $plain (2 ranks, mpiexec inside the allocation)"

# --- 3. a seed sweep (submitted now, checked later) ----------------------------------------
sweep=$(sbatch --parsable --job-name=sweep --array=0-2 --ntasks=2 --time=5 "$repo/slurm/sweep.sbatch" tiny.toml "$work/sweep")
say "3. sweep: submitted job array $sweep (indices 0-2, 2 ranks each, srun --mpi=${MPISWIM_SRUN_MPI:-pmi2})"

if wait_job "$plain" 180 && [[ $(job_state "$plain") == COMPLETED ]] \
    && check complete "$work/runs/plain-$plain.h5" --iterations 4 --ranks 2; then
    pass "1. plain job $plain completed; runs/plain-$plain.h5 is complete"
else
    fail "1. plain job $plain: state $(job_state "$plain"); see plain-$plain.out"
fi

if wait_job "$sweep" 180; then
    states=$(for i in 0 1 2; do job_state "${sweep}_$i"; done | sort -u | tr '\n' ' ')
    if [[ $states == "COMPLETED " ]] \
        && check complete sweep/run-0.h5 --iterations 4 --ranks 2 \
        && check complete sweep/run-1.h5 --iterations 4 --ranks 2 \
        && check complete sweep/run-2.h5 --iterations 4 --ranks 2 \
        && check distinct sweep/run-0.h5 sweep/run-1.h5 sweep/run-2.h5; then
        pass "3. sweep $sweep: one complete file per index, seeds 0, 1, 2, different scores"
    else
        fail "3. sweep $sweep: task states $states"
    fi
else
    fail "3. sweep $sweep did not finish"
fi

# --- 2. time limit, requeue, resume ------------------------------------------------------
if ! grep -q -- --resume-if-exists <<< "$(mpiswim train --help)"; then
    fail "2. requeue: \`mpiswim train --resume-if-exists\` does not exist yet (issue 4); a requeued job cannot resume, so this test cannot pass"
else
    # SLURM's shortest time limit is one minute. --signal=B:TERM@10 asks for SIGTERM
    # 10 s before it; SLURM's 30-second timer sends it 20-50 s after the start.
    requeue=$(MPISWIM_LAUNCHER=${SLURM_TEST_LAUNCHER:-srun} sbatch --parsable --job-name=requeue --ntasks=2 --time=1 --signal=B:TERM@10 \
        "$repo/slurm/pool.sbatch" long.toml "$work/requeued.h5")
    say "2. requeue: submitted job $requeue (time limit 1 minute, ${SLURM_TEST_LAUNCHER:-srun}); uninterrupted reference run with mpiexec alongside"
    mpiexec -n 2 mpiswim train --config long.toml --out "$work/reference.h5" > reference.log 2>&1 &
    ref_pid=$!
    ref_status=0
    wait "$ref_pid" || ref_status=$?
    ref_pid=
    (( ref_status == 0 )) || say "reference run exited $ref_status: $(tail -n 3 reference.log)"
    if wait_job "$requeue" 480; then
        restarts=$(scontrol show job "$requeue" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')
        say "2. requeue: job $requeue ended $(job_state "$requeue") after $restarts requeue(s)"
        grep -h "requeueing\|SIGTERM\|resum" "requeue-$requeue.out" | sed 's/^/    /' || true
        if [[ $(job_state "$requeue") == COMPLETED ]] && (( restarts >= 1 && ref_status == 0 )) \
            && check complete requeued.h5 --iterations 150 --ranks 2 \
            && check complete reference.h5 --iterations 150 --ranks 2 \
            && check same requeued.h5 reference.h5; then
            pass "2. requeue: signalled at the time limit, requeued $restarts time(s), resumed; identical to the uninterrupted run"
        else
            fail "2. requeue: job $requeue state $(job_state "$requeue"), restarts ${restarts:-?}, reference exit $ref_status"
        fi
    else
        fail "2. requeue: job $requeue did not finish"
    fi
fi

# --- report ----------------------------------------------------------------------------------
say "the test jobs in SLURM's accounting (sacct -c: one line per completion; a requeued allocation shows as PENDING):"
sacct -c --format=JobID,JobName%10,Partition,NCPUS,State,ExitCode,Start,End,Elapsed,Timelimit 2>/dev/null
say "$passed passed, $failed failed"
echo "$passed passed, $failed failed"
(( failed == 0 ))
