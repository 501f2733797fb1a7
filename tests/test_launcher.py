"""The wrong launcher is caught (mpiswim/launcher.py; issue 14, item 5).

Unit tests give the detection any environment as a dict. The process tests
start `mpiswim train` themselves with the variables a foreign launcher would
set (Open MPI's mpirun, srun without a PMI plugin, a PMIx launcher), which is
all that MPI_Init and mpiswim see of a launcher; one test runs Debian's real
Open MPI mpirun (`.ci/run` installs openmpi-bin; skipped elsewhere if it is
missing). A control run with the venv's real mpiexec must still train.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jobs import MPI_AS_ROOT, train_args
from synthetic import write_synthetic_checkpoint
from test_mpi import TINY_CONFIG, mpiexec

from mpiswim.launcher import detect_launcher, library_name, problem_after_init, problem_before_init, resume_command

TIMEOUT = 120
MPICH = (
    "MPICH Version:      5.0.2\nMPICH Release date: Fri Sep 25 2026\nMPICH configure:    --with-device=ch4:ucx,ofi "
    "--with-pm=hydra:gforker\n"
)
MPICH_WITH_PMIX = "MPICH Version:      4.2.0\nMPICH configure:    --with-pmix=/usr --with-pm=no\n"
OPEN_MPI = (
    "Open MPI v4.1.5, package: Open MPI builder@host Distribution, ident: 4.1.5, repo rev: v4.1.5, Feb 23, 2023\n"
)
VENV_MPIEXEC = Path("/venv/bin/mpiexec")

# What each launcher puts into the environment of rank 1 of 2 (the variables that matter here).
OPEN_MPI_MPIRUN = {
    "OMPI_COMM_WORLD_SIZE": "2",
    "OMPI_COMM_WORLD_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "PMIX_RANK": "1",
    "PMIX_NAMESPACE": "prterun-vm-4242@1",
}
HYDRA = {"PMI_SIZE": "2", "PMI_RANK": "1", "PMI_FD": "9", "MPI_LOCALNRANKS": "2", "MPI_LOCALRANKID": "1"}
SRUN_STEP = {
    "SLURM_JOB_ID": "7",
    "SLURM_NTASKS": "2",
    "SLURM_STEP_ID": "0",
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_PROCID": "1",
}
SRUN_PMI2 = {**SRUN_STEP, "PMI_SIZE": "2", "PMI_RANK": "1", "PMI_FD": "5", "PMI_JOBID": "7.0"}
SRUN_PMIX = {**SRUN_STEP, "PMIX_RANK": "1", "PMIX_NAMESPACE": "slurm.pmix.7.0"}
# An sbatch script: the batch step has SLURM_* variables but no SLURM_STEP_NUM_TASKS (only srun sets that).
BATCH_SCRIPT = {
    "SLURM_JOB_ID": "7",
    "SLURM_NTASKS": "4",
    "SLURM_NPROCS": "4",
    "SLURM_PROCID": "0",
    "SLURM_NODELIST": "vm",
    "ENVIRONMENT": "BATCH",
}
# The venv's mpiexec inside that allocation: Hydra starts its proxies with srun (one task per node).
HYDRA_IN_ALLOCATION = {
    **BATCH_SCRIPT,
    "SLURM_STEP_ID": "0",
    "SLURM_STEP_NUM_TASKS": "1",
    "PMI_SIZE": "4",
    "PMI_RANK": "2",
    "PMI_FD": "9",
    "MPI_LOCALNRANKS": "4",
}
OPEN_MPI_IN_ALLOCATION = {**BATCH_SCRIPT, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1", **OPEN_MPI_MPIRUN}


# --- detection: pure functions of an environment ------------------------------------------------


@pytest.mark.parametrize(
    "env, name, variable, size, rank",
    [
        (OPEN_MPI_MPIRUN, "Open MPI's mpirun", "OMPI_COMM_WORLD_SIZE", 2, 1),
        (HYDRA, "Hydra", "PMI_SIZE", 2, 1),
        (SRUN_PMI2, "srun with PMI-2", "PMI_SIZE", 2, 1),
        (SRUN_PMIX, "srun with PMIx", "SLURM_STEP_NUM_TASKS", 2, 1),
        (SRUN_STEP, "srun", "SLURM_STEP_NUM_TASKS", 2, 1),
        (
            {"PMIX_RANK": "1", "PMIX_NAMESPACE": "prterun-vm-1@1"},
            "PMIx launcher",
            "PMIX_NAMESPACE",
            None,
            1,
        ),  # PMIx gives no count in a variable
        (HYDRA_IN_ALLOCATION, "Hydra", "PMI_SIZE", 4, 2),  # mpiexec's own count, not the step of its proxies
        (OPEN_MPI_IN_ALLOCATION, "Open MPI", "OMPI_COMM_WORLD_SIZE", 2, 1),
    ],
)
def test_each_launcher_is_recognised_with_its_count(env, name, variable, size, rank):
    launcher = detect_launcher(env)
    assert launcher is not None and name in launcher.name
    assert (launcher.variable, launcher.size, launcher.rank) == (variable, size, rank)


@pytest.mark.parametrize("env", [{}, BATCH_SCRIPT, {"HOME": "/root", "PATH": "/usr/bin"}])
def test_no_launcher_outside_a_job_or_in_a_batch_script(env):
    assert detect_launcher(env) is None
    assert problem_before_init(env, MPICH, VENV_MPIEXEC) is None
    assert problem_after_init(env, MPICH, 1, VENV_MPIEXEC) is None


def test_a_count_that_is_not_a_number_is_not_guessed():
    launcher = detect_launcher({"OMPI_COMM_WORLD_SIZE": "many"})
    assert launcher is not None and launcher.size is None
    assert problem_after_init({"OMPI_COMM_WORLD_SIZE": "many"}, MPICH, 1) is None


@pytest.mark.parametrize(
    "version, name",
    [
        (MPICH, "MPICH 5.0.2"),
        (OPEN_MPI, "Open MPI v4.1.5"),
        ("Intel(R) MPI Library 2021.10 for Linux* OS\n", "Intel(R) MPI Library 2021.10 for Linux* OS"),
        ("", "an unknown MPI library"),
    ],
)
def test_library_name(version, name):
    assert library_name(version) == name


# --- before MPI_Init: where MPICH would abort ---------------------------------------------------


@pytest.mark.parametrize("env, launcher", [(OPEN_MPI_MPIRUN, "Open MPI's mpirun"), (SRUN_PMIX, "srun with PMIx")])
def test_pmix_launcher_under_mpich_gets_the_hint_before_mpi_init(env, launcher):
    message = problem_before_init(env, MPICH, VENV_MPIEXEC)
    assert message is not None
    assert launcher in message and "process 1 of 2" in message and "MPICH 5.0.2" in message
    assert "MPI_Init would abort" in message and "exit code 2" in message
    assert (
        f"`{VENV_MPIEXEC} -n 2 mpiswim train ...`" in message
        and "make venv VENV=.venv-site EXTRAS=test,analysis MPI4PY_FROM_SOURCE=1" in message
    )


def test_srun_pmix_under_mpich_suggests_srun_pmi2():
    assert "srun --mpi=pmi2 -n 2" in problem_before_init(SRUN_PMIX, MPICH, VENV_MPIEXEC)


def test_mpich_inside_a_pmix_launchers_job_names_the_pmix_launcher():
    # the venv's mpiexec run inside Open MPI's mpirun: MPICH still aborts (it finds PMI_SIZE and PMIX_NAMESPACE)
    message = problem_before_init({**OPEN_MPI_MPIRUN, **HYDRA}, MPICH, VENV_MPIEXEC)
    assert message is not None and "Open MPI's mpirun" in message and "PMI_SIZE" in message


@pytest.mark.parametrize(
    "env, version",
    [
        (OPEN_MPI_MPIRUN, OPEN_MPI),  # Open MPI's launcher for an Open MPI build: the right pair
        (SRUN_PMIX, OPEN_MPI),
        (SRUN_PMIX, MPICH_WITH_PMIX),  # a site MPICH built with PMIx can join
        (HYDRA, MPICH),
        (SRUN_PMI2, MPICH),
        (SRUN_STEP, MPICH),  # no PMIx: MPI_Init does not abort; the count is compared after it
    ],
)
def test_no_hint_before_mpi_init_where_mpi_init_works(env, version):
    assert problem_before_init(env, version, VENV_MPIEXEC) is None


# --- after MPI_Init: the announced count against MPI_COMM_WORLD -------------------------------


@pytest.mark.parametrize(
    "env, version, world_size",
    [
        (HYDRA, MPICH, 2),
        (SRUN_PMI2, MPICH, 2),
        (OPEN_MPI_MPIRUN, OPEN_MPI, 2),
        (SRUN_PMIX, OPEN_MPI, 2),
        (HYDRA_IN_ALLOCATION, MPICH, 4),
        (SRUN_STEP, OPEN_MPI, 2),
    ],
)
def test_matching_counts_pass(env, version, world_size):
    assert problem_after_init(env, version, world_size, VENV_MPIEXEC) is None


@pytest.mark.parametrize(
    "env, version, launcher, fix",
    [
        (
            {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"},
            MPICH,
            "Open MPI's mpirun",
            f"`{VENV_MPIEXEC} -n 2 mpiswim train ...`",
        ),
        (SRUN_STEP, MPICH, "srun", "srun --mpi=pmi2 -n 2"),
        (HYDRA, OPEN_MPI, "Hydra", "the mpirun (or srun) of Open MPI v4.1.5"),
    ],
)
def test_a_mismatch_names_launcher_count_size_and_fix(env, version, launcher, fix):
    message = problem_after_init(env, version, 1, VENV_MPIEXEC)
    assert message is not None and message.startswith("mpiswim: wrong launcher:")
    assert launcher in message and "process 1 of 2" in message and "=2)" in message and "a job of 1 process" in message
    assert library_name(version) in message and "exit code 2" in message
    assert fix in message and "make venv VENV=.venv-site EXTRAS=test,analysis MPI4PY_FROM_SOURCE=1" in message
    assert (str(VENV_MPIEXEC) in message) == (
        version == MPICH
    )  # the wheel's mpiexec is MPICH's: no use to another library


# --- real processes -----------------------------------------------------------------------------


def clean_environment(**variables: str) -> dict[str, str]:
    """This test run's environment without any launcher's variables (pytest may itself run in a job), plus
    `variables`.
    """
    prefixes = ("OMPI_", "PMI_", "PMIX_", "SLURM_", "MPI_LOCAL", "HYDI_", "HYDRA_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(prefixes)}
    env.update(MPI_AS_ROOT)
    return {**env, **variables}


def tiny_config(directory: Path) -> Path:
    path = directory / "tiny.toml"
    path.write_text(TINY_CONFIG.format(alpha="1e-4").replace("iterations = 3", "iterations = 1"))
    return path


def start_train(directory: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "mpiswim.cli", "train", "--config", "tiny.toml", "--out", "run.h5"]
    return subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"mpiswim train did not stop within {TIMEOUT} s: {process.communicate()[1]}")
    return process.returncode, stdout, stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher, variables",
    [
        # Open MPI's mpirun as MPICH sees it when PMIx is not involved: MPI_Init starts each process alone.
        (
            "Open MPI's mpirun",
            lambda rank: {
                "OMPI_COMM_WORLD_SIZE": "2",
                "OMPI_COMM_WORLD_RANK": str(rank),
                "OMPI_COMM_WORLD_LOCAL_RANK": str(rank),
            },
        ),
        # srun without a PMI plugin (--mpi=none, a site's default): the same.
        (
            "srun",
            lambda rank: {
                "SLURM_JOB_ID": "7",
                "SLURM_NTASKS": "2",
                "SLURM_STEP_ID": "0",
                "SLURM_STEP_NUM_TASKS": "2",
                "SLURM_PROCID": str(rank),
            },
        ),
    ],
)
def test_foreign_launcher_every_process_exits_2_and_writes_nothing(tmp_path, launcher, variables):
    tiny_config(tmp_path)
    processes = [start_train(tmp_path, clean_environment(**variables(rank))) for rank in range(2)]
    results = [finish(process) for process in processes]
    for rank, (code, stdout, stderr) in enumerate(results):
        assert code == 2, stderr
        assert stderr.count("mpiswim: wrong launcher:") == 1 and stderr.count("\n") == 1, (
            stderr
        )  # one message, nothing else
        assert f"process {rank} of 2 started by {launcher}" in stderr and "a job of 1 process" in stderr
        assert "MPI4PY_FROM_SOURCE=1" in stderr and ("mpiexec" in stderr or "srun --mpi=pmi2" in stderr)
        assert stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.toml"]  # no checkpoint, no temporary file


@pytest.mark.slow
def test_pmix_launcher_gets_the_hint_where_mpich_would_abort_in_mpi_init(tmp_path):
    open_mpi = {
        **OPEN_MPI_MPIRUN,
        "OMPI_COMM_WORLD_RANK": "0",
        "PMIX_RANK": "0",
        "PMIX_SERVER_URI41": "prterun-vm-4242@0.0;tcp4://127.0.0.1:1",
    }
    # Without mpiswim's check, MPICH's MPI_Init aborts here with its own PMIx message:
    bare = subprocess.run(
        [sys.executable, "-c", "from mpi4py import MPI"],
        env=clean_environment(**open_mpi),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert bare.returncode != 0 and "PMI" in bare.stderr

    tiny_config(tmp_path)
    code, stdout, stderr = finish(start_train(tmp_path, clean_environment(**open_mpi)))
    assert code == 2, stderr
    assert (
        stderr.startswith("mpiswim: wrong launcher: process 0 of 2 started by Open MPI's mpirun")
        and stderr.count("\n") == 1
    ), stderr
    assert "MPI_Init would abort" in stderr and "MPI4PY_FROM_SOURCE=1" in stderr
    assert stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.toml"]


@pytest.mark.slow
def test_real_open_mpi_mpirun_gets_the_hint_on_every_process(tmp_path):
    mpirun = shutil.which("mpirun.openmpi")
    if mpirun is None:
        if os.environ.get("CI"):
            pytest.fail("Open MPI's mpirun.openmpi is missing: .ci/run installs it (apt-get install openmpi-bin)")
        pytest.skip("no Open MPI for the real foreign-launcher test (apt-get install openmpi-bin)")
    tiny_config(tmp_path)
    command = [
        mpirun,
        "--oversubscribe",
        "-n",
        "2",
        sys.executable,
        "-m",
        "mpiswim.cli",
        *train_args("tiny.toml", "run.h5"),
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("mpiswim: wrong launcher:") == 2, result.stderr
    for rank in range(2):
        assert f"process {rank} of 2 started by Open MPI's mpirun" in result.stderr
    assert "MPI_Init would abort" in result.stderr and "MPI4PY_FROM_SOURCE=1" in result.stderr
    assert "Fatal error" not in result.stderr  # MPICH never got to abort
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.toml"]


@pytest.mark.slow
def test_the_venvs_mpiexec_still_trains(tmp_path):
    tiny_config(tmp_path)
    command = [
        mpiexec(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "mpiswim.cli",
        *train_args("tiny.toml", "run.h5"),
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    assert "2 ranks" in result.stdout and "wrong launcher" not in result.stderr
    assert (tmp_path / "run.h5").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["config"],
        ["info", "RUN"],
        ["check", "RUN"],
        ["evaluate", "RUN", "--episodes", "1", "--T", "5"],
        ["analyze", "RUN", "--out", "plots"],
    ],
)
def test_single_process_commands_work_inside_any_launchers_job(tmp_path, command):
    # Every launcher's variables at once: if a command started MPI, MPICH's MPI_Init would abort on PMIX_*.
    run = write_synthetic_checkpoint(tmp_path / "run.h5")
    env = clean_environment(**{**BATCH_SCRIPT, **SRUN_STEP, **OPEN_MPI_MPIRUN})
    argv = [str(run) if word == "RUN" else word for word in command]
    result = subprocess.run(
        [sys.executable, "-m", "mpiswim.cli", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert "wrong launcher" not in result.stderr


def test_the_resume_command_quotes_the_path_and_keeps_the_iterations():
    assert resume_command(4, "runs/run.h5") == "mpirun -n 4 mpiswim train --resume runs/run.h5"
    assert (
        resume_command(4, Path("my runs/it's.h5"), 200)
        == "mpirun -n 4 mpiswim train --resume 'my runs/it'\"'\"'s.h5' --iterations 200"
    )
