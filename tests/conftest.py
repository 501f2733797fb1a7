"""Test-session set-up shared by every test file."""

import os

import pytest

# MuJoCo picks its OpenGL back-end when it is first imported, which test collection
# does (mpiswim.env imports it). Headless EGL, as `mpiswim render` uses; see mpiswim/render.py.
os.environ.setdefault("MUJOCO_GL", "egl")


def pytest_configure(config):
    """In-process tests reuse compiled updates from the on-disk cache, as `mpiswim train` does."""
    from mpiswim.learn import use_compilation_cache

    use_compilation_cache()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny fault-test config (tests/test_faults.py): 4 iterations on 2 ranks."""
    from test_faults import RANKS, run, write_config

    folder = tmp_path_factory.mktemp("reference")
    code, output = run(RANKS, "cli", folder, "train", "--config", str(write_config(folder)), "--out", "run.h5")
    assert code == 0, output
    return folder / "run.h5"
