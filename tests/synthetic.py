"""A small checkpoint with known numbers, written by mpiswim.checkpoint.save_checkpoint (no training).

Three ranks (alpha 1e-5, 1e-4, 1e-4), six of ten planned iterations, Swimmer-shaped
agents: the best agent's policy is filled with BEST_MARK, the current one with CURRENT_MARK.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpiswim.checkpoint import save_checkpoint
from mpiswim.config import DEFAULT_CONFIG, apply_overrides, parse_config
from mpiswim.policy import Agent, initial_agent
from mpiswim.state import IterationRecord, PoolState

NEG = -np.inf
SCORES = np.array(
    [
        [1.0, 3.0, 2.0],  # winner 1
        [5.0, 4.0, NEG],  # winner 0; rank 2 degenerate
        [NEG, NEG, NEG],  # every branch degenerate: no winner
        [2.0, 6.0, 6.0],  # tie: the lowest rank (1) wins
        [7.0, 1.0, 0.0],  # winner 0: the best (iteration 5)
        [3.0, 2.0, 4.0],  # winner 2
    ]
)
WINNERS = [1, 0, -1, 1, 0, 2]
BEST = [3.0, 5.0, 5.0, 6.0, 7.0, 7.0]
BEST_ROW = 4  # 0-based row of the best agent
ALPHA, ETA = [1e-5, 1e-4, 1e-4], [1e-4, 1e-3, 1e-3]
BEST_MARK, CURRENT_MARK = 0.01, 0.02


def steps(row: int) -> np.ndarray:
    """(P,) environment steps of iteration `row`: 100 (row + 1) + 10 rank (all ranks: 330, 630, ... 1830; 6480 in all,
    4650 up to the best, row 4).
    """
    return 100 * (row + 1) + 10 * np.arange(3)


def timings(row: int) -> np.ndarray:
    """(P, 4) seconds: train 1.0 + 0.1 rank, evaluate 0.5, communicate 0.2 (2 - rank), checkpoint 0.05 on rank 0."""
    table = np.zeros((3, 4))
    table[:, 0] = 1.0 + 0.1 * np.arange(3)
    table[:, 1] = 0.5
    table[:, 2] = 0.2 * (2 - np.arange(3))
    table[0, 3] = 0.05
    return table


def write_synthetic_checkpoint(
    path: Path,
    rows: int = len(WINNERS),
    planned: int = 10,
    evaluation_action: str = "sample",
    offset: float = 0.0,
    settings: dict[str, object] | None = None,
    step_factor: int = 1,
) -> Path:
    """Write the first `rows` iterations of the table above as a checkpoint at `path`.

    `offset` is added to every score (and best score); `settings` are `--set`
    overrides of DEFAULT_CONFIG (section.key -> value, e.g. {"env.T": 200, "ranks.eta": 1e-3}); every
    iteration's steps are multiplied by `step_factor`.
    """
    overrides = [
        f"ranks.alpha={ALPHA}",
        f"ranks.eta={ETA}",
        *(f"{key}={value}" for key, value in (settings or {}).items()),
    ]
    # the agents below are signed-coding agents with the state-only baseline
    overrides += [
        f"run.iterations={planned}",
        'policy.features="signed"',
        'policy.baseline="state"',
        f'pool.evaluation_action="{evaluation_action}"',
    ]
    text = apply_overrides(DEFAULT_CONFIG, overrides)
    cfg = parse_config(text, 3)
    zero = initial_agent(8, 2, "signed")
    best = Agent(np.full_like(zero.policy, BEST_MARK), zero.baseline.copy())
    current = Agent(np.full_like(zero.policy, CURRENT_MARK), zero.baseline.copy())
    records = [
        IterationRecord(
            scores=SCORES[k] + offset,
            winner=WINNERS[k],
            train_returns=np.zeros((3, cfg.iterate_episodes)),
            timings=timings(k),
            degenerate=~np.isfinite(SCORES[k]),
            fell_back=False,
            best_score=BEST[k] + offset,
            steps=steps(k) * step_factor,
        )
        for k in range(rows)
    ]
    best_row = BEST[:rows].index(BEST[rows - 1])  # the iteration whose winner first reached the best score
    state = PoolState(rows, current, best, BEST[rows - 1] + offset, best_row, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, cfg, state, records)
    return path
