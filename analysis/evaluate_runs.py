"""Independent evaluation of several runs' best agents, grouped by config: mean ± sd over the runs.

    python analysis/evaluate_runs.py results/seed-*.h5 results/improved-*.h5 --T 500 1000 --episodes 50 --actions sample
    mean

A run's recorded best score is the highest winner's score it saw, so it is
picked from noisy estimates and biased upward. This table evaluates each run's
best agent again on fresh episodes (`mpiswim evaluate`, numpy seed --seed,
not any stream the run used), at the run's T and at any other --T (e.g. 1000
for full-length Swimmer-v5), with actions drawn from the Beta policy ("sample",
as in training) and/or its mean a/(a+b) ("mean", the deterministic controller).
Runs are grouped as in milestones.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mpiswim.analysis import config_group, read_run
from mpiswim.report import evaluation_returns


def evaluation_table(
    paths: list[str], horizons: list[int], episodes: int, seed: int, actions: tuple[str, ...] = ("sample",)
) -> str:
    settings = [(T, action) for T in horizons for action in actions]
    columns = ["recorded best", *[f"T = {T}" + (", mean action" if action == "mean" else "") for T, action in settings]]
    rows: list[tuple[str, list[float], list[float]]] = []  # label, per-column mean, per-column per-episode sd
    for path in paths:
        means, sds = [float(read_run(path).best_score[-1])], [float("nan")]
        for T, action in settings:
            returns, _, _, _ = evaluation_returns(path, episodes, seed, "best", T, action)
            means.append(float(np.mean(returns)))
            sds.append(float(np.std(returns)))
        rows.append((Path(path).stem, means, sds))
    out = [f"| run | {' | '.join(columns)} |", "|" + "---|" * (len(columns) + 1)]
    groups: dict[str, list[list[float]]] = {}
    for label, means, _ in rows:
        groups.setdefault(config_group(label), []).append(means)
    for group, table in groups.items():
        values = np.array(table)
        spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1], np.nan)
        cells = [
            f"{m:.1f}" + (f" ± {s:.1f}" if np.isfinite(s) else "")
            for m, s in zip(values.mean(axis=0), spread, strict=True)
        ]
        out.append(f"| **{group}** ({len(values)} runs) | " + " | ".join(cells) + " |")
    for label, means, sds in rows:
        cells = [
            f"{m:.1f}" + (f" (episode sd {s:.1f})" if np.isfinite(s) else "") for m, s in zip(means, sds, strict=True)
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.h5")
    parser.add_argument("--T", type=int, nargs="+", default=[500], help="episode lengths to evaluate at (default 500)")
    parser.add_argument(
        "--actions",
        nargs="+",
        choices=("sample", "mean"),
        default=["sample"],
        help="Beta draws and/or the Beta mean (default: sample)",
    )
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    table = evaluation_table(args.runs, args.T, args.episodes, args.seed, tuple(args.actions))
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
