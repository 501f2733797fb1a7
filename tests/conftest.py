"""Test-session set-up shared by every test file."""

import os

# MuJoCo picks its OpenGL back-end when it is first imported, which test collection
# does (mpiswim.env imports it). Headless EGL, as `mpiswim render` uses; see mpiswim/render.py.
os.environ.setdefault("MUJOCO_GL", "egl")
