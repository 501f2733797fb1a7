"""Pool state: what the pool carries between iterations, what an iteration records, the merge's bookkeeping, the shared random streams.

No MPI and no JAX here: the checkpoint's readers (`mpiswim info`, `check`,
`analyze`) and the tests use these without starting either. mpiswim/pool.py
runs the iteration; `advance` is the part of it every rank computes alike
from the allgathered scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiswim.policy import Agent, copy_agent

# Streams of iteration k that every rank draws alike (rank r's own stream is (seed, k, r)):
# the evaluation episodes under common_evaluation, random search's directions, the [run] target check,
# the action noise under common_action_noise.
EVALUATION_STREAM, DIRECTIONS_STREAM, TARGET_STREAM, ACTION_NOISE_STREAM = 1, 2, 3, 4


def shared_stream(seed: int, iteration: int, key: int) -> np.random.Generator:
    """The generator every rank gets for (seed, iteration, key); no rank's own stream (seed, iteration, rank) equals it."""
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


@dataclass
class IterationRecord:
    """What one iteration adds to the checkpoint (complete on rank 0 only)."""

    scores: np.ndarray  # (P,) evaluation mean return of each rank; -inf if degenerate
    winner: int  # winning rank, or -1 when every branch was degenerate
    train_returns: np.ndarray  # (P, iterate_episodes); NaN after a branch broke
    timings: np.ndarray  # (P, len(PHASES)) seconds
    degenerate: np.ndarray  # (P,) bool
    fell_back: bool  # the next iteration starts from the best-ever agent (patience)
    best_score: float  # best-ever score after this iteration


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


def advance(state: PoolState, scores: np.ndarray, winner: int | None, merged: Agent, patience: int) -> tuple[PoolState, bool]:
    """The state after iteration state.iteration: the greedy best and patience; returns (next state, fell back).

    `merged` is the agent the merge produced (the winner's branch, or the
    unchanged agent when every branch was degenerate, winner None). A winner
    scoring above the best so far becomes the best agent. After `patience`
    iterations without a new best (patience > 0) the next iteration starts
    from the best agent instead.
    """
    best_agent, best_score, best_iteration = state.best_agent, state.best_score, state.best_iteration
    since_improvement = state.since_improvement + 1
    if winner is not None and scores[winner] > best_score:
        best_agent, best_score, best_iteration = merged, float(scores[winner]), state.iteration
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
