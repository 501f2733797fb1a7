"""Two runs side by side, the way a notebook would do it: the example of mpiswim's Python API.

    python analysis/two_runs.py A.h5 B.h5 --out two_runs.png

Everything here is the public reading API of `mpiswim.analysis`:
- `read_run(path)`: one checkpoint's per-iteration arrays (also of a run in progress);
- `history(run)`: a dict of numpy arrays, one row per iteration (iteration, winner,
  winner_score, best_score, the spread of the ranks' scores, score_rank0 ...);
  `history_frame(run)` gives the same as a pandas DataFrame if pandas is installed;
- `read_agents(path)`: the best and current agents as numpy arrays.
Paste the body of `main` into a notebook cell to start from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mpiswim.analysis import history, read_agents, read_run


def main() -> None:
    parser = argparse.ArgumentParser(
        description="plot the winner's and the best-ever score of two runs against iteration"
    )
    parser.add_argument("runs", nargs=2, metavar="RUN.h5")
    parser.add_argument("--out", default="two_runs.png", help="the plot (default two_runs.png)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # no display needed; drop these two lines in a notebook
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for path in args.runs:
        run = read_run(path)
        rows = history(run)
        agents = read_agents(path)
        line = ax.plot(rows["iteration"], rows["winner_score"], alpha=0.5, label=f"{run.label}: winner's score")[0]
        ax.plot(rows["iteration"], rows["best_score"], color=line.get_color(), label=f"{run.label}: best so far")
        weights = np.abs(agents["best"].policy).sum()
        print(
            f"{run.label}: {run.iterations} iterations of {run.world_size} ranks, best {agents['best_score']:.2f} at "
            f"iteration {agents['best_iteration']}, |policy| {weights:.1f}"
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("evaluation return")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {Path(args.out)}")


if __name__ == "__main__":
    main()
