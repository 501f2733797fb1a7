"""Training run: set-up on rank 0, the iteration loop, progress and failure handling.

Rank 0 reads and validates everything the user gave (config, hyperparameter
file, checkpoint to resume, output path) and broadcasts the result, so on a
cluster only rank 0 needs to see the files. Bad input ends every rank with
exit code 2 and one message. Any other exception on any rank aborts the whole
MPI job at once (MPI_Abort), so no rank is ever left waiting in a collective;
the checkpoint on disk is then the last complete iteration.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiswim.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mpiswim.config import DEFAULT_CONFIG, Config, ConfigError, load_config, parse_config
from mpiswim.env import Trajectory, make_task
from mpiswim.policy import initial_agent
from mpiswim.pool import IterationRecord, PoolState, initial_state, pool_iteration

EXIT_BAD_INPUT = 2
EXIT_DEGENERATE = 3


class InputError(Exception):
    """Bad command-line input (paths, options) found before training starts."""


@dataclass
class Setup:
    """What rank 0 prepared and every rank needs."""

    cfg: Config
    out: Path
    state: PoolState | None  # None: start from A_0


def check_output(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing run, and find an unwritable path before training."""
    if out.exists() and not force:
        raise InputError(
            f"output file '{out}' already exists. Fix: continue it with `mpiswim train --resume {out}`, "
            "pass --force to replace it (the old file stays until the first new iteration is written), or choose another --out."
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.with_name(f".{out.name}.tmp")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"cannot write the output file '{out}' ({error.strerror}). Fix: choose a writable --out path.") from None


def prepare(args, world_size: int) -> tuple[Setup, list[IterationRecord]]:
    """Validate the user's input on rank 0; raise ConfigError/CheckpointError/InputError."""
    if args.resume:
        out = Path(args.resume)
        checkpoint = load_checkpoint(out)
        if checkpoint.world_size != world_size:
            raise InputError(
                f"'{out}' was written by a pool of {checkpoint.world_size} ranks, but this job has {world_size}. "
                f"Fix: resume with `mpirun -n {checkpoint.world_size} mpiswim train --resume {out}`."
            )
        steps = {name: tuple(float(v) for v in checkpoint.hyperparameters[name]) for name in ("alpha", "eta")}
        cfg = parse_config(checkpoint.config_toml, world_size, stored_steps=steps)
        iterations = args.iterations or checkpoint.iterations_planned
        cfg = dataclasses.replace(cfg, iterations=iterations, out=str(out))
        return Setup(cfg, out, checkpoint.state), checkpoint.records

    if args.config:
        cfg = load_config(args.config, world_size)
    else:
        cfg = parse_config(DEFAULT_CONFIG, world_size)
    if args.iterations:
        cfg = dataclasses.replace(cfg, iterations=args.iterations)
    out = Path(args.out or cfg.out)
    cfg = dataclasses.replace(cfg, out=str(out))
    check_output(out, args.force)
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


def run_loop(comm, setup: Setup, records: list[IterationRecord]) -> int:
    """Run pool iterations until cfg.iterations are done; return the exit code."""
    cfg, rank = setup.cfg, comm.Get_rank()
    task = make_task(cfg.env_id, cfg.features)
    state = setup.state or initial_state(initial_agent(task.obs_dim, task.action_dim, cfg.features))
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
        if rank == 0:
            records.append(record)
            write_started = time.perf_counter()
            save_checkpoint(setup.out, cfg, state, records)
            record.timings[0, 3] = time.perf_counter() - write_started
            print(progress_line(cfg, state, record, time.perf_counter() - started, state.iteration - first), flush=True)
        if state.degenerate_streak >= cfg.max_degenerate_iterations:
            if rank == 0:
                print(
                    f"mpiswim: stopped: every branch was degenerate (Beta shapes overflowed or underflowed) in the last "
                    f"{state.degenerate_streak} iterations. Fix: use smaller step sizes ([ranks] alpha, eta), then "
                    f"`mpiswim train --resume {setup.out}`. The checkpoint holds the {state.iteration} completed iterations.",
                    file=sys.stderr,
                    flush=True,
                )
            return EXIT_DEGENERATE

    if rank == 0:
        if records:
            save_checkpoint(setup.out, cfg, state, records)  # stores the last iteration's checkpoint time
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
    if rank == 0 and setup.state is not None and setup.state.iteration >= setup.cfg.iterations:
        print(f"mpiswim: '{setup.out}' already has {setup.state.iteration} iterations (asked for {setup.cfg.iterations}); nothing to do. Pass --iterations N to go further.")
    try:
        return run_loop(comm, setup, records)
    except BaseException as error:
        print(f"mpiswim: rank {rank} failed: {error.__class__.__name__}: {error}; aborting every rank. The checkpoint keeps the last completed iteration.", file=sys.stderr, flush=True)
        if not isinstance(error, KeyboardInterrupt):
            traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
        raise
