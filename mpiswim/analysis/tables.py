"""Tables: the numbers of mpiswim.analysis.statistics as CSV files and markdown text."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mpiswim.analysis.reading import Run
from mpiswim.analysis.statistics import (
    band_name,
    common_iterations,
    common_part,
    group_runs,
    learning_curve,
    mean_and_band,
    phase_seconds,
    run_differences,
    run_summaries,
    timing_table,
    win_share_by_hyperparameter,
    win_table,
)


def _number(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _steps(value: float) -> str:
    """A number of environment steps with thousands separators; "not recorded" for NaN (a file before format 3)."""
    return "not recorded" if math.isnan(value) else f"{int(value):,}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, columns: dict[str, np.ndarray]) -> Path:
    """Write equal-length columns as CSV (header row first); NaN is written as an empty cell."""
    path = Path(path)
    names = list(columns)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*(columns[name] for name in names), strict=True):
            writer.writerow(
                [
                    v
                    if isinstance(v, str)
                    else ""
                    if isinstance(v, float | np.floating) and not np.isfinite(v)
                    else (repr(float(v)) if isinstance(v, float | np.floating) else int(v))
                    for v in row
                ]
            )
    return path


def learning_curve_csv(run: Run, path: str | Path) -> Path:
    """learning_curve() plus every rank's score (score_rank0 ...), one row per iteration."""
    columns = learning_curve(run)
    for rank in range(run.world_size):
        columns[f"score_rank{rank}"] = run.scores[:, rank]
    return write_csv(path, columns)


def wins_markdown(run: Run) -> str:
    """The win tables (per rank, per hyperparameter value) as markdown, with a one-line reading guide."""
    decided = int((run.winner >= 0).sum())
    text = (
        f"# Who wins: {run.label} ({run.env_id}, {run.world_size} ranks, {run.iterations} iterations, "
        f"{decided} with a winner)\n\n"
    )
    rows = win_table(run)
    text += (
        "Share = wins / iterations with a winner. New bests = wins that raised the best-ever score; their share = "
        "new bests / all new bests. To choose step sizes, read the new bests: a small step size can win many "
        "iterations by barely changing the agent, while the run's improvements come from the ranks with the "
        "larger share of new bests.\n\n"
    )
    leader = max(rows, key=lambda r: (r.new_bests, -r.rank), default=None)
    if leader is not None and leader.new_bests:
        text += (
            f"Most new bests: rank {leader.rank} (alpha {leader.alpha:g}, eta {leader.eta:g}), "
            f"{leader.new_bests} of {sum(r.new_bests for r in rows)} ({leader.new_best_share:.0%}).\n\n"
        )
    text += _markdown(
        [
            "rank",
            "alpha",
            "eta",
            "wins",
            "share",
            "new bests",
            "share of new bests",
            "first win",
            "last win",
            "mean score",
            "degenerate",
        ],  # fmt: skip
        [
            [
                r.rank,
                f"{r.alpha:g}",
                f"{r.eta:g}",
                r.wins,
                f"{r.share:.1%}",
                r.new_bests,
                f"{r.new_best_share:.1%}",
                r.first_win or "-",
                r.last_win or "-",
                _number(r.mean_score),
                r.degenerate,
            ]
            for r in rows
        ],
    )
    text += "\n## Win share by hyperparameter value\n\n"
    text += (
        "Rank share = the share of the pool's ranks with that value, i.e. the win share to expect if the value "
        "made no difference; ratio = win share / rank share.\n\n"
    )
    text += _markdown(
        ["hyperparameter", "value", "ranks", "wins", "win share", "rank share", "ratio"],
        [
            [
                v.name,
                f"{v.value:g}",
                ", ".join(map(str, v.ranks)),
                v.wins,
                f"{v.share:.1%}",
                f"{v.rank_share:.1%}",
                _number(v.ratio),
            ]
            for v in win_share_by_hyperparameter(run)
        ],
    )
    return text


def timings_markdown(run: Run) -> str:
    rows = timing_table(run)
    total = sum(r.seconds for r in rows)
    text = (
        f"# Where time goes: {run.label} ({run.world_size} ranks, {run.iterations} iterations, "
        f"{total:.1f} s in all)\n\n"
    )
    text += (
        "Seconds summed over iterations; train, evaluate and communicate are means over the ranks (communicate "
        "includes waiting for the slowest rank), checkpoint is rank 0 writing the file.\n\n"
    )
    text += _markdown(
        ["phase", "seconds", "share", "per iteration (s)", "slowest rank", "its seconds"],
        [
            [
                r.phase,
                f"{r.seconds:.1f}",
                f"{r.share:.1%}",
                f"{r.per_iteration:.3f}",
                r.slowest_rank,
                f"{r.slowest_rank_seconds:.1f}",
            ]
            for r in rows
        ],
    )
    text += "\n## Per rank (seconds summed over iterations)\n\n"
    per_rank = run.timings.sum(axis=0)
    text += _markdown(
        ["rank", *run.phases], [[rank, *(f"{v:.1f}" for v in per_rank[rank])] for rank in range(run.world_size)]
    )
    return text


def timings_csv(run: Run, path: str | Path) -> Path:
    """Per-iteration seconds of each phase (the columns of phase_seconds)."""
    return write_csv(path, {"iteration": np.arange(1, run.iterations + 1), **phase_seconds(run)})


def _mean_cell(values: Sequence[float]) -> str:
    """The mean of the finite values with its band: "140.88 ± 12.30" (95% CI) for 3 or more, "140.88 (range 130.10 to
    151.60)" for 2.
    """
    mean, low, high, n = mean_and_band(np.array(values, dtype=np.float64))
    if n >= 3:
        return f"{_number(mean)} ± {_number((high - low) / 2)}"
    if n == 2:
        return f"{_number(mean)} (range {_number(low)} to {_number(high)})"
    return _number(mean)


def _band_sentence(n: int) -> str:
    if n >= 3:
        return f"the 95% confidence interval of the mean (Student's t, n = {n})"
    return f"the range of the {n} runs (min to max), since a 95% t-interval of 2 runs is 12.7 standard errors wide"


def compare_markdown(runs: Sequence[Run]) -> str:
    """The several-runs tables: how the configs differ, each config group's mean over its runs (seeds), and each run."""
    groups = group_runs(runs)
    k = common_iterations(runs)
    text = f"# {len(runs)} runs in {len(groups)} config group{'s' if len(groups) > 1 else ''}\n\n"
    text += (
        "Runs whose configs differ only in [run] seed (and name, file, planned iterations) form one group; the "
        "means and bands are over a group's runs, never across groups.\n\n"
    )
    differences = run_differences(runs)
    if differences:
        text += "The configs differ:\n\n" + "".join(f"- {line}\n" for line in differences) + "\n"
    text += (
        "Each run counts over its own iterations: final = its last winner score, last 10 = the mean of its last 10, "
        f"best = its best-ever score; best by {k} = its best up to iteration {k}, the last one every run has.\n\n"
    )
    summaries = {id(run): summary for run, summary in zip(runs, run_summaries(runs), strict=True)}
    early = {id(run): summary for run, summary in zip(runs, run_summaries(common_part(runs)), strict=True)}
    fields = ("final_score", "final_mean10", "best_score")
    group_rows = []
    for group in groups:
        rows = [summaries[id(run)] for run in group.runs]
        cells = [_mean_cell([getattr(r, name) for r in rows]) for name in fields]
        lengths = sorted({run.iterations for run in group.runs})
        done = str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
        by_k = _mean_cell([early[id(run)].best_score for run in group.runs])
        band = band_name(len(rows)) if len(rows) > 1 else "1 run"
        group_rows.append([group.name, band, group.runs[0].world_size, done, *cells, by_k])
    text += "## Config groups (mean over each group's runs)\n\n"
    text += _markdown(
        ["group", "runs and band", "ranks", "iterations done", "final", "last 10", "best", f"best by {k}"], group_rows
    )
    text += "\n## Runs\n\n"
    text += _markdown(
        [
            "run",
            "group",
            "file",
            "env",
            "ranks",
            "iterations done",
            "final",
            "last 10",
            "best",
            "best at iteration",
            "steps to best",
            f"best by {k}",
        ],  # fmt: skip
        [
            [
                r.label,
                group.name,
                r.path,
                r.env_id,
                r.world_size,
                r.iterations,
                _number(r.final_score),
                _number(r.final_mean10),
                _number(r.best_score),
                r.best_iteration,
                _steps(r.steps_to_best),
                _number(early[id(run)].best_score),
            ]  # fmt: skip
            for group in groups
            for run in group.runs
            for r in (summaries[id(run)],)
        ],
    )
    sizes = sorted({len(group.runs) for group in groups if len(group.runs) > 1})
    if sizes:
        text += (
            "\nThe band around a group's mean (compare.png; the low and high columns of compare.csv) is "
            + "; ".join(f"with {n} runs {_band_sentence(n)}" for n in sizes)
            + ".\n"
        )
    return text
