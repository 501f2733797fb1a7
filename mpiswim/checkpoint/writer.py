"""The writer: rank 0's open, locked checkpoint, built whole once and then appended to at fixed offsets.

It also owns a resume's choice between continuing a file in place (`CheckpointWriter.reopen`)
and rebuilding it bigger (`CheckpointWriter.create`): `CheckpointWriter.continue_run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from mpiswim.checkpoint.check import Checkpoint
from mpiswim.checkpoint.format import (
    AGENT_DESCRIPTIONS,
    COMMIT_DTYPE,
    FORMAT,
    FORMAT_VERSION,
    ROW_PHASES,
    SLOTS,
    CheckpointBusy,
    CheckpointError,
    FileImage,
    _commit,
    _record_row,
    _state_agents,
    chain_row,
    header_digest,
    initial_capacity,
    package_versions,
    row_layout,
    stored_agent_datasets,
)
from mpiswim.checkpoint.lock import claim, writer_identity
from mpiswim.checkpoint.place import _write_all, check_space, place_image
from mpiswim.checkpoint.reader import read_raw
from mpiswim.config import Config
from mpiswim.state import CHECKPOINT_SECONDS, PHASES, RECORD_FIELDS, IterationRecord, PoolState, RecordField


def _offsets(f: h5py.File) -> dict[str, int]:
    """Byte offset of every dataset the writer updates in place (contiguous, allocated when the file is built)."""
    pool = [f"pool/{name}" for name in (CHECKPOINT_SECONDS.name, *(field.name for field in RECORD_FIELDS))]
    pool = [name for name in pool if name in f]  # a file of an older format_version lacks the newer datasets
    names = ["commit", "writer", *pool, *(f"agent/{n}" for n in stored_agent_datasets(f))]
    return {name: f[name].id.get_offset() for name in names}


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
        """Continue the file at `path` (locked as `fd`, already checked) in place: one of this FORMAT_VERSION, or of
        format_version 2 with nothing left to append (continue_run decides).
        """
        raw = read_raw(path)
        with h5py.File(path, "r", locking=False) as f:
            offsets = _offsets(f)
        header = header_digest(raw.file_attrs, raw.hyperparameters)
        image = FileImage(b"", offsets, int(raw.file_attrs["capacity"]), header, raw.rows_digest)
        writer = cls(path, fd, cfg, image)
        _write_all(fd, writer_identity(), offsets["writer"])
        os.fsync(fd)
        return writer

    @classmethod
    def continue_run(cls, path: Path, fd: int, cfg: Config, checkpoint: Checkpoint) -> CheckpointWriter:
        """Continue `checkpoint` (checked, read from `path`, locked as `fd`) as the run `cfg` plans it: a resume.

        In place (reopen) when the file is of this FORMAT_VERSION with rows enough for the run, or the
        run has nothing left to do (a format_version 2 file too); otherwise (a format_version 1 or 2
        file, whose rows lack datasets added since, or one compacted at its end) the run is rebuilt
        once, bigger, in this format, and renamed over it (create): rows it did not record read as
        not recorded. On success the writer owns `fd` (kept, or closed after the rename); on an
        error `fd` is still the caller's to close.
        """
        state, attrs, version = checkpoint.state, checkpoint.attrs, int(checkpoint.attrs.get("format_version", 1))
        finished = state.iteration >= cfg.iterations
        room = int(attrs.get("capacity", 0)) >= min(cfg.iterations, initial_capacity(cfg, state.iteration))
        same_config = cfg.toml_text == checkpoint.config.toml_text  # else a new [run] target: the header changes
        if same_config and ((version == FORMAT_VERSION and (room or finished)) or (version >= 2 and finished)):
            return cls.reopen(path, fd, cfg)
        return cls.create(path, cfg, state, checkpoint.records, existing_fd=fd)

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
