"""Checkpoint file: the HDF5 layout, written atomically after every iteration.

Rank 0 rewrites the whole file after every iteration: it writes a temporary
file beside the target, syncs it to disk and renames it over the target. A
rename is atomic, so a kill -9 (or a node failure, or a full disk) at any
moment leaves either the previous complete checkpoint or the new one, never a
half-written file. The file is small (a few hundred kB for the seed's 400
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
"""

from __future__ import annotations

import functools
import json
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from mpiswim import __version__
from mpiswim.config import Config
from mpiswim.policy import Agent
from mpiswim.pool import PHASES, IterationRecord, PoolState

FORMAT = "mpiswim-checkpoint"
FORMAT_VERSION = 1


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


def _write_agent(group: h5py.Group, agent: Agent) -> None:
    group.create_dataset("policy", data=agent.policy).attrs["description"] = (
        "log Beta shapes: policy[block, 0 (a) or 1 (b), action dimension, feature]"
    )
    group.create_dataset("baseline", data=agent.baseline).attrs["description"] = "state value weights: baseline[block, feature]"


def save_checkpoint(path: str | Path, cfg: Config, state: PoolState, records: list[IterationRecord]) -> None:
    """Write the checkpoint atomically: temporary file, fsync, rename over `path`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    with h5py.File(temporary, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["world_size"] = cfg.world_size
        f.attrs["iterations_done"] = state.iteration
        f.attrs["iterations_planned"] = cfg.iterations
        f.attrs["config_toml"] = cfg.toml_text
        f.attrs["run_name"] = cfg.name
        f.attrs["env_id"] = cfg.env_id
        f.attrs["versions"] = json.dumps(package_versions())

        pool = f.create_group("pool")
        pool.attrs["since_improvement"] = state.since_improvement
        pool.attrs["degenerate_streak"] = state.degenerate_streak
        columns = {
            "scores": np.array([r.scores for r in records]),
            "winner": np.array([r.winner for r in records], dtype=np.int64),
            "train_returns": np.array([r.train_returns for r in records]),
            "timings": np.array([r.timings for r in records]),
            "degenerate": np.array([r.degenerate for r in records], dtype=bool),
            "fell_back": np.array([r.fell_back for r in records], dtype=bool),
            "best_score": np.array([r.best_score for r in records]),
        }
        for name, data in columns.items():
            dataset = pool.create_dataset(name, data=data)
            dataset.attrs["description"], dataset.attrs["units"] = POOL_DATASETS[name]
        pool["timings"].attrs["phases"] = list(PHASES)

        hyper = f.create_group("hyperparameters")
        for name, values in (("alpha", cfg.alpha), ("eta", cfg.eta)):
            hyper.create_dataset(name, data=np.array(values)).attrs["description"] = f"per-rank {name} (index = rank)"

        agents = f.create_group("agent")
        _write_agent(agents.create_group("current"), state.agent)
        best = agents.create_group("best")
        _write_agent(best, state.best_agent)
        best.attrs["iteration"] = state.best_iteration
        best.attrs["score"] = state.best_score

    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _read_agent(group: h5py.Group) -> Agent:
    return Agent(group["policy"][()], group["baseline"][()])


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; raise CheckpointError naming the problem if it is not one."""
    path = Path(path)
    try:
        handle = h5py.File(path, "r", locking=False)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot open '{path}' as HDF5 ({error}). Fix: give the path of a checkpoint written by `mpiswim train`.") from None
    with handle as f:
        if f.attrs.get("format") != FORMAT:
            raise CheckpointError(f"'{path}' is HDF5 but not an mpiswim checkpoint (attribute format = {f.attrs.get('format')!r}). Fix: give a file written by `mpiswim train`.")
        version = int(f.attrs["format_version"])
        if version != FORMAT_VERSION:
            raise CheckpointError(f"'{path}' has checkpoint format_version {version}; this mpiswim reads {FORMAT_VERSION}. Fix: use the mpiswim version that wrote it.")
        try:
            pool = f["pool"]
            columns = {name: pool[name][()] for name in POOL_DATASETS}
            done = int(f.attrs["iterations_done"])
            records = [
                IterationRecord(
                    scores=columns["scores"][k],
                    winner=int(columns["winner"][k]),
                    train_returns=columns["train_returns"][k],
                    timings=columns["timings"][k],
                    degenerate=columns["degenerate"][k],
                    fell_back=bool(columns["fell_back"][k]),
                    best_score=float(columns["best_score"][k]),
                )
                for k in range(done)
            ]
            best = f["agent/best"]
            state = PoolState(
                iteration=done,
                agent=_read_agent(f["agent/current"]),
                best_agent=_read_agent(best),
                best_score=float(best.attrs["score"]),
                best_iteration=int(best.attrs["iteration"]),
                since_improvement=int(pool.attrs["since_improvement"]),
                degenerate_streak=int(pool.attrs["degenerate_streak"]),
            )
            return Checkpoint(
                config_toml=str(f.attrs["config_toml"]),
                world_size=int(f.attrs["world_size"]),
                iterations_planned=int(f.attrs["iterations_planned"]),
                hyperparameters={name: f["hyperparameters"][name][()] for name in f["hyperparameters"]},
                state=state,
                records=records,
                attrs={key: f.attrs[key] for key in f.attrs},
            )
        except (KeyError, IndexError, ValueError, OSError) as error:
            raise CheckpointError(f"'{path}' is an incomplete or damaged mpiswim checkpoint ({error.__class__.__name__}: {error}). Fix: resume from an intact copy.") from None
