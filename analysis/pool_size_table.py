"""The pool-size study as a table and a plot: what P costs to reach a score, and the winner's curse per P.

Reads a CSV written by analysis/pool_size.py and the checkpoints of its runs
(results/pool_size/checkpoints/<config>-P<ranks>-<seed>.h5), and prints per P
(medians over seeds, each seed's value in brackets):
- the iteration and environment steps at which the *recorded* winner's score
  first reached --threshold (the pool's own, noisy evaluation);
- iterations, CPU-seconds and wall seconds until the run stopped at its
  [run] target (the best agent checked on fresh episodes);
- the winner's curse: the best recorded score minus the best agent's mean on
  50 fresh episodes.
With --plot, draws CPU-seconds to the target against P (every seed and the median).

Usage:
    python analysis/pool_size_table.py results/pool_size/pool-size-improved.csv --threshold 150 --plot
    docs/results/pool_size.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from mpiswim.analysis import read_run

ROOT = Path(__file__).resolve().parent.parent


def first_reaching(best_score: np.ndarray, threshold: float) -> int | None:
    """1-based iteration at which the recorded best score first reaches the threshold, or None."""
    reached = np.flatnonzero(best_score >= threshold)
    return int(reached[0]) + 1 if reached.size else None


def study_rows(csv_path: Path, threshold: float) -> list[dict]:
    """One dict per run: the CSV's measurements plus what its checkpoint says about the recorded score."""
    rows = []
    with csv_path.open() as handle:
        for row in csv.DictReader(handle):
            ranks, seed = int(row["ranks"]), int(row["seed"])
            run = read_run(ROOT / "results" / "pool_size" / "checkpoints" / f"{csv_path.stem}-P{ranks}-{seed}.h5")
            steps_per_iteration = int(row["steps"]) // int(row["iterations"])
            recorded = first_reaching(run.best_score, threshold)
            rows.append(
                {
                    "ranks": ranks,
                    "seed": seed,
                    "recorded_iteration": recorded,
                    "recorded_steps": None if recorded is None else recorded * steps_per_iteration,
                    "target_reached": row["target_reached"] == "True",
                    "iterations": int(row["iterations"]),
                    "cpu_s": float(row["cpu_s"]),
                    "wall_s": float(row["wall_s"]),
                    "recorded_best": float(row["best_score"]),
                    "fresh": float(row["fresh_mean"]),
                }
            )
    return rows


def _cell(values: list, digits: int = 0) -> str:
    """'median (a, b, c)'; '-' for a run that never got there, and no median unless every seed did."""
    shown = ", ".join("-" if v is None else f"{v:,.{digits}f}" for v in values)
    if any(v is None for v in values):
        return f"({shown})"
    return f"{np.median(values):,.{digits}f} ({shown})"


def to_target(runs: list[dict], key: str) -> list:
    """Each run's `key` if it stopped at its target, else None (it never got there)."""
    return [row[key] if row["target_reached"] else None for row in runs]


def table(rows: list[dict], threshold: float) -> str:
    header = [
        "P",
        f"iteration the recorded winner first reached {threshold:g}",
        "environment steps to it (millions)",
        "reached the target",
        "iterations to the target",
        "CPU-s to the target",
        "wall s to the target (2 cores)",
        "winner's curse: recorded best - fresh",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ranks in sorted({row["ranks"] for row in rows}):
        runs = [row for row in rows if row["ranks"] == ranks]
        steps = [None if row["recorded_steps"] is None else row["recorded_steps"] / 1e6 for row in runs]
        lines.append(
            "| "
            + " | ".join(
                [
                    str(ranks),
                    _cell([row["recorded_iteration"] for row in runs]),
                    _cell(steps, 1),
                    f"{sum(row['target_reached'] for row in runs)} of {len(runs)}",
                    _cell(to_target(runs, "iterations")),
                    _cell(to_target(runs, "cpu_s")),
                    _cell(to_target(runs, "wall_s")),
                    _cell([row["recorded_best"] - row["fresh"] for row in runs], 1),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    sizes = sorted({row["ranks"] for row in rows})
    for row in rows:
        marker = "o" if row["target_reached"] else "x"
        ax.scatter(row["ranks"], row["cpu_s"], marker=marker, color="C0" if row["target_reached"] else "C3", alpha=0.7)
    medians = [
        np.median([r["cpu_s"] for r in rows if r["ranks"] == p])
        if all(r["target_reached"] for r in rows if r["ranks"] == p)
        else np.nan
        for p in sizes
    ]
    ax.plot(sizes, medians, color="C0", label="median over seeds (every seed reached the target)")
    ax.scatter([], [], marker="o", color="C0", label="one seed: CPU-s until the target was reached")
    ax.scatter([], [], marker="x", color="C3", label="one seed: never reached it (CPU-s of the whole run)")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(p) for p in sizes])
    ax.set_xlabel("ranks in the pool (P)")
    ax.set_ylabel("CPU-seconds of the whole job")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument(
        "--threshold", type=float, default=150.0, help="recorded winner score to report the first iteration of"
    )
    parser.add_argument("--plot", type=Path, help="PNG of CPU-seconds to the target against P")
    args = parser.parse_args()
    rows = study_rows(args.csv, args.threshold)
    print(table(rows, args.threshold))
    if args.plot:
        plot(rows, args.plot, f"{args.csv.stem}: CPU-seconds until the run's [run] target")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
