"""The command: `mpiswim analyze`'s files and terminal lines, and the whole of a script in analysis/."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mpiswim.analysis import plots, tables
from mpiswim.analysis.reading import AnalysisError, Reference, Run, read_reference, read_runs
from mpiswim.analysis.statistics import (
    X_AXES,
    compare_runs,
    group_runs,
    run_differences,
    timing_table,
    win_table,
    winner_scores,
    x_values,
)
from mpiswim.analysis.tables import _number


def analyze_run(run: Run, out: Path, reference: Reference | None = None, x_axis: str = "iterations") -> list[Path]:
    """Every plot and table of one run, written into `out` (the learning curve against `x_axis`)."""
    out.mkdir(parents=True, exist_ok=True)
    written = [
        plots.plot_learning_curve(run, out / "learning_curve.png", reference, x_axis),
        tables.learning_curve_csv(run, out / "learning_curve.csv"),
        plots.plot_wins(run, out / "wins.png"),
        out / "wins.md",
        plots.plot_timings(run, out / "timings.png"),
        out / "timings.md",
        tables.timings_csv(run, out / "timings.csv"),
    ]
    (out / "wins.md").write_text(tables.wins_markdown(run))
    (out / "timings.md").write_text(tables.timings_markdown(run))
    return written


def write_analysis(
    runs: Sequence[Run], out: str | Path, reference: Reference | None = None, x_axis: str = "iterations"
) -> list[Path]:
    """Every plot and table of `runs` into the folder `out`; returns the files written.

    One run: its files go straight into `out`. Several runs: each run gets a
    subfolder `out/<label>/`, and `out` gets compare.png, compare.csv and
    compare.md: the runs grouped by config, each group's mean over its runs, each
    run over its own length. `x_axis` (X_AXES) is the plots' x-axis; `reference`,
    if given, is drawn on the learning-curve and compare plots on the iterations axis.
    """
    if x_axis not in X_AXES:
        raise AnalysisError(f"--x {x_axis!r} is not a cost axis. Fix: use one of {', '.join(X_AXES)}.")
    for run in runs:
        x_values(run, x_axis)  # a run without the steps the axis needs: one message before any file is written
        if run.iterations == 0:
            raise AnalysisError(
                f"'{run.path}' has no completed iteration yet. "
                "Fix: wait until `mpiswim train` has written its first iteration."
            )
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AnalysisError(
            f"cannot create the output folder '{out}' ({error.strerror}). Fix: choose a writable --out folder."
        ) from None
    if len(runs) == 1:
        return analyze_run(runs[0], out, reference, x_axis)
    written = []
    for run in runs:
        written += analyze_run(run, out / run.label, reference, x_axis)
    written += [
        plots.plot_compare(runs, out / "compare.png", reference, x_axis),
        tables.write_csv(out / "compare.csv", compare_runs(runs, x_axis)),
        out / "compare.md",
    ]
    (out / "compare.md").write_text(tables.compare_markdown(runs))
    return written


def analyze(
    paths: Sequence[str | Path], out: str | Path, reference: str | Path | None = None, x_axis: str = "iterations"
) -> list[Path]:
    """Read the checkpoints at `paths` (and the reference curve, if given) and write their analysis into `out` (see
    write_analysis).
    """
    curve = read_reference(reference) if reference is not None else None
    return write_analysis(read_runs(paths), out, curve, x_axis)


def _progress_note(run: Run) -> str:
    return " (in progress)" if run.in_progress else " (stopped early)" if run.stopped_early else ""


def summary_lines(run: Run) -> list[str]:
    """A few lines of headline numbers for the terminal."""
    wins = win_table(run)
    winners = winner_scores(run)
    phases = ", ".join(f"{r.phase} {r.share:.0%}" for r in timing_table(run))
    return [
        f"{run.path}: {run.env_id}, {run.world_size} ranks, {run.iterations} of {run.iterations_planned} "
        f"iterations{_progress_note(run)}",
        f"  winner's score: first {_number(float(winners[0]))}, last {_number(float(winners[-1]))}; best "
        f"{_number(float(run.best_score[-1]))} at iteration {run.best_iteration + 1}",
        "  wins per rank: " + ", ".join(f"{r.rank}: {r.wins} ({r.share:.0%})" for r in wins),
        "  new bests per rank: " + ", ".join(f"{r.rank}: {r.new_bests} ({r.new_best_share:.0%})" for r in wins),
        f"  time: {phases}",
    ]


def analyze_command(args) -> int:
    """The CLI's `mpiswim analyze RUN.h5 [RUN2.h5 ...] [--reference CURVE.csv] [--x AXIS] --out DIR`.

    With several runs: one line per config group, and one note on stderr per way the configs differ
    (run_differences): a real difference between groups, never seed, name or length.
    """
    reference = read_reference(args.reference) if getattr(args, "reference", None) is not None else None
    runs = read_runs(args.checkpoints)
    x_axis = getattr(args, "x", None) or "iterations"
    if len(runs) > 1:
        for group in group_runs(runs):
            print(f"config group {group.label}: " + ", ".join(str(run.path) for run in group.runs))
        for line in run_differences(runs):
            print(f"mpiswim analyze: note: {line}", file=sys.stderr)
    written = write_analysis(runs, args.out, reference, x_axis)
    for run in runs:
        print("\n".join(summary_lines(run)))
    print(f"wrote {len(written)} files to {args.out}/: " + ", ".join(str(p.relative_to(args.out)) for p in written))
    return 0


def script_main(
    description: str,
    write: Callable[[list[Run], Path], list[Path]],
    several: bool = False,
    argv: Sequence[str] | None = None,
) -> int:
    """The whole of a script in analysis/: parse `RUN.h5 [...] --out DIR`, read, write, report.

    `write(runs, out)` makes the files and returns their paths. Bad input gives
    one message and exit code 2, as `mpiswim analyze` does.
    """
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("checkpoints", nargs="+" if several else 1, metavar="RUN.h5")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    args = parser.parse_args(argv)
    try:
        runs = read_runs(args.checkpoints)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for path in write(runs, out):
            print(path)
    except AnalysisError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"{parser.prog}: cannot write into '{args.out}' ({error.strerror}). Fix: choose a writable --out folder.",
            file=sys.stderr,
        )
        return 2
    return 0
