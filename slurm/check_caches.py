"""Checks on the numba and JAX compilation caches for slurm/test_cluster.sh (case cold-caches).

    python slurm/check_caches.py NUMBA_CACHE_DIR JAX_COMPILATION_CACHE_DIR

Every numba index (*.nbi) and data file (*.nbc) must load as numba loads it (a version
pickle, then the pickled index; the pickled overload), every JAX entry (*-cache) must
decompress and hold an executable and its compile time, and no partial file (*.tmp.*,
left by a writer that died before its rename) may be left. Prints what it found (one line
per cache) and, after the listing of every file (name, size, mtime in ns) on stdout with
--list, exits 1 on the first broken file.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path


def check_numba(root: Path) -> tuple[int, int]:
    import numba  # noqa: F401  (the pickled overloads refer to numba's classes)

    indexes = sorted(root.rglob("*.nbi"))
    data = sorted(root.rglob("*.nbc"))
    for path in indexes:
        with open(path, "rb") as f:
            pickle.load(f)  # numba's version
            stamp, overloads = pickle.loads(f.read())
        for name in overloads.values():
            if not (path.parent / name).is_file():
                raise ValueError(f"{path}: names {name}, which is missing")
    for path in data:
        pickle.loads(path.read_bytes())
    return len(indexes), len(data)


def check_jax(root: Path) -> int:
    from jax._src.compilation_cache import decompress_executable, extract_executable_and_time

    entries = sorted(p for p in root.iterdir() if p.name.endswith("-cache"))
    for path in entries:
        executable, seconds = extract_executable_and_time(decompress_executable(path.read_bytes()))
        if not executable or seconds < 0:
            raise ValueError(f"{path}: an empty executable")
    return len(entries)


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--list"]
    numba_dir, jax_dir = Path(args[0]), Path(args[1])
    files = sorted(p for root in (numba_dir, jax_dir) if root.is_dir() for p in root.rglob("*") if p.is_file())
    if "--list" in sys.argv:
        for path in files:
            print(path, path.stat().st_size, path.stat().st_mtime_ns)
        return 0
    partial = [str(p) for p in files if ".tmp." in p.name]
    if partial:
        print(f"check_caches: partial files left: {', '.join(partial)}")
        return 1
    try:
        indexes, data = check_numba(numba_dir)
        entries = check_jax(jax_dir)
    except Exception as error:  # a truncated or garbled file, whatever the exception
        print(f"check_caches: BROKEN: {error.__class__.__name__}: {error}")
        return 1
    if not indexes or not data or not entries:
        print(f"check_caches: a cache is empty: numba {indexes} indexes, {data} data files; JAX {entries} entries")
        return 1
    print(f"check_caches: numba {indexes} indexes and {data} compiled functions load; JAX {entries} entries decompress")
    return 0


if __name__ == "__main__":
    sys.exit(main())
