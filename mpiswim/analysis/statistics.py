"""Statistics: pure functions over a `Run`'s arrays.

The learning curve and a notebook's history, who wins (per rank, per hyperparameter
value), where the time goes, and several runs compared over the iterations all of them
have, with a band around their mean; `run_differences` names every way runs differ.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpiswim.analysis.reading import AnalysisError, Run
from mpiswim.state import steps_per_iteration

# `--x` of `mpiswim analyze`: the cost axis, and the cumulative column of learning_curve it reads.
X_AXES = {
    "iterations": "iteration",
    "steps": "total_steps",
    "cpu-seconds": "total_cpu_seconds",
    "wall-seconds": "total_wall_seconds",
}
X_LABELS = {
    "iterations": "iteration",
    "steps": "environment steps (every rank's episodes)",
    "cpu-seconds": "CPU-seconds (every rank's time in the iterations)",
    "wall-seconds": "wall-clock seconds of the iterations",
}


def cost_seconds(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(wall, cpu): (k,) seconds of each iteration, from the ranks' phase timings.

    wall: the slowest rank's train + evaluate + communicate, plus rank 0's checkpoint write (as `mpiswim info`
    counts it). cpu: every rank's train + evaluate + communicate summed, plus that write: the processor time the
    pool held (waiting in a collective included: MPI ranks wait busily). Start-up and pauses are in neither.
    """
    column = run.phases.index("checkpoint")
    busy = np.delete(run.timings, column, axis=2).sum(axis=2)  # (k, P)
    write = run.timings[:, 0, column]
    if not run.iterations:
        return np.zeros(0), np.zeros(0)
    return busy.max(axis=1) + write, busy.sum(axis=1) + write


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
    to and with it (NaN where not recorded, and total_steps after such an iteration);
    wall_seconds and cpu_seconds of the iteration (cost_seconds) and their running
    totals total_wall_seconds and total_cpu_seconds.
    """
    finite = np.where(np.isfinite(run.scores), run.scores, np.nan)
    any_finite = np.isfinite(finite).any(axis=1)
    safe = np.where(any_finite[:, None], finite, 0.0)  # keeps nan-reductions quiet on all-NaN rows

    def spread(reduce) -> np.ndarray:
        return np.where(any_finite, reduce(safe, axis=1), np.nan) if run.iterations else np.zeros(0)

    steps = steps_per_iteration(run.steps)
    wall, cpu = cost_seconds(run)

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
        "wall_seconds": wall,
        "total_wall_seconds": np.cumsum(wall),
        "cpu_seconds": cpu,
        "total_cpu_seconds": np.cumsum(cpu),
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
    new_best_share: float  # new_bests / every rank's new bests: the share of the run's improvements this rank made
    mean_score: float  # mean of the rank's finite scores
    degenerate: int  # degenerate branches


def win_table(run: Run) -> list[RankWins]:
    """Per rank: wins and their share of the iterations that had a winner, and new bests (wins that raised the
    best-ever score) and their share of all new bests.

    A small step size can win most iterations by barely moving (its branch stays near the agent every rank
    started from) while the large ones make the improvements: new_best_share says who moved the run forward.
    """
    decided = int((run.winner >= 0).sum())
    previous_best = np.concatenate([[-np.inf], run.best_score[:-1]])
    improved = (run.winner >= 0) & (winner_scores(run) > previous_best)
    improvements = int(improved.sum())
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
                new_best_share=int(improved[won].sum()) / improvements if improvements else 0.0,
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
    """A setting as text; per-rank values that are all equal show as the one value (P = 4 and 6 with eta 1e-3 on
    every rank have the same eta)."""
    if isinstance(value, tuple):
        if value and len(set(value)) == 1 and not isinstance(value[0], tuple):
            return _show(value[0])
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _config_key(run: Run) -> tuple:
    """What makes two runs seeds of one config: task, pool size and every compared setting (not name, seed, file,
    length)."""
    return (run.env_id, run.world_size, tuple(sorted((name, _show(v)) for name, v in run.settings.items())))


@dataclass(frozen=True)
class RunGroup:
    """Runs whose configs differ only in [run] seed (and name, out, iterations and other settings not compared)."""

    name: str  # the runs' [run] name if they share one (else the first run's label), made unique among the groups
    runs: tuple[Run, ...]

    @property
    def label(self) -> str:
        """The legend's name: "improved (3 runs)"."""
        return f"{self.name} ({len(self.runs)} run{'s' if len(self.runs) > 1 else ''})"


def group_runs(runs: Sequence[Run]) -> list[RunGroup]:
    """The runs grouped by config (_config_key), in the order their first run was given."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(_config_key(run), []).append(run)
    names = []
    for members in groups.values():
        shared = {run.run_name for run in members}
        names.append(shared.pop() if len(shared) == 1 else config_group(members[0].label))
    unique = [
        name if names.count(name) == 1 else f"{name} #{names[: i + 1].count(name)}" for i, name in enumerate(names)
    ]
    return [RunGroup(name, tuple(members)) for name, members in zip(unique, groups.values(), strict=True)]


def config_group(label: str) -> str:
    """A run's config group by its name alone: its name without the trailing seed (`improved-12341` -> `improved`)."""
    return re.sub(r"-\d+$", "", label)


def x_values(run: Run, x: str = "iterations") -> np.ndarray:
    """(k,) where each iteration ends on the cost axis `x` (a key of X_AXES): its number, or the run's steps,
    CPU-seconds or wall seconds up to and with it. An AnalysisError if the run did not record its steps."""
    if x not in X_AXES:
        raise AnalysisError(f"--x {x!r} is not a cost axis. Fix: use one of {', '.join(X_AXES)}.")
    values = learning_curve(run)[X_AXES[x]].astype(np.float64)
    if np.isnan(values).any():
        raise AnalysisError(
            f"'{run.path}' has no environment steps for some iterations (written before checkpoint format 3), so it "
            "cannot be drawn against steps. Fix: use --x iterations, cpu-seconds or wall-seconds for this run."
        )
    return values


def _value_at(xs: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """values of the last iteration that had ended at each grid point; NaN outside the run's own range."""
    rows = np.searchsorted(xs, grid, side="right") - 1
    inside = (rows >= 0) & (grid <= xs[-1]) if len(xs) else np.zeros(len(grid), bool)
    return np.where(inside, values[np.clip(rows, 0, None)] if len(xs) else np.nan, np.nan)


def common_end(runs: Sequence[Run], x: str = "iterations") -> float:
    """The end of the range every run covers on the axis `x`: the shortest run's last point."""
    return min((float(x_values(run, x)[-1]) for run in runs if run.iterations), default=0.0)


def group_curves(group: RunGroup | Sequence[Run], x: str = "iterations") -> dict[str, np.ndarray]:
    """The mean of a group's runs with its band (mean_and_band), at every point any of its runs reached on axis `x`.

    Columns: x, runs (n: how many runs reach that point; a run counts only up to its own end), winner_mean,
    winner_low, winner_high, best_mean, best_low, best_high. A run's value at a point is that of its last iteration
    ended there (on the iterations axis: that iteration's).
    """
    runs = group.runs if isinstance(group, RunGroup) else tuple(group)
    xs = [x_values(run, x) for run in runs]
    grid = np.unique(np.concatenate(xs)) if xs else np.zeros(0)
    winners = np.array([_value_at(v, winner_scores(run), grid) for v, run in zip(xs, runs, strict=True)])
    bests = np.array([_value_at(v, run.best_score, grid) for v, run in zip(xs, runs, strict=True)])
    reached = np.array([(grid >= v[0]) & (grid <= v[-1]) for v in xs])
    names = ("runs", "winner_mean", "winner_low", "winner_high", "best_mean", "best_low", "best_high")
    columns: dict[str, list] = {name: [] for name in names}
    for i in range(len(grid)):
        winner = mean_and_band(winners[:, i])[:3]
        best = mean_and_band(bests[:, i])[:3]
        for name, value in zip(names, (int(reached[:, i].sum()), *winner, *best), strict=True):
            columns[name].append(value)
    return {"x": grid, **{name: np.array(values) for name, values in columns.items()}}


def run_differences(runs: Sequence[Run]) -> list[str]:
    """One sentence per way the runs' configs differ: pool size P, episode length T, any other config setting.

    Settings that may differ between seeds of one config (name, seed, file, planned
    iterations, stall timeout) are left out: see NOT_COMPARED; so is length (each run is
    shown over its own). Per-rank values equal on every rank compare as that one value.
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
    return lines


def compare_runs(runs: Sequence[Run], x: str = "iterations") -> dict[str, np.ndarray]:
    """group_curves of every config group (group_runs), one after the other, with a `group` column naming it.

    Seeds of one config are averaged (the band is the 95% t-interval of the mean with 3 runs or more, the min-max
    range with 2); runs of different configs never are. `x` is the cost axis (X_AXES); on the iterations axis the
    column is named `iteration`.
    """
    parts = []
    for group in group_runs(runs):
        curves = group_curves(group, x)
        parts.append({"group": np.array([group.name] * len(curves["x"]), dtype=object), **curves})
    names = ("group", "x", "runs", "winner_mean", "winner_low", "winner_high", "best_mean", "best_low", "best_high")
    columns = {name: np.concatenate([part[name] for part in parts]) if parts else np.zeros(0) for name in names}
    columns[X_AXES[x]] = columns.pop("x")
    order = ["group", X_AXES[x], *names[2:]]
    if x == "iterations":
        columns["iteration"] = columns["iteration"].astype(np.int64)
    return {name: columns[name] for name in order}


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
