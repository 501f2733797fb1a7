"""The wrong launcher is caught: does the MPI job match what the launcher started?

A launcher (mpiexec, mpirun, srun) starts N copies of `mpiswim train` and tells
each one, in environment variables, how many copies it started. The processes
then find each other through the MPI library that mpi4py uses. If the launcher
belongs to another MPI than that library, they never meet: MPICH aborts inside
MPI_Init when it finds a PMIx launcher (Open MPI's mpirun, srun --mpi=pmix), and
otherwise every process starts alone, trains a pool of 1 and writes the same file.

This module owns that check, and only `mpiswim train` runs it (`start_mpi`):

1. before MPI_Init, `problem_before_init` says whether MPI_Init itself would
   abort (a PMIx launcher under an MPICH library without PMIx), so the fix is
   printed instead of MPICH's abort;
2. right after MPI_Init, `problem_after_init` compares the number of processes
   the launcher announced with the size of MPI_COMM_WORLD.

Either problem makes every process exit with code 2 before any file is
touched. `detect_launcher` reads the launcher's variables; everything except
`start_mpi` is a pure function of its arguments, so the tests can give it any
environment. The other commands (`info`, `analyze`, `check`, `evaluate`,
`config`) never import mpi4py, so they work anywhere, e.g. in a batch script
whose environment is full of SLURM_* variables.
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# PMIx launchers (Open MPI's mpirun, prterun, srun --mpi=pmix) set these in every process.
PMIX_VARIABLES = ("PMIX_RANK", "PMIX_NAMESPACE")


@dataclass(frozen=True)
class Launcher:
    """What the environment says about the launcher that started this process."""

    name: str  # for the message, e.g. "Open MPI's mpirun"
    variable: str  # the variable that announced the process count, e.g. "OMPI_COMM_WORLD_SIZE"
    size: int | None  # processes it started; None if its variables do not say
    rank: int | None  # this process among them


def resume_command(ranks: int | str, checkpoint: str | Path, iterations: int | None = None) -> str:
    """The command that continues the run in `checkpoint`, to paste as printed: its ranks, the path quoted for the
    shell,
    and `--iterations N` when the run is to go beyond the iterations the checkpoint plans."""
    command = f"mpirun -n {ranks} mpiswim train --resume {shlex.quote(str(checkpoint))}"
    return f"{command} --iterations {iterations}" if iterations else command


def _number(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    return int(value) if value.isdigit() else None


def detect_launcher(env: Mapping[str, str]) -> Launcher | None:
    """The launcher named by the environment `env` (os.environ, or a dict in the tests), or None.

    Checked in this order, because launchers nest: an mpiexec inside a SLURM
    allocation starts its daemons with srun, so its processes carry SLURM_STEP_*
    variables (of the daemons' step) as well as the mpiexec's own variables,
    which are the ones that count. The batch script of an allocation (sbatch)
    has SLURM_NTASKS and SLURM_PROCID but no SLURM_STEP_NUM_TASKS: only srun sets
    that, so a process started in the batch script without a launcher is not
    taken for one of an srun step.
    """
    in_srun_step = "SLURM_STEP_NUM_TASKS" in env
    if "OMPI_COMM_WORLD_SIZE" in env:
        return Launcher(
            "Open MPI's mpirun/mpiexec",
            "OMPI_COMM_WORLD_SIZE",
            _number(env, "OMPI_COMM_WORLD_SIZE"),
            _number(env, "OMPI_COMM_WORLD_RANK"),
        )
    if "PMI_SIZE" in env:
        # Hydra (MPICH's and Intel MPI's mpiexec) also sets MPI_LOCALNRANKS; srun's PMI-2 plugin does not.
        name = (
            "srun with PMI-2 (--mpi=pmi2)"
            if in_srun_step and "MPI_LOCALNRANKS" not in env
            else "an MPICH-family mpiexec (Hydra)"
        )
        return Launcher(name, "PMI_SIZE", _number(env, "PMI_SIZE"), _number(env, "PMI_RANK"))
    if any(name in env for name in PMIX_VARIABLES):
        # PMIx hands the process count over its own socket, not in a variable; under srun the step size says it.
        if in_srun_step:
            return Launcher(
                "srun with PMIx (--mpi=pmix)",
                "SLURM_STEP_NUM_TASKS",
                _number(env, "SLURM_STEP_NUM_TASKS"),
                _number(env, "PMIX_RANK"),
            )
        return Launcher(
            "a PMIx launcher (prterun, or Open MPI's mpirun)", "PMIX_NAMESPACE", None, _number(env, "PMIX_RANK")
        )
    if in_srun_step:
        return Launcher(
            "srun", "SLURM_STEP_NUM_TASKS", _number(env, "SLURM_STEP_NUM_TASKS"), _number(env, "SLURM_PROCID")
        )
    return None


def library_name(library_version: str) -> str:
    """A short name of the MPI library from MPI_Get_library_version, e.g. "MPICH 5.0.2" or "Open MPI v4.1.5"."""
    first_line = library_version.strip().splitlines()[0] if library_version.strip() else "an unknown MPI library"
    return " ".join(first_line.split(",")[0].replace("Version:", "").split())


def is_mpich_without_pmix(library_version: str) -> bool:
    """MPICH (the MPI wheel's library) built without PMIx support: its MPI_Init aborts under a PMIx launcher."""
    return library_version.startswith("MPICH") and "pmix" not in library_version.lower()


def _fix(launcher: Launcher, library_version: str, mpiexec: Path | None) -> str:
    """What the user can do, for the message."""
    count = launcher.size or "N"
    mpich = library_version.startswith("MPICH")
    fixes = []
    if launcher.name.startswith("srun") and mpich:
        fixes.append(f"start it with `srun --mpi=pmi2 -n {count} mpiswim train ...`")
    if mpiexec is not None and mpich:  # the MPI wheel's mpiexec (MPICH's Hydra) fits an MPICH library
        fixes.append(
            f"start it with the mpiexec beside mpiswim, which belongs to that library: `{mpiexec} -n {count} mpiswim "
            "train ...`"
        )
    else:
        fixes.append(f"start it with the mpirun (or srun) of {library_name(library_version)}")
    fixes.append(
        "to keep this launcher, make a venv against its MPI: `module load` that MPI, "
        "then `make venv VENV=.venv-site EXTRAS=test,analysis MPI4PY_FROM_SOURCE=1` and run .venv-site/bin/mpiswim "
        "(README, On a cluster)"
    )
    return "Fix: " + "; or ".join(fixes) + "."


def _started_by(launcher: Launcher) -> str:
    where = (
        f"process {launcher.rank} of {launcher.size}"
        if launcher.rank is not None and launcher.size is not None
        else "a process"
    )
    return f"{where} started by {launcher.name}"


def problem_before_init(env: Mapping[str, str], library_version: str, mpiexec: Path | None = None) -> str | None:
    """The message if MPI_Init itself would abort here (a PMIx launcher, an MPICH library without PMIx); else None."""
    if not any(name in env for name in PMIX_VARIABLES) or not is_mpich_without_pmix(library_version):
        return None
    # MPICH aborts even if an MPICH mpiexec inside the PMIx launcher's job added its PMI_* variables,
    # so the launcher to name is the PMIx one.
    launcher = detect_launcher({name: value for name, value in env.items() if not name.startswith("PMI_")})
    found = [name for name in ("OMPI_COMM_WORLD_SIZE", *PMIX_VARIABLES, "PMI_SIZE") if name in env]
    return (
        f"mpiswim: wrong launcher: {_started_by(launcher)} ({', '.join(found)} set), but mpi4py uses "
        f"{library_name(library_version)}, "
        "which cannot join a PMIx launcher's job: MPI_Init would abort. Nothing was started or written (exit code 2). "
        + _fix(launcher, library_version, mpiexec)
    )


def problem_after_init(
    env: Mapping[str, str], library_version: str, world_size: int, mpiexec: Path | None = None
) -> str | None:
    """The message if the launcher announced another number of processes than MPI_COMM_WORLD has; else None."""
    launcher = detect_launcher(env)
    if launcher is None or launcher.size is None or launcher.size == world_size:
        return None
    return (
        f"mpiswim: wrong launcher: {_started_by(launcher)} ({launcher.variable}={launcher.size}), but MPI "
        f"({library_name(library_version)}, the library mpi4py uses) put this process in a job of {world_size} "
        f"process{'es' if world_size != 1 else ''}: the launcher belongs to another MPI, so the processes never meet "
        "and each would train its own pool into the same file. Nothing was written (exit code 2). "
        + _fix(launcher, library_version, mpiexec)
    )


def venv_mpiexec() -> Path | None:
    """The mpiexec installed beside this Python (the MPI wheel's), if there is one."""
    path = Path(sys.executable).with_name("mpiexec")
    return path if path.exists() else None


def start_mpi() -> str | None:
    """Start MPI for `mpiswim train` if the launcher fits the library; return the problem message, or None.

    mpi4py starts MPI when its MPI module is first imported. Here it is
    imported with automatic start-up switched off, so that the library can be
    asked its name (MPI_Get_library_version may be called before MPI_Init);
    then MPI is started as mpi4py would have, and finalized at exit as usual.
    On a problem every process gets the message; the caller prints it and
    exits with code 2. If MPI was already started (the tests' driver imports
    mpi4py first), only the check after MPI_Init runs.
    """
    import mpi4py

    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = True
    from mpi4py import MPI

    library_version = MPI.Get_library_version()
    if not MPI.Is_initialized():
        problem = problem_before_init(os.environ, library_version, venv_mpiexec())
        if problem is not None:
            return problem
        with warnings.catch_warnings():
            # mpi4py's own, vaguer warning about a foreign launcher: the check below says more.
            warnings.filterwarnings(
                "ignore", message="(?i)suspicious MPI execution environment", category=RuntimeWarning
            )
            if mpi4py.rc.threads:
                levels = {
                    "single": MPI.THREAD_SINGLE,
                    "funneled": MPI.THREAD_FUNNELED,
                    "serialized": MPI.THREAD_SERIALIZED,
                    "multiple": MPI.THREAD_MULTIPLE,
                }
                MPI.Init_thread(levels[mpi4py.rc.thread_level])
            else:
                MPI.Init()
    problem = problem_after_init(os.environ, library_version, MPI.COMM_WORLD.Get_size(), venv_mpiexec())
    # Every process of this MPI job stops if any of them found a problem, so none waits for the others.
    if MPI.COMM_WORLD.allreduce(problem is not None, op=MPI.LOR) and problem is None:
        problem = (
            "mpiswim: another process of this job was started by the wrong launcher (its message says which); "
            "stopping too (exit code 2)."
        )
    return problem
