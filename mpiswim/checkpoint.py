"""Checkpoint file: the HDF5 layout, created once and appended to in place after every iteration.

Rank 0 creates the run's file at the start with room for many iterations
(every dataset preallocated, so the file's HDF5 structure never changes
afterwards) and keeps it open and locked for the whole run. After each
iteration it writes, with plain `pwrite`s at fixed offsets:

1. the iteration's row of every `/pool` dataset and the agents into the spare
   one of two agent slots, then fsync;
2. a commit record (iterations done, which slot, the pool's counters, a hash
   chain over every row, a SHA-256 checksum), into the spare one of two
   record places, then fsync.

A reader (and a resume) takes the newest commit record whose checksum holds,
and reads that many rows. A kill at any instant therefore leaves the last
complete iteration readable: until step 2 completes, the previous record and
its agent slot are untouched. Writing iteration k costs the same whatever k
is. Only when the preallocated rows run out is the file rebuilt, bigger, under
a new unpredictable name and renamed over the old one (also when a run ends:
the file is then compacted to exactly the rows it holds).

The lock is an open-file-description lock (`fcntl` F_OFD_SETLK) on the file
itself: it dies with the process, is not released by other opens and closes
of the file, and is honoured over NFS (v3 lockd, v4), GPFS and Lustre mounted
with `-o flock`. A second job on the same file is refused, naming the holder
(host, PID, start time, stored in `/writer`).

Layout (docs/checkpoint.md has the full description; R rows allocated, k done):

    / attrs: format, format_version = 2, world_size, capacity = R, config_toml, run_name, env_id, versions
    /commit              compound [2]: iterations_done, iterations_planned, agent_slot, best_iteration,
                         since_improvement, degenerate_streak, best_score, rows_digest, checksum
    /pool/<name>         [R, ...]: one row per iteration (rows 0..k-1 are valid), a dataset per field of
                         mpiswim.state.IterationRecord (its schema: RECORD_FIELDS), and checkpoint_seconds
    /hyperparameters/<name>  float64 [P]
    /agent/{current,best}/{policy,baseline}  [2, ...]: slot 0 and slot 1
    /writer              uint8 [256]: the job holding the file (JSON, NUL-padded)

Files of format_version 1 (rewritten whole after every iteration, before
2026-11-26) are still read and checked; a resume turns them into version 2.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import platform
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from mpiswim import __version__
from mpiswim.config import Config, ConfigError, parse_stored_config, quote
from mpiswim.plain_hdf5 import UnplainData, read_plain, refuse_unplain
from mpiswim.policy import Agent, feature_blocks, scaler_shape
from mpiswim.state import (
    CHECKPOINT_SECONDS,
    PHASES,
    RECORD_FIELDS,
    IterationRecord,
    PoolState,
    RecordField,
    winner_rank,
)

FORMAT = "mpiswim-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CHECKSUM = "checksum"  # format_version 1: root attribute "sha256:<hex>" of everything mpiswim reads back
INITIAL_BYTES = 16 << 20  # a new file preallocates at most this much (or the planned iterations, if fewer)
WRITER_BYTES = 256
SLOTS = 2

COMMIT_DTYPE = np.dtype(
    [
        ("iterations_done", "<i8"),
        ("iterations_planned", "<i8"),
        ("agent_slot", "<i8"),
        ("best_iteration", "<i8"),
        ("since_improvement", "<i8"),
        ("degenerate_streak", "<i8"),
        ("best_score", "<f8"),
        ("rows_digest", "u1", (32,)),
        ("checksum", "u1", (32,)),
    ]
)
AGENTS = ("current", "best")
# The parts of an agent stored under /agent/<which>/<part>; parts that are empty for this run's
# config (the running scalers without normalisation, baseline_eta unless it travels) are not stored.
AGENT_PARTS = Agent._fields
AGENT_DESCRIPTIONS = {
    "policy": "log Beta shapes: policy[slot, block, 0 (a) or 1 (b), action dimension, feature]",
    "baseline": "state value weights: baseline[slot, block, feature] (+ steps-left weight)",
    "policy_scaler": "running observation scaler of the policy's features (mpiswim.normalise): [slot, row, column]",
    "baseline_scaler": "the baseline's own running observation scaler (mpiswim.normalise): [slot, row, column]",
    "baseline_eta": "the baseline's step size, carried with the agent ([policy] eta_travels; -1 = not trained yet): "
    "[slot, 1]",
}


class CheckpointError(Exception):
    """A file that is not a readable mpiswim checkpoint."""


class ChecksumMismatch(CheckpointError):
    """Contents that do not match their checksum: damage, or a read overtaken by a write in progress."""


class CheckpointBusy(CheckpointError):
    """The file is held by another running job."""


@dataclass
class Checkpoint:
    """Everything a checkpoint holds, as loaded."""

    config_toml: str
    world_size: int
    iterations_planned: int
    hyperparameters: dict[str, np.ndarray]
    state: PoolState
    records: list[IterationRecord]
    attrs: dict
    config: Config  # the run's config as stored_config reads it


@functools.cache  # reading package metadata costs milliseconds; it cannot change during a run
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "mpiswim": __version__}
    for name in ("numpy", "jax", "jaxlib", "mujoco", "gymnasium", "h5py", "mpi4py", "mpich", "openmpi"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


# A row of /pool/timings leaves out the last phase, checkpoint: rank 0's time writing the row is known only
# afterwards, so it goes to /pool/checkpoint_seconds (state.CHECKPOINT_SECONDS); readers put it back.
ROW_PHASES = PHASES[:-1]


def row_layout(world_size: int, iterate_episodes: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and type of one iteration's row of every /pool dataset, in the order they are hashed."""
    sizes = {"P": world_size, "E": iterate_episodes, "phases": len(ROW_PHASES)}
    return {field.name: (field.row_shape(sizes), np.dtype(field.dtype)) for field in RECORD_FIELDS}


def row_bytes(world_size: int, iterate_episodes: int) -> int:
    """Bytes one iteration adds to the file."""
    layout = row_layout(world_size, iterate_episodes)
    return (
        sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in layout.values())
        + np.dtype(CHECKPOINT_SECONDS.dtype).itemsize
    )


def pool_table() -> str:
    """The /pool table of docs/checkpoint.md, made from the schema (a test keeps the doc in step)."""
    lines = ["| dataset | dtype, shape | units | meaning |", "|---|---|---|---|"]
    for field in (*RECORD_FIELDS, CHECKPOINT_SECONDS):
        shape = ", ".join(["R", *(str(len(ROW_PHASES)) if symbol == "phases" else symbol for symbol in field.shape)])
        lines.append(f"| `{field.name}` | {np.dtype(field.dtype).name} [{shape}] | {field.unit} | {field.meaning} |")
    return "\n".join(lines) + "\n"


def initial_capacity(cfg: Config, done: int) -> int:
    """Rows a new file preallocates: the planned iterations, but at most INITIAL_BYTES of rows."""
    fits = max(1, INITIAL_BYTES // row_bytes(cfg.world_size, cfg.iterate_episodes))
    return max(done + 1, min(cfg.iterations, fits))


def file_size(cfg: Config, obs_dim: int, action_dim: int, rows: int) -> int:
    """Bytes of a checkpoint with `rows` preallocated rows, rounded up generously."""
    agent = feature_blocks(obs_dim, cfg.features) * (obs_dim + 1) * (2 * action_dim + 1) + 1  # policy + baseline
    if cfg.scaler is not None:
        agent += 2 * int(np.prod(scaler_shape(obs_dim, *cfg.scaler))) + 1  # two running scalers, baseline_eta
    data = 8 * 2 * SLOTS * agent + rows * row_bytes(cfg.world_size, cfg.iterate_episodes)
    return int(data * 1.1) + 64 * 1024  # HDF5 metadata, attributes, the config text


def _canonical(value) -> bytes:
    """A value as bytes that do not depend on how HDF5 or numpy typed it (int32 or int64, str or bytes)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return b"s" + value.encode()
    array = np.asarray(value)
    if array.dtype.kind in "biu":
        array = array.astype("<i8")
    elif array.dtype.kind == "f":
        array = array.astype("<f8")
    else:
        raise TypeError(f"cannot checksum a value of type {array.dtype}")
    return repr(array.shape).encode() + np.ascontiguousarray(array).tobytes()


def _hash_items(items) -> hashlib._Hash:
    digest = hashlib.sha256()
    for label, value in items:
        for part in (label.encode(), _canonical(value)):
            digest.update(len(part).to_bytes(8, "little") + part)
    return digest


# --- format_version 2: building, appending, reading ----------------------------------


def header_digest(attrs: dict, hyperparameters: dict) -> bytes:
    """SHA-256 of what never changes once a file is built: the root attributes and the step sizes."""
    items = [(f"/@{key}", attrs[key]) for key in sorted(attrs) if key != CHECKSUM]
    items += [(f"hyperparameters/{name}", hyperparameters[name]) for name in sorted(hyperparameters)]
    return _hash_items(items).digest()


def chain_row(previous: bytes, row: dict[str, np.ndarray], layout: dict) -> bytes:
    """The rows digest after one more row: SHA-256(previous digest, the row's bytes in layout order)."""
    digest = hashlib.sha256(previous)
    for name, (_, dtype) in layout.items():
        digest.update(np.ascontiguousarray(row[name], dtype=dtype).tobytes())
    return digest.digest()


def commit_checksum(header: bytes, record: np.void, agents: dict[str, np.ndarray]) -> bytes:
    """SHA-256 over the header digest, the commit record's fields and the agents of its slot."""
    digest = hashlib.sha256(header)
    fields = np.array(record, dtype=COMMIT_DTYPE)
    fields["checksum"] = 0
    digest.update(fields.tobytes())
    for values in agents.values():  # in agent_datasets order
        digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return digest.digest()


def _record_row(record: IterationRecord) -> dict[str, np.ndarray]:
    """The record as a row of the /pool datasets (the timings without the checkpoint phase: ROW_PHASES)."""
    row = {field.name: getattr(record, field.name) for field in RECORD_FIELDS}
    row["timings"] = record.timings[:, : len(ROW_PHASES)]
    return row


def pool_record(pool: dict[str, np.ndarray], row: int) -> IterationRecord:
    """Row `row` of the /pool datasets as read_raw gives them (timings with every phase) as an IterationRecord."""
    return IterationRecord(**{field.name: _python_scalar(pool[field.name][row]) for field in RECORD_FIELDS})


def _python_scalar(value: np.ndarray | np.generic) -> object:
    """A 0-d value as a Python int, bool or float (as IterationRecord holds winner, fell_back, best_score); arrays as
    they
    are.
    """
    return value.item() if np.ndim(value) == 0 else value


def _state_agents(state: PoolState) -> dict[str, np.ndarray]:
    """The stored parts of the current and best agent, by dataset name under /agent (empty parts left out)."""
    agents = {"current": state.agent, "best": state.best_agent}
    return {
        f"{which}/{part}": getattr(agents[which], part)
        for which in AGENTS
        for part in AGENT_PARTS
        if getattr(agents[which], part).size
    }


def stored_agent_datasets(f: h5py.File) -> list[str]:
    """The /agent datasets a file holds, in the order _state_agents gives them."""
    return [f"{which}/{part}" for which in AGENTS for part in AGENT_PARTS if f"agent/{which}/{part}" in f]


def _agent_from(parts: dict[str, np.ndarray], which: str) -> Agent:
    """An Agent from the datasets of /agent/<which> (parts the file does not store take their empty default)."""
    return Agent(
        **{
            part: values
            for name, values in parts.items()
            if name.startswith(f"{which}/")
            for part in [name.split("/", 1)[1]]
        }
    )


def _commit(header: bytes, state: PoolState, planned: int, slot: int, rows_digest: bytes) -> np.ndarray:
    record = np.zeros((), dtype=COMMIT_DTYPE)
    record["iterations_done"], record["iterations_planned"], record["agent_slot"] = state.iteration, planned, slot
    record["best_iteration"], record["best_score"] = state.best_iteration, state.best_score
    record["since_improvement"], record["degenerate_streak"] = state.since_improvement, state.degenerate_streak
    record["rows_digest"] = np.frombuffer(rows_digest, dtype=np.uint8)
    record["checksum"] = np.frombuffer(commit_checksum(header, record[()], _state_agents(state)), dtype=np.uint8)
    return record


def writer_identity() -> bytes:
    """Who holds the file: host, PID and start time, as NUL-padded JSON for /writer."""
    started = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started}).encode()[:WRITER_BYTES]
    return text.ljust(WRITER_BYTES, b"\0")


def _offsets(f: h5py.File) -> dict[str, int]:
    """Byte offset of every dataset the writer updates in place (contiguous, allocated when the file is built)."""
    pool = [f"pool/{name}" for name in (CHECKPOINT_SECONDS.name, *(field.name for field in RECORD_FIELDS))]
    names = ["commit", "writer", *pool, *(f"agent/{n}" for n in stored_agent_datasets(f))]
    return {name: f[name].id.get_offset() for name in names}


@dataclass(frozen=True)
class FileImage:
    """A complete checkpoint file built in memory, and where its datasets start in it."""

    data: bytes
    offsets: dict[str, int]  # dataset path -> byte offset of its first element
    capacity: int
    header: bytes  # header_digest of the file
    rows_digest: bytes  # of the rows it holds


def build_image(
    cfg: Config, state: PoolState, records: list[IterationRecord], capacity: int, writer: bytes
) -> FileImage:
    """The whole file with `capacity` rows allocated and the first len(records) filled, in memory (HDF5's core
    driver).
    """
    layout = row_layout(cfg.world_size, cfg.iterate_episodes)
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "world_size": cfg.world_size,
        "capacity": capacity,
        "config_toml": cfg.toml_text,
        "run_name": cfg.name,
        "env_id": cfg.env_id,
        "versions": json.dumps(package_versions()),
    }
    hyperparameters = {"alpha": np.array(cfg.alpha, dtype="<f8"), "eta": np.array(cfg.eta, dtype="<f8")}
    header = header_digest(attrs, hyperparameters)
    rows_digest = bytes(32)
    columns = {name: np.zeros((capacity, *shape), dtype=dtype) for name, (shape, dtype) in layout.items()}
    for name, (_, dtype) in layout.items():
        if dtype.kind == "f":
            columns[name][len(records) :] = np.nan  # rows not yet written
    seconds = np.zeros(capacity, dtype=CHECKPOINT_SECONDS.dtype)
    for k, record in enumerate(records):
        row = _record_row(record)
        rows_digest = chain_row(rows_digest, row, layout)
        for name in layout:
            columns[name][k] = row[name]
        seconds[k] = record.timings[0, len(PHASES) - 1]
    commits = np.concatenate([_commit(header, state, cfg.iterations, slot, rows_digest)[None] for slot in range(SLOTS)])

    with h5py.File(f"mpiswim-checkpoint-{os.getpid()}.h5", "w", driver="core", backing_store=False) as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        f.create_dataset("commit", data=commits).attrs["description"] = (
            "two commit records; the valid one (checksum) with the most iterations_done says how many /pool rows hold "
            "iterations "
            "and which slot of /agent is current (mpiswim.checkpoint.read_raw does this)"
        )
        pool = f.create_group("pool")
        for field in RECORD_FIELDS:
            _pool_dataset(pool, field, columns[field.name])
        pool["timings"].attrs["phases"] = list(ROW_PHASES)
        _pool_dataset(pool, CHECKPOINT_SECONDS, seconds)
        hyper = f.create_group("hyperparameters")
        for name, values in hyperparameters.items():
            hyper.create_dataset(name, data=values).attrs["description"] = f"per-rank {name} (index = rank)"
        agents = _state_agents(state)
        for name, values in agents.items():
            slots = np.stack([np.asarray(values, dtype="<f8")] * SLOTS)
            f.create_dataset(f"agent/{name}", data=slots).attrs["description"] = AGENT_DESCRIPTIONS[
                name.split("/", 1)[1]
            ]
        f.create_dataset("writer", data=np.frombuffer(writer, dtype=np.uint8)).attrs["description"] = (
            "the job writing this file: host, pid, started (JSON)"
        )
        f.flush()
        offsets = _offsets(f)
        image = f.id.get_file_image()
    return FileImage(image, offsets, capacity, header, rows_digest)


def _pool_dataset(pool: h5py.Group, field: RecordField, data: np.ndarray) -> None:
    """/pool/<field.name> holding `data`, with the field's meaning and unit as attributes."""
    dataset = pool.create_dataset(field.name, data=data)
    dataset.attrs["description"], dataset.attrs["units"] = field.meaning, field.unit


# --- the lock ----------------------------------------------------------------


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


class CheckpointWriter:
    """Rank 0's open, locked checkpoint: appends one iteration at a time at fixed offsets."""

    def __init__(self, path: Path, fd: int, cfg: Config, image: FileImage) -> None:
        self.path, self.fd, self.cfg = path, fd, cfg
        self.offsets, self.capacity = image.offsets, image.capacity
        self.header, self.rows_digest = image.header, image.rows_digest
        self.layout = row_layout(cfg.world_size, cfg.iterate_episodes)
        self.last_commit: np.ndarray | None = None  # the newest commit record this writer wrote
        self.size = len(image.data) or os.fstat(fd).st_size  # the file's size: appends write inside it

    @classmethod
    def create(
        cls,
        path: Path,
        cfg: Config,
        state: PoolState,
        records: list[IterationRecord],
        existing_fd: int | None = None,
        capacity: int | None = None,
    ) -> CheckpointWriter:
        """A new file at `path` holding `state` and `records` (replacing the locked `existing_fd`'s file, if given)."""
        image = build_image(cfg, state, records, capacity or initial_capacity(cfg, state.iteration), writer_identity())
        check_space(path.parent, len(image.data))
        return cls(path, place_image(path, image, existing_fd), cfg, image)

    @classmethod
    def reopen(cls, path: Path, fd: int, cfg: Config) -> CheckpointWriter:
        """Continue the format_version 2 file at `path` (locked as `fd`, already checked) in place."""
        raw = read_raw(path)
        with h5py.File(path, "r", locking=False) as f:
            offsets = _offsets(f)
        header = header_digest(raw["file_attrs"], raw["hyperparameters"])
        image = FileImage(b"", offsets, int(raw["file_attrs"]["capacity"]), header, raw["rows_digest"])
        writer = cls(path, fd, cfg, image)
        _write_all(fd, writer_identity(), offsets["writer"])
        os.fsync(fd)
        return writer

    def append(self, state: PoolState, records: list[IterationRecord]) -> float:
        """Add the last of `records` (iteration state.iteration) to the file; return the seconds it took.

        Rows and agents first, then the commit record, each followed by fsync:
        a kill between any two writes leaves the previous iteration intact.
        """
        started = time.perf_counter()
        if state.iteration > self.capacity:  # out of rows: rebuild the file bigger under a new name
            capacity = max(state.iteration, min(2 * self.capacity, max(self.cfg.iterations, state.iteration)))
            self._rebuild(state, records, capacity)
        else:
            row, k, slot = _record_row(records[-1]), state.iteration - 1, state.iteration % SLOTS
            for name, (_, dtype) in self.layout.items():
                data = np.ascontiguousarray(row[name], dtype=dtype).tobytes()
                _write_all(self.fd, data, self.offsets[f"pool/{name}"] + k * len(data))
            for name, values in _state_agents(state).items():
                data = np.ascontiguousarray(values, dtype="<f8").tobytes()
                _write_all(self.fd, data, self.offsets[f"agent/{name}"] + slot * len(data))
            os.fsync(self.fd)
            rows_digest = chain_row(self.rows_digest, row, self.layout)
            commit = _commit(self.header, state, self.cfg.iterations, slot, rows_digest)
            _write_all(self.fd, commit.tobytes(), self.offsets["commit"] + slot * COMMIT_DTYPE.itemsize)
            os.fsync(self.fd)
            self.rows_digest, self.last_commit = rows_digest, commit
        seconds = time.perf_counter() - started
        records[-1].timings[0, len(PHASES) - 1] = seconds
        with contextlib.suppress(OSError):  # a timing only: not synced, not in the checksum
            _write_all(
                self.fd,
                np.array(seconds, dtype="<f8").tobytes(),
                self.offsets["pool/checkpoint_seconds"] + 8 * (state.iteration - 1),
            )
        return seconds

    def compact(self, state: PoolState, records: list[IterationRecord]) -> None:
        """At the end of a run: leave exactly the rows it holds, and both commit records on the last iteration.

        Plain readers then see [k, ...] datasets, and damage to one commit
        record can no longer take the file back to the previous iteration.
        """
        if self.capacity != max(state.iteration, 1):
            self._rebuild(state, records, max(state.iteration, 1))  # a new image has both records on the last iteration
        elif self.last_commit is not None:
            spare = 1 - int(self.last_commit["agent_slot"])
            _write_all(self.fd, self.last_commit.tobytes(), self.offsets["commit"] + spare * COMMIT_DTYPE.itemsize)
            os.fsync(self.fd)

    def _rebuild(self, state: PoolState, records: list[IterationRecord], capacity: int, replace: bool = True) -> None:
        """A new image of the run at `path`: renamed over this writer's file (replace), or put where it was deleted."""
        image = build_image(self.cfg, state, records, capacity, writer_identity())
        check_space(self.path.parent, len(image.data))
        old = self.fd
        self.fd = place_image(self.path, image, old if replace else None)
        if not replace:
            os.close(old)  # the deleted file, and its lock
        self.offsets, self.capacity, self.header, self.rows_digest = (
            image.offsets,
            image.capacity,
            image.header,
            image.rows_digest,
        )
        self.size, self.last_commit = len(image.data), None

    def lost(self) -> str | None:
        """None while `path` names the file this writer writes, at its size; else what happened to it, in words.

        A clean-up script, a scratch purge or a careless `mv` can delete, truncate or
        replace the file while the run goes on; the writer would then write on into a
        file nobody can open.
        """
        try:
            at_path = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return "deleted" if self.path.parent.is_dir() else "deleted with its folder"
        except OSError as error:
            return f"out of reach ({error.strerror or error})"
        ours = os.fstat(self.fd)
        if (at_path.st_dev, at_path.st_ino) != (ours.st_dev, ours.st_ino):
            return "replaced by another file"
        if ours.st_size != self.size:
            return f"cut to {ours.st_size} bytes (it had {self.size})"
        return None

    def write_again(self, state: PoolState, records: list[IterationRecord]) -> None:
        """Write the whole run from memory at `path` again, after lost() said it was deleted or damaged.

        A file someone else put at `path` is never replaced: CheckpointBusy. OSError if
        the file cannot be written there (its folder is gone, say).
        """
        problem = self.lost()
        if problem == "replaced by another file":
            raise CheckpointBusy(f"'{self.path}' is now another file, which is not this run's to replace")
        deleted = problem is not None and problem.startswith("deleted")
        self._rebuild(state, records, max(self.capacity, state.iteration, 1), replace=not deleted)

    def rescue(self, state: PoolState, records: list[IterationRecord]) -> tuple[Path | None, str]:
        """Write the whole run to a new file beside `path`, or else in the current folder; (where, or None, and why
        not).

        The file is created exclusively under a new name: nothing there is replaced.
        """
        image = build_image(self.cfg, state, records, max(state.iteration, 1), writer_identity())
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        reasons = []
        for folder in dict.fromkeys((self.path.parent, Path.cwd())):
            candidate = folder / f"{self.path.stem}.rescued-{stamp}.h5"
            try:
                check_space(folder, len(image.data))
                os.close(place_image(candidate, image, None))
                return candidate, ""
            except (OSError, CheckpointError) as error:
                reasons.append(f"{folder}: {getattr(error, 'strerror', None) or error}")
        return None, "; ".join(reasons)

    def close(self) -> None:
        """Release the lock (closing the file)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def save_checkpoint(path: str | Path, cfg: Config, state: PoolState, records: list[IterationRecord]) -> None:
    """Write a complete checkpoint of `records` at `path` in one go (atomic; replaces a file there unless another job
    holds
    it).
    """
    path = Path(path)
    existing = claim(path) if path.exists() else None
    CheckpointWriter.create(path, cfg, state, records, existing_fd=existing, capacity=max(len(records), 1)).close()


# --- reading and checking ----------------------------------------------------


def _damaged(path: Path, problem: str, kind: type[CheckpointError] = CheckpointError) -> CheckpointError:
    return kind(
        f"'{path}' is not an intact mpiswim checkpoint: {problem}. The file was left untouched. Fix: resume from an "
        "intact copy, or start a new run with another --out."
    )


def content_digest(contents: dict) -> str:
    """format_version 1: SHA-256 over everything mpiswim reads from a checkpoint, except the checksum."""
    items = [(f"/@{key}", contents["attrs"][key]) for key in sorted(contents["attrs"]) if key != CHECKSUM]
    for group in ("pool", "pool_attrs", "hyperparameters"):
        items += [(f"{group}/{key}", contents[group][key]) for key in sorted(contents[group])]
    for which in ("current", "best"):
        items += [
            (f"agent/{which}/policy", contents[which].policy),
            (f"agent/{which}/baseline", contents[which].baseline),
        ]
    items += [("agent/best@iteration", contents["best_iteration"]), ("agent/best@score", contents["best_score"])]
    return "sha256:" + _hash_items(items).hexdigest()


def _read_v1(f: h5py.File, path: Path) -> dict:
    """A format_version 1 file (rewritten whole after every iteration)."""
    pool = f["pool"]
    contents = {
        "attrs": {key: f.attrs[key] for key in f.attrs},
        "pool": {field.name: pool[field.name][()] for field in RECORD_FIELDS},
        "pool_attrs": {key: int(pool.attrs[key]) for key in ("since_improvement", "degenerate_streak")},
        "hyperparameters": {name: f["hyperparameters"][name][()] for name in ("alpha", "eta")},
        "current": Agent(f["agent/current/policy"][()], f["agent/current/baseline"][()]),
        "best": Agent(f["agent/best/policy"][()], f["agent/best/baseline"][()]),
        "best_iteration": int(f["agent/best"].attrs["iteration"]),
        "best_score": float(f["agent/best"].attrs["score"]),
    }
    stored = contents["attrs"].get(CHECKSUM)
    if stored is not None and str(stored) != content_digest(contents):
        raise _damaged(
            path, f"its contents do not match the checksum stored when it was written ({stored})", ChecksumMismatch
        )
    contents["file_attrs"] = dict(contents["attrs"])
    return contents


def _read_v2(f: h5py.File, path: Path) -> dict:
    """A format_version 2 file: the newest valid commit record, and the rows and agent slot it names."""
    file_attrs = {key: f.attrs[key] for key in f.attrs}
    hyperparameters = {name: f["hyperparameters"][name][()] for name in ("alpha", "eta")}
    header = header_digest(file_attrs, hyperparameters)
    slots = {name: f[f"agent/{name}"][()] for name in stored_agent_datasets(f)}
    valid = []
    for record in f["commit"][()]:
        slot = int(record["agent_slot"])
        if 0 <= slot < SLOTS and bytes(record["checksum"]) == commit_checksum(
            header, record, {n: v[slot] for n, v in slots.items()}
        ):
            valid.append(record)
    if not valid:
        raise _damaged(path, "neither of its two commit records matches its checksum", ChecksumMismatch)
    record = max(valid, key=lambda r: int(r["iterations_done"]))
    k, slot, capacity = int(record["iterations_done"]), int(record["agent_slot"]), int(file_attrs["capacity"])
    if not 0 <= k <= capacity:
        raise _damaged(path, f"its commit record says {k} iterations but the file has room for {capacity}")
    pool = {field.name: f["pool"][field.name][:k] for field in RECORD_FIELDS}
    layout = row_layout(
        int(file_attrs["world_size"]), pool["train_returns"].shape[-1] if pool["train_returns"].ndim == 3 else 0
    )
    rows_digest = bytes(32)
    for row in range(k):
        rows_digest = chain_row(rows_digest, {name: pool[name][row] for name in layout}, layout)
    if rows_digest != bytes(record["rows_digest"]):
        raise _damaged(path, f"its {k} rows of /pool do not match the commit record's digest", ChecksumMismatch)
    seconds = f[f"pool/{CHECKPOINT_SECONDS.name}"][:k]
    timings = np.zeros((*pool["timings"].shape[:2], len(PHASES)))
    timings[:, :, :-1] = pool["timings"]
    timings[:, 0, -1] = seconds
    pool["timings"] = timings
    attrs = dict(file_attrs, iterations_done=k, iterations_planned=int(record["iterations_planned"]))
    return {
        "attrs": attrs,
        "file_attrs": file_attrs,
        "pool": pool,
        "pool_attrs": {key: int(record[key]) for key in ("since_improvement", "degenerate_streak")},
        "hyperparameters": hyperparameters,
        "current": _agent_from({name: values[slot] for name, values in slots.items()}, "current"),
        "best": _agent_from({name: values[slot] for name, values in slots.items()}, "best"),
        "best_iteration": int(record["best_iteration"]),
        "best_score": float(record["best_score"]),
        "rows_digest": rows_digest,
    }


def read_raw(path: str | Path, attempts: int = 3) -> dict:
    """Everything a checkpoint holds as numpy values (rows trimmed to the iterations done), or a CheckpointError.

    Works on a run in progress: without HDF5 file locking, and if a write
    overtook the read (a checksum mismatch), the read is retried.
    """
    path = Path(path)
    for attempt in range(attempts):
        try:
            return _read_once(path)
        except ChecksumMismatch:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _read_once(path: Path) -> dict:
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO would block the read; a device never ends
        raise CheckpointError(
            f"'{path}' is not a regular file (a pipe or a device). Fix: give the path of a checkpoint written by "
            "`mpiswim train`."
        )
    try:
        handle = h5py.File(path, "r", locking=False)
    except Exception as error:  # h5py raises OSError for missing/truncated files, others for odd ones
        if not path.exists():
            raise CheckpointError(
                f"'{path}': no such file. Fix: give the path of a checkpoint written by `mpiswim train`."
            ) from None
        if path.is_dir():
            raise CheckpointError(
                f"'{path}' is a directory, not a checkpoint. Fix: give the path of a checkpoint file written by "
                "`mpiswim train`."
            ) from None
        reason = str(error).splitlines()[0] if str(error) else error.__class__.__name__
        raise CheckpointError(
            f"'{path}' is not a readable HDF5 file ({reason}). The file was left untouched. "
            "Fix: give the path of a checkpoint written by `mpiswim train`; a checkpoint cut short cannot be repaired: "
            "resume from a copy."
        ) from None
    with handle as f:
        try:
            refuse_unplain(f, all_bytes_in_file=True)
        except UnplainData as error:
            raise CheckpointError(
                f"'{path}' holds data mpiswim will not read: {error}. The file was left untouched. Fix: give the path "
                "of a checkpoint written by `mpiswim train`."
            ) from None
        try:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError(
                    f"'{path}' is HDF5 but not an mpiswim checkpoint (attribute format = {f.attrs.get('format')!r}). "
                    "Fix: give a file written by `mpiswim train`."
                )
            version = int(f.attrs["format_version"])
            if version not in READABLE_VERSIONS:
                raise CheckpointError(
                    f"'{path}' has checkpoint format_version {version}; this mpiswim reads "
                    f"{', '.join(map(str, READABLE_VERSIONS))}. Fix: use the mpiswim version that wrote it."
                )
            return _read_v1(f, path) if version == 1 else _read_v2(f, path)
        except CheckpointError:
            raise
        except Exception as error:  # a damaged file can fail in many ways; each one means "damaged"
            raise _damaged(path, f"{error.__class__.__name__}: {error}") from None


def is_checkpoint(path: Path) -> bool:
    """Whether `path` is an HDF5 file with mpiswim's format attribute (intact or not)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return f.attrs.get("format") == FORMAT
    except Exception:
        return False


def stored_config(attrs: dict, hyperparameters: dict[str, np.ndarray]) -> Config:
    """The Config a checkpoint holds: its config_toml for its world_size, with its stored step sizes.

    Every reader of a stored config goes through here. A key the text leaves out means what it meant
    to the mpiswim that wrote the file (the "mpiswim" entry of attribute versions; see
    mpiswim.config.parse_stored_config). Raises ConfigError if this mpiswim cannot read the config.
    """
    steps = {name: tuple(float(v) for v in values) for name, values in hyperparameters.items()}
    try:
        written_by = json.loads(attrs.get("versions", "{}")).get("mpiswim")
    except (TypeError, ValueError, AttributeError):  # no readable versions attribute: assume an old file
        written_by = None
    return parse_stored_config(str(attrs.get("config_toml", "")), int(attrs["world_size"]), steps, written_by)


def _check_layout(raw: dict, path: Path) -> Config:
    """Schema and shapes: every dataset present with the shape the root attributes imply; returns the stored Config."""
    attrs = raw["attrs"]
    for name in ("world_size", "iterations_done", "iterations_planned"):
        if not isinstance(attrs.get(name), (int, np.integer)):
            raise _damaged(path, f"root attribute {name} is {attrs.get(name)!r}, not an integer")
    P, k = int(attrs["world_size"]), int(attrs["iterations_done"])
    if P < 1 or k < 0:
        raise _damaged(path, f"world_size = {P}, iterations_done = {k}")
    if not isinstance(attrs.get("config_toml"), str):
        raise _damaged(path, "root attribute config_toml is missing or not text")
    for name, values in raw["hyperparameters"].items():
        if values.shape != (P,) or values.dtype.kind != "f":
            raise _damaged(
                path,
                f"/hyperparameters/{name} has shape {values.shape} and type {values.dtype}, expected float64 ({P},)",
            )
    try:
        cfg = stored_config(attrs, raw["hyperparameters"])
    except ConfigError as error:
        raise _damaged(path, f"its config_toml is not a valid config ({error})") from None

    sizes = {"P": P, "E": cfg.iterate_episodes, "phases": len(PHASES)}  # as read: timings with the checkpoint phase
    for field in RECORD_FIELDS:
        data, shape, kind = raw["pool"][field.name], (k, *field.row_shape(sizes)), np.dtype(field.dtype).kind
        if k == 0 and data.size == 0:
            continue
        if data.shape != shape or data.dtype.kind not in (kind + "u" if kind == "i" else kind):  # any integer will do
            raise _damaged(
                path,
                f"/pool/{field.name} has shape {data.shape} and type {data.dtype}, expected {shape} for {k} iterations "
                f"of {P} ranks",
            )

    policy, baseline = raw["current"].policy, raw["current"].baseline
    blocks = feature_blocks(policy.shape[-1] - 1, cfg.features) if policy.ndim == 4 else None
    if (
        policy.ndim != 4
        or policy.shape[:2] != (blocks, 2)
        or baseline.shape != (blocks, policy.shape[3] + cfg.time_feature)
    ):
        raise _damaged(
            path,
            f"/agent/current has policy shape {policy.shape} and baseline shape {baseline.shape}, which do not fit "
            f"{cfg.features} features",
        )
    if raw["best"].policy.shape != policy.shape or raw["best"].baseline.shape != baseline.shape:
        raise _damaged(
            path,
            f"/agent/best has shapes {raw['best'].policy.shape}, {raw['best'].baseline.shape}, unlike /agent/current's "
            f"{policy.shape}, {baseline.shape}",
        )
    obs_dim = policy.shape[3] - 1
    scalers = (0, 0) if cfg.scaler is None else scaler_shape(obs_dim, *cfg.scaler)
    for name in AGENTS:
        agent = raw[name]
        if any(part.dtype.kind != "f" for part in agent):
            raise _damaged(path, f"/agent/{name} is not stored as floating point")
        for part in ("policy_scaler", "baseline_scaler"):
            if getattr(agent, part).shape != scalers:
                raise _damaged(
                    path,
                    f"/agent/{name}/{part} has shape {getattr(agent, part).shape}, but the config's normalisation "
                    f"needs {scalers}",
                )
        if agent.baseline_eta.shape != ((1,) if cfg.eta_travels else (0,)):
            raise _damaged(
                path,
                f"/agent/{name}/baseline_eta has shape {agent.baseline_eta.shape}, but eta_travels = "
                f"{str(cfg.eta_travels).lower()}",
            )
    return cfg


def _check_values(raw: dict, path: Path) -> None:
    """Values: finite where they must be, and the merge bookkeeping consistent row by row.

    Legal non-finite values: -inf scores of degenerate branches (and a -inf best
    score before any branch won), NaN training returns after a branch broke.
    """
    pool, k = raw["pool"], int(raw["attrs"]["iterations_done"])
    for name, values in raw["hyperparameters"].items():
        smallest = 0.0 if name == "eta" else np.nextafter(0.0, 1.0)  # eta = 0: random-search branches train no baseline
        if not (np.all(np.isfinite(values)) and np.all(values >= smallest)):
            raise _damaged(
                path,
                f"/hyperparameters/{name} = {values.tolist()} holds a step size that is "
                f"{'negative' if name == 'eta' else 'not positive'} or not finite",
            )
    for name in ("current", "best"):
        for part, values in raw[name]._asdict().items():
            if not np.all(np.isfinite(values)):
                raise _damaged(
                    path, f"/agent/{name}/{part} holds {np.count_nonzero(~np.isfinite(values))} non-finite values"
                )
    if k == 0:
        return
    scores, degenerate, winner = pool["scores"], pool["degenerate"], pool["winner"]
    rows = np.arange(k)
    bad = (
        np.isnan(scores)
        | np.isposinf(scores)
        | (degenerate & (scores != -np.inf))
        | (~degenerate & ~np.isfinite(scores))
    )
    if bad.any():
        row, rank = np.argwhere(bad)[0]
        raise _damaged(
            path,
            f"/pool/scores[{row}, {rank}] = {scores[row, rank]} with degenerate = {degenerate[row, rank]} (a score is "
            "finite, or -inf for a degenerate branch)",
        )
    expected_winner = np.array([-1 if (w := winner_rank(row)) is None else w for row in scores])
    if (winner != expected_winner).any():
        row = int(np.argmax(winner != expected_winner))
        raise _damaged(
            path,
            f"/pool/winner[{row}] = {winner[row]}, "
            f"but the argmax of that row of /pool/scores is {expected_winner[row]}",
        )
    if np.isinf(pool["train_returns"]).any():
        raise _damaged(path, "/pool/train_returns holds infinite returns")
    if not (np.all(np.isfinite(pool["timings"])) and np.all(pool["timings"] >= 0)):
        raise _damaged(path, "/pool/timings holds negative or non-finite times")
    best_so_far = np.maximum.accumulate(np.where(winner >= 0, scores[rows, np.maximum(winner, 0)], -np.inf))
    if not np.array_equal(pool["best_score"], best_so_far):
        row = int(np.argmax(pool["best_score"] != best_so_far))
        raise _damaged(
            path,
            f"/pool/best_score[{row}] = {pool['best_score'][row]}, but the best winner score up to that iteration is "
            f"{best_so_far[row]}",
        )
    best_iteration, best_score = raw["best_iteration"], raw["best_score"]
    if (
        best_score != best_so_far[-1]
        or not (-1 <= best_iteration < k)
        or (best_iteration == -1) != (best_score == -np.inf)
    ):
        raise _damaged(
            path,
            f"/agent/best has score {best_score} from iteration {best_iteration}, but /pool/best_score ends with "
            f"{best_so_far[-1]}",
        )
    streak = k - 1 - int(np.flatnonzero(winner >= 0)[-1]) if (winner >= 0).any() else k
    if raw["pool_attrs"]["degenerate_streak"] != streak or not 0 <= raw["pool_attrs"]["since_improvement"] <= k:
        raise _damaged(
            path,
            f"/pool attributes {raw['pool_attrs']} disagree with /pool/winner (last {streak} iterations without a "
            "winner)",
        )


def _to_checkpoint(raw: dict, cfg: Config) -> Checkpoint:
    attrs = raw["attrs"]
    done = int(attrs["iterations_done"])
    records = [pool_record(raw["pool"], k) for k in range(done)]
    state = PoolState(
        iteration=done,
        agent=raw["current"],
        best_agent=raw["best"],
        best_score=raw["best_score"],
        best_iteration=raw["best_iteration"],
        since_improvement=raw["pool_attrs"]["since_improvement"],
        degenerate_streak=raw["pool_attrs"]["degenerate_streak"],
    )
    return Checkpoint(
        config_toml=str(attrs["config_toml"]),
        world_size=int(attrs["world_size"]),
        iterations_planned=int(attrs["iterations_planned"]),
        hyperparameters=raw["hyperparameters"],
        state=state,
        records=records,
        attrs=attrs,
        config=cfg,
    )


def check_task_fits(raw: dict, cfg: Config, path: Path) -> None:
    """The stored [env] id must be a registered MuJoCo task (mpiswim.tasks.make_env) whose spaces fit the stored
    agent.
    """
    from mpiswim.tasks import check_task

    try:
        obs_dim, action_dim = check_task(cfg)
    except ConfigError as error:
        raise CheckpointError(
            f"'{path}': its stored config cannot run here: {str(error).removeprefix('config error: ')} "
            "The file was left untouched."
        ) from None
    stored = raw["current"].policy.shape  # (blocks, 2, actions, 1 + observation values)
    if stored[2:] != (action_dim, obs_dim + 1):
        raise _damaged(
            path,
            f"its agent is for {stored[2]} actions and {stored[3] - 1} observation values, but its task "
            f"{quote(cfg.env_id)} has {action_dim} and {obs_dim}",
        )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; raise CheckpointError naming the problem if it is unreadable, damaged, malformed, or its
    task cannot be made here or does not fit its agent.
    """
    path = Path(path)
    raw = read_raw(path)
    cfg = _check_layout(raw, path)
    check_task_fits(raw, cfg, path)
    return _to_checkpoint(raw, cfg)


def check_checkpoint(path: str | Path) -> Checkpoint:
    """load_checkpoint plus every value check (`mpiswim check`, and before a resume)."""
    path = Path(path)
    raw = read_raw(path)
    cfg = _check_layout(raw, path)
    _check_values(raw, path)
    check_task_fits(raw, cfg, path)
    return _to_checkpoint(raw, cfg)


def checkpoint_summary(path: str | Path, checkpoint: Checkpoint) -> str:
    """One line: what a valid checkpoint holds."""
    state, attrs = checkpoint.state, checkpoint.attrs
    best = (
        f"best score {state.best_score:.2f} (iteration {state.best_iteration + 1})"
        if state.best_iteration >= 0
        else "no winner yet"
    )
    degenerate = sum(int(r.degenerate.sum()) for r in checkpoint.records)
    checksum = (
        "checksum verified"
        if CHECKSUM in attrs or int(attrs.get("format_version", 1)) >= 2
        else "no checksum (written by an older mpiswim)"
    )
    return (
        f"OK: {path}: run '{attrs.get('run_name', '')}' on {attrs.get('env_id', '')}, {checkpoint.world_size} ranks, "
        f"{state.iteration} of {checkpoint.iterations_planned} iterations, {best}, {degenerate} degenerate branches, "
        f"{checksum}"
    )
