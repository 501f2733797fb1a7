"""numba for mpiswim: `njit` with its on-disk cache in a folder per version of mpiswim's sources.

numba keys a cached function on its own source file only. The compiled
episode (mpiswim.compiled) inlines mpiswim.kernels and mpiswim.normalise,
and constants of mpiswim.policy: after a change to those files alone it
would load the old machine code, which for a changed state layout writes
out of bounds. So the cache lives in a folder named after a hash of every
module of the package: ~/.cache/mpiswim/numba-<hash> (under
XDG_CACHE_HOME if set), or <hash> under NUMBA_CACHE_DIR if the user set one.
A changed source compiles afresh once; nothing stale is ever loaded.

Without numba the functions run as the same plain Python.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_folder() -> str:
    """The folder numba caches mpiswim's compiled functions in, for the sources as they are now."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    key = "numba-" + digest.hexdigest()[:16]
    base = os.environ.get("NUMBA_CACHE_DIR")
    if not base:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(cache_home, "mpiswim")
    return os.path.join(base, key)


try:
    import numba
    import numba.core.config

    _FOLDER = cache_folder()

    def njit(**options):
        """numba.njit(**options); with cache=True the cache is in cache_folder() (numba's setting for other code is
        left as it was).
        """

        def decorate(function):
            setting = numba.core.config.CACHE_DIR
            numba.core.config.CACHE_DIR = _FOLDER  # numba picks the cache's folder as it decorates
            try:
                return numba.njit(**options)(function)
            finally:
                numba.core.config.CACHE_DIR = setting

        return decorate

except ImportError:  # numba is a dependency, but the plain functions compute the same

    def njit(**_options):
        return lambda function: function
