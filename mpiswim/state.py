"""Pool state: what the pool carries between iterations, what an iteration records, and the merge's bookkeeping.

Also the shared random streams.

No MPI and no JAX here: the checkpoint's readers (`mpiswim info`, `check`,
`analyze`) and the tests use these without starting either. mpiswim/pool.py
runs the iteration; `advance` is the part of it every rank computes alike
from the allgathered scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np

from mpiswim.policy import Agent, copy_agent

# Streams of iteration k that every rank draws alike (rank r's own stream is (seed, k, r)):
# the evaluation episodes under common_evaluation, random search's directions, the [run] target check,
# the action noise under common_action_noise.
EVALUATION_STREAM, DIRECTIONS_STREAM, TARGET_STREAM, ACTION_NOISE_STREAM = 1, 2, 3, 4


def shared_stream(seed: int, iteration: int, key: int) -> np.random.Generator:
    """The generator every rank gets for (seed, iteration, key); no rank's own stream (seed, iteration, rank) equals
    it.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, iteration], spawn_key=(key,)))


PHASES = ("train", "evaluate", "communicate", "checkpoint")


@dataclass(frozen=True)
class PoolState:
    """Everything the pool carries from one iteration to the next (and the checkpoint holds)."""

    iteration: int  # iterations done so far
    agent: Agent  # A_k: the agent every rank starts the next iteration from
    best_agent: Agent  # the run's result: the best-scoring winner so far
    best_score: float
    best_iteration: int  # 0-based iteration that produced best_agent; -1 before any
    since_improvement: int  # iterations since best_score last improved
    degenerate_streak: int  # consecutive iterations in which every branch broke


class RecordField(NamedTuple):
    """One per-iteration dataset of the checkpoint, /pool/<name>: one row per iteration."""

    name: str
    shape: tuple[str, ...]  # of one row, in symbols: "P" ranks, "E" = [pool] iterate_episodes, "phases" (see timings)
    dtype: str  # numpy type as stored in the file
    unit: str
    meaning: str  # also the dataset's "description" attribute
    since: int = 1  # the checkpoint format_version that added the dataset (older files lack it)

    def row_shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape of one row, each symbol replaced by its size in `sizes`."""
        return tuple(sizes[symbol] for symbol in self.shape)


def _stored(shape: tuple[str, ...], dtype: str, unit: str, meaning: str, **more):
    """A field of IterationRecord that is one row of a /pool dataset (see RecordField); `more`: since= and default=."""
    default = {"default": more.pop("default")} if "default" in more else {}
    return field(metadata={"shape": shape, "dtype": dtype, "unit": unit, "meaning": meaning, **more}, **default)


# /pool/steps of an iteration whose steps were not recorded: one written into a file before format_version 3.
NOT_RECORDED = -1


@dataclass
class IterationRecord:
    """What one iteration adds to the checkpoint (complete on rank 0 only): one row of each /pool dataset.

    The fields are the checkpoint's schema (RECORD_FIELDS): mpiswim.checkpoint writes, hashes and
    checks the rows in this order, and docs/checkpoint.md's /pool table is made from it.
    """

    scores: np.ndarray = _stored(
        ("P",), "<f8", "return", "evaluation mean return of each rank's branch; -inf if the branch was degenerate"
    )
    winner: int = _stored(
        (),
        "<i8",
        "rank",
        "rank whose agent was broadcast (argmax of scores, ties to the lowest rank); -1 if every branch was degenerate",
    )
    train_returns: np.ndarray = _stored(
        ("P", "E"),
        "<f8",
        "return",
        "return of each episode each rank ran while improving its branch (REINFORCE episodes, or random search's "
        "+noise/-noise tries, direction by direction); NaN after the branch (or that side) broke",
    )
    # "phases": every one of PHASES here; a row of the file has all but the last, checkpoint, whose time
    # (rank 0's, writing the file) is stored apart (CHECKPOINT_SECONDS).
    timings: np.ndarray = _stored(
        ("P", "phases"),
        "<f8",
        "s",
        "wall time each rank spent in each phase of the iteration (rank 0's checkpoint writing: "
        "/pool/checkpoint_seconds)",
    )
    degenerate: np.ndarray = _stored(
        ("P",), "|b1", "bool", "the branch's Beta shapes overflowed, underflowed or became NaN"
    )
    fell_back: bool = _stored(
        (), "|b1", "bool", "patience ran out: the next iteration started from the best-ever agent"
    )
    best_score: float = _stored(
        (), "<f8", "return", 'best-ever winner score after this iteration (best_by = "fresh": the best fresh_score)'
    )
    steps: np.ndarray | None = _stored(
        ("P",),
        "<i8",
        "step",
        "environment steps each rank ran in the iteration: its update or exploration episodes and its evaluation "
        "episodes (an episode that ends early counts the steps it ran); -1: not recorded (an iteration written before "
        "format_version 3)",
        since=3,
        default=None,  # None: not recorded (stored as -1)
    )
    fresh_score: float = _stored(
        (),
        "<f8",
        "return",
        'with [run] best_by = "fresh": the winner\'s mean return on [run] target_episodes fresh episodes, played '
        "because its score beat the best agent's fresh score (-inf if it broke); NaN when none were played (and in "
        "rows written before format_version 4)",
        since=4,
        default=float("nan"),
    )


# The checkpoint's schema: the /pool datasets, in the order a row is written and hashed.
RECORD_FIELDS = tuple(RecordField(f.name, **f.metadata) for f in fields(IterationRecord))

# The last column of the timings (the checkpoint phase) is known only once the row is written: the file
# keeps rank 0's value in a dataset of its own, written after the commit and outside the checksum.
CHECKPOINT_SECONDS = RecordField(
    "checkpoint_seconds",
    (),
    "<f8",
    "s",
    "wall time rank 0 spent writing this iteration into the file (not covered by the checksum)",
)


def steps_per_iteration(steps: np.ndarray) -> np.ndarray:
    """(k,) environment steps of each iteration, every rank's together, from /pool/steps rows (k, P); NaN where the
    steps were not recorded (NOT_RECORDED).
    """
    return np.where((steps == NOT_RECORDED).any(axis=1), np.nan, steps.sum(axis=1, dtype=np.float64))


def fresh_episode_stream(seed: int, iteration: int, episode: int) -> np.random.Generator:
    """The generator of fresh episode `episode` of iteration `iteration` under best_by = "fresh", whichever rank plays
    it; no other stream equals it.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, iteration], spawn_key=(TARGET_STREAM, episode)))


def initial_state(agent: Agent) -> PoolState:
    return PoolState(0, agent, copy_agent(agent), -np.inf, -1, 0, 0)


# --- the merge rule --------------------------------------------------------


def winner_rank(scores: np.ndarray) -> int | None:
    """Argmax of the scores; ties go to the lowest rank; NaN and +-inf never win.

    Returns None when no score is finite (every branch degenerate).
    """
    finite = np.isfinite(scores)
    if not finite.any():
        return None
    return int(np.argmax(np.where(finite, scores, -np.inf)))


def advance(
    state: PoolState, scores: np.ndarray, winner: int | None, merged: Agent, patience: int, fresh: float | None = None
) -> tuple[PoolState, bool]:
    """The state after iteration state.iteration: the greedy best and patience; returns (next state, fell back).

    `merged` is the agent the merge produced (the winner's branch, or the
    unchanged agent when every branch was degenerate, winner None). A winner
    scoring above the best so far becomes the best agent; with `fresh` (best_by
    = "fresh": the winner's fresh score, NaN if it played none) that score
    decides instead, and the best score is a fresh one. After `patience`
    iterations without a new best (patience > 0) the next iteration starts
    from the best agent instead.
    """
    best_agent, best_score, best_iteration = state.best_agent, state.best_score, state.best_iteration
    since_improvement = state.since_improvement + 1
    value = None if winner is None else float(scores[winner] if fresh is None else fresh)
    if value is not None and value > best_score:  # NaN (no fresh episodes played) never is
        best_agent, best_score, best_iteration = merged, value, state.iteration
        since_improvement = 0
    fell_back = patience > 0 and since_improvement >= patience
    if fell_back:
        merged, since_improvement = best_agent, 0
    next_state = PoolState(
        iteration=state.iteration + 1,
        agent=merged,
        best_agent=best_agent,
        best_score=best_score,
        best_iteration=best_iteration,
        since_improvement=since_improvement,
        degenerate_streak=state.degenerate_streak + 1 if winner is None else 0,
    )
    return next_state, fell_back
