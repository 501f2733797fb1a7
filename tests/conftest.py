"""Test-session set-up shared by every test file.

Two tiers: `make test` runs every test; `make test-fast` (`pytest -m "not slow"`) leaves out the tests
marked `slow`: those that start a process running mpiswim (an MPI job, `mpiswim ...`, `python -m
mpiswim.cli`, a script of this repository; a `python -c` probe of what an import pulls in is allowed) or
use a fixture that does (JOB_FIXTURES, marked here), and a few in-process tests of 5 CPU-s and more
(analyze of several runs, every subset of a checkpoint write). Such a process costs a second or more of
start-up (JAX, MuJoCo, MPI), an MPI job many; the fast tier runs mpiswim in this process only
(mpiswim.cli.main for the commands). A test of the fast tier that starts such a process anyway fails and
says so.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

# MuJoCo picks its OpenGL back-end when it is first imported, which test collection
# does (mpiswim.env imports it). Headless EGL, as `mpiswim render` uses; see mpiswim/render.py.
os.environ.setdefault("MUJOCO_GL", "egl")

# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (so that a Ctrl-C at the terminal leaves ffmpeg to finish
# the video), which makes subprocess fork and run Python in the child. In this process JAX's threads are running
# (tests/test_learn.py and others compute updates in-process), and JAX warns at every such fork: "os.fork() was
# called ... JAX is multithreaded, so this will likely lead to a deadlock", a real if small risk. `mpiswim render`
# never imports JAX, so users do not meet it. Here ffmpeg is started without preexec_fn (imageio-ffmpeg's own
# switch): subprocess then runs no Python between fork and exec, and there is neither warning nor risk.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

# Fixtures that start an MPI job or a training subprocess: every test using one is `slow`.
JOB_FIXTURES = {"reference", "small_run"}

REPO = Path(__file__).resolve().parent.parent
LAUNCHERS = {"mpiexec", "mpirun", "srun", "mpirun.openmpi", "mpiexec.hydra"}
# In a shell command line (bash -c "..."): a launcher or mpiswim.
SHELL_JOB = re.compile(r"(^|[\s/;&|(])(mpiexec|mpirun|srun|mpiswim)([\s.;&|)]|$)")


def runs_mpiswim(args) -> bool:
    """Whether a command line starts an MPI launcher or a process running mpiswim."""
    if isinstance(args, str | bytes | os.PathLike):
        return bool(SHELL_JOB.search(os.fsdecode(args)))
    words = [os.fsdecode(word) for word in args]
    for before, word in zip(["", *words], words, strict=False):
        name = os.path.basename(word)
        if name in LAUNCHERS or name == "mpiswim":
            return True
        if before == "-m" and word.split(".")[0] == "mpiswim":
            return True
        if before == "-c" and os.path.basename(words[0]) in {"bash", "sh"} and SHELL_JOB.search(word):
            return True  # (`python -c "import mpiswim..."`, a probe of what an import pulls in, is allowed)
        if word.endswith(".py") and Path(word).resolve().is_relative_to(REPO):
            return True  # analysis/*.py and the like import mpiswim
    return False


def pytest_configure(config):
    """In-process tests reuse compiled updates from the on-disk cache, as `mpiswim train` does."""
    from mpiswim.learn import use_compilation_cache

    use_compilation_cache()


def pytest_collection_modifyitems(items):
    for item in items:
        if JOB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def fast_tests_start_no_job(request, monkeypatch):
    """Outside the `slow` mark, starting a process that runs mpiswim or MPI fails the test, naming the mark it needs."""
    if request.node.get_closest_marker("slow"):
        return
    real_init = subprocess.Popen.__init__

    def checked_init(self, args, *more, **kwargs):
        if runs_mpiswim(args):
            raise RuntimeError(
                f"{request.node.nodeid} starts {args!r}, a process running mpiswim or MPI, outside the slow tier. "
                "Fix: call mpiswim.cli.main in-process, or mark the test @pytest.mark.slow (make test-fast leaves it "
                "out; make test runs it)."
            )
        real_init(self, args, *more, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", checked_init)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny fault-test config (tests/test_faults.py): 4 iterations on 2 ranks."""
    from test_faults import RANKS, run, write_config

    folder = tmp_path_factory.mktemp("reference")
    code, output = run(RANKS, "cli", folder, "train", "--config", str(write_config(folder)), "--out", "run.h5")
    assert code == 0, output
    return folder / "run.h5"
