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
                    ""
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
    text += "Share = wins / iterations with a winner. New bests = wins that raised the best-ever score.\n\n"
    text += _markdown(
        ["rank", "alpha", "eta", "wins", "share", "first win", "last win", "new bests", "mean score", "degenerate"],
        [
            [
                r.rank,
                f"{r.alpha:g}",
                f"{r.eta:g}",
                r.wins,
                f"{r.share:.1%}",
                r.first_win or "-",
                r.last_win or "-",
                r.new_bests,
                _number(r.mean_score),
                r.degenerate,
            ]
            for r in win_table(run)
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
    """The several-runs table: how the runs differ, and each run's scores over the iterations all of them have, with
    their
    mean.
    """
    k = common_iterations(runs)
    rows = run_summaries(common_part(runs))
    text = f"# {len(runs)} runs: final and best scores\n\n"
    differences = run_differences(runs)
    if differences:
        text += "Warning, these runs are not alike:\n\n" + "".join(f"- {line}\n" for line in differences) + "\n"
    text += (
        f"Compared over iterations 1-{k}, the ones every run has. Final = the winner score at iteration {k}; "
        "last 10 = mean winner score of the last 10 of them; best = best-ever winner score up to there.\n\n"
    )
    text += _markdown(
        [
            "run",
            "file",
            "env",
            "ranks",
            "iterations done",
            "final",
            "last 10",
            "best",
            "best at iteration",
            "steps to best",
        ],  # fmt: skip
        [
            [
                r.label,
                r.path,
                r.env_id,
                r.world_size,
                run.iterations,
                _number(r.final_score),
                _number(r.final_mean10),
                _number(r.best_score),
                r.best_iteration,
                _steps(r.steps_to_best),
            ]
            for r, run in zip(rows, runs, strict=True)
        ],
    )
    if len(rows) > 1:
        cells = [_mean_cell([getattr(r, name) for r in rows]) for name in ("final_score", "final_mean10", "best_score")]
        text += f"| mean, {band_name(len(rows))} | | | | | {cells[0]} | {cells[1]} | {cells[2]} | | |\n"
        text += (
            "\nThe band around the mean (compare.png; the low and high columns of compare.csv) is "
            f"{_band_sentence(len(rows))}.\n"
        )
    return text
