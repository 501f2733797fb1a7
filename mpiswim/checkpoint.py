"""Checkpoint file: the HDF5 layout, written atomically after every iteration.

Rank 0 rewrites the whole file after every iteration: it builds the HDF5 file
in memory, writes it to a temporary file beside the target, syncs it to disk
and renames it over the target. A rename is atomic, so a kill -9 (or a node
failure, or a full disk) at any moment leaves either the previous complete
checkpoint or the new one, never a half-written file. Building in memory keeps
disk errors out of HDF5: a full disk is one plain OSError from `write`. The file is small (a few hundred kB for the seed's 400
iterations), so rewriting it costs milliseconds. Readers that open the file
during a run see the last complete iteration.

Layout (docs/checkpoint.md has the full description):

    / attrs: format, format_version, world_size, iterations_done, config_toml, ...
    /pool/scores         float64 [iterations_done, P]
    /pool/winner         int64   [iterations_done]
    /pool/train_returns  float64 [iterations_done, P, iterate_episodes]
    /pool/timings        float64 [iterations_done, P, phases]   attr phases
    /pool/degenerate     bool    [iterations_done, P]
    /pool/fell_back      bool    [iterations_done]
    /pool/best_score     float64 [iterations_done]
    /hyperparameters/<name>  float64 [P]
    /agent/current/{policy,baseline}, /agent/best/{policy,baseline} (best: attrs iteration, score)

The root attribute `checksum` (SHA-256 of everything mpiswim reads back: the
root attributes, /pool, /hyperparameters and /agent) lets a reader tell a
damaged file from a good one; files written before it existed
have none and still load. `check_checkpoint` (the `mpiswim check` command)
validates the schema, the shapes and the values; `load_checkpoint` checks the
checksum, schema and shapes, so a damaged file is refused with a message and
never modified.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from mpiswim import __version__
from mpiswim.config import Config, ConfigError, parse_config
from mpiswim.policy import Agent, feature_blocks
from mpiswim.pool import PHASES, IterationRecord, PoolState, winner_rank

FORMAT = "mpiswim-checkpoint"
FORMAT_VERSION = 1
CHECKSUM = "checksum"  # root attribute: "sha256:<hex>" of everything mpiswim reads back (content_digest)

# Test hook (tests/test_faults.py, tests/test_analysis.py): pause this many seconds half-way
# through writing the temporary file, so a test can kill rank 0 or fill the disk
# in the middle of a checkpoint write. Never set it in a real run.
TEST_PAUSE_VARIABLE = "MPISWIM_TEST_PAUSE_IN_CHECKPOINT"


class CheckpointError(Exception):
    """A file that is not a readable mpiswim checkpoint."""


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


@functools.cache  # reading package metadata costs milliseconds; it cannot change during a run
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "mpiswim": __version__}
    for name in ("numpy", "jax", "jaxlib", "mujoco", "gymnasium", "h5py", "mpi4py", "mpich", "openmpi"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


# Meaning and units of every per-iteration dataset; written as attributes.
POOL_DATASETS = {
    "scores": ("evaluation mean return of each rank's branch; -inf if the branch was degenerate", "return"),
    "winner": ("rank whose agent was broadcast (argmax of scores, ties to the lowest rank); -1 if every branch was degenerate", "rank"),
    "train_returns": ("return of each REINFORCE episode each rank ran while improving its branch; NaN after the branch broke", "return"),
    "timings": ("wall time each rank spent in each phase of the iteration; checkpoint = rank 0 writing this file", "s"),
    "degenerate": ("the branch's Beta shapes overflowed, underflowed or became NaN", "bool"),
    "fell_back": ("patience ran out: the next iteration started from the best-ever agent", "bool"),
    "best_score": ("best-ever winner score after this iteration", "return"),
}


def estimated_size(cfg: Config, obs_dim: int, action_dim: int) -> int:
    """Bytes the checkpoint needs after cfg.iterations iterations, rounded up generously."""
    features = obs_dim + 1
    agent = feature_blocks(obs_dim, cfg.features) * features * (2 * action_dim + 1)  # policy + baseline
    per_iteration = cfg.world_size * (1 + cfg.iterate_episodes + len(PHASES) + 1) + 3  # one row of /pool
    data = 8 * (2 * agent + cfg.iterations * per_iteration)  # float64; current and best agent
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


def content_digest(contents: dict) -> str:
    """SHA-256 over everything mpiswim reads from a checkpoint (see _contents), except the checksum."""
    digest = hashlib.sha256()

    def add(label: str, value) -> None:
        for part in (label.encode(), _canonical(value)):
            digest.update(len(part).to_bytes(8, "little") + part)

    for key in sorted(contents["attrs"]):
        if key != CHECKSUM:
            add(f"/@{key}", contents["attrs"][key])
    for group in ("pool", "pool_attrs", "hyperparameters"):
        for key in sorted(contents[group]):
            add(f"{group}/{key}", contents[group][key])
    for which in ("current", "best"):
        add(f"agent/{which}/policy", contents[which].policy)
        add(f"agent/{which}/baseline", contents[which].baseline)
    add("agent/best@iteration", contents["best_iteration"])
    add("agent/best@score", contents["best_score"])
    return "sha256:" + digest.hexdigest()


def _contents(cfg: Config, state: PoolState, records: list[IterationRecord]) -> dict:
    """What a checkpoint holds, as the dictionary that _write_contents writes and _read_file reads back."""
    return {
        "attrs": {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "world_size": cfg.world_size,
            "iterations_done": state.iteration,
            "iterations_planned": cfg.iterations,
            "config_toml": cfg.toml_text,
            "run_name": cfg.name,
            "env_id": cfg.env_id,
            "versions": json.dumps(package_versions()),
        },
        "pool": {
            "scores": np.array([r.scores for r in records]),
            "winner": np.array([r.winner for r in records], dtype=np.int64),
            "train_returns": np.array([r.train_returns for r in records]),
            "timings": np.array([r.timings for r in records]),
            "degenerate": np.array([r.degenerate for r in records], dtype=bool),
            "fell_back": np.array([r.fell_back for r in records], dtype=bool),
            "best_score": np.array([r.best_score for r in records]),
        },
        "pool_attrs": {"since_improvement": state.since_improvement, "degenerate_streak": state.degenerate_streak},
        "hyperparameters": {"alpha": np.array(cfg.alpha), "eta": np.array(cfg.eta)},
        "current": state.agent,
        "best": state.best_agent,
        "best_iteration": state.best_iteration,
        "best_score": state.best_score,
    }


def _write_agent(group: h5py.Group, agent: Agent) -> None:
    group.create_dataset("policy", data=agent.policy).attrs["description"] = "log Beta shapes: policy[block, 0 (a) or 1 (b), action dimension, feature]"
    group.create_dataset("baseline", data=agent.baseline).attrs["description"] = "state value weights: baseline[block, feature] (+ steps-left weight)"


def _write_contents(f: h5py.File, contents: dict) -> None:
    for key, value in contents["attrs"].items():
        f.attrs[key] = value
    f.attrs[CHECKSUM] = content_digest(contents)

    pool = f.create_group("pool")
    for key, value in contents["pool_attrs"].items():
        pool.attrs[key] = value
    for name, data in contents["pool"].items():
        dataset = pool.create_dataset(name, data=data)
        dataset.attrs["description"], dataset.attrs["units"] = POOL_DATASETS[name]
    pool["timings"].attrs["phases"] = list(PHASES)

    hyper = f.create_group("hyperparameters")
    for name, values in contents["hyperparameters"].items():
        hyper.create_dataset(name, data=values).attrs["description"] = f"per-rank {name} (index = rank)"

    agents = f.create_group("agent")
    _write_agent(agents.create_group("current"), contents["current"])
    best = agents.create_group("best")
    _write_agent(best, contents["best"])
    best.attrs["iteration"] = contents["best_iteration"]
    best.attrs["score"] = contents["best_score"]


def checkpoint_image(cfg: Config, state: PoolState, records: list[IterationRecord]) -> bytes:
    """The complete checkpoint file, built in memory (HDF5's core driver, nothing on disk)."""
    with h5py.File(f"mpiswim-checkpoint-{os.getpid()}.h5", "w", driver="core", backing_store=False) as f:
        _write_contents(f, _contents(cfg, state, records))
        f.flush()
        return f.id.get_file_image()


def save_checkpoint(path: str | Path, cfg: Config, state: PoolState, records: list[IterationRecord]) -> None:
    """Write the checkpoint atomically: temporary file, fsync, rename over `path`.

    If anything fails (a full disk: OSError), the temporary file is removed and
    the error raised; the file at `path` is then still the previous checkpoint.
    """
    path = Path(path)
    image = checkpoint_image(cfg, state, records)
    temporary = path.with_name(f".{path.name}.tmp")
    pause = float(os.environ.get(TEST_PAUSE_VARIABLE) or 0)
    try:
        with open(temporary, "wb") as handle:
            if pause:  # tests only: stop with the first half of the file on disk
                half = len(image) // 2
                handle.write(image[:half])
                handle.flush()
                os.fsync(handle.fileno())
                time.sleep(pause)
                image = image[half:]
            handle.write(image)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --- reading and checking ----------------------------------------------------


def _damaged(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"'{path}' is not an intact mpiswim checkpoint: {problem}. The file was left untouched. Fix: resume from an intact copy, or start a new run with another --out.")


def _read_agent(group: h5py.Group) -> Agent:
    return Agent(group["policy"][()], group["baseline"][()])


def _read_file(path: Path) -> dict:
    """Everything in the file as numpy values; CheckpointError if it cannot be read or its checksum fails."""
    try:
        handle = h5py.File(path, "r", locking=False)
    except Exception as error:  # h5py raises OSError for missing/truncated files, others for odd ones
        raise CheckpointError(
            f"cannot open '{path}' as HDF5 ({error}). The file was left untouched. "
            "Fix: give the path of a checkpoint written by `mpiswim train` (a truncated one cannot be repaired: resume from a copy)."
        ) from None
    with handle as f:
        try:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError(f"'{path}' is HDF5 but not an mpiswim checkpoint (attribute format = {f.attrs.get('format')!r}). Fix: give a file written by `mpiswim train`.")
            version = int(f.attrs["format_version"])
            if version != FORMAT_VERSION:
                raise CheckpointError(f"'{path}' has checkpoint format_version {version}; this mpiswim reads {FORMAT_VERSION}. Fix: use the mpiswim version that wrote it.")
            pool = f["pool"]
            contents = {
                "attrs": {key: f.attrs[key] for key in f.attrs},
                "pool": {name: pool[name][()] for name in POOL_DATASETS},
                "pool_attrs": {key: int(pool.attrs[key]) for key in ("since_improvement", "degenerate_streak")},
                "hyperparameters": {name: f["hyperparameters"][name][()] for name in ("alpha", "eta")},
                "current": _read_agent(f["agent/current"]),
                "best": _read_agent(f["agent/best"]),
                "best_iteration": int(f["agent/best"].attrs["iteration"]),
                "best_score": float(f["agent/best"].attrs["score"]),
            }
            stored = contents["attrs"].get(CHECKSUM)
            if stored is not None and str(stored) != content_digest(contents):
                raise _damaged(path, f"its contents do not match the checksum stored when it was written ({stored})")
            return contents
        except CheckpointError:
            raise
        except Exception as error:  # a damaged file can fail in many ways; each one means "damaged"
            raise _damaged(path, f"{error.__class__.__name__}: {error}") from None


def _check_layout(raw: dict, path: Path) -> Config:
    """Schema and shapes: every dataset present with the shape the root attributes imply."""
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
            raise _damaged(path, f"/hyperparameters/{name} has shape {values.shape} and type {values.dtype}, expected float64 ({P},)")
    steps = {name: tuple(float(v) for v in values) for name, values in raw["hyperparameters"].items()}
    try:
        cfg = parse_config(attrs["config_toml"], P, check_env=False, stored_steps=steps)
    except ConfigError as error:
        raise _damaged(path, f"its config_toml is not a valid config ({error})") from None

    expected = {
        "scores": ((k, P), "f"),
        "winner": ((k,), "iu"),
        "train_returns": ((k, P, cfg.iterate_episodes), "f"),
        "timings": ((k, P, len(PHASES)), "f"),
        "degenerate": ((k, P), "b"),
        "fell_back": ((k,), "b"),
        "best_score": ((k,), "f"),
    }
    for name, (shape, kinds) in expected.items():
        data = raw["pool"][name]
        if k == 0 and data.size == 0:
            continue
        if data.shape != shape or data.dtype.kind not in kinds:
            raise _damaged(path, f"/pool/{name} has shape {data.shape} and type {data.dtype}, expected {shape} for {k} iterations of {P} ranks")

    policy, baseline = raw["current"]
    blocks = feature_blocks(policy.shape[-1] - 1, cfg.features) if policy.ndim == 4 else None
    if policy.ndim != 4 or policy.shape[:2] != (blocks, 2) or baseline.shape != (blocks, policy.shape[3] + cfg.time_baseline):
        raise _damaged(path, f"/agent/current has policy shape {policy.shape} and baseline shape {baseline.shape}, which do not fit {cfg.features} features")
    if raw["best"].policy.shape != policy.shape or raw["best"].baseline.shape != baseline.shape:
        raise _damaged(path, f"/agent/best has shapes {raw['best'].policy.shape}, {raw['best'].baseline.shape}, unlike /agent/current's {policy.shape}, {baseline.shape}")
    for name in ("current", "best"):
        if raw[name].policy.dtype.kind != "f" or raw[name].baseline.dtype.kind != "f":
            raise _damaged(path, f"/agent/{name} is not stored as floating point")
    return cfg


def _check_values(raw: dict, path: Path) -> None:
    """Values: finite where they must be, and the merge bookkeeping consistent row by row.

    Legal non-finite values: -inf scores of degenerate branches (and a -inf best
    score before any branch won), NaN training returns after a branch broke.
    """
    pool, k = raw["pool"], int(raw["attrs"]["iterations_done"])
    for name, values in raw["hyperparameters"].items():
        if not (np.all(np.isfinite(values)) and np.all(values > 0)):
            raise _damaged(path, f"/hyperparameters/{name} = {values.tolist()} holds a step size that is not positive and finite")
    for name in ("current", "best"):
        for part, values in raw[name]._asdict().items():
            if not np.all(np.isfinite(values)):
                raise _damaged(path, f"/agent/{name}/{part} holds {np.count_nonzero(~np.isfinite(values))} non-finite values")
    if k == 0:
        return
    scores, degenerate, winner = pool["scores"], pool["degenerate"], pool["winner"]
    rows = np.arange(k)
    bad = np.isnan(scores) | np.isposinf(scores) | (degenerate & (scores != -np.inf)) | (~degenerate & ~np.isfinite(scores))
    if bad.any():
        row, rank = np.argwhere(bad)[0]
        raise _damaged(path, f"/pool/scores[{row}, {rank}] = {scores[row, rank]} with degenerate = {degenerate[row, rank]} (a score is finite, or -inf for a degenerate branch)")
    expected_winner = np.array([-1 if (w := winner_rank(row)) is None else w for row in scores])
    if (winner != expected_winner).any():
        row = int(np.argmax(winner != expected_winner))
        raise _damaged(path, f"/pool/winner[{row}] = {winner[row]}, but the argmax of that row of /pool/scores is {expected_winner[row]}")
    if np.isinf(pool["train_returns"]).any():
        raise _damaged(path, "/pool/train_returns holds infinite returns")
    if not (np.all(np.isfinite(pool["timings"])) and np.all(pool["timings"] >= 0)):
        raise _damaged(path, "/pool/timings holds negative or non-finite times")
    best_so_far = np.maximum.accumulate(np.where(winner >= 0, scores[rows, np.maximum(winner, 0)], -np.inf))
    if not np.array_equal(pool["best_score"], best_so_far):
        row = int(np.argmax(pool["best_score"] != best_so_far))
        raise _damaged(path, f"/pool/best_score[{row}] = {pool['best_score'][row]}, but the best winner score up to that iteration is {best_so_far[row]}")
    best_iteration, best_score = raw["best_iteration"], raw["best_score"]
    if best_score != best_so_far[-1] or not (-1 <= best_iteration < k) or (best_iteration == -1) != (best_score == -np.inf):
        raise _damaged(path, f"/agent/best has score {best_score} from iteration {best_iteration}, but /pool/best_score ends with {best_so_far[-1]}")
    streak = k - 1 - int(np.flatnonzero(winner >= 0)[-1]) if (winner >= 0).any() else k
    if raw["pool_attrs"]["degenerate_streak"] != streak or not 0 <= raw["pool_attrs"]["since_improvement"] <= k:
        raise _damaged(path, f"/pool attributes {raw['pool_attrs']} disagree with /pool/winner (last {streak} iterations without a winner)")


def _to_checkpoint(raw: dict) -> Checkpoint:
    pool, attrs = raw["pool"], raw["attrs"]
    done = int(attrs["iterations_done"])
    records = [
        IterationRecord(
            scores=pool["scores"][k],
            winner=int(pool["winner"][k]),
            train_returns=pool["train_returns"][k],
            timings=pool["timings"][k],
            degenerate=pool["degenerate"][k],
            fell_back=bool(pool["fell_back"][k]),
            best_score=float(pool["best_score"][k]),
        )
        for k in range(done)
    ]
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
    )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; raise CheckpointError naming the problem if it is unreadable, damaged or malformed."""
    path = Path(path)
    raw = _read_file(path)
    _check_layout(raw, path)
    return _to_checkpoint(raw)


def check_checkpoint(path: str | Path) -> Checkpoint:
    """load_checkpoint plus every value check (`mpiswim check`, and before a resume)."""
    path = Path(path)
    raw = _read_file(path)
    _check_layout(raw, path)
    _check_values(raw, path)
    return _to_checkpoint(raw)


def checkpoint_summary(path: str | Path, checkpoint: Checkpoint) -> str:
    """One line: what a valid checkpoint holds."""
    state, attrs = checkpoint.state, checkpoint.attrs
    best = f"best score {state.best_score:.2f} (iteration {state.best_iteration + 1})" if state.best_iteration >= 0 else "no winner yet"
    degenerate = sum(int(r.degenerate.sum()) for r in checkpoint.records)
    checksum = "checksum verified" if CHECKSUM in attrs else "no checksum (written by an older mpiswim)"
    return (
        f"OK: {path}: run '{attrs.get('run_name', '')}' on {attrs.get('env_id', '')}, {checkpoint.world_size} ranks, "
        f"{state.iteration} of {checkpoint.iterations_planned} iterations, {best}, {degenerate} degenerate branches, {checksum}"
    )
