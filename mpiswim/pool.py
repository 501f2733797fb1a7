"""Pool protocol: one branch-and-merge iteration over MPI.

`pool_iteration` is the heart of mpiswim and reads top to bottom:
every rank starts from the same agent, improves its own branch (REINFORCE
episodes, or a step along the pooled random-search direction), evaluates
it without updates, the ranks allgather their scores, and the winner's agent
(policy and baseline) is broadcast to every rank. The MPI helpers below are a
few lines each and use mpi4py's buffer (upper-case) calls.

Stalls: every collective of a run is a non-blocking call completed by a
`StallWatch` (mpiswim/stall.py), which polls it against a deadline and ends
the job, naming the silent rank, if a rank never comes.

Random streams: rank r in iteration k draws everything (actions and episode
seeds) from numpy's generator seeded with (seed, k, r). With
`common_evaluation`, the evaluation episodes of iteration k instead draw from
one stream shared by every rank, so all branches meet the same start states
and the same noise (common random numbers). Random search's directions
(mpiswim/search.py) and the `[run] target` check draw from shared streams of
(seed, k) too (mpiswim.state.shared_stream), and with `[run] best_by =
"fresh"` each fresh episode from one of (seed, k, episode), whichever rank
plays it. Nothing random carries over
between iterations, so a resumed run needs no generator state to give exactly
the numbers of an uninterrupted one.
"""

from __future__ import annotations

import importlib
import pickle
import socket
from collections.abc import Callable
from time import perf_counter
from typing import Protocol

import numpy as np

from mpiswim.config import LEARNERS, Config
from mpiswim.env import Task, Trajectory, run_episode
from mpiswim.policy import Agent, copy_agent, pack_agent, unpack_agent
from mpiswim.stall import END, FRESH, RECORD, SCORES, SETUP, SHARE, STOP, WINNER, StallWatch
from mpiswim.state import (
    ACTION_NOISE_STREAM,
    EVALUATION_STREAM,
    PHASES,
    TARGET_STREAM,
    IterationRecord,
    PoolState,
    advance,
    fresh_episode_stream,
    shared_stream,
    winner_rank,
)

# --- MPI helpers -------------------------------------------------------------
# Each posts one non-blocking collective and completes it through the watch
# (without a watch: a plain blocking wait).


def complete(watch: StallWatch | None, stage: str, request) -> None:
    """Wait for one collective request, against the watch's deadline if there is a watch."""
    if watch is None:
        request.Wait()
    else:
        watch.wait([request], stage)


def allgather_scores(comm, score: float, watch: StallWatch | None = None) -> np.ndarray:
    """Every rank's score, on every rank, in rank order."""
    mine, scores = np.array([score], dtype=np.float64), np.empty(comm.Get_size())
    complete(watch, SCORES, comm.Iallgather(mine, scores))
    return scores


def allgather_rows(comm, row: np.ndarray, watch: StallWatch | None = None, stage: str = SHARE) -> np.ndarray:
    """Every rank's float64 row, on every rank, stacked in rank order (a learner's share: random search's returns)."""
    mine = np.ascontiguousarray(row, dtype=np.float64)
    table = np.empty((comm.Get_size(), row.size))
    complete(watch, stage, comm.Iallgather(mine, table))
    return table


def broadcast_agent(comm, agent: Agent, root: int, watch: StallWatch | None = None) -> Agent:
    """Replace every rank's agent by root's, sent as one float64 buffer."""
    flat = pack_agent(agent)
    complete(watch, WINNER, comm.Ibcast(flat, root=root))
    return unpack_agent(flat, agent)


def gather_rows(comm, row: np.ndarray, watch: StallWatch | None = None) -> np.ndarray | None:
    """Stack one float64 row per rank on rank 0 (None elsewhere)."""
    mine = np.ascontiguousarray(row, dtype=np.float64)
    table = np.empty((comm.Get_size(), row.size)) if comm.Get_rank() == 0 else None
    complete(watch, RECORD, comm.Igather(mine, table, root=0))
    return table


def combine_stops(comm, bits: int, watch: StallWatch | None = None) -> int:
    """Bitwise OR of every rank's stop bits, on every rank (train.run_loop's check after each iteration)."""
    from mpi4py import MPI

    mine, combined = np.array([bits], dtype=np.int64), np.empty(1, dtype=np.int64)
    complete(watch, STOP, comm.Iallreduce(mine, combined, op=MPI.BOR))
    return int(combined[0])


def broadcast_object(comm, obj, watch: StallWatch | None = None, root: int = 0):
    """Root's picklable object on every rank: its length, then its bytes (the run's set-up)."""
    data = (
        np.frombuffer(bytearray(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)), dtype=np.uint8)
        if comm.Get_rank() == root
        else None
    )
    size = np.array([0 if data is None else data.size], dtype=np.int64)
    complete(watch, SETUP, comm.Ibcast(size, root=root))
    data = np.empty(int(size[0]), dtype=np.uint8) if data is None else data
    complete(watch, SETUP, comm.Ibcast(data, root=root))
    return pickle.loads(data.tobytes())


HOST_BYTES = 64  # a host name as gather_hosts sends it (UTF-8, zero-padded, cut to this length)


def gather_hosts(comm, watch: StallWatch | None = None) -> list[str] | None:
    """Every rank's host name, in rank order, on rank 0 (None elsewhere): where the pool's ranks run."""
    mine = np.zeros(HOST_BYTES, dtype=np.uint8)
    name = socket.gethostname().encode()[:HOST_BYTES]
    mine[: len(name)] = np.frombuffer(name, dtype=np.uint8)
    table = np.empty((comm.Get_size(), HOST_BYTES), dtype=np.uint8) if comm.Get_rank() == 0 else None
    complete(watch, SETUP, comm.Igather(mine, table, root=0))
    return None if table is None else [bytes(row).rstrip(b"\0").decode(errors="replace") for row in table]


def ranks_per_host(hosts: list[str]) -> str:
    """'n1 0-1, n2 2-3': each host (in order of its first rank) with its ranks as runs of consecutive numbers."""
    runs: dict[str, list[list[int]]] = {}  # host -> [[first, last], ...]
    for rank, host in enumerate(hosts):
        mine = runs.setdefault(host, [])
        if mine and mine[-1][1] == rank - 1:
            mine[-1][1] = rank
        else:
            mine.append([rank, rank])
    return ", ".join(
        f"{host} " + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) for host, spans in runs.items()
    )


def end_of_run(comm, code: int, watch: StallWatch | None = None) -> int:
    """Every rank waits until rank 0 has finished (its last write); returns rank 0's exit code on every rank."""
    buffer = np.array([code], dtype=np.int64)
    complete(watch, END, comm.Ibcast(buffer, root=0))
    return int(buffer[0])


# --- one rank's work ---------------------------------------------------------


class Learner(Protocol):
    """How a rank improves its branch: one function per `[pool] learner`, registered in mpiswim.config.LEARNERS.

    It gets the pool's agent A_k (its own to copy, never to change), the task, this rank's
    stream `rng`, the config, its rank and the iteration, a scratch trajectory, the shared
    action stream `noise` (or None) and `share(row)`, which allgathers one float row per rank
    and returns every rank's rows in rank order: the one exchange before the merge a learner
    may make (every rank must call it, or none). It returns (branch, one training return per
    `iterate_episodes`, degenerate). The pool does the rest: evaluation, merge, record.
    """

    def __call__(
        self,
        agent: Agent,
        task: Task,
        rng: np.random.Generator,
        cfg: Config,
        rank: int,
        iteration: int,
        trajectory: Trajectory,
        noise: np.random.Generator | None,
        share: Callable[[np.ndarray], np.ndarray],
    ) -> tuple[Agent, np.ndarray, bool]: ...


def learner(name: str) -> Learner:
    """The learner registered as `name` in mpiswim.config.LEARNERS ("module:function")."""
    module, function = LEARNERS[name].split(":")
    return getattr(importlib.import_module(module), function)


def evaluate_branch(
    agent: Agent,
    task: Task,
    rng: np.random.Generator,
    cfg: Config,
    trajectory: Trajectory,
    episodes: int | None = None,
    noise: np.random.Generator | None = None,
) -> tuple[float, bool]:
    """Mean return of cfg.evaluate_episodes (or `episodes`) no-update episodes; (-inf, True) if the policy breaks.

    No update, but with running normalisation the agent's policy scaler goes on
    seeing observations (in place), as the seed run's agent did: the winner carries it on.
    """
    returns = np.empty(episodes or cfg.evaluate_episodes)
    for episode in range(returns.size):
        returns[episode], degenerate = run_episode(
            task, agent, rng, cfg.T, trajectory, mean_action=cfg.evaluation_action == "mean", noise=noise
        )
        if degenerate:
            return -np.inf, True
    return float(returns.mean()), False


def fresh_score(
    agent: Agent,
    task: Task,
    cfg: Config,
    iteration: int,
    trajectory: Trajectory,
    keep_going: Callable[[], bool] = lambda: True,
) -> float | None:
    """The agent's mean return on cfg.target_episodes fresh episodes, acting as the pool scores ([run] target's check).

    Fresh: a stream of their own (TARGET_STREAM) that no training or evaluation episode draws from.
    keep_going is asked before every episode; None if it said no. The same numbers as
    evaluate_branch on those episodes.
    """
    stream, agent = shared_stream(cfg.seed, iteration, TARGET_STREAM), copy_agent(agent)
    returns = np.empty(cfg.target_episodes)
    for episode in range(returns.size):
        if not keep_going():
            return None
        returns[episode], degenerate = run_episode(
            task, agent, stream, cfg.T, trajectory, mean_action=cfg.evaluation_action == "mean"
        )
        if degenerate:
            return -np.inf
    return float(returns.mean())


def pooled_fresh_score(
    comm, agent: Agent, task: Task, cfg: Config, iteration: int, trajectory: Trajectory, watch: StallWatch | None = None
) -> float:
    """The agent's mean return on cfg.target_episodes fresh episodes, on every rank (best_by = "fresh").

    The ranks share the episodes: rank r plays episodes r, r + P, ..., each from
    its own stream (fresh_episode_stream), so the mean is the same for any P;
    -inf if the agent breaks in any of them.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    mine, agent = np.full(cfg.target_episodes, np.nan), copy_agent(agent)  # a copy: the episodes change nothing
    for episode in range(rank, cfg.target_episodes, size):
        stream = fresh_episode_stream(cfg.seed, iteration, episode)
        mine[episode], degenerate = run_episode(
            task, agent, stream, cfg.T, trajectory, mean_action=cfg.evaluation_action == "mean"
        )
        if degenerate:
            mine[episode] = -np.inf
    table = allgather_rows(comm, mine, watch, FRESH)
    returns = table[np.arange(cfg.target_episodes) % size, np.arange(cfg.target_episodes)]  # each from its player
    return float(returns.mean())


# --- the pool iteration ------------------------------------------------------


def evaluation_stream(cfg: Config, iteration: int, training_stream: np.random.Generator) -> np.random.Generator:
    """The random stream of this rank's evaluation episodes.

    Without common_evaluation it simply continues the training stream. With
    it, every rank gets the same stream: a spawn of (seed, iteration) that no
    rank's training stream (seed, iteration, rank) can equal.
    """
    if not cfg.common_evaluation:
        return training_stream
    return shared_stream(cfg.seed, iteration, EVALUATION_STREAM)


def pool_iteration(
    comm, cfg: Config, task: Task, state: PoolState, trajectory: Trajectory, watch: StallWatch | None = None
) -> tuple[PoolState, IterationRecord]:
    """Run iteration state.iteration on every rank; return the next state and the record.

    `trajectory` is this rank's scratch record of one episode, reused by every episode.
    `watch` completes the collectives against the stall deadline (None: plain blocking waits).
    """
    rank = comm.Get_rank()
    if watch is not None:
        watch.begin_iteration(state.iteration + 1)
    rng = np.random.default_rng([cfg.seed, state.iteration, rank])
    # The seed run's library drew every rank's actions from one generator carried with the agent: one shared stream,
    # continued
    # from the update episodes into the evaluation ones (the start states stay the rank's own).
    noise = shared_stream(cfg.seed, state.iteration, ACTION_NOISE_STREAM) if cfg.common_action_noise else None

    # 1-2. Same start, own branch: the learner improves a copy of A_k with this rank's step sizes (REINFORCE
    # episodes, or a step along the direction pooled from every rank's random tries, which it shares through share).
    started, steps_before = perf_counter(), task.steps
    improve = learner(cfg.learner)
    branch, train_returns, degenerate = improve(
        state.agent,
        task,
        rng,
        cfg,
        rank,
        state.iteration,
        trajectory,
        noise,
        lambda row: allgather_rows(comm, row, watch),
    )
    trained = perf_counter()

    # 3. Evaluate the branch without updates; a broken branch scores -inf.
    score = -np.inf
    if not degenerate:
        common = cfg.common_evaluation  # its stream already gives every rank the same start states and noise
        score, degenerate = evaluate_branch(
            branch, task, evaluation_stream(cfg, state.iteration, rng), cfg, trajectory, noise=None if common else noise
        )
    evaluated = perf_counter()

    # 4. Merge: everyone learns every score and takes the winner's agent.
    scores = allgather_scores(comm, score, watch)
    winner = winner_rank(scores)
    if winner is None:
        next_agent = state.agent  # every branch broke: keep A_k rather than promote a broken one
    else:
        next_agent = broadcast_agent(comm, branch, root=winner, watch=watch)
    merged = perf_counter()

    # 4b. best_by = "fresh": a winner scoring above the best agent's fresh score plays fresh episodes, which every
    # rank shares; only their mean may make it the best agent (its own score is the highest of P noisy means).
    fresh = None if cfg.best_by == "recorded" else np.nan
    if fresh is not None and winner is not None and scores[winner] > state.best_score:
        fresh = pooled_fresh_score(comm, next_agent, task, cfg, state.iteration, trajectory, watch)
    checked = perf_counter()

    # Greedy result and patience: every rank takes the same decisions from the same scores.
    next_state, fell_back = advance(state, scores, winner, next_agent, cfg.patience, fresh)

    # 5. Record: rank 0 collects what every rank saw, timed and ran, one float row per rank:
    #    [degenerate, seconds training, evaluating, merging, environment steps, the training returns...].
    #    The steps are every episode this rank ran on its task in this iteration (a float holds them exactly: < 2^53).
    seconds = [trained - started, evaluated - trained + checked - merged, merged - evaluated]  # fresh play: evaluate
    steps = task.steps - steps_before
    table = gather_rows(comm, np.concatenate([[degenerate], seconds, [steps], train_returns]), watch)
    record = None
    if table is not None:
        degenerate_column, seconds_columns, returns_columns = table[:, 0], table[:, 1:4], table[:, 5:]
        timings = np.zeros((comm.Get_size(), len(PHASES)))  # the checkpoint column: rank 0 fills it in after writing
        timings[:, :3] = seconds_columns
        record = IterationRecord(
            scores=scores,
            winner=-1 if winner is None else winner,
            train_returns=returns_columns,
            timings=timings,
            degenerate=degenerate_column.astype(bool),
            fell_back=fell_back,
            best_score=next_state.best_score,
            steps=table[:, 4].astype(np.int64),
            fresh_score=np.nan if fresh is None else fresh,
        )
    return next_state, record
