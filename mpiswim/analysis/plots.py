"""Plots: matplotlib figures of a run and of several runs, drawn headless (Agg backend).

matplotlib is imported only when a plot is drawn, so reading and tables work without the
`analysis` extra. Each `*_figure` returns the figure open (for tests to inspect); each
`plot_*` saves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mpiswim.analysis.reading import AnalysisError, Reference, Run
from mpiswim.analysis.statistics import (
    X_LABELS,
    RankWins,
    band_name,
    common_end,
    group_curves,
    group_runs,
    learning_curve,
    phase_seconds,
    timing_table,
    win_share_by_hyperparameter,
    win_table,
    winner_scores,
    x_values,
)
from mpiswim.config import HYPERPARAMETERS


def _pyplot():
    """matplotlib.pyplot on the headless Agg backend, or an AnalysisError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise AnalysisError(
            "plots need matplotlib, which is not installed. Fix: `make venv` (installs the analysis extra) or pip "
            "install 'mpiswim[analysis]'."
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_title(run: Run) -> str:
    """A run's plot title: label, environment, pool size and how far it got (in progress, stopped early, or done)."""
    head = f"{run.label}: {run.env_id}, {run.world_size} ranks"
    if run.in_progress:
        return f"{head}, iteration {run.iterations} of {run.iterations_planned} (in progress)"
    if run.stopped_early:
        return f"{head}, stopped at iteration {run.iterations} of {run.iterations_planned}"
    return f"{head}, {run.iterations} iterations"


def _save(fig, path: str | Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return Path(path)


def _vertical_lines(ax, rows: np.ndarray, label: str, x: np.ndarray, **style) -> None:
    """A vertical line where each 0-based row ends on the axis `x`; only the first gets a legend entry."""
    for i, row in enumerate(rows):
        ax.axvline(x[row], label=label if i == 0 else "_nolegend_", **style)


def _draw_reference(ax, reference: Reference | None, last_iteration: int) -> None:
    """The reference curve as a dashed line up to `last_iteration`, labelled by its file's stem."""
    if reference is not None:
        shown = reference.iteration <= last_iteration
        ax.plot(reference.iteration[shown], reference.score[shown], color="C2", ls="--", lw=1.4, label=reference.label)


def learning_curve_figure(run: Run, reference: Reference | None = None, x_axis: str = "iterations"):
    """The figure of plot_learning_curve (returned open, for plot_learning_curve to save and for tests to inspect).

    `x_axis`: a key of X_AXES (iterations, steps, cpu-seconds, wall-seconds); the reference curve is drawn on the
    iterations axis only (it has no costs).
    """
    plt = _pyplot()
    curve = learning_curve(run)
    x = x_values(run, x_axis)
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    ax.fill_between(x, curve["ranks_min"], curve["ranks_max"], color="0.85", label="all ranks: min to max")
    finite = np.isfinite(run.scores)
    ax.scatter(
        np.repeat(x, run.world_size)[finite.ravel()],
        run.scores[finite],
        s=4,
        color="0.55",
        linewidths=0,
        label="a rank's score",
    )
    ax.plot(x, curve["winner_score"], color="C0", lw=1.3, label="winner's score")
    ax.step(x, curve["best_score"], where="post", color="C3", lw=1.5, label="best ever")
    _vertical_lines(
        ax, np.flatnonzero(run.fell_back), "then back to the best agent (patience)", x, color="C1", lw=0.6, ls=":"
    )
    _vertical_lines(
        ax, np.flatnonzero(run.winner < 0), "no winner: every branch degenerate", x, color="k", lw=0.6, ls="--"
    )
    if x_axis == "iterations":
        _draw_reference(ax, reference, run.iterations)
    episodes = f"mean of {run.evaluate_episodes} episodes" if run.evaluate_episodes else "mean return"
    ax.set(xlabel=X_LABELS[x_axis], ylabel=f"evaluation return ({episodes})", title=plot_title(run))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_learning_curve(
    run: Run, path: str | Path, reference: Reference | None = None, x_axis: str = "iterations"
) -> Path:
    """Winner score per iteration, every rank's score as points with their min-max band, best-ever line (and a reference
    curve), against iterations or a cost (x_axis).
    """
    return _save(learning_curve_figure(run, reference, x_axis), path, dpi=110)


def _draw_win_bars(ax, run: Run, rows: list[RankWins]) -> None:
    ranks = np.arange(run.world_size)
    ax.bar(ranks, [r.wins for r in rows], color="C0")
    for r in rows:
        ax.annotate(f"{r.share:.0%}", (r.rank, r.wins), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(
        ranks, [f"{r.rank}\nα={r.alpha:g}\nη={r.eta:g}" for r in rows], fontsize=7 if run.world_size > 6 else 8
    )
    ax.set(ylabel="wins", title="wins per rank (share of decided iterations)")


def _draw_winner_strip(ax, run: Run) -> None:
    x = np.arange(1, run.iterations + 1)
    decided = run.winner >= 0
    previous_best = np.concatenate([[-np.inf], run.best_score[:-1]])
    new_best = decided & (winner_scores(run) > previous_best)
    ax.scatter(x[decided & ~new_best], run.winner[decided & ~new_best], s=10, color="C0", label="won")
    ax.scatter(x[new_best], run.winner[new_best], s=22, facecolors="none", edgecolors="C3", label="won with a new best")
    if (~decided).any():
        ax.scatter(
            x[~decided], np.full((~decided).sum(), -0.5), marker="x", color="k", s=12, label="every branch degenerate"
        )
    ax.set_yticks(np.arange(run.world_size))
    ax.set(xlabel="iteration", ylabel="winning rank", title="winner over time")
    ax.legend(fontsize=7, loc="upper right")


def _draw_share_against(ax, run: Run, name: str, rows: list[RankWins]) -> None:
    values = run.alpha if name == "alpha" else run.eta
    groups = [v for v in win_share_by_hyperparameter(run) if v.name == name]
    ax.scatter(values, [r.share for r in rows], color="C0", s=18, label="one rank")
    shares = {"all ranks with this value": ([g.share for g in groups], "D", "C3", 40)}
    shares["expected if it made no difference"] = ([g.rank_share for g in groups], "_", "k", 300)
    for label, (share, marker, color, size) in shares.items():
        ax.scatter([g.value for g in groups], share, marker=marker, color=color, s=size, label=label)
    if values.min() > 0:
        ax.set_xscale("log")
    ax.set(xlabel=name, ylabel="win share", title=f"win share against {name}", ylim=(0, 1.05))
    ax.legend(fontsize=7)


def varying_hyperparameters(run: Run) -> list[str]:
    """The hyperparameters (alpha, eta) that are not the same on every rank: only they get a win-share panel."""
    return [name for name in HYPERPARAMETERS if np.unique(getattr(run, name)).size > 1]


def wins_figure(run: Run):
    """The figure of plot_wins (returned open). A hyperparameter that all ranks share gets no panel, only a note in the
    title.
    """
    plt = _pyplot()
    rows = win_table(run)
    varying = varying_hyperparameters(run)
    mosaic = [["bars", "strip"]]
    if varying:
        mosaic.append(varying if len(varying) == 2 else varying * 2)
    fig, axes = plt.subplot_mosaic(mosaic, figsize=(10, 7 if varying else 3.8), layout="constrained")
    _draw_win_bars(axes["bars"], run, rows)
    _draw_winner_strip(axes["strip"], run)
    for name in varying:
        _draw_share_against(axes[name], run, name, rows)
    title = plot_title(run)
    constant = [f"{name} = {getattr(run, name)[0]:g}" for name in HYPERPARAMETERS if name not in varying]
    if constant:
        title += "\n" + " and ".join(constant) + " on every rank (no win-share panel)"
    fig.suptitle(title, fontsize=10)
    return fig


def plot_wins(run: Run, path: str | Path) -> Path:
    """Wins per rank, the winner over time, and win share against alpha and eta (those that differ between ranks)."""
    return _save(wins_figure(run), path, dpi=100)


def timing_axis_top(seconds: np.ndarray) -> float | None:
    """Top of the seconds axis when iteration 1 would flatten the others, else None.

    `seconds` is the wall time of each iteration. The first one includes JAX's
    compilation (about 20 s): if it lies above the others, the axis is scaled
    to the 99th percentile of iterations 2+ (with 15% head room) instead.
    """
    if len(seconds) < 2:
        return None
    top = 1.15 * float(np.percentile(seconds[1:], 99))
    return top if 0 < top < seconds[0] else None


def timings_figure(run: Run):
    """The figure of plot_timings (returned open)."""
    plt = _pyplot()
    per_iteration = phase_seconds(run)
    totals = {row.phase: row for row in timing_table(run)}
    fig, (stack, ranks) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", width_ratios=(2, 1))
    x = np.arange(1, run.iterations + 1)
    labels = [f"{phase}: {totals[phase].seconds:.1f} s ({totals[phase].share:.0%})" for phase in run.phases]
    stack.stackplot(
        x,
        *(per_iteration[phase] for phase in run.phases),
        labels=labels,
        colors=[f"C{i}" for i in range(len(run.phases))],
        step="mid",
    )
    stack.set(xlabel="iteration", ylabel="seconds", title="time per iteration by phase (mean over ranks)")
    seconds = sum(per_iteration.values())
    top = timing_axis_top(seconds)
    if top is not None:
        stack.set_ylim(0, top)
        note = f"iteration 1: {seconds[0]:.1f} s, off the scale\n(JAX compiles; the axis fits iterations 2+)"
        stack.annotate(
            note,
            xy=(1, top),
            xytext=(12, -6),
            textcoords="offset points",
            va="top",
            fontsize=8,
            arrowprops={"arrowstyle": "->", "lw": 0.8},
        )
    stack.legend(fontsize=8, loc="lower right" if top is not None else "best")

    per_rank = run.timings.sum(axis=0)
    left = np.zeros(run.world_size)
    for i in range(len(run.phases)):
        ranks.barh(np.arange(run.world_size), per_rank[:, i], left=left, color=f"C{i}")
        left += per_rank[:, i]
    ranks.set_yticks(np.arange(run.world_size))
    ranks.invert_yaxis()
    ranks.set(xlabel="seconds, summed over iterations", ylabel="rank", title="each rank's time")
    fig.suptitle(plot_title(run), fontsize=10)
    return fig


def plot_timings(run: Run, path: str | Path) -> Path:
    """Seconds per phase in each iteration (stacked; iteration 1 left off the scale if it dwarfs the rest), and each
    rank's
    totals per phase.
    """
    return _save(timings_figure(run), path, dpi=100)


def compare_figure(runs: Sequence[Run], reference: Reference | None = None, x_axis: str = "iterations"):
    """The figure of plot_compare (returned open): one curve and legend entry per config group (group_runs).

    Left the winner's score, right the best-ever score: each group's mean over its own runs with their band
    (band_name), each run over its own length; where runs end at different points, a dotted line marks the end of
    the range every run covers.
    """
    plt = _pyplot()
    groups = group_runs(runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained", sharey=True)
    for i, group in enumerate(groups):
        curves, color = group_curves(group, x_axis), f"C{i % 10}"
        n = len(group.runs)
        for ax, key in zip(axes, ("winner", "best"), strict=True):
            ax.plot(curves["x"], curves[f"{key}_mean"], color=color, lw=1.5, label=f"{group.label}: mean")
            if n >= 2:
                ax.fill_between(
                    curves["x"], curves[f"{key}_low"], curves[f"{key}_high"], color=color, alpha=0.2, lw=0,
                    label=f"{group.name}: {band_name(n)}", step="post" if key == "best" else None,
                )  # fmt: skip
    ends = {float(x_values(run, x_axis)[-1]) for run in runs if run.iterations}
    for ax, name in zip(axes, ("winner's score", "best-ever score"), strict=True):
        if len(ends) > 1:
            ax.axvline(common_end(runs, x_axis), color="k", lw=0.8, ls=":", label="every run has data up to here")
        if x_axis == "iterations":
            _draw_reference(ax, reference, int(max(ends, default=0)))
        ax.set(xlabel=X_LABELS[x_axis], title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("evaluation return")
    fig.suptitle(
        f"{len(runs)} runs in {len(groups)} config group{'s' if len(groups) > 1 else ''}: "
        + ", ".join(group.label for group in groups)[:110],
        fontsize=10,
    )
    return fig


def plot_compare(
    runs: Sequence[Run], path: str | Path, reference: Reference | None = None, x_axis: str = "iterations"
) -> Path:
    """Per config group, the mean winner and best-ever scores over its runs with their band (compare_figure)."""
    return _save(compare_figure(runs, reference, x_axis), path, dpi=110)
