"""Several runs (seeds, a sweep): mean scores per iteration with bands, and a table of final and best scores.

The mean winner and best-ever score per iteration with 95% confidence bands.

    python analysis/compare_runs.py runs/seed*.h5 --out results/seeds

writes compare.png, compare.csv and compare.md (`mpiswim analyze A.h5 B.h5 ...` also writes each run's own plots).
"""

import sys

from mpiswim.analysis import compare_markdown, compare_runs, plot_compare, script_main, write_csv


def write(runs, out):
    (out / "compare.md").write_text(compare_markdown(runs))
    return [
        plot_compare(runs, out / "compare.png"),
        write_csv(out / "compare.csv", compare_runs(runs)),
        out / "compare.md",
    ]


if __name__ == "__main__":
    sys.exit(script_main(__doc__.splitlines()[0], write, several=True))
