"""The file format: its constants and layout, the errors, the hashing, and a record or an agent as stored.

Everything here is pure: no file is opened for writing and no lock is taken. The layout
(rows of /pool from mpiswim.state.IterationRecord's schema, the two agent slots, the commit
records and their hash chain) is described in docs/checkpoint.md; format_version 1 (a file
rewritten whole after every iteration) is hashed by mpiswim.checkpoint.reader.content_digest.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from mpiswim import __version__
from mpiswim.config import Config
from mpiswim.policy import Agent, feature_blocks, scaler_shape
from mpiswim.state import CHECKPOINT_SECONDS, NOT_RECORDED, PHASES, RECORD_FIELDS, IterationRecord, PoolState

FORMAT = "mpiswim-checkpoint"
FORMAT_VERSION = 4  # 3: /pool/steps added to format 2's rows (2026-12); 4: /pool/fresh_score (2026-12)
READABLE_VERSIONS = (1, 2, 3, 4)
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


def _damaged(path: Path, problem: str, kind: type[CheckpointError] = CheckpointError) -> CheckpointError:
    return kind(
        f"'{path}' is not an intact mpiswim checkpoint: {problem}. The file was left untouched. Fix: resume from an "
        "intact copy, or start a new run with another --out."
    )


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


def row_layout(
    world_size: int, iterate_episodes: int, version: int = FORMAT_VERSION
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and type of one iteration's row of every /pool dataset a file of `version` has, in the order they are
    hashed.
    """
    sizes = {"P": world_size, "E": iterate_episodes, "phases": len(ROW_PHASES)}
    return {
        field.name: (field.row_shape(sizes), np.dtype(field.dtype)) for field in RECORD_FIELDS if field.since <= version
    }


def not_recorded(field_name: str, rows: int, world_size: int) -> np.ndarray:
    """The rows of a /pool dataset that a file of an older format_version lacks: /pool/steps NOT_RECORDED, and
    /pool/fresh_score NaN (no fresh episodes played).
    """
    if field_name == "fresh_score":
        return np.full(rows, np.nan)
    assert field_name == "steps", field_name  # a new dataset needs its own "not recorded" value
    return np.full((rows, world_size), NOT_RECORDED, dtype="<i8")


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
    if record.steps is None:
        row["steps"] = np.full(len(record.scores), NOT_RECORDED, dtype="<i8")
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


@dataclass(frozen=True)
class FileImage:
    """A complete checkpoint file built in memory, and where its datasets start in it."""

    data: bytes
    offsets: dict[str, int]  # dataset path -> byte offset of its first element
    capacity: int
    header: bytes  # header_digest of the file
    rows_digest: bytes  # of the rows it holds
