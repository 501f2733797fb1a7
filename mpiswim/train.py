"""Training run: set-up on rank 0, the iteration loop, progress and failure handling.

Rank 0 reads and validates everything the user gave (config, hyperparameter
file, checkpoint to resume, output path) and broadcasts the result, so on a
cluster only rank 0 needs to see the files. Bad input ends every rank with
exit code 2 and one message. Any other exception on any rank aborts the whole
MPI job at once (MPI_Abort), so no rank is ever left waiting in a collective;
the checkpoint on disk is then the last complete iteration.

SIGINT, SIGTERM and SIGUSR1 (forwarded to every rank by mpiexec, or sent by
SLURM) only set a flag. After each iteration the ranks agree in one allreduce whether any
of them was signalled, or rank 0 failed to write the checkpoint; then they all
stop together with the same exit code. docs/faults.md lists every exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiswim.checkpoint import (
    CheckpointError,
    CheckpointWriter,
    check_checkpoint,
    claim,
    is_checkpoint,
    load_checkpoint,
    read_raw,
)
from mpiswim.config import (
    RESUMABLE,
    Config,
    ConfigError,
    check_max_seconds,
    check_stall_timeout,
    field_label,
    load_config,
    parse_config,
    quote,
    set_up_stall_timeout,
    with_target,
)
from mpiswim.env import Task, Trajectory, task_for
from mpiswim.launcher import resume_command
from mpiswim.learn import use_compilation_cache
from mpiswim.policy import initial_agent
from mpiswim.pool import (
    broadcast_object,
    combine_stops,
    end_of_run,
    fresh_score,
    gather_hosts,
    pool_iteration,
    ranks_per_host,
)
from mpiswim.stall import StallWatch, abort_every_rank
from mpiswim.state import IterationRecord, PoolState, initial_state
from mpiswim.tasks import check_task, embedded_config

# Exit codes (docs/faults.md). 130 and 143 are what shells report for a process
# killed by SIGINT and SIGTERM (128 + signal number); here they mean "stopped
# cleanly after a complete iteration on that signal; resume to continue".
EXIT_FAILED = 1  # an exception on some rank: MPI_Abort ends the whole job
EXIT_BAD_INPUT = 2
EXIT_DEGENERATE = 3
EXIT_WRITE_FAILED = 4
EXIT_STALLED = 5  # a rank did not reach a collective within the stall timeout (mpiswim.stall.StallWatch): MPI_Abort
EXIT_CHECKPOINT_LOST = 6  # --out no longer names the run's file and it cannot be written there again
EXIT_SIGINT = 130
EXIT_SIGUSR1 = 138
EXIT_SIGTERM = 143

# Reasons to stop early, one bit each, combined over the ranks with a bitwise-OR allreduce.
STOP_SIGINT, STOP_SIGTERM, STOP_WRITE_FAILED, STOP_TARGET, STOP_CHECKPOINT_LOST, STOP_SIGUSR1 = 1, 2, 4, 8, 16, 32
STOP_TIME_LIMIT = 64  # rank 0's clock passed [run] max_seconds / --time-limit
SIGNAL_STOPS = {"SIGINT": STOP_SIGINT, "SIGTERM": STOP_SIGTERM, "SIGUSR1": STOP_SIGUSR1}

# Why a run ends (train.stop_reason) and the exit code every rank then returns.
EXIT_CODES = {
    "done": 0,
    "target": 0,
    "time limit": 0,  # a planned stop: the file holds the run so far, and the message says how to resume it
    "degenerate": EXIT_DEGENERATE,
    "write failed": EXIT_WRITE_FAILED,
    "checkpoint lost": EXIT_CHECKPOINT_LOST,
    "SIGINT": EXIT_SIGINT,
    "SIGTERM": EXIT_SIGTERM,
    "SIGUSR1": EXIT_SIGUSR1,
}


class StopRequests:
    """SIGINT/SIGTERM handlers that only note the signal; the loop decides when to stop.

    A second Ctrl-C does not wait for the iteration: it interrupts at once (and
    the job is aborted), as a second Ctrl-C to MPICH's mpiexec does.
    """

    BITS = {signal.SIGINT: STOP_SIGINT, signal.SIGTERM: STOP_SIGTERM, signal.SIGUSR1: STOP_SIGUSR1}

    MESSAGES = {
        signal.SIGINT: b"mpiswim: Ctrl-C: finishing the iteration in progress and writing it, then stopping; "
        b"Ctrl-C again aborts at once.\n",
        signal.SIGTERM: b"mpiswim: SIGTERM: finishing the iteration in progress and writing it, then stopping.\n",
        signal.SIGUSR1: b"mpiswim: SIGUSR1 (e.g. sbatch --signal=USR1): finishing the iteration in progress and "
        b"writing it, then stopping.\n",
    }

    def __init__(self) -> None:
        self.bits = 0
        self.announce = False  # set on rank 0 once MPI has started: it alone says what happens
        self.previous = {signum: signal.signal(signum, self.note) for signum in self.BITS}

    def note(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.bits & STOP_SIGINT:
            raise KeyboardInterrupt
        if self.announce and not self.bits & self.BITS[signum]:
            os.write(2, self.MESSAGES[signum])  # a plain write: safe in a handler, unlike print
        self.bits |= self.BITS[signum]

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class InputError(Exception):
    """Bad command-line input (paths, options) found before training starts."""


EMPTY_OUT = (
    "--out is empty. Fix: give a file name such as runs/my-run.h5, or leave --out out for [run] out of the "
    "config (if none: runs/<[run] name>.h5)."
)


@dataclass
class Setup:
    """What rank 0 prepared and every rank needs."""

    cfg: Config
    out: Path
    state: PoolState  # the state to continue from (A_0 for a new run)
    resume_iterations: int | None = (
        None  # a resumed run asked beyond the checkpoint's plan: the --iterations its resume hints keep
    )
    time_limit_from: str = "[run] max_seconds"  # or "--time-limit": where cfg.max_seconds came from
    tensorboard: Path | None = None  # the folder of the live TensorBoard stream (mpiswim.live); None: off
    config_iterations: int | None = None  # --resume-if-exists on a file planned beyond its config: the config's ask


def check_out_path(out: Path, force: bool, config_path: str | None = None, iterations: int | None = None) -> bool:
    """Refuse an --out that cannot be this run's checkpoint; return whether a checkpoint to replace is there.

    Checked before any training: a directory, a symbolic link, the config file
    itself, a parent that is not a directory, an unwritable folder, an existing
    file that is not an mpiswim checkpoint (--force replaces checkpoints only),
    an existing checkpoint without --force (the message says how to continue
    it, for the `iterations` this run asks for).
    """
    fix = "Fix: give --out a new file name, such as runs/my-run.h5."
    if str(out) in ("", "."):
        raise InputError(f"--out '{out}' is empty. {fix}")
    if out.is_symlink():
        raise InputError(
            f"--out '{out}' is a symbolic link; mpiswim replaces files by renaming and would replace the link, not its "
            f"target. Fix: give the real path ({os.path.realpath(out)})."
        )
    if out.is_dir():
        raise InputError(f"--out '{out}' is a directory. {fix}")
    for parent in (out.parent, *out.parent.parents):
        if parent.exists() and not parent.is_dir():
            raise InputError(f"--out '{out}': '{parent}' is a file, not a directory. {fix}")
        if parent.exists():
            break
    if config_path and out.exists() and os.path.samefile(out, config_path):
        raise InputError(f"--out '{out}' is the config file itself; the run would replace it with HDF5. {fix}")
    if out.exists():
        if not is_checkpoint(out):
            raise InputError(
                f"'{out}' exists and is not an mpiswim checkpoint; mpiswim will not replace it, even with --force "
                f"(which replaces checkpoints only). {fix}"
            )
        if not force:
            raise InputError(
                f"output file '{out}' already exists{continue_existing(out, iterations)}, pass --force to replace it, "
                "or choose another --out."
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the folder of --out '{out}' ({error.strerror}). {fix}") from None
    return out.exists()  # whether the folder is writable shows when the file is created, still before training


def continue_existing(out: Path, iterations: int | None) -> str:
    """The end of the 'already exists' message: what `out` holds and the command that continues it, with its number of
    ranks.
    """
    try:
        checkpoint = load_checkpoint(out)
    except CheckpointError as error:  # a damaged checkpoint: a resume would fail too, so the fix is to look at it
        return f" but cannot be read ({error}). Fix: see what is wrong with `mpiswim check {shlex.quote(str(out))}`"
    done, planned, ranks = checkpoint.state.iteration, checkpoint.iterations_planned, checkpoint.world_size
    held = f" ({ranks} ranks, {done} of {planned} iterations done)"
    if iterations and iterations > max(done, planned):
        return f"{held}. Fix: continue it to {iterations} iterations with `{resume_command(ranks, out, iterations)}`"
    if done < planned:
        return f"{held}. Fix: continue it with `{resume_command(ranks, out)}`"
    # Finished: a bare resume would have nothing to do, so the example asks for twice as many iterations.
    return f"{held}, a finished run. Fix: train it further with `{resume_command(ranks, out, 2 * done)}`"


@contextlib.contextmanager
def writing_output(out: Path) -> Iterator[None]:
    """Turn an OSError of creating or reopening the run's checkpoint at `out` into an InputError naming the fix."""
    try:
        yield
    except OSError as error:
        space = " on a file system with free space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise InputError(
            f"cannot write the output file '{out}' ({error.strerror or error}). Fix: choose a writable --out "
            f"path{space}."
        ) from None


def open_writer(
    out: Path, cfg: Config, state: PoolState, records: list[IterationRecord], existing_fd: int | None
) -> CheckpointWriter:
    """Create the run's checkpoint at `out` (replacing the locked file `existing_fd`, if given); InputError if it cannot
    be written.
    """
    with writing_output(out):
        return CheckpointWriter.create(out, cfg, state, records, existing_fd=existing_fd)


def config_differences(stored: Config, given: Config) -> list[str]:
    """What differs between the checkpoint's config and the given one, in the config's words (mpiswim.config.KEYS
    says which keys a resume may change).
    """
    differences = []
    for field in dataclasses.fields(Config):
        name = field.name
        if name not in RESUMABLE and getattr(stored, name) != getattr(given, name):
            differences.append(
                f"{field_label(name)} is {quote(getattr(stored, name))} in the checkpoint but "
                f"{quote(getattr(given, name))} in the config"
            )
    return differences


def resume(
    source: Path,
    out: Path,
    world_size: int,
    iterations: int | None,
    given: Config | None = None,
    force: bool = False,
    tensorboard: str | None = None,
    keep_plan: bool = False,
) -> tuple[Setup, list[IterationRecord], CheckpointWriter]:
    """Validate the checkpoint `source` for resuming with `world_size` ranks; continue it in `out`.

    `out` is `source` (continue in place, under its lock) or a new file (the
    run continues there and `source` is left untouched). keep_plan (--resume-if-exists):
    a run extended beyond the config it was started with goes on to the larger of
    `iterations` and its planned iterations, so it is not cut back to the config's.
    """
    in_place = out == source or (out.exists() and source.exists() and os.path.samefile(out, source))
    fd = (
        claim(source) if in_place and source.is_file() else None
    )  # first: a file a running job writes is refused (check_checkpoint names a missing file or a directory)
    try:
        checkpoint = check_checkpoint(source)
        config_iterations = None
        # Extended beyond its config (`--resume --iterations N` planned more than the config it was started with):
        # then the run is not cut back to the config's plan. A config that asks for less than the run's own
        # plan (a batch script shortening its next allocation) is followed.
        extended = checkpoint.iterations_planned > checkpoint.config.iterations
        if keep_plan and extended and iterations is not None and checkpoint.iterations_planned > iterations:
            config_iterations, iterations = iterations, checkpoint.iterations_planned
        beyond_plan = iterations if iterations and iterations > checkpoint.iterations_planned else None
        if checkpoint.world_size != world_size:
            raise InputError(
                f"'{source}' was written by a pool of {checkpoint.world_size} ranks, but this job has {world_size}. "
                f"Fix: resume with `{resume_command(checkpoint.world_size, source, beyond_plan)}`."
            )
        cfg = (
            checkpoint.config
        )  # as the run was written: its stored step sizes, and the defaults of the mpiswim that wrote it
        if given is not None:
            differences = config_differences(cfg, given)
            if differences:
                raise InputError(
                    f"'{source}' exists but its run was started with another config: {'; '.join(differences)}. "
                    "Only [run] iterations and [run] target may change when a run is resumed. "
                    "Fix: pass the config the run was started with, or choose another --out for a new run."
                )
            if given.target != cfg.target:  # it only decides where the run stops; the file stores the new one
                cfg = dataclasses.replace(cfg, target=given.target, toml_text=with_target(cfg.toml_text, given.target))
        cfg = dataclasses.replace(
            cfg,
            iterations=iterations or checkpoint.iterations_planned,
            out=str(out),
            stall_timeout=(given or cfg).stall_timeout,
            max_seconds=(given or cfg).max_seconds,  # a job's own budget: the given config's, else the stored one
            tensorboard=(given or cfg).tensorboard,
        )
        state, records = checkpoint.state, checkpoint.records
        live = live_folder(out, tensorboard, cfg)  # before the file is touched: a missing package changes nothing
        if not in_place:
            existing = claim(out) if check_out_path(out, force, iterations=iterations) else None
            setup = Setup(cfg, out, state, beyond_plan, tensorboard=live, config_iterations=config_iterations)
            return setup, records, open_writer(out, cfg, state, records, existing)
        with writing_output(out):
            writer = CheckpointWriter.continue_run(out, fd, cfg, checkpoint)  # in place, or rebuilt bigger
        fd = None  # the writer's now
        setup = Setup(cfg, out, state, beyond_plan, tensorboard=live, config_iterations=config_iterations)
        return setup, records, writer
    finally:
        if fd is not None:
            os.close(fd)


def prepare(args, world_size: int) -> tuple[Setup, list[IterationRecord], CheckpointWriter]:
    """Validate the user's input on rank 0 and open the run's checkpoint; raise
    ConfigError/CheckpointError/InputError.
    """
    out_given, force = getattr(args, "out", None), getattr(args, "force", False)
    asked_tensorboard = getattr(args, "tensorboard", None)
    if out_given is not None and not out_given.strip():
        raise InputError(EMPTY_OUT)
    if args.resume:
        if getattr(args, "set", None):
            raise InputError(
                f"--set {args.set[0]}: a resumed run keeps the config it started with. Fix: drop --set, or start a new "
                "run with --config and --set."
            )
        source = Path(args.resume)
        target = Path(out_given) if out_given else source
        return resume(source, target, world_size, args.iterations, force=force, tensorboard=asked_tensorboard)

    overrides = getattr(args, "set", None) or []
    if args.config:
        cfg = load_config(args.config, world_size, overrides)
    else:
        cfg = parse_config(embedded_config(overrides), world_size)  # the task's own T and name if --set changes it
    if args.iterations:
        cfg = dataclasses.replace(cfg, iterations=args.iterations)
    out = Path(out_given or cfg.out)
    cfg = dataclasses.replace(cfg, out=str(out))
    if getattr(args, "resume_if_exists", False) and out.exists() and not out.is_dir():
        return resume(out, out, world_size, cfg.iterations, given=cfg, tensorboard=asked_tensorboard, keep_plan=True)
    live = live_folder(out, asked_tensorboard, cfg)
    replace = check_out_path(out, force, args.config, cfg.iterations)
    obs_dim, action_dim = check_task(cfg)
    state = initial_state(
        initial_agent(obs_dim, action_dim, cfg.features, cfg.time_feature, cfg.scaler, cfg.eta_travels)
    )
    existing = claim(out) if replace else None  # --force: the old checkpoint, unless another job holds it
    return Setup(cfg, out, state, tensorboard=live), [], open_writer(out, cfg, state, [], existing)


def live_folder(out: Path, asked: str | None, cfg: Config) -> Path | None:
    """The TensorBoard folder of the run (mpiswim.live.tensorboard_folder), or an InputError naming the fix."""
    from mpiswim.live import LiveLogError, tensorboard_folder

    try:
        return tensorboard_folder(out, asked, cfg.tensorboard)
    except LiveLogError as error:
        raise InputError(str(error)) from None


def say(line: str) -> None:
    """Print one progress line on stdout; if its reader has gone (`mpiswim train | head`), train on silently."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # the interpreter's last flush at exit must not fail either


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def planned_work(cfg: Config, world_size: int, done: int) -> str:
    """The line rank 0 prints before training: how much work the run asks for."""
    episodes = world_size * (cfg.iterate_episodes + cfg.evaluate_episodes)
    steps = episodes * cfg.T
    remaining = cfg.iterations - done
    line = (
        f"mpiswim: planned: {remaining} iterations ({done + 1}..{cfg.iterations}) x {world_size} ranks x "
        f"({cfg.iterate_episodes} + {cfg.evaluate_episodes}) episodes of at most {cfg.T} steps = "
        f"at most {steps:,} steps per iteration, {steps * remaining:,} in all"
    )
    if cfg.max_seconds:
        line += (
            f"; or {format_seconds(cfg.max_seconds)} of wall time (time limit), whichever comes first: the ETA "
            "says which"
        )
    if cfg.target is not None:
        line += f"; it stops sooner once the best agent scores the target {cfg.target:g} (the ETA is an upper bound)"
    return line


WEEK = 7 * 24 * 3600.0


def projection(
    cfg: Config, done: int, first_iteration: float, elapsed: float, done_here: int, used: float
) -> tuple[float | None, str]:
    """(seconds to the end, which budget binds) after iteration `done`, from the iterations after the first.

    `used`: seconds of the time budget used. Without [run] max_seconds the iterations bind ("").
    With it, the run stops after the first iteration that ends past the limit: "time limit, about
    iteration N" if that comes before cfg.iterations, else "iterations". With [run] target the ETA
    is an upper bound, and says so: when the target will be reached cannot be foreseen.
    """
    eta, binds = _projection(cfg, done, first_iteration, elapsed, done_here, used)
    if eta is not None and cfg.target is not None:
        binds = f"{binds}; " if binds else ""
        binds += f"at most: sooner if the target {cfg.target:g} is reached"
    return eta, binds


def _projection(
    cfg: Config, done: int, first_iteration: float, elapsed: float, done_here: int, used: float
) -> tuple[float | None, str]:
    if done_here < 2:
        return None, ""
    per_iteration = (elapsed - first_iteration) / (done_here - 1)
    remaining = cfg.iterations - done
    if not cfg.max_seconds:
        return per_iteration * remaining, ""
    by_time = max(0, math.ceil((cfg.max_seconds - used) / per_iteration)) if per_iteration > 0 else remaining
    if by_time < remaining:
        return per_iteration * by_time, f"time limit, about iteration {done + max(by_time, 1)}"
    return per_iteration * remaining, "iterations"


def best_so_far(state: PoolState, template: str) -> str:
    """`template` filled with the best score and its iteration, or "no winner yet" while no branch has won (best score
    -inf).
    """
    if state.best_iteration < 0:
        return "no winner yet"
    return template.format(score=f"{state.best_score:.2f}", iteration=state.best_iteration + 1)


def progress_line(
    cfg: Config, state: PoolState, record: IterationRecord, elapsed: float, eta: float | None, binds: str = ""
) -> str:
    """One iteration's line: the merge, the ranks' scores, the best so far, elapsed time and ETA (and, with a time
    limit, which budget binds: projection).
    """
    if record.winner >= 0:
        merge = f"winner rank {record.winner:>2} score {record.scores[record.winner]:9.2f}"
    else:
        merge = "every branch degenerate: kept the starting agent"
    finite = record.scores[np.isfinite(record.scores)]
    spread = f"ranks {finite.min():.1f}..{finite.max():.1f}" if finite.size else "ranks -"
    note = "  fell back to best" if record.fell_back else ""
    fresh = f" fresh {record.fresh_score:.2f}" if not np.isnan(record.fresh_score) else ""  # best_by = "fresh" played
    best = "best {score} (it {iteration})" if cfg.best_by == "recorded" else "best fresh {score} (it {iteration})"
    return (
        f"iteration {state.iteration:>4}/{cfg.iterations}  {merge}{fresh}  {spread}  "
        f"{best_so_far(state, best)}  "
        f"elapsed {format_seconds(elapsed)}  eta "
        f"{format_seconds(eta) if eta is not None else 'after iteration 2'}{f' ({binds})' if binds else ''}{note}"
    )


def target_reached(
    cfg: Config, state: PoolState, task: Task, trajectory: Trajectory, watch: StallWatch, stops: StopRequests | None
) -> bool:
    """Rank 0, after an iteration that found a new best agent: does it score [run] target on fresh episodes? Prints the
    check.

    The other ranks wait at the stop check meanwhile: between episodes rank 0 tells them it is
    still working (so a long check is no stall), and a signal ends the check at once. With best_by =
    "fresh" there is nothing to play: the new best score already is the mean of its fresh episodes.
    """
    if cfg.target is None or state.best_iteration != state.iteration - 1:
        return False

    if cfg.best_by == "fresh":  # the pool just played the new best agent's fresh episodes: its best score is theirs
        score = state.best_score
    else:

        def keep_going() -> bool:
            watch.still_working()
            return not (stops and stops.bits)

        score = fresh_score(state.best_agent, task, cfg, state.iteration, trajectory, keep_going)
    if score is None:
        say("mpiswim: target check: interrupted by a signal; the run stops without it")
        return False
    reached = score >= cfg.target
    say(
        f"mpiswim: target check: the new best agent scores {score:.2f} on {cfg.target_episodes} fresh episodes (target "
        f"{cfg.target:g}){': reached' if reached else ''}"
    )
    return reached


def describe_file(path: Path) -> str:
    """What is at `path` now, in words (after a failed write, say what is there, not what was hoped)."""
    try:
        raw = read_raw(path)
    except CheckpointError as error:
        return f"'{path}' cannot be read as a checkpoint now ({error})"
    done = raw.iterations_done
    return f"'{path}' holds iterations 1..{done}" if done else f"'{path}' holds no iteration yet"


def keep_checkpoint_at_out(
    writer: CheckpointWriter,
    cfg: Config,
    state: PoolState,
    records: list[IterationRecord],
    resume_iterations: int | None = None,
) -> bool:
    """Rank 0: check that `--out` still names this run's checkpoint, whole; if it was deleted or cut short, write the
    whole run there again from memory (a warning) and return True.

    If it cannot be written there (its folder is gone, another file was moved over it),
    write the run to a rescue file beside it or in the current folder, say where, and
    return False: the run stops with EXIT_CHECKPOINT_LOST.
    """
    problem = writer.lost()
    if problem is None:
        return True
    k, path = state.iteration, writer.path
    try:
        writer.write_again(state, records)
    except (OSError, CheckpointError) as error:
        rescue, why = writer.rescue(state, records)
        writer.close()
        if rescue is None:
            where = (
                f"No file holds the {k} completed iterations now: they could not be written anywhere ({why}). "
                "Fix: give --out a folder that stays, and start the run again."
            )
        else:
            where = (
                f"The {k} completed iterations are in '{rescue}'. Fix: continue them with "
                f"`{resume_command(cfg.world_size, rescue, resume_iterations)}`."
            )
        print(
            f"mpiswim: the checkpoint '{path}' was {problem} while the run went on, and the run cannot be written "
            f"there again ({getattr(error, 'strerror', None) or error}); every rank stops (exit code "
            f"{EXIT_CHECKPOINT_LOST}). {where}",
            file=sys.stderr,
            flush=True,
        )
        return False
    print(
        f"mpiswim: warning: the checkpoint '{path}' was {problem} while the run went on; the whole run ({k} "
        "iterations) is written there again, and the run goes on.",
        file=sys.stderr,
        flush=True,
    )
    return True


def write_checkpoint(
    writer: CheckpointWriter,
    cfg: Config,
    state: PoolState,
    records: list[IterationRecord],
    resume_iterations: int | None = None,
) -> int:
    """Rank 0: append the iteration to the checkpoint; return 0, or the stop bit of what went wrong (said on stderr).

    A failed write says what the file holds and how to resume (STOP_WRITE_FAILED); a
    checkpoint gone from `--out` is written again or rescued (keep_checkpoint_at_out).
    """
    if writer.lost() is not None:  # before the append: it would go into a file nobody can open
        return 0 if keep_checkpoint_at_out(writer, cfg, state, records, resume_iterations) else STOP_CHECKPOINT_LOST
    try:
        writer.append(state, records)
    except OSError as error:
        reason = error.strerror or str(error).splitlines()[0]
        space = error.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = (
            "free space on that file system (or raise the quota)"
            if space
            else "check that file system (permissions, mount, hardware)"
        )
        print(
            f"mpiswim: cannot write iteration {state.iteration} to the checkpoint '{writer.path}' ({reason}); every "
            "rank stops "
            f"(exit code {EXIT_WRITE_FAILED}). {describe_file(writer.path)}. Fix: {fix}, then resume with "
            f"`{resume_command(cfg.world_size, writer.path, resume_iterations)}`.",
            file=sys.stderr,
            flush=True,
        )
        return STOP_WRITE_FAILED
    return 0


def finish_file(
    writer: CheckpointWriter,
    cfg: Config,
    state: PoolState,
    records: list[IterationRecord],
    resume_iterations: int | None = None,
) -> bool:
    """Rank 0 at a clean stop: compact the file to the rows it holds (a failure only costs the compaction); False if
    `--out` no longer holds the run (said on stderr).
    """
    if not keep_checkpoint_at_out(writer, cfg, state, records, resume_iterations):
        return False  # checked first: compacting renames a new file over whatever is at --out
    try:
        writer.compact(state, records)
    except OSError as error:
        print(
            f"mpiswim: warning: could not compact '{writer.path}' ({error.strerror or error}); it holds every "
            "completed iteration as it is.",
            file=sys.stderr,
            flush=True,
        )
    kept = keep_checkpoint_at_out(writer, cfg, state, records, resume_iterations)  # "done" only if --out holds it
    writer.close()
    return kept


def stop_reason(stop: int, state: PoolState, cfg: Config) -> str | None:
    """Why the run stops after this iteration (a key of EXIT_CODES), from every rank's stop bits; None: go on."""
    if stop & STOP_WRITE_FAILED:
        return "write failed"
    if stop & STOP_CHECKPOINT_LOST:
        return "checkpoint lost"
    if stop & STOP_TARGET:
        return "target"
    if state.degenerate_streak >= cfg.max_degenerate_iterations:
        return "degenerate"
    if state.iteration >= cfg.iterations:
        return "done"
    signalled = [name for name, bit in SIGNAL_STOPS.items() if stop & bit]
    if signalled:
        return signalled[0]
    return "time limit" if stop & STOP_TIME_LIMIT else None


def finish(
    comm,
    setup: Setup,
    state: PoolState,
    records: list[IterationRecord],
    writer: CheckpointWriter | None,
    watch: StallWatch,
    reason: str,
    seconds: float,
    used: float | None = None,
) -> int:
    """End the run for `reason` on every rank: rank 0 closes the checkpoint and says why; return the exit code.

    `seconds`: the iterations' wall time; `used`: the job's, as the time limit counts it (from the start of train).
    Every rank exits with rank 0's code, which a checkpoint lost at the very end changes.
    """
    code = EXIT_CODES[reason]
    if comm.Get_rank() == 0 and reason not in ("write failed", "checkpoint lost"):  # those were said when they happened
        if not finish_file(writer, setup.cfg, state, records, setup.resume_iterations):
            code = EXIT_CHECKPOINT_LOST
        elif reason in ("done", "target"):
            wins = np.bincount([r.winner for r in records if r.winner >= 0], minlength=comm.Get_size())
            say(
                f"mpiswim: done{' (target reached)' if reason == 'target' else ''}: {state.iteration} "
                f"iterations in {format_seconds(seconds)}; "
                f"{best_so_far(state, 'best score {score} at iteration {iteration}')}; wins per rank {wins.tolist()}; "
                f"checkpoint {setup.out}"
            )
        elif reason == "time limit":
            say(time_limit_message(comm.Get_size(), setup, state, seconds if used is None else used))
        elif reason == "degenerate":
            print(
                "mpiswim: stopped: every branch was degenerate (Beta shapes overflowed or underflowed) in the last "
                f"{state.degenerate_streak} iterations (exit code {code}). Fix: start a new run with smaller step "
                f"sizes ([ranks] alpha, eta); a resume would keep this run's. '{setup.out}' holds the "
                f"{state.iteration} completed iterations.",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(
                f"mpiswim: stopped by {reason} after iteration {state.iteration} of {setup.cfg.iterations} (exit code "
                f"{code}): '{setup.out}' holds the {state.iteration} completed iterations. "
                f"Resume with `{resume_command(comm.Get_size(), setup.out, setup.resume_iterations)}`.",
                file=sys.stderr,
                flush=True,
            )
    return end_of_run(comm, code, watch)  # the others wait for rank 0's last write, under the deadline


def time_limit_message(ranks: int, setup: Setup, state: PoolState, used: float) -> str:
    """What rank 0 says when the time limit stopped the run: how far it got and the command that resumes it."""
    cfg = setup.cfg
    again = (
        f"the resumed job gets {cfg.max_seconds:g} s again from the stored [run] max_seconds; --time-limit SECONDS "
        "changes that, 0 runs to the end"
        if setup.time_limit_from == "[run] max_seconds"
        else "add --time-limit SECONDS to give it a time budget too"
    )
    return (
        f"mpiswim: time limit reached after {state.iteration} iterations ({format_seconds(used)} of wall time; "
        f"{setup.time_limit_from} = {cfg.max_seconds:g} s): '{setup.out}' holds the {state.iteration} completed "
        f"iterations of {cfg.iterations} planned; "
        f"{best_so_far(state, 'best score {score} at iteration {iteration}')}. "
        f"Resume with: `{resume_command(ranks, setup.out, setup.resume_iterations)}` ({again})."
    )


def run_loop(
    comm,
    setup: Setup,
    records: list[IterationRecord],
    stops: StopRequests | None = None,
    writer: CheckpointWriter | None = None,
    watch: StallWatch | None = None,
    began: float | None = None,
) -> int:
    """Run pool iterations until cfg.iterations are done or a rank has a reason to stop; return the exit code.

    `writer` (rank 0 only) is the run's open checkpoint; every completed
    iteration is appended to it. `watch` completes every collective against
    the stall timeout (a new one if not given). `began`: the perf_counter
    at which the job started, from which [run] max_seconds counts (default: now).
    Rank 0 alone reads its clock against the time limit, and the stop check
    shares its decision, so every rank stops after the same iteration.
    """
    cfg, rank = setup.cfg, comm.Get_rank()
    task = task_for(cfg)
    state = setup.state
    watch = watch or StallWatch(comm, abort_code=EXIT_STALLED)
    watch.start_run(cfg.stall_timeout, str(setup.out), state.iteration, setup.resume_iterations)
    trajectory = Trajectory.empty(cfg.T, task.obs_dim, task.action_dim)
    if rank == 0:
        resuming = f" (resuming after {state.iteration} done)" if state.iteration else ""
        say(
            f"mpiswim: {cfg.name}: {cfg.env_id}, {comm.Get_size()} ranks, iterations "
            f"{state.iteration + 1}..{cfg.iterations}{resuming}, "
            f"T={cfg.T}, {cfg.learner} branches, {cfg.iterate_episodes}+{cfg.evaluate_episodes} episodes per rank, "
            f"checkpoint {setup.out}"
        )
        say(planned_work(cfg, comm.Get_size(), state.iteration))
    hosts = gather_hosts(comm, watch)  # where the ranks run: on a cluster, which nodes the pool spans
    watch.hosts = hosts  # rank 0's stall message names a host none of whose ranks answers first
    live = None
    if rank == 0:
        say(f"mpiswim: ranks per host: {ranks_per_host(hosts)}")
        if setup.tensorboard is not None:
            live = open_live_log(setup, records)
    started, first, first_iteration, warned = time.perf_counter(), state.iteration, 0.0, False
    began = started if began is None else began
    reason = "done" if state.iteration >= cfg.iterations else None
    while reason is None:
        state, record = pool_iteration(comm, cfg, task, state, trajectory, watch)
        stop = 0
        if rank == 0:
            records.append(record)
            stop = write_checkpoint(writer, cfg, state, records, setup.resume_iterations)
            if not stop:
                watch.written = state.iteration
                elapsed, done_here = time.perf_counter() - started, state.iteration - first
                first_iteration = elapsed if done_here == 1 else first_iteration
                used = time.perf_counter() - began
                eta, binds = projection(cfg, state.iteration, first_iteration, elapsed, done_here, used)
                say(progress_line(cfg, state, record, elapsed, eta, binds))
                if live is not None:
                    live.iteration(state, record)
                if eta is not None and eta > WEEK and not warned:
                    warned = True
                    print(
                        f"mpiswim: warning: at {(elapsed - first_iteration) / (done_here - 1):.2f} s per iteration the "
                        "run needs about "
                        f"{eta / 86400:.0f} days more. Fix, if that is not intended: fewer --iterations, or more "
                        "ranks/cores.",
                        file=sys.stderr,
                        flush=True,
                    )
                if target_reached(cfg, state, task, trajectory, watch, stops):
                    stop |= STOP_TARGET
                if cfg.max_seconds and time.perf_counter() - began >= cfg.max_seconds:
                    stop |= STOP_TIME_LIMIT
        # One small collective per iteration: does any rank have a reason to stop (a signal, a failed write, the
        # target, the time limit)?
        reason = stop_reason(combine_stops(comm, stop | (stops.bits if stops else 0), watch), state, cfg)
    now = time.perf_counter()
    if live is not None:
        live.close()
    return finish(comm, setup, state, records, writer, watch, reason, now - started, now - began)


def open_live_log(setup: Setup, records: list[IterationRecord]):
    """Rank 0: the TensorBoard writer (mpiswim.live.LiveLog) into setup.tensorboard; steps go on from the run's."""
    from mpiswim.live import LiveLog

    done = [int(np.sum(r.steps)) for r in records if np.all(np.asarray(r.steps) >= 0)]
    say(f"mpiswim: TensorBoard events in {setup.tensorboard}/ (watch with `tensorboard --logdir {setup.tensorboard}`)")
    return LiveLog(setup.tensorboard, np.array(setup.cfg.alpha), np.array(setup.cfg.eta), sum(done))


def train_command(args) -> int:
    """`mpiswim train`: every rank runs this under mpirun/mpiexec."""
    began = time.perf_counter()  # [run] max_seconds counts from here: start-up and set-up are part of the job
    stops = StopRequests()  # first: a signal from now on stops the run cleanly after an iteration
    try:
        return _train(args, stops, began)
    finally:
        stops.restore()


def _train(args, stops: StopRequests, began: float | None = None) -> int:
    from mpiswim.launcher import start_mpi

    launcher_problem = start_mpi()  # starts MPI; a launcher of another MPI: every process stops here (docs/faults.md)
    if launcher_problem is not None:
        print(launcher_problem, file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    use_compilation_cache()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    stops.announce = rank == 0  # one line on the first Ctrl-C, from rank 0 only
    setup, records, writer, problem = None, [], None, None
    watch = StallWatch(comm, set_up_stall_timeout(getattr(args, "stall_timeout", None)), abort_code=EXIT_STALLED)
    if rank == 0:
        try:
            seconds = (
                None
                if getattr(args, "stall_timeout", None) is None
                else check_stall_timeout("--stall-timeout", args.stall_timeout)
            )
            limit = (
                None
                if getattr(args, "time_limit", None) is None
                else check_max_seconds("--time-limit", args.time_limit)
            )
            setup, records, writer = prepare(args, comm.Get_size())
            if seconds is not None:
                setup.cfg = dataclasses.replace(setup.cfg, stall_timeout=seconds)
            if limit is not None:
                setup.cfg, setup.time_limit_from = dataclasses.replace(setup.cfg, max_seconds=limit), "--time-limit"
        except (ConfigError, CheckpointError, InputError) as error:
            problem = str(error)
        except Exception as error:  # anything unforeseen while reading input: still one message, all ranks exit
            problem = f"mpiswim: could not prepare the run: {error.__class__.__name__}: {error}"
    problem, setup = broadcast_object(comm, (problem, setup), watch)
    if problem is not None:
        if rank == 0:
            print(
                problem if problem.startswith(("config error", "mpiswim")) else f"mpiswim: {problem}",
                file=sys.stderr,
                flush=True,
            )
        return EXIT_BAD_INPUT
    if setup.state.iteration >= setup.cfg.iterations:
        if rank == 0:
            writer.close()
            further = resume_command(comm.Get_size(), setup.out, 2 * setup.state.iteration)
            asked = setup.config_iterations or setup.cfg.iterations
            beyond = (
                f", and it was extended beyond the {asked} its config asks for"
                if setup.state.iteration > asked and setup.config_iterations
                else ""
            )
            print(
                f"mpiswim: '{setup.out}' already has {setup.state.iteration} iterations (asked for {asked}{beyond}); "
                f"nothing to do. To go further: `{further}`."
            )
        return 0
    try:
        return run_loop(comm, setup, records, stops, writer, watch, began)
    except BaseException as error:
        what = (
            "interrupted again (second Ctrl-C)"
            if isinstance(error, KeyboardInterrupt)
            else f"failed: {error.__class__.__name__}: {error}"
        )
        print(
            f"mpiswim: rank {rank} {what}; aborting every rank. The checkpoint keeps the last completed iteration.",
            file=sys.stderr,
            flush=True,
        )
        if not isinstance(error, KeyboardInterrupt):
            traceback.print_exc()
        sys.stderr.flush()
        abort_every_rank(comm, EXIT_FAILED)
        return EXIT_FAILED  # not reached: abort_every_rank ends this process if the launcher does not
