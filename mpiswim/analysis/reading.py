"""Reading runs: a checkpoint's per-iteration arrays as a `Run`, the agents, a reference curve.

`read_run(path)` copies the arrays of one checkpoint into a `Run` through
`mpiswim.checkpoint.read_raw`: read-only, without HDF5 file locking, from the newest
commit record whose checksum holds. It works while `mpiswim train` is still writing
the run (rank 0 only ever adds rows past that record and writes the spare agent slot),
and it can never block or fail the writer. A run is "in progress" only while a job holds
the file's lock (`is_being_written`); otherwise a run with fewer iterations than planned
has stopped early.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpiswim.checkpoint import CheckpointError, RawCheckpoint, is_being_written, read_raw, stored_config
from mpiswim.config import HYPERPARAMETERS, NOT_COMPARED, Config, ConfigError
from mpiswim.state import PHASES, RECORD_FIELDS

# NOT_COMPARED (mpiswim.config, from the keys' declarations): the settings that may differ between runs that are
# still comparable (the run's name, file, length and seed).


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
    steps: np.ndarray  # (k, P) environment steps of each rank's episodes; -1 where not recorded (before format 3)
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
        steps=pool["steps"].astype(np.int64),
        settings=run_settings(config_toml, cfg),
        being_written=being_written,
    )


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
