"""Post-hoc analysis of mpiswim checkpoints: reading, statistics, tables and plots.

`mpiswim analyze RUN.h5 [RUN2.h5 ...] --out DIR` (and the scripts in
`analysis/`) call the functions here. The package has four layers, each a
module usable on its own, and the command on top:

1. `reading`: `read_run(path)` copies the per-iteration arrays of one
   checkpoint into a `Run`, through `mpiswim.checkpoint.read_raw`: read-only,
   without HDF5 file locking, also while `mpiswim train` is writing it (it can
   never block or fail the writer). For a notebook: `read_run`, then
   `history(run)` (a dict of arrays, one row per iteration) or
   `history_frame(run)` (the same as a pandas DataFrame, if pandas is
   installed), and `read_agents(path)` (the best and current agents).
   `analysis/two_runs.py` is a worked example.
2. `statistics`: pure functions over a `Run`'s arrays (`learning_curve`,
   `win_table`, `win_share_by_hyperparameter`, `phase_seconds`, `compare_runs`).
   Several runs are grouped by config (`group_runs`: seeds of one config), each
   group averaged over its own runs on a cost axis (`X_AXES`: iterations, steps,
   CPU or wall seconds), and `run_differences` names every way the configs differ.
3. `tables`: CSV and markdown writers for those numbers.
4. `plots`: matplotlib with the headless Agg backend, imported only when a
   plot is drawn (so reading and tables work without the `analysis` extra).
5. `command`: `mpiswim analyze` and the scripts' `script_main`.

Everything public (and the notebook API of docs/usage.md) is importable from
mpiswim.analysis itself. Iteration numbers shown to users count from 1, as in
`mpiswim train`'s progress lines and `mpiswim info`: iteration K is row K - 1
of the arrays.
"""

from mpiswim.analysis.command import (
    analyze,
    analyze_command,
    analyze_run,
    script_main,
    summary_lines,
    write_analysis,
)
from mpiswim.analysis.plots import (
    compare_figure,
    learning_curve_figure,
    plot_compare,
    plot_learning_curve,
    plot_timings,
    plot_title,
    plot_wins,
    timing_axis_top,
    timings_figure,
    varying_hyperparameters,
    wins_figure,
)
from mpiswim.analysis.reading import (
    HYPERPARAMETERS,
    NOT_COMPARED,
    REFERENCE_FIX,
    AnalysisError,
    Reference,
    Run,
    read_agents,
    read_checkpoint,
    read_reference,
    read_run,
    read_runs,
    run_settings,
)
from mpiswim.analysis.statistics import (
    X_AXES,
    PhaseTotal,
    RankWins,
    RunGroup,
    RunSummary,
    ValueWins,
    band_name,
    common_end,
    common_iterations,
    common_part,
    compare_runs,
    config_group,
    cost_seconds,
    first_iterations,
    group_curves,
    group_runs,
    history,
    history_frame,
    learning_curve,
    mean_and_band,
    mean_and_ci,
    phase_seconds,
    run_differences,
    run_summaries,
    t95,
    timing_table,
    win_share_by_hyperparameter,
    win_table,
    winner_scores,
    x_values,
)
from mpiswim.analysis.tables import (
    compare_markdown,
    learning_curve_csv,
    timings_csv,
    timings_markdown,
    wins_markdown,
    write_csv,
)

__all__ = [
    "AnalysisError",
    "HYPERPARAMETERS",
    "NOT_COMPARED",
    "PhaseTotal",
    "REFERENCE_FIX",
    "RankWins",
    "RunGroup",
    "Reference",
    "Run",
    "RunSummary",
    "ValueWins",
    "X_AXES",
    "analyze",
    "analyze_command",
    "analyze_run",
    "band_name",
    "common_end",
    "common_iterations",
    "common_part",
    "compare_figure",
    "compare_markdown",
    "compare_runs",
    "config_group",
    "cost_seconds",
    "first_iterations",
    "group_curves",
    "group_runs",
    "history",
    "history_frame",
    "learning_curve",
    "learning_curve_csv",
    "learning_curve_figure",
    "mean_and_band",
    "mean_and_ci",
    "phase_seconds",
    "plot_compare",
    "plot_learning_curve",
    "plot_timings",
    "plot_title",
    "plot_wins",
    "read_agents",
    "read_checkpoint",
    "read_reference",
    "read_run",
    "read_runs",
    "run_differences",
    "run_settings",
    "run_summaries",
    "script_main",
    "summary_lines",
    "t95",
    "timing_axis_top",
    "timing_table",
    "timings_csv",
    "timings_figure",
    "timings_markdown",
    "varying_hyperparameters",
    "win_share_by_hyperparameter",
    "win_table",
    "winner_scores",
    "wins_figure",
    "wins_markdown",
    "write_analysis",
    "write_csv",
    "x_values",
]
