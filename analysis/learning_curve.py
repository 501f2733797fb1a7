"""Learning curve of a run: the winner's score per iteration, every rank's score, the best-ever line.

    python analysis/learning_curve.py runs/default.h5 --out results/default

writes learning_curve.png and learning_curve.csv (part of `mpiswim analyze`; the code is in mpiswim/analysis/).
"""

import sys

from mpiswim.analysis import learning_curve_csv, plot_learning_curve, script_main


def write(runs, out):
    run = runs[0]
    return [plot_learning_curve(run, out / "learning_curve.png"), learning_curve_csv(run, out / "learning_curve.csv")]


if __name__ == "__main__":
    sys.exit(script_main(__doc__.splitlines()[0], write))
