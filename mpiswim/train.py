"""Training run: set-up on rank 0, the iteration loop, progress and failure handling.

Rank 0 reads and validates everything the user gave (config, hyperparameter
file, checkpoint to resume, output path) and broadcasts the result, so on a
cluster only rank 0 needs to see the files. Bad input ends every rank with
exit code 2 and one message. Any other exception on any rank aborts the whole
MPI job at once (MPI_Abort), so no rank is ever left waiting in a collective;
the checkpoint on disk is then the last complete iteration.

SIGINT and SIGTERM (forwarded to every rank by mpiexec, or sent by SLURM) only
set a flag. After each iteration the ranks agree in one allreduce whether any
of them was signalled, or rank 0 failed to write the checkpoint; then they all
stop together with the same exit code. docs/faults.md lists every exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiswim.checkpoint import CheckpointError, check_checkpoint, estimated_size, save_checkpoint
from mpiswim.config import DEFAULT_CONFIG, SCHEMA, Config, ConfigError, load_config, parse_config
from mpiswim.env import Trajectory, check_environment, make_task
from mpiswim.policy import initial_agent
from mpiswim.pool import IterationRecord, PoolState, initial_state, pool_iteration

# Exit codes (docs/faults.md). 130 and 143 are what shells report for a process
# killed by SIGINT and SIGTERM (128 + signal number); here they mean "stopped
# cleanly after a complete iteration on that signal; resume to continue".
EXIT_FAILED = 1  # an exception on some rank: MPI_Abort ends the whole job
EXIT_BAD_INPUT = 2
EXIT_DEGENERATE = 3
EXIT_WRITE_FAILED = 4
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# Reasons to stop early, one bit each, combined over the ranks with a bitwise-OR allreduce.
STOP_SIGINT, STOP_SIGTERM, STOP_WRITE_FAILED = 1, 2, 4


class StopRequests:
    """SIGINT/SIGTERM handlers that only note the signal; the loop decides when to stop.

    A second Ctrl-C does not wait for the iteration: it interrupts at once (and
    the job is aborted), as a second Ctrl-C to MPICH's mpiexec does.
    """

    BITS = {signal.SIGINT: STOP_SIGINT, signal.SIGTERM: STOP_SIGTERM}

    def __init__(self) -> None:
        self.bits = 0
        self.previous = {signum: signal.signal(signum, self.note) for signum in self.BITS}

    def note(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.bits & STOP_SIGINT:
            raise KeyboardInterrupt
        self.bits |= self.BITS[signum]  # nothing else: a handler may run at any moment

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class InputError(Exception):
    """Bad command-line input (paths, options) found before training starts."""


@dataclass
class Setup:
    """What rank 0 prepared and every rank needs."""

    cfg: Config
    out: Path
    state: PoolState | None  # None: start from A_0


def check_output(out: Path, force: bool, size: int = 0) -> None:
    """Refuse to overwrite an existing run; find an unwritable path or a full disk before training.

    The probe writes `size` bytes (what the checkpoint will need) beside `out`,
    syncs and removes them, so a full file system or an exhausted quota shows now.
    (A run stopped later by a full disk keeps its previous checkpoint: exit code 4.)
    """
    if out.exists() and not force:
        raise InputError(
            f"output file '{out}' already exists. Fix: continue it with `mpiswim train --resume {out}` (or add --resume-if-exists), "
            "pass --force to replace it (the old file stays until the first new iteration is written), or choose another --out."
        )
    probe = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(out.parent).free < size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with open(probe, "wb") as handle:
            for start in range(0, size, 1 << 20):
                handle.write(bytes(min(1 << 20, size - start)))
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as error:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        reason = "Not a directory" if isinstance(error, FileExistsError) else error.strerror  # mkdir found a file on the path
        raise InputError(
            f"cannot write the output file '{out}' ({reason}; the checkpoint needs about {size / 1e6:.1f} MB). Fix: choose a writable --out path on a file system with free space."
        ) from None


# Config fields that may differ between a checkpoint and the config of a resumed run.
MAY_CHANGE_ON_RESUME = ("iterations", "out", "toml_text")
FIELD_NAMES = {"env_id": "[env] id", "world_size": "number of ranks"}  # the others are named as in SCHEMA


def config_differences(stored: Config, given: Config) -> list[str]:
    """What differs between the checkpoint's config and the given one, in the config's words."""
    differences = []
    for field in dataclasses.fields(Config):
        name = field.name
        if name not in MAY_CHANGE_ON_RESUME and getattr(stored, name) != getattr(given, name):
            section = next((s for s, keys in SCHEMA.items() if name in keys), None)
            label = FIELD_NAMES.get(name) or (f"[{section}] {name}" if section else name)
            differences.append(f"{label} is {getattr(stored, name)!r} in the checkpoint but {getattr(given, name)!r} in the config")
    return differences


def resume(out: Path, world_size: int, iterations: int | None, given: Config | None = None) -> tuple[Setup, list[IterationRecord]]:
    """Validate a checkpoint for resuming with `world_size` ranks (and, if given, the config it must match)."""
    checkpoint = check_checkpoint(out)
    if checkpoint.world_size != world_size:
        raise InputError(
            f"'{out}' was written by a pool of {checkpoint.world_size} ranks, but this job has {world_size}. Fix: resume with `mpirun -n {checkpoint.world_size} mpiswim train --resume {out}`."
        )
    steps = {name: tuple(float(v) for v in checkpoint.hyperparameters[name]) for name in ("alpha", "eta")}
    cfg = parse_config(checkpoint.config_toml, world_size, stored_steps=steps)
    if given is not None:
        differences = config_differences(cfg, given)
        if differences:
            raise InputError(
                f"'{out}' exists but its run was started with another config: {'; '.join(differences)}. "
                "Only [run] iterations may change when a run is resumed. "
                "Fix: pass the config the run was started with, or choose another --out for a new run."
            )
    cfg = dataclasses.replace(cfg, iterations=iterations or checkpoint.iterations_planned, out=str(out))
    check_output(out, force=True, size=estimated_size(cfg, *check_environment(cfg.env_id, cfg.features)))
    return Setup(cfg, out, checkpoint.state), checkpoint.records


def prepare(args, world_size: int) -> tuple[Setup, list[IterationRecord]]:
    """Validate the user's input on rank 0; raise ConfigError/CheckpointError/InputError."""
    if args.resume:
        return resume(Path(args.resume), world_size, args.iterations)

    if args.config:
        cfg = load_config(args.config, world_size)
    else:
        cfg = parse_config(DEFAULT_CONFIG, world_size)
    if args.iterations:
        cfg = dataclasses.replace(cfg, iterations=args.iterations)
    out = Path(args.out or cfg.out)
    cfg = dataclasses.replace(cfg, out=str(out))
    if getattr(args, "resume_if_exists", False) and out.exists():
        return resume(out, world_size, cfg.iterations, given=cfg)
    check_output(out, args.force, estimated_size(cfg, *check_environment(cfg.env_id, cfg.features)))
    return Setup(cfg, out, None), []


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def progress_line(cfg: Config, state: PoolState, record: IterationRecord, elapsed: float, done_here: int) -> str:
    remaining = cfg.iterations - state.iteration
    eta = elapsed / done_here * remaining
    if record.winner >= 0:
        merge = f"winner rank {record.winner:>2} score {record.scores[record.winner]:9.2f}"
    else:
        merge = "every branch degenerate: kept the starting agent"
    finite = record.scores[np.isfinite(record.scores)]
    spread = f"ranks {finite.min():.1f}..{finite.max():.1f}" if finite.size else "ranks -"
    note = "  fell back to best" if record.fell_back else ""
    return (
        f"iteration {state.iteration:>4}/{cfg.iterations}  {merge}  {spread}  "
        f"best {state.best_score:.2f} (it {state.best_iteration + 1})  "
        f"elapsed {format_seconds(elapsed)}  eta {format_seconds(eta)}{note}"
    )


def write_checkpoint(setup: Setup, state: PoolState, records: list[IterationRecord]) -> bool:
    """Rank 0: write the checkpoint after an iteration; on failure say what is kept and return False."""
    started = time.perf_counter()
    try:
        save_checkpoint(setup.out, setup.cfg, state, records)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error).splitlines()[0]
        kept = f"'{setup.out}' is unchanged and holds iterations 1..{state.iteration - 1}" if state.iteration > 1 and setup.out.exists() else "no checkpoint of this run was written"
        print(
            f"mpiswim: cannot write the checkpoint '{setup.out}' after iteration {state.iteration} ({reason}); every rank stops "
            f"(exit code {EXIT_WRITE_FAILED}). {kept}. Fix: free space on (or repair) that file system, then resume with "
            f"`mpirun -n {setup.cfg.world_size} mpiswim train --resume {setup.out}`.",
            file=sys.stderr,
            flush=True,
        )
        return False
    records[-1].timings[0, 3] = time.perf_counter() - started
    return True


def run_loop(comm, setup: Setup, records: list[IterationRecord], stops: StopRequests | None = None) -> int:
    """Run pool iterations until cfg.iterations are done or a rank has a reason to stop; return the exit code."""
    from mpi4py import MPI

    cfg, rank = setup.cfg, comm.Get_rank()
    task = make_task(cfg.env_id, cfg.features, observation_scale=cfg.observation_scale)
    state = setup.state or initial_state(initial_agent(task.obs_dim, task.action_dim, cfg.features, cfg.time_baseline))
    trajectory = Trajectory.empty(cfg.T, task.obs_dim, task.action_dim)
    if rank == 0:
        print(
            f"mpiswim: {cfg.name}: {cfg.env_id}, {comm.Get_size()} ranks, iterations {state.iteration + 1}..{cfg.iterations}, "
            f"T={cfg.T}, {cfg.iterate_episodes}+{cfg.evaluate_episodes} episodes per rank, checkpoint {setup.out}",
            flush=True,
        )
    started, first = time.perf_counter(), state.iteration
    while state.iteration < cfg.iterations:
        state, record = pool_iteration(comm, cfg, task, state, trajectory)
        stop = 0
        if rank == 0:
            records.append(record)
            if write_checkpoint(setup, state, records):
                print(progress_line(cfg, state, record, time.perf_counter() - started, state.iteration - first), flush=True)
            else:
                stop |= STOP_WRITE_FAILED
        # One small collective per iteration: does any rank have a reason to stop (a signal, a failed write)?
        stop = comm.allreduce(stop | (stops.bits if stops else 0), op=MPI.BOR)
        if stop & STOP_WRITE_FAILED:
            return EXIT_WRITE_FAILED
        if state.degenerate_streak >= cfg.max_degenerate_iterations:
            if rank == 0:
                print(
                    f"mpiswim: stopped: every branch was degenerate (Beta shapes overflowed or underflowed) in the last "
                    f"{state.degenerate_streak} iterations (exit code {EXIT_DEGENERATE}). Fix: start a new run with smaller step sizes "
                    f"([ranks] alpha, eta); a resume would keep this run's. '{setup.out}' holds the {state.iteration} completed iterations.",
                    file=sys.stderr,
                    flush=True,
                )
            return EXIT_DEGENERATE
        if stop and state.iteration < cfg.iterations:
            code, name = (EXIT_SIGTERM, "SIGTERM") if stop & STOP_SIGTERM else (EXIT_SIGINT, "SIGINT")
            if rank == 0:
                print(
                    f"mpiswim: stopped by {name} after iteration {state.iteration} of {cfg.iterations} (exit code {code}): "
                    f"'{setup.out}' holds the {state.iteration} completed iterations. "
                    f"Resume with `mpirun -n {comm.Get_size()} mpiswim train --resume {setup.out}`.",
                    file=sys.stderr,
                    flush=True,
                )
            return code

    if rank == 0:
        if records:
            try:
                save_checkpoint(setup.out, cfg, state, records)  # stores the last iteration's checkpoint time
            except OSError as error:
                print(f"mpiswim: warning: could not add the last write's timing to '{setup.out}' ({error}); it holds every iteration.", file=sys.stderr)
        wins = np.bincount([r.winner for r in records if r.winner >= 0], minlength=comm.Get_size())
        print(
            f"mpiswim: done: {state.iteration} iterations in {format_seconds(time.perf_counter() - started)}; "
            f"best score {state.best_score:.2f} at iteration {state.best_iteration + 1}; wins per rank {wins.tolist()}; "
            f"checkpoint {setup.out}",
            flush=True,
        )
    return 0


def train_command(args) -> int:
    """`mpiswim train`: every rank runs this under mpirun/mpiexec."""
    stops = StopRequests()  # first: a signal from now on stops the run cleanly after an iteration
    try:
        return _train(args, stops)
    finally:
        stops.restore()


def _train(args, stops: StopRequests) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    setup, records, problem = None, [], None
    if rank == 0:
        try:
            setup, records = prepare(args, comm.Get_size())
        except (ConfigError, CheckpointError, InputError) as error:
            problem = str(error)
        except Exception as error:  # anything unforeseen while reading input: still one message, all ranks exit
            problem = f"mpiswim: could not prepare the run: {error.__class__.__name__}: {error}"
    problem, setup = comm.bcast((problem, setup), root=0)
    if problem is not None:
        if rank == 0:
            print(problem if problem.startswith(("config error", "mpiswim")) else f"mpiswim: {problem}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    if setup.state is not None and setup.state.iteration >= setup.cfg.iterations:
        if rank == 0:
            print(f"mpiswim: '{setup.out}' already has {setup.state.iteration} iterations (asked for {setup.cfg.iterations}); nothing to do. Pass --iterations N to go further.")
        return 0
    try:
        return run_loop(comm, setup, records, stops)
    except BaseException as error:
        what = "interrupted again (second Ctrl-C)" if isinstance(error, KeyboardInterrupt) else f"failed: {error.__class__.__name__}: {error}"
        print(f"mpiswim: rank {rank} {what}; aborting every rank. The checkpoint keeps the last completed iteration.", file=sys.stderr, flush=True)
        if not isinstance(error, KeyboardInterrupt):
            traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(EXIT_FAILED)
        return EXIT_FAILED  # MPICH's MPI_Abort may return before the launcher ends this process
