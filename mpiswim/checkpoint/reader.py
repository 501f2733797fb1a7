"""The two readers (format_version 1, and 2 or 3) and their typed result, RawCheckpoint; the stored config.

Reading is read-only and takes no HDF5 file lock, so it works on a run in progress and can
never block or fail the writer: a format_version 2 or 3 file is read as of its newest commit
record whose checksum holds. A file of an older format lacks the /pool datasets added since
(format 3 added /pool/steps): they read as "not recorded". Nothing here checks shapes or
values: mpiswim.checkpoint.check does.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from mpiswim.checkpoint.format import (
    CHECKSUM,
    FORMAT,
    READABLE_VERSIONS,
    SLOTS,
    CheckpointError,
    ChecksumMismatch,
    _agent_from,
    _damaged,
    _hash_items,
    chain_row,
    commit_checksum,
    header_digest,
    not_recorded,
    row_layout,
    stored_agent_datasets,
)
from mpiswim.config import HYPERPARAMETERS, Config, parse_stored_config
from mpiswim.plain_hdf5 import UnplainData, refuse_unplain
from mpiswim.policy import Agent
from mpiswim.state import CHECKPOINT_SECONDS, PHASES, RECORD_FIELDS


@dataclass(frozen=True, eq=False)
class RawCheckpoint:
    """Everything a checkpoint holds, as read_raw reads it: numpy values, the rows trimmed to the iterations done.

    Only the checksums are verified (a file whose contents do not match them is not read at all);
    shapes, types and values are as stored, for mpiswim.checkpoint.check to judge.
    """

    attrs: dict[str, object]  # the root attributes, with iterations_done and iterations_planned as committed
    file_attrs: dict[str, object]  # the root attributes as stored (format 2 and 3: what the header digest covers)
    pool: dict[str, np.ndarray]  # /pool/<field> for every field of RECORD_FIELDS: [iterations_done, ...] rows, and
    # timings with every phase of PHASES (formats 2 and 3 store the checkpoint phase apart: it is put back); a dataset
    # the file's format_version predates reads as not recorded (steps: NOT_RECORDED)
    hyperparameters: dict[str, np.ndarray]  # the step sizes, HYPERPARAMETERS: [P] each, index = rank
    current: Agent  # the agent the next iteration starts from
    best: Agent  # the best-ever agent: the run's result
    best_iteration: int  # 0-based row whose winner is the best agent; -1 before any winner
    best_score: float  # its score; -inf before any winner
    since_improvement: int  # iterations since the best score last rose (patience)
    degenerate_streak: int  # iterations in a row without a winner
    rows_digest: (
        bytes | None
    )  # formats 2, 3: the hash chain over the rows read, which a writer continues; format 1: None

    @property
    def iterations_done(self) -> int:
        """Completed iterations (the rows of /pool)."""
        return int(self.attrs["iterations_done"])

    @property
    def pool_attributes(self) -> dict[str, int]:
        """The pool's counters as format 1 stores them, as /pool attributes (and as messages show them)."""
        return {"since_improvement": self.since_improvement, "degenerate_streak": self.degenerate_streak}

    def agent(self, which: str) -> Agent:
        """The agent stored under /agent/<which>: "current" or "best" (format.AGENTS)."""
        return {"current": self.current, "best": self.best}[which]


def content_digest(raw: RawCheckpoint) -> str:
    """format_version 1: SHA-256 over everything mpiswim reads from a checkpoint, except the checksum."""
    items = [(f"/@{key}", raw.attrs[key]) for key in sorted(raw.attrs) if key != CHECKSUM]
    version_1_rows = {field.name: raw.pool[field.name] for field in RECORD_FIELDS if field.since <= 1}
    for group, values in (
        ("pool", version_1_rows),
        ("pool_attrs", raw.pool_attributes),
        ("hyperparameters", raw.hyperparameters),
    ):
        items += [(f"{group}/{key}", values[key]) for key in sorted(values)]
    for which in ("current", "best"):
        items += [
            (f"agent/{which}/policy", raw.agent(which).policy),
            (f"agent/{which}/baseline", raw.agent(which).baseline),
        ]
    items += [("agent/best@iteration", raw.best_iteration), ("agent/best@score", raw.best_score)]
    return "sha256:" + _hash_items(items).hexdigest()


def _read_v1(f: h5py.File, path: Path) -> RawCheckpoint:
    """A format_version 1 file (rewritten whole after every iteration)."""
    pool = f["pool"]
    attrs = {key: f.attrs[key] for key in f.attrs}
    raw = RawCheckpoint(
        attrs=attrs,
        file_attrs=dict(attrs),
        pool=_pool_rows(pool, None, int(attrs["world_size"]), 1),
        since_improvement=int(pool.attrs["since_improvement"]),  # the keywords in the order a damaged file fails
        degenerate_streak=int(pool.attrs["degenerate_streak"]),
        hyperparameters={name: f["hyperparameters"][name][()] for name in HYPERPARAMETERS},
        current=Agent(f["agent/current/policy"][()], f["agent/current/baseline"][()]),
        best=Agent(f["agent/best/policy"][()], f["agent/best/baseline"][()]),
        best_iteration=int(f["agent/best"].attrs["iteration"]),
        best_score=float(f["agent/best"].attrs["score"]),
        rows_digest=None,
    )
    stored = attrs.get(CHECKSUM)
    if stored is not None and str(stored) != content_digest(raw):
        raise _damaged(
            path, f"its contents do not match the checksum stored when it was written ({stored})", ChecksumMismatch
        )
    return raw


def _pool_rows(group: h5py.Group, k: int | None, world_size: int, version: int) -> dict[str, np.ndarray]:
    """The first k rows (None: all) of every /pool dataset of RECORD_FIELDS; those added after the file's format_version
    read as not recorded (a dataset its version has and the file lacks is damage: KeyError).
    """
    pool = {}
    for field in RECORD_FIELDS:
        if field.since <= version:
            pool[field.name] = group[field.name][()] if k is None else group[field.name][:k]
        else:
            pool[field.name] = not_recorded(field.name, len(pool["winner"]), world_size)
    return pool


def _read_v2(f: h5py.File, path: Path) -> RawCheckpoint:
    """A format_version 2 or 3 file: the newest valid commit record, and the rows and agent slot it names."""
    file_attrs = {key: f.attrs[key] for key in f.attrs}
    hyperparameters = {name: f["hyperparameters"][name][()] for name in HYPERPARAMETERS}
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
    world_size, version = int(file_attrs["world_size"]), int(file_attrs["format_version"])
    pool = _pool_rows(f["pool"], k, world_size, version)
    layout = row_layout(
        world_size, pool["train_returns"].shape[-1] if pool["train_returns"].ndim == 3 else 0, version
    )  # the datasets of the file's own format_version, which its rows digest covers
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
    agents = {name: values[slot] for name, values in slots.items()}
    return RawCheckpoint(
        attrs=dict(file_attrs, iterations_done=k, iterations_planned=int(record["iterations_planned"])),
        file_attrs=file_attrs,
        pool=pool,
        since_improvement=int(record["since_improvement"]),
        degenerate_streak=int(record["degenerate_streak"]),
        hyperparameters=hyperparameters,
        current=_agent_from(agents, "current"),
        best=_agent_from(agents, "best"),
        best_iteration=int(record["best_iteration"]),
        best_score=float(record["best_score"]),
        rows_digest=rows_digest,
    )


def read_raw(path: str | Path, attempts: int = 3) -> RawCheckpoint:
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


def _read_once(path: Path) -> RawCheckpoint:
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
