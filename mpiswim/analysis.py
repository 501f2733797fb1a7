"""Post-hoc analysis of mpiswim checkpoints: reading, numbers, tables and plots.

`mpiswim analyze RUN.h5 [RUN2.h5 ...] --out DIR` (and the scripts in
`analysis/`) call the functions here. The module has four layers, each usable
on its own:

1. Reading: `read_run(path)` copies the per-iteration arrays of one checkpoint
   into a `Run`, through `mpiswim.checkpoint.read_raw`: read-only, without
   HDF5 file locking, from the newest commit record whose checksum holds. It
   works while `mpiswim train` is still writing the run (rank 0 only ever
   adds rows past that record and writes the spare agent slot), and it can
   never block or fail the writer. A run is "in progress" only while a job
   holds the file's lock (`is_being_written`); otherwise a run with fewer
   iterations than planned has stopped early. For a notebook: `read_run`,
   then `history(run)` (a dict of arrays, one row per iteration) or
   `history_frame(run)` (the same as a pandas DataFrame, if pandas is
   installed), and `read_agents(path)` (the best and current agents).
   `analysis/two_runs.py` is a worked example.
2. Numbers: pure functions over a `Run`'s arrays (`learning_curve`,
   `win_table`, `win_share_by_hyperparameter`, `phase_seconds`, `compare_runs`).
   Several runs are compared over the iterations all of them have, and
   `run_differences` names every way they differ.
3. Files: CSV and markdown writers for those numbers.
4. Plots: matplotlib with the headless Agg backend, imported only when a
   plot is drawn (so reading and tables work without the `analysis` extra).

Iteration numbers shown to users count from 1, as in `mpiswim train`'s
progress lines and `mpiswim info`: iteration K is row K - 1 of the arrays.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpiswim.checkpoint import CheckpointError, RawCheckpoint, is_being_written, read_raw, stored_config
from mpiswim.config import Config, ConfigError
from mpiswim.state import PHASES, RECORD_FIELDS

HYPERPARAMETERS = ("alpha", "eta")
# Config settings that may differ between runs that are still comparable (the run's name, file, length and seed).
NOT_COMPARED = ("name", "seed", "iterations", "out", "stall_timeout", "toml_text", "world_size")


class AnalysisError(Exception):
    """A file or an option the analysis cannot use: one message naming the file, the value and the fix."""


@dataclass(frozen=True)
class Run:
    """What the analysis needs from one checkpoint (k iterations, P ranks)."""

    path: Path
    label: str  # short name for legends and tables (the file name without .h5)
    run_name: str
    env_id: str
    world_size: int  # P
    iterations_planned: int
    evaluate_episodes: int | None  # episodes behind each score (None if the config does not say)
    scores: np.ndarray  # (k, P) evaluation mean return of each rank's branch; -inf if degenerate
    winner: np.ndarray  # (k,) winning rank; -1 when every branch was degenerate
    best_score: np.ndarray  # (k,) best-ever winner score after each iteration
    timings: np.ndarray  # (k, P, phases) seconds
    phases: tuple[str, ...]  # names of the timing phases
    degenerate: np.ndarray  # (k, P) bool
    fell_back: np.ndarray  # (k,) bool
    alpha: np.ndarray  # (P,) policy step size of each rank
    eta: np.ndarray  # (P,) baseline step size of each rank
    best_iteration: int  # 0-based row that produced the best agent; -1 before any
    settings: dict[str, object] = field(
        default_factory=dict
    )  # the run's config apart from NOT_COMPARED (see run_settings)
    being_written: bool = False  # a `mpiswim train` job holds the file now (see is_being_written)

    @property
    def iterations(self) -> int:
        """Number of completed iterations k."""
        return len(self.winner)

    @property
    def T(self) -> int | None:
        """Steps per episode at most (None if the config does not say)."""
        return self.settings.get("T")

    @property
    def in_progress(self) -> bool:
        """A job is still writing the run and it has not reached its planned iterations."""
        return self.being_written and self.iterations < self.iterations_planned

    @property
    def stopped_early(self) -> bool:
        """Nobody writes the run any more, and it has fewer iterations than planned (stopped, or killed)."""
        return not self.being_written and self.iterations < self.iterations_planned


# --- 1. reading ----------------------------------------------------------------


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Everything a checkpoint holds (mpiswim.checkpoint.read_raw), or an AnalysisError naming the file and the fix.

    The rows are trimmed to the iterations done; a run in progress reads as its
    last completed iteration.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise AnalysisError(
            f"'{path}' {what}. Fix: give the path of a checkpoint file written by `mpiswim train` "
            "(`make run` writes runs/default.h5)."
        )
    try:
        return read_raw(path)
    except CheckpointError as error:
        raise AnalysisError(str(error)) from None


def _evaluate_episodes(config_toml: str) -> int | None:
    try:
        value = tomllib.loads(config_toml).get("pool", {}).get("evaluate_episodes")
    except tomllib.TOMLDecodeError:
        return None
    return value if isinstance(value, int) else None


def run_settings(config_toml: str, cfg: Config | None) -> dict[str, object]:
    """The settings of a stored config that two comparable runs share: everything but NOT_COMPARED.

    `cfg` is the config as `mpiswim train` read it (mpiswim.checkpoint.stored_config), so a key left
    out and the same key given with its default value compare equal. If this mpiswim cannot read it
    (cfg None), the raw TOML keys of `config_toml` are compared instead (`section.key`).
    """
    if cfg is None:
        return _raw_settings(config_toml)
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in NOT_COMPARED}


def _raw_settings(config_toml: str) -> dict[str, object]:
    try:
        document = tomllib.loads(config_toml)
    except tomllib.TOMLDecodeError:
        return {}
    settings = {}
    for section, table in document.items():
        for key, value in table.items() if isinstance(table, dict) else ():
            if not (section == "run" and key in NOT_COMPARED):
                settings["T" if (section, key) == ("env", "T") else f"{section}.{key}"] = value
    return settings


def read_run(path: str | Path, label: str | None = None) -> Run:
    """Read one checkpoint (complete, or of a run still in progress) into a Run."""
    path = Path(path)
    being_written = (
        is_being_written(path) if path.is_file() else False
    )  # asked first: a run that ends meanwhile reads as complete
    raw = read_checkpoint(path)
    attrs = raw.attrs
    done, world_size = raw.iterations_done, int(attrs["world_size"])
    pool = raw.pool
    steps = {name: raw.hyperparameters[name] for name in HYPERPARAMETERS}
    phases = PHASES
    best_iteration = raw.best_iteration
    planned = int(attrs.get("iterations_planned", done))

    for column in RECORD_FIELDS:  # the leading dimensions: iterations, and ranks where a row has one per rank
        data, expected = pool[column.name], (done, world_size) if column.shape[:1] == ("P",) else (done,)
        if data.ndim != 1 + len(column.shape) or data.shape[: len(expected)] != expected:
            raise AnalysisError(
                f"'{path}': /pool/{column.name} has shape {data.shape} but the file says iterations_done = {done} and "
                f"world_size = {world_size}. "
                "Fix: use an intact checkpoint written by `mpiswim train`."
            )
    if pool["timings"].shape[2] != len(phases):
        raise AnalysisError(
            f"'{path}': /pool/timings has {pool['timings'].shape[2]} phase columns but {len(phases)} phase names. "
            "Fix: use an intact checkpoint."
        )
    for name, data in steps.items():
        if data.shape != (world_size,):
            raise AnalysisError(
                f"'{path}': /hyperparameters/{name} has shape {data.shape}, expected ({world_size},). "
                "Fix: use an intact checkpoint."
            )
    config_toml = str(attrs["config_toml"])
    try:
        cfg = stored_config(attrs, steps)
    except (ConfigError, OSError):  # a config this mpiswim cannot read: compared by its raw TOML keys
        cfg = None

    return Run(
        path=path,
        label=label or path.stem,
        run_name=str(attrs["run_name"]),
        env_id=str(attrs["env_id"]),
        world_size=world_size,
        iterations_planned=planned,
        evaluate_episodes=_evaluate_episodes(config_toml) if cfg is None else cfg.evaluate_episodes,
        scores=pool["scores"].astype(np.float64),
        winner=pool["winner"].astype(np.int64),
        best_score=pool["best_score"].astype(np.float64),
        timings=pool["timings"].astype(np.float64),
        phases=phases,
        degenerate=pool["degenerate"].astype(bool),
        fell_back=pool["fell_back"].astype(bool),
        alpha=steps["alpha"].astype(np.float64),
        eta=steps["eta"].astype(np.float64),
        best_iteration=best_iteration,
        settings=run_settings(config_toml, cfg),
        being_written=being_written,
    )


def config_group(label: str) -> str:
    """A run's config group: its name without the trailing seed (`improved-12341` -> `improved`)."""
    return re.sub(r"-\d+$", "", label)


def read_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Read several checkpoints; labels are the file names, made unique if two files share one."""
    stems = [Path(p).stem for p in paths]
    labels = [stem if stems.count(stem) == 1 else f"{i + 1}-{stem}" for i, stem in enumerate(stems)]
    return [read_run(path, label) for path, label in zip(paths, labels, strict=True)]


@dataclass(frozen=True)
class Reference:
    """A reference learning curve drawn beside the runs, read from a CSV file (read_reference)."""

    label: str  # the file name without its extension
    iteration: np.ndarray  # sorted
    score: np.ndarray  # NaN where the file leaves the score blank


REFERENCE_FIX = (
    "Fix: give a CSV file whose header row names the columns iteration and score (other columns are "
    "ignored), e.g. 'iteration,score' then '1,12.5'."
)


def _reference_value(path: Path, line: int, row: list[str], column: int, name: str) -> float:
    """One number of a reference curve; a blank score is a gap (NaN), anything else not a number is an AnalysisError."""
    text = row[column].strip() if column < len(row) else ""
    if name == "score" and not text:
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if math.isnan(value) or (name == "iteration" and not math.isfinite(value)):
        raise AnalysisError(
            f"reference curve '{path}', line {line}: the {name} {text!r} is not a number. {REFERENCE_FIX}"
        )
    return value


def read_reference(path: str | Path) -> Reference:
    """Read a reference learning curve: a CSV file with a header row and the columns `iteration` and `score`.

    Other columns are ignored and a blank score is a gap. A missing, unreadable
    or malformed file gives one AnalysisError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise AnalysisError(f"reference curve '{path}' {what}. {REFERENCE_FIX}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise AnalysisError(
            f"reference curve '{path}' cannot be read as CSV text ({error.__class__.__name__}: {error}). "
            f"{REFERENCE_FIX}"
        ) from None
    for name in ("iteration", "score"):
        if name not in header:
            found = f"its header is {', '.join(header)}" if any(header) else "the file is empty"
            raise AnalysisError(f"reference curve '{path}' has no column '{name}' ({found}). {REFERENCE_FIX}")
    if not rows:
        raise AnalysisError(f"reference curve '{path}' has a header but no rows. {REFERENCE_FIX}")
    iteration = np.array(
        [_reference_value(path, line, row, header.index("iteration"), "iteration") for line, row in rows]
    )
    score = np.array([_reference_value(path, line, row, header.index("score"), "score") for line, row in rows])
    order = np.argsort(iteration, kind="stable")
    return Reference(label=path.stem, iteration=iteration[order], score=score[order])


def read_agents(path: str | Path) -> dict[str, object]:
    """The run's agents as numpy arrays, for a notebook: works on a run in progress too.

    {"best": Agent, "current": Agent, "best_iteration": K, "best_score": score}:
    `best` is the run's result (the best-scoring winner so far, found in
    iteration K, counted from 1; K = 0 and score -inf before any branch won),
    `current` the agent the next iteration starts from. An Agent is a
    NamedTuple of `policy` (blocks, 2, action dims, features: log Beta shapes)
    and `baseline` (mpiswim/policy.py).
    """
    raw = read_checkpoint(path)
    return {
        "best": raw.best,
        "current": raw.current,
        "best_iteration": raw.best_iteration + 1,
        "best_score": float(raw.best_score),
    }


def history(run: Run) -> dict[str, np.ndarray]:
    """One row per iteration, for a notebook: learning_curve's columns plus score_rank0 ... score_rank{P-1}."""
    columns = learning_curve(run)
    columns.update({f"score_rank{rank}": run.scores[:, rank].copy() for rank in range(run.world_size)})
    return columns


def history_frame(run: Run):
    """history(run) as a pandas DataFrame indexed by iteration; pandas is not a dependency of mpiswim."""
    try:
        import pandas
    except ImportError:
        raise AnalysisError(
            "history_frame needs pandas, which mpiswim does not install. Fix: `pip install pandas`, or use "
            "history(run), a dict of numpy arrays."
        ) from None
    return pandas.DataFrame(history(run)).set_index("iteration")


# --- 2. numbers ------------------------------------------------------------------


def winner_scores(run: Run) -> np.ndarray:
    """(k,) the winner's evaluation score per iteration; NaN where no branch could win."""
    rows = np.arange(run.iterations)
    return np.where(run.winner >= 0, run.scores[rows, np.clip(run.winner, 0, None)], np.nan)


def learning_curve(run: Run) -> dict[str, np.ndarray]:
    """Columns of the learning curve, one row per iteration (1-based `iteration`).

    winner_score, best_score, and the spread of the finite rank scores
    (min, median, max, mean; NaN where every branch was degenerate).
    """
    finite = np.where(np.isfinite(run.scores), run.scores, np.nan)
    any_finite = np.isfinite(finite).any(axis=1)
    safe = np.where(any_finite[:, None], finite, 0.0)  # keeps nan-reductions quiet on all-NaN rows

    def spread(reduce) -> np.ndarray:
        return np.where(any_finite, reduce(safe, axis=1), np.nan) if run.iterations else np.zeros(0)

    return {
        "iteration": np.arange(1, run.iterations + 1),
        "winner": run.winner.copy(),
        "winner_score": winner_scores(run),
        "best_score": run.best_score.copy(),
        "ranks_min": spread(np.nanmin),
        "ranks_median": spread(np.nanmedian),
        "ranks_max": spread(np.nanmax),
        "ranks_mean": spread(np.nanmean),
    }


@dataclass(frozen=True)
class RankWins:
    """One row of the win table."""

    rank: int
    alpha: float
    eta: float
    wins: int
    share: float  # wins / iterations with a winner
    first_win: int | None  # 1-based iteration
    last_win: int | None
    new_bests: int  # wins that set a new best-ever score
    mean_score: float  # mean of the rank's finite scores
    degenerate: int  # degenerate branches


def win_table(run: Run) -> list[RankWins]:
    """Per-rank win counts and shares (shares of the iterations that had a winner)."""
    decided = int((run.winner >= 0).sum())
    previous_best = np.concatenate([[-np.inf], run.best_score[:-1]])
    improved = (run.winner >= 0) & (winner_scores(run) > previous_best)
    rows = []
    for rank in range(run.world_size):
        won = np.flatnonzero(run.winner == rank)
        scores = run.scores[:, rank]
        scores = scores[np.isfinite(scores)]
        rows.append(
            RankWins(
                rank=rank,
                alpha=float(run.alpha[rank]),
                eta=float(run.eta[rank]),
                wins=len(won),
                share=len(won) / decided if decided else 0.0,
                first_win=int(won[0]) + 1 if len(won) else None,
                last_win=int(won[-1]) + 1 if len(won) else None,
                new_bests=int(improved[won].sum()),
                mean_score=float(scores.mean()) if scores.size else float("nan"),
                degenerate=int(run.degenerate[:, rank].sum()),
            )
        )
    return rows


@dataclass(frozen=True)
class ValueWins:
    """Wins of all ranks that share one value of a hyperparameter."""

    name: str  # "alpha" or "eta"
    value: float
    ranks: tuple[int, ...]
    wins: int
    share: float  # share of the decided iterations
    rank_share: (
        float  # share of the pool's ranks with this value: the expected win share if the value made no difference
    )

    @property
    def ratio(self) -> float:
        """Win share over rank share: > 1 means this value wins more often than its numbers alone explain."""
        return self.share / self.rank_share if self.rank_share else float("nan")


def win_share_by_hyperparameter(run: Run) -> list[ValueWins]:
    """Win share of each distinct alpha and each distinct eta, against the share of ranks that have it."""
    decided = int((run.winner >= 0).sum())
    wins = np.bincount(run.winner[run.winner >= 0], minlength=run.world_size)
    rows = []
    for name, values in (("alpha", run.alpha), ("eta", run.eta)):
        for value in np.unique(values):
            ranks = tuple(int(r) for r in np.flatnonzero(values == value))
            won = int(wins[list(ranks)].sum())
            rows.append(
                ValueWins(
                    name, float(value), ranks, won, won / decided if decided else 0.0, len(ranks) / run.world_size
                )
            )
    return rows


def phase_seconds(run: Run) -> dict[str, np.ndarray]:
    """(k,) seconds per iteration of each phase, as one iteration's wall time splits.

    train, evaluate and communicate are means over the ranks (communicate
    includes waiting for the slowest rank, so each rank's three phases add up
    to about the same time); checkpoint is rank 0 writing the file (the other
    ranks record 0). The last row's checkpoint time is 0 while a run is in
    progress: a write is timed after it finished, so it is stored one write later.
    """
    result = {}
    for column, phase in enumerate(run.phases):
        values = run.timings[:, :, column]
        result[phase] = values.max(axis=1) if phase == "checkpoint" else values.mean(axis=1)
    return result


@dataclass(frozen=True)
class PhaseTotal:
    """One row of the timing table."""

    phase: str
    seconds: float  # summed over iterations (mean over ranks; checkpoint: rank 0)
    share: float  # of the sum over all phases
    per_iteration: float  # mean seconds per iteration
    slowest_rank: int  # the rank that spent the most time in this phase
    slowest_rank_seconds: float


def timing_table(run: Run) -> list[PhaseTotal]:
    """Total seconds and share of each phase, and the rank that spent the most in it."""
    per_iteration = phase_seconds(run)
    total = sum(float(v.sum()) for v in per_iteration.values())
    per_rank = run.timings.sum(axis=0)  # (P, phases)
    rows = []
    for column, phase in enumerate(run.phases):
        seconds = float(per_iteration[phase].sum())
        slowest = int(np.argmax(per_rank[:, column]))
        rows.append(
            PhaseTotal(
                phase=phase,
                seconds=seconds,
                share=seconds / total if total > 0 else 0.0,
                per_iteration=seconds / run.iterations if run.iterations else 0.0,
                slowest_rank=slowest,
                slowest_rank_seconds=float(per_rank[slowest, column]),
            )
        )
    return rows


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T95 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    # fmt: skip
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t95(dof: int) -> float:
    """Two-sided 95% quantile of Student's t (table up to 30 degrees of freedom, then z + 2.37/dof)."""
    if dof < 1:
        return float("nan")
    return _T95[dof - 1] if dof <= len(_T95) else 1.96 + 2.37 / dof


def mean_and_ci(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, half width of the 95% t-interval of the mean, n) of the finite values; half width NaN for n < 2."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(values[0]), float("nan"), 1
    return float(values.mean()), t95(n - 1) * float(values.std(ddof=1)) / math.sqrt(n), n


def mean_and_band(values: np.ndarray) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values; low to high is the band drawn around the mean.

    n >= 3: the 95% t-interval of the mean. n = 2: the range (min to max), since
    a t-interval of two values is 12.7 standard errors wide. n < 2: no band (NaN).
    """
    values = np.asarray(values, dtype=np.float64)
    mean, half, n = mean_and_ci(values)
    if n == 2:
        finite = values[np.isfinite(values)]
        return mean, float(finite.min()), float(finite.max()), n
    return mean, mean - half, mean + half, n


def band_name(n: int) -> str:
    """What the band around a mean of n runs shows: "95% CI, n = 5", "range of 2 runs" or "1 run, no band"."""
    if n >= 3:
        return f"95% CI, n = {n}"
    return "range of 2 runs" if n == 2 else f"{n} run, no band"


def common_iterations(runs: Sequence[Run]) -> int:
    """How many iterations every one of the runs has: the shortest run's length."""
    return min((run.iterations for run in runs), default=0)


def first_iterations(run: Run, k: int) -> Run:
    """The run as it stood after its first k iterations (its best score and best iteration as they were then)."""
    best = run.best_score[:k]
    best_iteration = run.best_iteration
    if best_iteration >= k:  # the best came later: the first row that reached the best score of the first k
        reached = np.flatnonzero(best == best[-1]) if k else np.zeros(0, dtype=int)
        best_iteration = int(reached[0]) if len(reached) and np.isfinite(best[-1]) else -1
    rows = slice(0, k)
    return dataclasses.replace(
        run,
        scores=run.scores[rows],
        winner=run.winner[rows],
        best_score=best,
        timings=run.timings[rows],
        degenerate=run.degenerate[rows],
        fell_back=run.fell_back[rows],
        best_iteration=best_iteration,
    )


def common_part(runs: Sequence[Run]) -> list[Run]:
    """Every run cut to the iterations all of them have, so that a mean over the runs does not jump where a short run
    ends.
    """
    k = common_iterations(runs)
    return [first_iterations(run, k) for run in runs]


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_differences(runs: Sequence[Run]) -> list[str]:
    """One sentence per way the runs differ: pool size P, episode length T, any other config setting, and length.

    Settings that may differ between comparable runs (name, seed, file,
    planned iterations, stall timeout) are left out: see NOT_COMPARED.
    """
    lines = []

    def compare(what: str, values: list[object]) -> None:
        if len({_show(v) for v in values}) > 1:
            lines.append(
                f"the runs differ in {what}: "
                + ", ".join(f"{run.path} has {_show(v)}" for run, v in zip(runs, values, strict=True))
            )

    compare("pool size P", [run.world_size for run in runs])
    compare("episode length T", [run.T for run in runs])
    names = dict.fromkeys(name for run in runs for name in run.settings if name != "T")
    for name in names:
        compare(f"the config setting {name}", [run.settings.get(name, "(not set)") for run in runs])
    if len({run.iterations for run in runs}) > 1:
        compare("length (iterations done)", [run.iterations for run in runs])
        lines[-1] += f"; they are compared over iterations 1-{common_iterations(runs)} only"
    return lines


def compare_runs(runs: Sequence[Run]) -> dict[str, np.ndarray]:
    """Per-iteration mean over the runs, and the band around it (mean_and_band), over the iterations all runs have.

    Columns: iteration, runs (n), winner_mean, winner_low, winner_high,
    best_mean, best_low, best_high. The band is the 95% t-interval of the mean
    for 3 runs or more, the min-max range for 2. Runs of different lengths
    are compared over the shortest run's iterations only (common_part).
    """
    runs = common_part(runs)
    names = ("iteration", "runs", "winner_mean", "winner_low", "winner_high", "best_mean", "best_low", "best_high")
    columns: dict[str, list] = {name: [] for name in names}
    winners = np.array([winner_scores(run) for run in runs])  # (runs, k)
    bests = np.array([run.best_score for run in runs])
    for row in range(common_iterations(runs)):
        winner = mean_and_band(winners[:, row])[:3]
        best = mean_and_band(bests[:, row])[:3]
        for name, value in zip(names, (row + 1, len(runs), *winner, *best), strict=True):
            columns[name].append(value)
    return {name: np.array(values) for name, values in columns.items()}


@dataclass(frozen=True)
class RunSummary:
    """One row of the several-runs table."""

    label: str
    path: str
    env_id: str
    world_size: int
    iterations: int
    final_score: float  # the last iteration's winner score
    final_mean10: float  # mean winner score of the last 10 iterations (less noisy)
    best_score: float
    best_iteration: int  # 1-based


def run_summaries(runs: Sequence[Run]) -> list[RunSummary]:
    rows = []
    for run in runs:
        winners = winner_scores(run)
        last = winners[-10:]
        rows.append(
            RunSummary(
                label=run.label,
                path=str(run.path),
                env_id=run.env_id,
                world_size=run.world_size,
                iterations=run.iterations,
                final_score=float(winners[-1]) if run.iterations else float("nan"),
                final_mean10=float(np.nanmean(last)) if np.isfinite(last).any() else float("nan"),
                best_score=float(run.best_score[-1]) if run.iterations else float("nan"),
                best_iteration=run.best_iteration + 1,
            )
        )
    return rows


# --- 3. files ----------------------------------------------------------------------


def _number(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, columns: dict[str, np.ndarray]) -> Path:
    """Write equal-length columns as CSV (header row first); NaN is written as an empty cell."""
    path = Path(path)
    names = list(columns)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*(columns[name] for name in names), strict=True):
            writer.writerow(
                [
                    ""
                    if isinstance(v, float | np.floating) and not np.isfinite(v)
                    else (repr(float(v)) if isinstance(v, float | np.floating) else int(v))
                    for v in row
                ]
            )
    return path


def learning_curve_csv(run: Run, path: str | Path) -> Path:
    """learning_curve() plus every rank's score (score_rank0 ...), one row per iteration."""
    columns = learning_curve(run)
    for rank in range(run.world_size):
        columns[f"score_rank{rank}"] = run.scores[:, rank]
    return write_csv(path, columns)


def wins_markdown(run: Run) -> str:
    """The win tables (per rank, per hyperparameter value) as markdown, with a one-line reading guide."""
    decided = int((run.winner >= 0).sum())
    text = (
        f"# Who wins: {run.label} ({run.env_id}, {run.world_size} ranks, {run.iterations} iterations, "
        f"{decided} with a winner)\n\n"
    )
    text += "Share = wins / iterations with a winner. New bests = wins that raised the best-ever score.\n\n"
    text += _markdown(
        ["rank", "alpha", "eta", "wins", "share", "first win", "last win", "new bests", "mean score", "degenerate"],
        [
            [
                r.rank,
                f"{r.alpha:g}",
                f"{r.eta:g}",
                r.wins,
                f"{r.share:.1%}",
                r.first_win or "-",
                r.last_win or "-",
                r.new_bests,
                _number(r.mean_score),
                r.degenerate,
            ]
            for r in win_table(run)
        ],
    )
    text += "\n## Win share by hyperparameter value\n\n"
    text += (
        "Rank share = the share of the pool's ranks with that value, i.e. the win share to expect if the value "
        "made no difference; ratio = win share / rank share.\n\n"
    )
    text += _markdown(
        ["hyperparameter", "value", "ranks", "wins", "win share", "rank share", "ratio"],
        [
            [
                v.name,
                f"{v.value:g}",
                ", ".join(map(str, v.ranks)),
                v.wins,
                f"{v.share:.1%}",
                f"{v.rank_share:.1%}",
                _number(v.ratio),
            ]
            for v in win_share_by_hyperparameter(run)
        ],
    )
    return text


def timings_markdown(run: Run) -> str:
    rows = timing_table(run)
    total = sum(r.seconds for r in rows)
    text = (
        f"# Where time goes: {run.label} ({run.world_size} ranks, {run.iterations} iterations, "
        f"{total:.1f} s in all)\n\n"
    )
    text += (
        "Seconds summed over iterations; train, evaluate and communicate are means over the ranks (communicate "
        "includes waiting for the slowest rank), checkpoint is rank 0 writing the file.\n\n"
    )
    text += _markdown(
        ["phase", "seconds", "share", "per iteration (s)", "slowest rank", "its seconds"],
        [
            [
                r.phase,
                f"{r.seconds:.1f}",
                f"{r.share:.1%}",
                f"{r.per_iteration:.3f}",
                r.slowest_rank,
                f"{r.slowest_rank_seconds:.1f}",
            ]
            for r in rows
        ],
    )
    text += "\n## Per rank (seconds summed over iterations)\n\n"
    per_rank = run.timings.sum(axis=0)
    text += _markdown(
        ["rank", *run.phases], [[rank, *(f"{v:.1f}" for v in per_rank[rank])] for rank in range(run.world_size)]
    )
    return text


def timings_csv(run: Run, path: str | Path) -> Path:
    """Per-iteration seconds of each phase (the columns of phase_seconds)."""
    return write_csv(path, {"iteration": np.arange(1, run.iterations + 1), **phase_seconds(run)})


def _mean_cell(values: Sequence[float]) -> str:
    """The mean of the finite values with its band: "140.88 ± 12.30" (95% CI) for 3 or more, "140.88 (range 130.10 to
    151.60)" for 2.
    """
    mean, low, high, n = mean_and_band(np.array(values, dtype=np.float64))
    if n >= 3:
        return f"{_number(mean)} ± {_number((high - low) / 2)}"
    if n == 2:
        return f"{_number(mean)} (range {_number(low)} to {_number(high)})"
    return _number(mean)


def _band_sentence(n: int) -> str:
    if n >= 3:
        return f"the 95% confidence interval of the mean (Student's t, n = {n})"
    return f"the range of the {n} runs (min to max), since a 95% t-interval of 2 runs is 12.7 standard errors wide"


def compare_markdown(runs: Sequence[Run]) -> str:
    """The several-runs table: how the runs differ, and each run's scores over the iterations all of them have, with
    their
    mean.
    """
    k = common_iterations(runs)
    rows = run_summaries(common_part(runs))
    text = f"# {len(runs)} runs: final and best scores\n\n"
    differences = run_differences(runs)
    if differences:
        text += "Warning, these runs are not alike:\n\n" + "".join(f"- {line}\n" for line in differences) + "\n"
    text += (
        f"Compared over iterations 1-{k}, the ones every run has. Final = the winner score at iteration {k}; "
        "last 10 = mean winner score of the last 10 of them; best = best-ever winner score up to there.\n\n"
    )
    text += _markdown(
        ["run", "file", "env", "ranks", "iterations done", "final", "last 10", "best", "best at iteration"],
        [
            [
                r.label,
                r.path,
                r.env_id,
                r.world_size,
                run.iterations,
                _number(r.final_score),
                _number(r.final_mean10),
                _number(r.best_score),
                r.best_iteration,
            ]
            for r, run in zip(rows, runs, strict=True)
        ],
    )
    if len(rows) > 1:
        cells = [_mean_cell([getattr(r, name) for r in rows]) for name in ("final_score", "final_mean10", "best_score")]
        text += f"| mean, {band_name(len(rows))} | | | | | {cells[0]} | {cells[1]} | {cells[2]} | |\n"
        text += (
            "\nThe band around the mean (compare.png; the low and high columns of compare.csv) is "
            f"{_band_sentence(len(rows))}.\n"
        )
    return text


# --- 4. plots ----------------------------------------------------------------------


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


def _vertical_lines(ax, rows: np.ndarray, label: str, **style) -> None:
    """A vertical line at each 0-based row's iteration; only the first gets a legend entry."""
    for i, row in enumerate(rows):
        ax.axvline(row + 1, label=label if i == 0 else "_nolegend_", **style)


def _draw_reference(ax, reference: Reference | None, last_iteration: int) -> None:
    """The reference curve as a dashed line up to `last_iteration`, labelled by its file's stem."""
    if reference is not None:
        shown = reference.iteration <= last_iteration
        ax.plot(reference.iteration[shown], reference.score[shown], color="C2", ls="--", lw=1.4, label=reference.label)


def learning_curve_figure(run: Run, reference: Reference | None = None):
    """The figure of plot_learning_curve (returned open, for plot_learning_curve to save and for tests to inspect)."""
    plt = _pyplot()
    curve = learning_curve(run)
    x = curve["iteration"]
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
        ax, np.flatnonzero(run.fell_back), "then back to the best agent (patience)", color="C1", lw=0.6, ls=":"
    )
    _vertical_lines(
        ax, np.flatnonzero(run.winner < 0), "no winner: every branch degenerate", color="k", lw=0.6, ls="--"
    )
    _draw_reference(ax, reference, run.iterations)
    episodes = f"mean of {run.evaluate_episodes} episodes" if run.evaluate_episodes else "mean return"
    ax.set(xlabel="iteration", ylabel=f"evaluation return ({episodes})", title=plot_title(run))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_learning_curve(run: Run, path: str | Path, reference: Reference | None = None) -> Path:
    """Winner score per iteration, every rank's score as points with their min-max band, best-ever line (and a reference
    curve).
    """
    return _save(learning_curve_figure(run, reference), path, dpi=110)


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


def compare_figure(runs: Sequence[Run], reference: Reference | None = None):
    """The figure of plot_compare (returned open)."""
    plt = _pyplot()
    stats = compare_runs(runs)
    x = stats["iteration"]
    band = band_name(len(runs))
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for i, run in enumerate(common_part(runs)):
        ax.plot(
            x,
            winner_scores(run),
            lw=0.6,
            alpha=0.35,
            color="0.4",
            label="one run's winner score" if i == 0 else "_nolegend_",
        )
    for key, color, name in (("winner", "C0", "winner's score"), ("best", "C3", "best ever")):
        ax.plot(x, stats[f"{key}_mean"], color=color, lw=1.5, label=f"mean {name}")
        if len(runs) >= 2:
            ax.fill_between(
                x, stats[f"{key}_low"], stats[f"{key}_high"], color=color, alpha=0.2, lw=0, label=f"{band} ({name})"
            )
    _draw_reference(ax, reference, int(x[-1]) if len(x) else 0)
    title = f"{len(runs)} runs: " + ", ".join(run.label for run in runs)[:90]
    if len({run.iterations for run in runs}) > 1:
        title += f"\ncompared over iterations 1-{common_iterations(runs)}, the ones every run has"
    ax.set(xlabel="iteration", ylabel="evaluation return", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_compare(runs: Sequence[Run], path: str | Path, reference: Reference | None = None) -> Path:
    """Mean winner score and mean best-ever score over the runs per iteration, with their band (mean_and_band), over the
    common iterations.
    """
    return _save(compare_figure(runs, reference), path, dpi=110)


# --- the command -------------------------------------------------------------------


def analyze_run(run: Run, out: Path, reference: Reference | None = None) -> list[Path]:
    """Every plot and table of one run, written into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [
        plot_learning_curve(run, out / "learning_curve.png", reference),
        learning_curve_csv(run, out / "learning_curve.csv"),
        plot_wins(run, out / "wins.png"),
        out / "wins.md",
        plot_timings(run, out / "timings.png"),
        out / "timings.md",
        timings_csv(run, out / "timings.csv"),
    ]
    (out / "wins.md").write_text(wins_markdown(run))
    (out / "timings.md").write_text(timings_markdown(run))
    return written


def write_analysis(runs: Sequence[Run], out: str | Path, reference: Reference | None = None) -> list[Path]:
    """Every plot and table of `runs` into the folder `out`; returns the files written.

    One run: its files go straight into `out`. Several runs: each run gets a
    subfolder `out/<label>/`, and `out` gets compare.png, compare.csv and
    compare.md, over the iterations all the runs have. `reference`, if given,
    is drawn on the learning-curve and compare plots.
    """
    for run in runs:
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
        return analyze_run(runs[0], out, reference)
    written = []
    for run in runs:
        written += analyze_run(run, out / run.label, reference)
    written += [
        plot_compare(runs, out / "compare.png", reference),
        write_csv(out / "compare.csv", compare_runs(runs)),
        out / "compare.md",
    ]
    (out / "compare.md").write_text(compare_markdown(runs))
    return written


def analyze(paths: Sequence[str | Path], out: str | Path, reference: str | Path | None = None) -> list[Path]:
    """Read the checkpoints at `paths` (and the reference curve, if given) and write their analysis into `out` (see
    write_analysis).
    """
    curve = read_reference(reference) if reference is not None else None
    return write_analysis(read_runs(paths), out, curve)


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
        f"  time: {phases}",
    ]


def analyze_command(args) -> int:
    """The CLI's `mpiswim analyze RUN.h5 [RUN2.h5 ...] [--reference CURVE.csv] --out DIR`.

    Prints one warning line on stderr per way the runs differ (run_differences).
    """
    reference = read_reference(args.reference) if getattr(args, "reference", None) is not None else None
    runs = read_runs(args.checkpoints)
    for line in run_differences(runs):
        print(f"mpiswim analyze: warning: {line}", file=sys.stderr)
    written = write_analysis(runs, args.out, reference)
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
