"""Statistics: pure functions over a `Run`'s arrays.

The learning curve and a notebook's history, who wins (per rank, per hyperparameter
value), where the time goes, and several runs compared over the iterations all of them
have, with a band around their mean; `run_differences` names every way runs differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpiswim.analysis.reading import AnalysisError, Run
from mpiswim.state import steps_per_iteration


def history(run: Run) -> dict[str, np.ndarray]:
    """One row per iteration, for a notebook: learning_curve's columns plus score_rank0 ... score_rank{P-1}."""
    columns = learning_curve(run)
    columns.update({f"score_rank{rank}": run.scores[:, rank].copy() for rank in range(run.world_size)})
    return columns


def history_frame(run: Run):
    """history(run) as a pandas DataFrame indexed by iteration; pandas is not a dependency of mpiswim."""
    try:
        import pandas
    except ImportError:
        raise AnalysisError(
            "history_frame needs pandas, which mpiswim does not install. Fix: `pip install pandas`, or use "
            "history(run), a dict of numpy arrays."
        ) from None
    return pandas.DataFrame(history(run)).set_index("iteration")


def winner_scores(run: Run) -> np.ndarray:
    """(k,) the winner's evaluation score per iteration; NaN where no branch could win."""
    rows = np.arange(run.iterations)
    return np.where(run.winner >= 0, run.scores[rows, np.clip(run.winner, 0, None)], np.nan)


def learning_curve(run: Run) -> dict[str, np.ndarray]:
    """Columns of the learning curve, one row per iteration (1-based `iteration`).

    winner_score, best_score, and the spread of the finite rank scores
    (min, median, max, mean; NaN where every branch was degenerate); steps, every
    rank's environment steps in the iteration, and total_steps, those of the run up
    to and with it (NaN where not recorded, and total_steps after such an iteration).
    """
    finite = np.where(np.isfinite(run.scores), run.scores, np.nan)
    any_finite = np.isfinite(finite).any(axis=1)
    safe = np.where(any_finite[:, None], finite, 0.0)  # keeps nan-reductions quiet on all-NaN rows

    def spread(reduce) -> np.ndarray:
        return np.where(any_finite, reduce(safe, axis=1), np.nan) if run.iterations else np.zeros(0)

    steps = steps_per_iteration(run.steps)

    return {
        "iteration": np.arange(1, run.iterations + 1),
        "winner": run.winner.copy(),
        "winner_score": winner_scores(run),
        "best_score": run.best_score.copy(),
        "ranks_min": spread(np.nanmin),
        "ranks_median": spread(np.nanmedian),
        "ranks_max": spread(np.nanmax),
        "ranks_mean": spread(np.nanmean),
        "steps": steps,
        "total_steps": np.cumsum(steps),  # NaN from the first iteration without steps on
    }


@dataclass(frozen=True)
class RankWins:
    """One row of the win table."""

    rank: int
    alpha: float
    eta: float
    wins: int
    share: float  # wins / iterations with a winner
    first_win: int | None  # 1-based iteration
    last_win: int | None
    new_bests: int  # wins that set a new best-ever score
    mean_score: float  # mean of the rank's finite scores
    degenerate: int  # degenerate branches


def win_table(run: Run) -> list[RankWins]:
    """Per-rank win counts and shares (shares of the iterations that had a winner)."""
    decided = int((run.winner >= 0).sum())
    previous_best = np.concatenate([[-np.inf], run.best_score[:-1]])
    improved = (run.winner >= 0) & (winner_scores(run) > previous_best)
    rows = []
    for rank in range(run.world_size):
        won = np.flatnonzero(run.winner == rank)
        scores = run.scores[:, rank]
        scores = scores[np.isfinite(scores)]
        rows.append(
            RankWins(
                rank=rank,
                alpha=float(run.alpha[rank]),
                eta=float(run.eta[rank]),
                wins=len(won),
                share=len(won) / decided if decided else 0.0,
                first_win=int(won[0]) + 1 if len(won) else None,
                last_win=int(won[-1]) + 1 if len(won) else None,
                new_bests=int(improved[won].sum()),
                mean_score=float(scores.mean()) if scores.size else float("nan"),
                degenerate=int(run.degenerate[:, rank].sum()),
            )
        )
    return rows


@dataclass(frozen=True)
class ValueWins:
    """Wins of all ranks that share one value of a hyperparameter."""

    name: str  # "alpha" or "eta"
    value: float
    ranks: tuple[int, ...]
    wins: int
    share: float  # share of the decided iterations
    rank_share: (
        float  # share of the pool's ranks with this value: the expected win share if the value made no difference
    )

    @property
    def ratio(self) -> float:
        """Win share over rank share: > 1 means this value wins more often than its numbers alone explain."""
        return self.share / self.rank_share if self.rank_share else float("nan")


def win_share_by_hyperparameter(run: Run) -> list[ValueWins]:
    """Win share of each distinct alpha and each distinct eta, against the share of ranks that have it."""
    decided = int((run.winner >= 0).sum())
    wins = np.bincount(run.winner[run.winner >= 0], minlength=run.world_size)
    rows = []
    for name, values in (("alpha", run.alpha), ("eta", run.eta)):
        for value in np.unique(values):
            ranks = tuple(int(r) for r in np.flatnonzero(values == value))
            won = int(wins[list(ranks)].sum())
            rows.append(
                ValueWins(
                    name, float(value), ranks, won, won / decided if decided else 0.0, len(ranks) / run.world_size
                )
            )
    return rows


def phase_seconds(run: Run) -> dict[str, np.ndarray]:
    """(k,) seconds per iteration of each phase, as one iteration's wall time splits.

    train, evaluate and communicate are means over the ranks (communicate
    includes waiting for the slowest rank, so each rank's three phases add up
    to about the same time); checkpoint is rank 0 writing the file (the other
    ranks record 0). The last row's checkpoint time is 0 while a run is in
    progress: a write is timed after it finished, so it is stored one write later.
    """
    result = {}
    for column, phase in enumerate(run.phases):
        values = run.timings[:, :, column]
        result[phase] = values.max(axis=1) if phase == "checkpoint" else values.mean(axis=1)
    return result


@dataclass(frozen=True)
class PhaseTotal:
    """One row of the timing table."""

    phase: str
    seconds: float  # summed over iterations (mean over ranks; checkpoint: rank 0)
    share: float  # of the sum over all phases
    per_iteration: float  # mean seconds per iteration
    slowest_rank: int  # the rank that spent the most time in this phase
    slowest_rank_seconds: float


def timing_table(run: Run) -> list[PhaseTotal]:
    """Total seconds and share of each phase, and the rank that spent the most in it."""
    per_iteration = phase_seconds(run)
    total = sum(float(v.sum()) for v in per_iteration.values())
    per_rank = run.timings.sum(axis=0)  # (P, phases)
    rows = []
    for column, phase in enumerate(run.phases):
        seconds = float(per_iteration[phase].sum())
        slowest = int(np.argmax(per_rank[:, column]))
        rows.append(
            PhaseTotal(
                phase=phase,
                seconds=seconds,
                share=seconds / total if total > 0 else 0.0,
                per_iteration=seconds / run.iterations if run.iterations else 0.0,
                slowest_rank=slowest,
                slowest_rank_seconds=float(per_rank[slowest, column]),
            )
        )
    return rows


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
# fmt: off
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
# fmt: on


def t95(dof: int) -> float:
    """Two-sided 95% quantile of Student's t (table up to 30 degrees of freedom, then z + 2.37/dof)."""
    if dof < 1:
        return float("nan")
    return _T95[dof - 1] if dof <= len(_T95) else 1.96 + 2.37 / dof


def mean_and_ci(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, half width of the 95% t-interval of the mean, n) of the finite values; half width NaN for n < 2."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(values[0]), float("nan"), 1
    return float(values.mean()), t95(n - 1) * float(values.std(ddof=1)) / math.sqrt(n), n


def mean_and_band(values: np.ndarray) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values; low to high is the band drawn around the mean.

    n >= 3: the 95% t-interval of the mean. n = 2: the range (min to max), since
    a t-interval of two values is 12.7 standard errors wide. n < 2: no band (NaN).
    """
    values = np.asarray(values, dtype=np.float64)
    mean, half, n = mean_and_ci(values)
    if n == 2:
        finite = values[np.isfinite(values)]
        return mean, float(finite.min()), float(finite.max()), n
    return mean, mean - half, mean + half, n


def band_name(n: int) -> str:
    """What the band around a mean of n runs shows: "95% CI, n = 5", "range of 2 runs" or "1 run, no band"."""
    if n >= 3:
        return f"95% CI, n = {n}"
    return "range of 2 runs" if n == 2 else f"{n} run, no band"


def common_iterations(runs: Sequence[Run]) -> int:
    """How many iterations every one of the runs has: the shortest run's length."""
    return min((run.iterations for run in runs), default=0)


def first_iterations(run: Run, k: int) -> Run:
    """The run as it stood after its first k iterations (its best score and best iteration as they were then)."""
    best = run.best_score[:k]
    best_iteration = run.best_iteration
    if best_iteration >= k:  # the best came later: the first row that reached the best score of the first k
        reached = np.flatnonzero(best == best[-1]) if k else np.zeros(0, dtype=int)
        best_iteration = int(reached[0]) if len(reached) and np.isfinite(best[-1]) else -1
    rows = slice(0, k)
    return dataclasses.replace(
        run,
        scores=run.scores[rows],
        winner=run.winner[rows],
        best_score=best,
        timings=run.timings[rows],
        degenerate=run.degenerate[rows],
        fell_back=run.fell_back[rows],
        best_iteration=best_iteration,
        steps=run.steps[rows],
    )


def common_part(runs: Sequence[Run]) -> list[Run]:
    """Every run cut to the iterations all of them have, so that a mean over the runs does not jump where a short run
    ends.
    """
    k = common_iterations(runs)
    return [first_iterations(run, k) for run in runs]


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_differences(runs: Sequence[Run]) -> list[str]:
    """One sentence per way the runs differ: pool size P, episode length T, any other config setting, and length.

    Settings that may differ between comparable runs (name, seed, file,
    planned iterations, stall timeout) are left out: see NOT_COMPARED.
    """
    lines = []

    def compare(what: str, values: list[object]) -> None:
        if len({_show(v) for v in values}) > 1:
            lines.append(
                f"the runs differ in {what}: "
                + ", ".join(f"{run.path} has {_show(v)}" for run, v in zip(runs, values, strict=True))
            )

    compare("pool size P", [run.world_size for run in runs])
    compare("episode length T", [run.T for run in runs])
    names = dict.fromkeys(name for run in runs for name in run.settings if name != "T")
    for name in names:
        compare(f"the config setting {name}", [run.settings.get(name, "(not set)") for run in runs])
    if len({run.iterations for run in runs}) > 1:
        compare("length (iterations done)", [run.iterations for run in runs])
        lines[-1] += f"; they are compared over iterations 1-{common_iterations(runs)} only"
    return lines


def compare_runs(runs: Sequence[Run]) -> dict[str, np.ndarray]:
    """Per-iteration mean over the runs, and the band around it (mean_and_band), over the iterations all runs have.

    Columns: iteration, runs (n), winner_mean, winner_low, winner_high,
    best_mean, best_low, best_high. The band is the 95% t-interval of the mean
    for 3 runs or more, the min-max range for 2. Runs of different lengths
    are compared over the shortest run's iterations only (common_part).
    """
    runs = common_part(runs)
    names = ("iteration", "runs", "winner_mean", "winner_low", "winner_high", "best_mean", "best_low", "best_high")
    columns: dict[str, list] = {name: [] for name in names}
    winners = np.array([winner_scores(run) for run in runs])  # (runs, k)
    bests = np.array([run.best_score for run in runs])
    for row in range(common_iterations(runs)):
        winner = mean_and_band(winners[:, row])[:3]
        best = mean_and_band(bests[:, row])[:3]
        for name, value in zip(names, (row + 1, len(runs), *winner, *best), strict=True):
            columns[name].append(value)
    return {name: np.array(values) for name, values in columns.items()}


@dataclass(frozen=True)
class RunSummary:
    """One row of the several-runs table."""

    label: str
    path: str
    env_id: str
    world_size: int
    iterations: int
    final_score: float  # the last iteration's winner score
    final_mean10: float  # mean winner score of the last 10 iterations (less noisy)
    best_score: float
    best_iteration: int  # 1-based
    steps_to_best: float  # every rank's environment steps up to and with the best iteration; NaN if not recorded


def run_summaries(runs: Sequence[Run]) -> list[RunSummary]:
    rows = []
    for run in runs:
        winners = winner_scores(run)
        last = winners[-10:]
        rows.append(
            RunSummary(
                label=run.label,
                path=str(run.path),
                env_id=run.env_id,
                world_size=run.world_size,
                iterations=run.iterations,
                final_score=float(winners[-1]) if run.iterations else float("nan"),
                final_mean10=float(np.nanmean(last)) if np.isfinite(last).any() else float("nan"),
                best_score=float(run.best_score[-1]) if run.iterations else float("nan"),
                best_iteration=run.best_iteration + 1,
                steps_to_best=float(steps_per_iteration(run.steps[: run.best_iteration + 1]).sum())
                if run.best_iteration >= 0
                else float("nan"),
            )
        )
    return rows
