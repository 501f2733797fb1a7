"""The table of analysis/bodies.sh's runs: every MuJoCo body with and without running normalisation.

    python analysis/bodies_table.py [results/bodies]

For each checkpoint: iterations run (and whether every branch broke), the share of degenerate branches, the best
recorded score, and the best agent on 10 fresh episodes (`mpiswim evaluate`, the run's scoring action) at the run's
T = 500 and at T = 1000 (the length RL Zoo's figures use). Prints markdown (docs/results.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from mpiswim.analysis import read_run, winner_scores

BIN = Path(sys.executable).parent


def fresh(path: Path, T: int) -> str:
    result = subprocess.run(
        [str(BIN / "mpiswim"), "evaluate", str(path), "--episodes", "10", "--T", str(T), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stdout)
    return f"{summary['mean']:.0f} ± {summary['std']:.0f}"


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/bodies")
    print(
        "| body | normalisation | seed | iterations | degenerate branches | best recorded (iteration) | best agent, 10 "
        "fresh episodes, T = 500 | the same at T = 1000 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(folder.glob("*.h5")):
        body, normalisation, seed = path.stem.rsplit("-", 2)
        run = read_run(path)
        stopped = " (stopped: every branch broke)" if run.stopped_early else ""
        share = f"{np.mean(run.degenerate):.0%}"
        scores = winner_scores(run)
        if not np.isfinite(scores).any():
            best, at500, at1000 = "none", "-", "-"
        else:
            best = f"{np.nanmax(scores):.1f} ({int(np.nanargmax(scores)) + 1})"
            at500, at1000 = fresh(path, 500), fresh(path, 1000)
        print(
            f"| {body} | {normalisation} | {seed} | {run.iterations}{stopped} | {share} | {best} | {at500} | {at1000} |"
        )


if __name__ == "__main__":
    main()
