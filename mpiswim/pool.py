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
(seed, k) too (mpiswim.state.shared_stream). Nothing random carries over
between iterations, so a resumed run needs no generator state to give exactly
the numbers of an uninterrupted one.
"""

from __future__ import annotations

import pickle
import socket
from time import perf_counter

import numpy as np

from mpiswim.config import Config
from mpiswim.env import Task, Trajectory, run_episode
from mpiswim.learn import agent_is_finite, update_agent
from mpiswim.policy import Agent, copy_agent, pack_agent, unpack_agent
from mpiswim.search import direction_shape, directions, explore, nudge, search_step
from mpiswim.stall import END, EXPLORATION, RECORD, SCORES, SETUP, STOP, WINNER, StallWatch
from mpiswim.state import (
    ACTION_NOISE_STREAM,
    EVALUATION_STREAM,
    PHASES,
    TARGET_STREAM,
    IterationRecord,
    PoolState,
    advance,
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


def allgather_rows(comm, row: np.ndarray, watch: StallWatch | None = None) -> np.ndarray:
    """Every rank's float64 row, on every rank, stacked in rank order (random search's exploration returns)."""
    mine = np.ascontiguousarray(row, dtype=np.float64)
    table = np.empty((comm.Get_size(), row.size))
    complete(watch, EXPLORATION, comm.Iallgather(mine, table))
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


def end_of_run(comm, watch: StallWatch | None = None) -> None:
    """Every rank waits until every rank has finished (rank 0 its last write)."""
    complete(watch, END, comm.Ibarrier())


# --- one rank's work ---------------------------------------------------------


def improve_branch(
    agent: Agent,
    task: Task,
    rng: np.random.Generator,
    cfg: Config,
    alpha: float,
    eta: float,
    trajectory: Trajectory,
    noise: np.random.Generator | None = None,
) -> tuple[Agent, np.ndarray, bool]:
    """REINFORCE for cfg.iterate_episodes episodes; returns (branch, returns, degenerate). noise: see
    env.run_episode.
    """
    agent = copy_agent(agent)  # the branch is this rank's own: its running scalers change as it acts
    returns = np.full(cfg.iterate_episodes, np.nan)
    for episode in range(cfg.iterate_episodes):
        returns[episode], degenerate = run_episode(task, agent, rng, cfg.T, trajectory, noise=noise)
        if degenerate:
            return agent, returns, True
        agent = update_agent(agent, trajectory, alpha, eta, cfg)
        if not agent_is_finite(agent):
            return agent, returns, True
    return agent, returns, False


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


def fresh_score(agent: Agent, task: Task, cfg: Config, iteration: int, trajectory: Trajectory) -> float:
    """The agent's mean return on cfg.target_episodes fresh episodes, acting as the pool scores ([run] target's check).

    Fresh: a stream of their own (TARGET_STREAM) that no training or evaluation episode draws from.
    """
    stream = shared_stream(cfg.seed, iteration, TARGET_STREAM)
    return evaluate_branch(copy_agent(agent), task, stream, cfg, trajectory, episodes=cfg.target_episodes)[0]


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

    # 1-2. Same start, own branch: improve a copy of A_k with this rank's step sizes.
    started = perf_counter()
    if cfg.learner == "random-search":
        # Explore directions around A_k, pool every rank's returns, step along the pooled direction by this rank's
        # alpha.
        deltas = directions(cfg, state.iteration, direction_shape(state.agent))
        train_returns = explore(state.agent, task, rng, cfg, deltas[rank], trajectory)
        step = search_step(allgather_rows(comm, train_returns, watch), deltas, cfg.search_top)
        branch = nudge(state.agent, step, cfg.alpha[rank])
        degenerate = not agent_is_finite(branch)
    else:
        branch, train_returns, degenerate = improve_branch(
            state.agent, task, rng, cfg, cfg.alpha[rank], cfg.eta[rank], trajectory, noise
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

    # Greedy result and patience: every rank takes the same decisions from the same scores.
    next_state, fell_back = advance(state, scores, winner, next_agent, cfg.patience)

    # 5. Record: rank 0 collects what every rank saw and timed, one float row per rank:
    #    [degenerate, seconds training, evaluating, merging, the training returns...].
    seconds = [trained - started, evaluated - trained, merged - evaluated]
    table = gather_rows(comm, np.concatenate([[degenerate], seconds, train_returns]), watch)
    record = None
    if table is not None:
        degenerate_column, seconds_columns, returns_columns = table[:, 0], table[:, 1:4], table[:, 4:]
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
        )
    return next_state, record
