"""Atomic placement: a file written whole under an unpredictable name, synced, then moved to its path.

Also the plain `pwrite` loop the writer appends with, and the free-space check made before
a file is built.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from mpiswim.checkpoint.format import CheckpointBusy, FileImage
from mpiswim.checkpoint.lock import _lock, holder


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def place_image(path: Path, image: FileImage, existing_fd: int | None) -> int:
    """Write `image` under an unpredictable new name beside `path`, lock it, sync it and move it to `path`.

    With `existing_fd` (the caller holds the lock of the file at `path`) the new
    file is renamed over the old one; otherwise it is hard-linked to `path`,
    which fails if a file appeared there meanwhile (a second job). Returns the
    new file's locked descriptor. On any error the new file is removed and
    `path` is as it was.
    """
    fd, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )  # O_EXCL: never through a link
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        _lock(fd)
        _write_all(fd, image.data, 0)
        os.fsync(fd)
        if existing_fd is not None:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise CheckpointBusy(
                    f"'{path}' appeared while this job was creating it: another job was started with the same --out "
                    f"({holder(path)}). Fix: give each job its own --out."
                ) from None
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if os.path.lexists(path):  # a file system without hard links: check, then rename
                    raise CheckpointBusy(
                        f"'{path}' appeared while this job was creating it ({holder(path)}). Fix: give each job its "
                        "own --out."
                    ) from None
                os.replace(temporary, path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        _fsync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        os.close(fd)
        raise
    if existing_fd is not None:
        os.close(existing_fd)  # releases the old file's lock; the new one is locked already
    return fd


def check_space(directory: Path, needed: int) -> None:
    """OSError(ENOSPC) if the file system (as statvfs reports it to this user) has less than `needed` bytes free."""
    stats = os.statvfs(directory)
    if stats.f_blocks == 0:  # a file system without blocks (/proc, /sys): the write itself will say what is wrong
        return
    if stats.f_bavail * stats.f_frsize < needed:
        raise OSError(
            errno.ENOSPC,
            f"{os.strerror(errno.ENOSPC)}: {stats.f_bavail * stats.f_frsize / 1e6:.1f} MB free, {needed / 1e6:.1f} MB "
            "needed",
        )
