"""What a checkpoint says, for people and scripts: `mpiswim info`'s summary, and a stored agent on fresh episodes.

The CLI prints these (mpiswim/cli.py); analysis scripts and notebooks call
them directly, e.g. `evaluate_agent("runs/default.h5", episodes=20).returns`.
Reading a checkpoint imports neither JAX nor numba; evaluating an agent
builds its environment (MuJoCo through Gymnasium).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiswim.checkpoint import Checkpoint, load_checkpoint
from mpiswim.progress import progress_bar
from mpiswim.state import PHASES, steps_per_iteration


@dataclass
class Evaluation:
    """What `mpiswim evaluate` ran and what it got."""

    returns: np.ndarray  # one per episode; NaN for a degenerate episode
    lengths: np.ndarray  # steps of each episode (up to where a degenerate one stopped)
    env_id: str
    T: int
    action: str  # "mean" or "sample": the one used
    agent: str  # "best", "current", or "initial": the best agent of a run where no branch has won yet


def evaluation_returns(
    path: str, episodes: int, seed: int = 0, agent: str = "best", T: int | None = None, action: str | None = None
) -> tuple[np.ndarray, str, int, str]:
    """evaluate_agent's (returns, env id, T, action used), for scripts (analysis/)."""
    evaluation = evaluate_agent(path, episodes, seed, agent, T, action)
    return evaluation.returns, evaluation.env_id, evaluation.T, evaluation.action


def evaluate_agent(
    path: str, episodes: int, seed: int = 0, agent: str = "best", T: int | None = None, action: str | None = None
) -> Evaluation:
    """Returns of `episodes` no-update episodes of a checkpoint's best (or current) agent.

    The episodes draw from numpy's generator seeded with `seed`, independent of
    the run's own streams; T defaults to the run's, and action ("sample" or
    "mean") to the run's evaluation_action. A degenerate episode gives NaN.
    """
    from mpiswim.env import run_episode, task_for

    checkpoint = load_checkpoint(path)
    cfg = checkpoint.config
    task = task_for(cfg)
    chosen = checkpoint.state.best_agent if agent == "best" else checkpoint.state.agent
    if agent == "best" and checkpoint.state.best_iteration < 0:
        agent = "initial"  # no branch has won yet: the best agent is still the one the run started from
    rng = np.random.default_rng(seed)
    T = T or cfg.T
    action = action or cfg.evaluation_action
    returns, lengths = [], []
    with progress_bar(episodes, f"evaluate {Path(path).name}", "episode") as bar:
        for _ in range(episodes):
            before = task.steps  # the task counts every step it runs, compiled or not
            episode_return, degenerate = run_episode(task, chosen, rng, T, mean_action=action == "mean")
            returns.append(np.nan if degenerate else episode_return)
            lengths.append(task.steps - before)
            bar.update(1)
    return Evaluation(np.array(returns), np.array(lengths, dtype=np.int64), cfg.env_id, T, action, agent)


def info_summary(checkpoint: Checkpoint) -> dict:
    """Everything `mpiswim info` shows (and its --json holds) about a loaded checkpoint."""
    records, state = checkpoint.records, checkpoint.state
    wins = np.bincount([r.winner for r in records if r.winner >= 0], minlength=checkpoint.world_size)
    timings = np.array([r.timings for r in records]) if records else np.zeros((0, checkpoint.world_size, len(PHASES)))
    rows = np.array([r.steps for r in records]) if records else np.zeros((0, checkpoint.world_size), dtype=np.int64)
    steps = steps_per_iteration(rows)
    best_row = state.best_iteration
    return {
        "run_name": str(checkpoint.attrs.get("run_name", "")),
        "env_id": str(checkpoint.attrs.get("env_id", "")),
        "world_size": checkpoint.world_size,
        "iterations_done": state.iteration,
        "iterations_planned": checkpoint.iterations_planned,
        "best_score": state.best_score
        if state.best_iteration >= 0
        else None,  # None: no winner yet (and -inf is not JSON)
        # 1-based, as the log's "(it 70)" and every other output count iterations (the file stores the 0-based row)
        "best_iteration": state.best_iteration + 1 if state.best_iteration >= 0 else None,
        "last_winner_score": float(records[-1].scores[records[-1].winner])
        if records and records[-1].winner >= 0
        else None,
        "wins_per_rank": wins.tolist(),
        "new_bests_per_rank": new_bests(records, checkpoint.world_size),
        "winners": [r.winner for r in records],
        "degenerate_branches": int(sum(r.degenerate.sum() for r in records)),
        "fallbacks": int(sum(r.fell_back for r in records)),
        # best_by = "fresh": winners that played fresh episodes (the best score is then the highest of their means)
        "fresh_checks": int(sum(not np.isnan(r.fresh_score) for r in records)),
        "alpha": checkpoint.hyperparameters["alpha"].tolist(),
        "eta": checkpoint.hyperparameters["eta"].tolist(),
        # Per phase, the slowest rank's time summed over the iterations (checkpoint: rank 0's, the only rank that
        # writes). Different ranks are slowest in different phases, so their sum can exceed the wall time.
        "seconds_per_phase": {
            phase: float(
                timings[:, 0, column].sum() if phase == "checkpoint" else timings[:, :, column].max(axis=1).sum()
            )
            for column, phase in enumerate(PHASES)
        },
        "iteration_seconds": iteration_seconds(timings),
        # Environment steps of every rank's episodes; iterations written before checkpoint format 3 have none.
        "steps": int(np.nansum(steps)) if not np.isnan(steps).all() else None,
        "steps_to_best": int(steps[: best_row + 1].sum())
        if best_row >= 0 and not np.isnan(steps[: best_row + 1]).any()
        else None,  # through the best iteration, if every iteration up to it has its steps
        "steps_not_recorded": int(np.isnan(steps).sum()),
        "versions": json.loads(checkpoint.attrs.get("versions", "{}")),
        "config_toml": checkpoint.config_toml,
    }


def new_bests(records: list, world_size: int) -> list[int]:
    """Per rank, the wins that raised the best-ever score (the improvements of the run)."""
    counts, best = [0] * world_size, -np.inf
    for record in records:
        if record.winner >= 0 and record.scores[record.winner] > best:
            counts[record.winner] += 1
        best = max(best, record.best_score)
    return counts


def iteration_seconds(timings: np.ndarray) -> float:
    """The wall time of the iterations, from their (iterations, ranks, PHASES) timings.

    Each rank times its phases one after the other from the start of an iteration to the end of the merge, so the
    longest rank's train + evaluate + communicate is that iteration's time; rank 0 then writes it (checkpoint).
    Start-up, the target checks and pauses between a stopped and a resumed job are not in it.
    """
    if not len(timings):
        return 0.0
    return float(timings[:, :, :-1].sum(axis=2).max(axis=1).sum() + timings[:, 0, -1].sum())


WINDOWS = 10  # `info` shows the winners over time in at most this many windows; --json has every winner


def winners_over_time(winners: list[int]) -> str:
    """The winners in at most WINDOWS windows, each with its most frequent winner: "1-40: rank 2 (9 of 40), ..."

    Up to WINDOWS iterations, each iteration's own winner. -1 (every branch degenerate) shows as "none".
    """

    def name(rank: int) -> str:
        return "none" if rank < 0 else f"rank {rank}"

    if len(winners) <= WINDOWS:
        return ", ".join(f"{k + 1}: {name(w)}" for k, w in enumerate(winners))
    edges = np.linspace(0, len(winners), WINDOWS + 1).round().astype(int)
    parts = []
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        ranks, counts = np.unique(winners[start:stop], return_counts=True)
        leader = int(np.argmax(counts))  # ties: the lowest rank
        parts.append(f"{start + 1}-{stop}: {name(int(ranks[leader]))} ({counts[leader]} of {stop - start})")
    return ", ".join(parts)
