"""Real processes started by the tests: MPI jobs and shell commands in their own session, killed whole at a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

# Open MPI refuses to start as root without these; CI runs as root.
MPI_AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def environment(**extra: str) -> dict[str, str]:
    """This process's environment, with MPI allowed to run as root, plus `extra`."""
    return dict(os.environ, **MPI_AS_ROOT, **extra)


def start_job(command: list[str], cwd: Path, env: dict[str, str], merge_output: bool = False) -> subprocess.Popen:
    """Start `command` in its own session (so that a hung job can be killed whole), no stdin, output captured."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish_job(job: subprocess.Popen, timeout: float, what: str) -> tuple[int, str]:
    """Wait for the job; return (exit code, stdout + stderr). Kill its session and fail if it outlives the timeout."""
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        pytest.fail(f"{what} did not finish within {timeout} s:\n{out}\n{err or ''}")
    return job.returncode, out + (err or "")


def train_args(config: object, out: object) -> tuple[str, ...]:
    """The arguments of `mpiswim train --config CONFIG --out OUT`."""
    return ("train", "--config", str(config), "--out", str(out))


START_LINE = "mpiswim: starting "  # rank 0's first line of `mpiswim train`, before imports and compilation


def without_start_line(output: str) -> str:
    """A job's output without rank 0's start line: progress, not part of what a refusal says."""
    return "".join(line for line in output.splitlines(keepends=True) if not line.startswith(START_LINE))
