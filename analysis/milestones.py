"""Milestones of several runs, grouped by config: how soon each reaches a target score, its best, its cost.

    python analysis/milestones.py results/seed-*.h5 results/improved-*.h5 --target 150 --plot curves.png

Runs are grouped by their file name without the trailing seed (`improved-12341.h5`
belongs to group `improved`). For every run and every group (mean ± standard
deviation over its runs) the table gives:
- the winner score at iterations 1, 75, 150 and 400 (or those given with --at),
  each the mean of the ten iterations up to it (the winner score alone is the maximum of P noisy means);
- the first iteration whose winner score reaches the target, and the first
  whose ten-iteration mean does;
- the best winner score and where it came;
- wall seconds per iteration and in all.
With --plot, one curve per group: the mean over its runs of the ten-iteration
mean winner score, with the band from the lowest to the highest run, and the
seed's milestones (about 12 at the start, 150 at iteration 150, 160 at 400).
A run that never reaches the target counts as "not reached" and is left out of
that column's mean (the n beside it says how many runs did reach it).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from mpiswim.analysis import config_group, phase_seconds, read_runs, winner_scores

MILESTONES = (1, 75, 150, 400)
WINDOW = 10


def trailing_mean(scores: np.ndarray) -> np.ndarray:
    """Mean of the (finite) winner scores of the WINDOW iterations up to each one."""
    finite = np.where(np.isfinite(scores), scores, np.nan)
    return np.array(
        [
            np.nanmean(finite[max(0, k - WINDOW + 1) : k + 1])
            if np.isfinite(finite[max(0, k - WINDOW + 1) : k + 1]).any()
            else np.nan
            for k in range(len(finite))
        ]
    )


def first_reaching(values: np.ndarray, target: float) -> float:
    """1-based first iteration with a value >= target; NaN if none."""
    hits = np.flatnonzero(values >= target)
    return float(hits[0] + 1) if len(hits) else float("nan")


def run_row(run, target: float, milestones: tuple[int, ...] = MILESTONES) -> dict[str, float | None]:
    winners = winner_scores(run)
    smooth = trailing_mean(winners)
    wall = sum(phase_seconds(run).values())  # (k,) seconds per iteration
    row = {
        f"at {k}": float(smooth[k - 1]) if run.iterations >= k else None for k in milestones
    }  # None: the run stopped before k
    row["first >= target"] = first_reaching(winners, target)
    row["first mean10 >= target"] = first_reaching(smooth, target)
    row["best"] = float(run.best_score[-1]) if run.iterations else float("nan")
    row["best at"] = float(run.best_iteration + 1)
    row["iterations"] = float(run.iterations)
    row["s / iteration"] = float(wall.mean()) if run.iterations else float("nan")
    row["minutes"] = float(wall.sum() / 60.0)
    return row


def cell(values: list[float | None], digits: int) -> str:
    """mean ± sd (n) of the finite values; '-' where no run got that far."""
    values = [v for v in values if v is not None]
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "not reached" if values else "-"
    text = f"{np.mean(finite):.{digits}f}"
    if len(finite) > 1:
        text += f" ± {np.std(finite, ddof=1):.{digits}f}"
    return text + (f" ({len(finite)}/{len(values)})" if len(finite) < len(values) else "")


def milestone_table(paths: list[str], target: float, milestones: tuple[int, ...] = MILESTONES) -> str:
    runs = read_runs(paths)
    groups: dict[str, list[dict[str, float | None]]] = {}
    lines = []
    columns = None
    for run in runs:
        row = run_row(run, target, milestones)
        columns = columns or list(row)
        groups.setdefault(config_group(run.label), []).append(row)
        lines.append((run.label, row))
    header = ["run", *[c.replace("target", f"{target:g}") for c in columns]]
    digits = {
        "first >= target": 0,
        "first mean10 >= target": 0,
        "best at": 0,
        "iterations": 0,
        "s / iteration": 2,
        "minutes": 1,
    }
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group, rows in groups.items():
        cells = [cell([r[c] for r in rows], digits.get(c, 1)) for c in columns]
        out.append(f"| **{group}** ({len(rows)} runs) | " + " | ".join(cells) + " |")
    for label, row in lines:
        out.append(f"| {label} | " + " | ".join(cell([row[c]], digits.get(c, 1)) for c in columns) + " |")
    return "\n".join(out) + "\n"


SEED_MILESTONES = ((1, 12.0), (150, 150.0), (400, 162.0))


def plot_groups(paths: list[str], target: float, path: Path) -> Path:
    """Group mean of the ten-iteration mean winner score, min..max band over the group's runs."""
    from mpiswim.analysis.plots import _pyplot

    plt = _pyplot()
    groups: dict[str, list[np.ndarray]] = {}
    for run in read_runs(paths):
        groups.setdefault(config_group(run.label), []).append(trailing_mean(winner_scores(run)))
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for index, (group, curves) in enumerate(groups.items()):
        length = max(len(c) for c in curves)
        table = np.full((len(curves), length), np.nan)
        for row, curve in enumerate(curves):
            table[row, : len(curve)] = curve
        x = np.arange(1, length + 1)
        color = f"C{index}"
        with warnings.catch_warnings():  # iterations that no run of the group has are NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, low, high = np.nanmean(table, axis=0), np.nanmin(table, axis=0), np.nanmax(table, axis=0)
        ax.plot(x, mean, color=color, lw=1.5, label=f"{group} ({len(curves)} runs)")
        ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)
    iterations, scores = zip(*SEED_MILESTONES, strict=True)
    ax.plot(iterations, scores, "k*", ms=10, label="the seed run (its reported milestones)")
    ax.axhline(target, color="0.5", lw=0.8, ls="--")
    ax.set(
        xlabel="iteration",
        ylabel="winner's evaluation return (10-iteration mean)",
        title="mean over seeds, band: lowest to highest run",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.h5")
    parser.add_argument("--target", type=float, default=150.0, help="score to reach (default 150)")
    parser.add_argument(
        "--at",
        type=int,
        nargs="+",
        default=list(MILESTONES),
        metavar="K",
        help="iterations to report the score at (default 1 75 150 400)",
    )
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also plot each group's curve into this file")
    args = parser.parse_args(argv)
    table = milestone_table(args.runs, args.target, tuple(args.at))
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    if args.plot:
        plot_groups(args.runs, args.target, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
