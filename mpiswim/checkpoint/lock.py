"""The lock and liveness: one writer per file, who holds it, and whether a run is still being written.

The lock is an open-file-description lock (`fcntl` F_OFD_SETLK) on the file
itself: it dies with the process, is not released by other opens and closes
of the file, and is honoured over NFS (v3 lockd, v4), GPFS and Lustre mounted
with `-o flock`. A second job on the same file is refused, naming the holder
(host, PID, start time, stored in `/writer`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import socket
import struct
import sys
from datetime import UTC, datetime
from pathlib import Path

import h5py

from mpiswim.checkpoint.format import SLOTS, WRITER_BYTES, CheckpointBusy
from mpiswim.plain_hdf5 import read_plain


def writer_identity() -> bytes:
    """Who holds the file: host, PID and start time, as NUL-padded JSON for /writer."""
    started = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started}).encode()[:WRITER_BYTES]
    return text.ljust(WRITER_BYTES, b"\0")


# struct flock as fcntl expects it on Linux: type, whence, start, length, pid
FLOCK = "hhxxxxqqixxxx"
NO_LOCKS = (
    errno.ENOLCK,
    errno.ENOSYS,
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EINVAL,
)  # a file system without fcntl locks


def _lock(fd: int) -> bool:
    """Take the exclusive lock on an open file without waiting; False if another process holds it.

    On a file system without locks (Lustre mounted without -o flock, some
    FUSE mounts) it warns once and carries on unlocked rather than refuse to run.
    """
    request = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        if hasattr(fcntl, "F_OFD_SETLK"):
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
        else:  # not Linux: BSD flock, also per open file description
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        if error.errno not in NO_LOCKS:
            raise
        _warn_no_locks(error.strerror)
    return True


@functools.cache
def _warn_no_locks(reason: str) -> None:  # once per process and reason
    print(
        f"mpiswim: warning: this file system does not support file locks ({reason}): nothing stops a second job from "
        "writing "
        "the same checkpoint. Give every job its own --out (on Lustre, ask for the -o flock mount option).",
        file=sys.stderr,
        flush=True,
    )


def read_writer(path: Path) -> dict | None:
    """/writer: host, PID and start time of the job that last opened the file for writing; None if unreadable."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            writer = read_plain(f, "writer", (WRITER_BYTES,), "u")
        return json.loads(bytes(writer).rstrip(b"\0"))
    except Exception:  # no such dataset (format 1), not plain, not HDF5, not JSON
        return None


def holder(path: Path) -> str:
    """Who holds a locked checkpoint, in words (from /writer), or 'another process'."""
    who = read_writer(path)
    if who is None or not {"host", "pid", "started"} <= set(who):
        return "another process"
    return f"a job on host {who['host']}, PID {who['pid']}, started {who['started']}"


def lock_is_held(path: Path) -> bool | None:
    """Whether some process holds the write lock `mpiswim train` keeps on its checkpoint; None if the system cannot say.

    Only asks (F_OFD_GETLK on a read-only descriptor): it never takes the lock,
    so it cannot disturb the writer.
    """
    if not hasattr(fcntl, "F_OFD_GETLK"):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    except OSError:  # a file system without locks (NFS without lockd, Lustre without -o flock)
        return None
    finally:
        os.close(fd)
    return struct.unpack(FLOCK, answer)[0] != fcntl.F_UNLCK


def finished_cleanly(path: Path) -> bool:
    """Whether the writer compacted the file at its end: room for exactly the rows done, and both /commit records on
    them.
    """
    try:
        with h5py.File(path, "r", locking=False) as f:
            done = [int(record["iterations_done"]) for record in read_plain(f, "commit", (SLOTS,), "V")]
            return len(set(done)) == 1 and int(f.attrs["capacity"]) == max(done[0], 1)
    except Exception:  # a format_version 1 file has neither; anything odd means "cannot tell"
        return False


def writer_may_be_alive(path: Path) -> bool:
    """From /writer (host and PID of the job that last opened the file): False only if that process is gone from this
    host.
    """
    who = read_writer(path)
    if who is None:
        return True  # no /writer: cannot tell
    try:
        if who["host"] != socket.gethostname():
            return True  # another machine: we cannot see its processes
        os.kill(int(who["pid"]), 0)
    except ProcessLookupError:
        return False
    except Exception:  # a malformed /writer, or not ours to signal (PermissionError: it exists)
        return True
    return True


def is_being_written(path: Path) -> bool:
    """Whether a `mpiswim train` job is writing this checkpoint now.

    The job holds a lock on the file for as long as it runs, and the lock dies
    with it. Where the file system cannot report locks, a file compacted at a
    clean end is not being written, nor is one whose writer (from /writer) is
    gone from this host; otherwise we cannot tell and assume it is.
    """
    held = lock_is_held(path)
    if held is not None:
        return held
    return not finished_cleanly(path) and writer_may_be_alive(path)


def claim(path: Path) -> int:
    """Open an existing file for writing and lock it; CheckpointBusy (naming the holder) if another job has it."""
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not _lock(fd):
            os.close(fd)
            raise CheckpointBusy(
                f"'{path}' is being written by {holder(path)}; one file has one writer. "
                "Fix: wait for that job to end (or stop it), or give this run another --out. (--force never takes a "
                "file from a running job.)"
            )
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)  # the holder renamed a new file over this one while we locked it: try the new one
    raise CheckpointBusy(f"'{path}' keeps being replaced by another process. Fix: give this run another --out.")
