"""The seed-faithful runs next to the seed's own figure: the winner's score at the seed's milestones.

    python analysis/seed_milestones.py results/seed-faithful-*.h5 [--reference docs/data/seed_curve.csv]

Prints a markdown table (docs/results.md, "The seed's own run"): per run, the winner's evaluation score at
iterations 20, 50, 100, 150, 400, its mean over iterations 141-150, and the best score within 400 with its
iteration; then the median over the runs, and the seed's values read off its figure (docs/data/seed_curve.csv).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from mpiswim.analysis import read_run, winner_scores

MILESTONES = (20, 50, 100, 150, 400)
WINDOW = (141, 150)


def row_of(scores: np.ndarray) -> list[float]:
    """Milestone scores (NaN past the run's end), the 141-150 mean, the best within 400 and its iteration."""
    at = [scores[k - 1] if k <= len(scores) else np.nan for k in MILESTONES]
    window = scores[WINDOW[0] - 1 : WINDOW[1]]
    first = scores[:400]
    best = int(np.nanargmax(first))
    return [
        *at,
        float(np.nanmean(window)) if len(window) == WINDOW[1] - WINDOW[0] + 1 else np.nan,
        float(first[best]),
        best + 1,
    ]


def reference_scores(path: Path) -> np.ndarray:
    """The reference curve as scores per iteration 1..n (iterations it does not list: NaN)."""
    with path.open() as handle:
        points = {int(row["iteration"]): float(row["score"]) for row in csv.DictReader(handle)}
    scores = np.full(max(points), np.nan)
    for iteration, value in points.items():
        scores[iteration - 1] = value
    return scores


def cell(value: float, digits: int = 1) -> str:
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--reference", default="docs/data/seed_curve.csv")
    args = parser.parse_args()
    header = [f"at {k}" for k in MILESTONES] + [f"mean {WINDOW[0]}-{WINDOW[1]}", "best within 400 (iteration)"]
    print("| run | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    rows = []
    for path in args.runs:
        run = read_run(path)
        row = row_of(winner_scores(run))
        rows.append(row)
        print(
            f"| {Path(path).stem} ({run.iterations} its) | "
            + " | ".join(cell(v) for v in row[:-2])
            + f" | {cell(row[-2])} ({row[-1]}) |"
        )
    median = np.nanmedian(np.array(rows, dtype=float), axis=0)
    print("| median | " + " | ".join(cell(v) for v in median[:-2]) + f" | {cell(median[-2])} |")
    seed = row_of(reference_scores(Path(args.reference)))
    print("| the seed (its figure) | " + " | ".join(cell(v) for v in seed[:-2]) + f" | {cell(seed[-2])} ({seed[-1]}) |")


if __name__ == "__main__":
    main()
