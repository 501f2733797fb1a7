"""Where time goes: seconds per phase (train, evaluate, communicate, checkpoint) per iteration, per rank and in total.

    python analysis/timings.py runs/default.h5 --out results/default

writes timings.png, timings.md and timings.csv (part of `mpiswim analyze`; the code is in mpiswim/analysis/).
"""

import sys

from mpiswim.analysis import plot_timings, script_main, timings_csv, timings_markdown


def write(runs, out):
    run = runs[0]
    (out / "timings.md").write_text(timings_markdown(run))
    return [plot_timings(run, out / "timings.png"), out / "timings.md", timings_csv(run, out / "timings.csv")]


if __name__ == "__main__":
    sys.exit(script_main(__doc__.splitlines()[0], write))
