"""Who wins: per-rank win counts and shares, win share against alpha and eta, the winner over time.

    python analysis/wins.py runs/default.h5 --out results/default

writes wins.png and wins.md (part of `mpiswim analyze`; the code is in mpiswim/analysis/).
"""

import sys

from mpiswim.analysis import plot_wins, script_main, wins_markdown


def write(runs, out):
    run = runs[0]
    (out / "wins.md").write_text(wins_markdown(run))
    return [plot_wins(run, out / "wins.png"), out / "wins.md"]


if __name__ == "__main__":
    sys.exit(script_main(__doc__.splitlines()[0], write))
