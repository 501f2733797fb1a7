"""The pool's own costs against the number of ranks: collectives, the stall watch, rank 0's record and file.

For each P, one `mpiexec -n P` job (oversubscribed on a small machine) times,
on rank 0 and over many repeats, exactly what an iteration adds to the
ranks' own episodes:

- the four collectives of an iteration (allgather of scores, broadcast of the
  winner's agent, gather of the per-rank record rows to rank 0, allreduce of
  the stop bits), first with plain blocking waits, then completed through the
  `StallWatch` (the default: every collective also sends the watch's small
  point-to-point messages);
- the watch's messages alone: how many rank 0 sends (and as many it
  receives) per iteration, and rank 0's CPU time per message sent and per
  message received (measured with nothing to wait for);
- rank 0's checkpoint write of one iteration (the [iterations, P] rows, the
  agents, the commit record and two fsyncs) and the bytes a row adds, in
  this process alone, up to P = 10,000 (no ranks needed: it is rank 0's
  work on P ranks' rows);
- a rank's start-up: seconds and modules to import what it runs.

Wall times of collectives measured with P processes on 2 cores are mostly
scheduling; the projection to 1,000 and 10,000 ranks (docs/scaling.md) uses
the counted operations with rank 0's measured CPU cost per operation, and an
assumed interconnect for the tree collectives.

Usage:
    python analysis/pool_costs.py --ranks 2 4 8 16 32 64 [--repeats 40] [--out results/pool_size/pool-costs.csv]
(the checkpoint writes go to pool-costs-checkpoint.csv beside it)
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (
    "ranks",
    "collectives_plain_ms",
    "collectives_watched_ms",
    "watch_messages_per_iteration",
    "watch_send_us_per_message",
    "watch_receive_us_per_message",
    "agent_bytes",
)


def iteration_collectives(comm, agent, row, repeat: int, watch) -> None:
    """The four collectives of one pool iteration, in pool_iteration's order."""
    from mpiswim.pool import allgather_scores, broadcast_agent, combine_stops, gather_rows

    scores = allgather_scores(comm, float(comm.Get_rank() == repeat % comm.Get_size()), watch)
    broadcast_agent(comm, agent, root=int(np.argmax(scores)), watch=watch)
    gather_rows(comm, row, watch)
    combine_stops(comm, 0, watch)


def timed_collectives(comm, agent, row, repeats: int, watch) -> float:
    """Median wall seconds of an iteration's collectives on rank 0, every rank starting together."""
    seconds = []
    for repeat in range(repeats):
        if watch is not None:
            watch.begin_iteration(repeat + 2)
        comm.Barrier()
        started = time.perf_counter()
        iteration_collectives(comm, agent, row, repeat, watch)
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def watch_message_cost(comm, watch, repeats: int) -> tuple[float, float]:
    """Rank 0's CPU seconds per watch message it sends, and per message it receives.

    Under the watch, rank 0 tells every other rank when it reaches and when it
    leaves each collective, and hears the same from each of them. Here the
    ranks exchange only those messages: rank 0 sends to all, then (after a
    barrier, so nothing is waited for) reads what every rank sent it.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    sending, receiving = [], []
    for _ in range(repeats):
        watch.stage_id += 1
        progress = 2 * watch.stage_id
        watch._listen(open_inbox=True)
        comm.Barrier()
        started = time.process_time()
        watch._say(progress)
        sending.append(time.process_time() - started)
        comm.Barrier()
        started = time.process_time()
        heard_from = range(1, size) if rank == 0 else (0,)
        while watch.progress[list(heard_from)].min() < progress:
            watch._listen()
        receiving.append(time.process_time() - started)
        comm.Barrier()
        watch._listen(close_inbox=True)
    others = max(size - 1, 1)
    return float(np.median(sending)) / others, float(np.median(receiving)) / others


def checkpoint_cost(size: int, repeats: int) -> tuple[int, float, float]:
    """Bytes one iteration adds to the file at P = size, and rank 0's median and slowest seconds to write it.

    Measured in this process alone (no other rank spinning on the cores). The
    slowest write is one that rebuilds the file bigger because its
    preallocated rows ran out (at 16 MB of rows: every 14 iterations at first
    when P = 10,000).
    """
    from dataclasses import replace

    from mpiswim.bench import bench_config, random_record
    from mpiswim.checkpoint import CheckpointWriter, row_bytes
    from mpiswim.config import parse_config
    from mpiswim.policy import initial_agent
    from mpiswim.state import initial_state

    cfg = parse_config(bench_config(repeats + 2, size), size)
    state = initial_state(initial_agent(8, 2, cfg.features, cfg.time_feature, cfg.scaler, cfg.eta_travels))
    rng = np.random.default_rng(0)
    records, seconds = [], []
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:  # the disk a run writes to, not a RAM /tmp
        writer = CheckpointWriter.create(Path(folder) / "costs.h5", cfg, state, [])
        for _ in range(repeats):
            records.append(random_record(rng, size, cfg.iterate_episodes))
            seconds.append(writer.append(replace(state, iteration=len(records)), records))
        writer.close()
    return row_bytes(size, cfg.iterate_episodes), float(np.median(seconds)), float(np.max(seconds))


def start_up() -> dict:
    """A fresh process importing what a rank imports before its first iteration: seconds and modules."""
    code = (
        "import sys, time; t = time.perf_counter(); import mpiswim.train; print(time.perf_counter() - t, "
        "len(sys.modules))"
    )
    seconds, modules = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return {"import_seconds": round(float(seconds), 2), "modules": int(modules)}


def part(repeats: int) -> None:
    """One mpiexec job: rank 0 prints one COSTS line of JSON."""
    from mpi4py import MPI

    from mpiswim.policy import initial_agent, pack_agent
    from mpiswim.stall import StallWatch

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    agent = initial_agent(8, 2, "linear", True, None, False)  # Swimmer's agent with the default features
    row = np.zeros(4 + 10)  # degenerate, three phase times, 10 training returns
    plain = timed_collectives(comm, agent, row, repeats, None)
    watch = StallWatch(comm, timeout=600.0)
    watch.begin_iteration(1)
    watched = timed_collectives(comm, agent, row, repeats, watch)
    send, receive = watch_message_cost(comm, watch, repeats)
    messages = 4 * 2 * (size - 1)  # rank 0, per iteration: 4 collectives x (reached, left) x every other rank, each way
    if rank == 0:
        result = {
            "ranks": size,
            "collectives_plain_ms": round(plain * 1e3, 4),
            "collectives_watched_ms": round(watched * 1e3, 4),
            "watch_messages_per_iteration": messages,
            "watch_send_us_per_message": round(send * 1e6, 3),
            "watch_receive_us_per_message": round(receive * 1e6, 3),
            "agent_bytes": int(pack_agent(agent).nbytes),
        }
        print("COSTS " + json.dumps(result), flush=True)
    comm.Barrier()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "pool_size" / "pool-costs.csv")
    parser.add_argument(
        "--checkpoint-ranks",
        type=int,
        nargs="*",
        default=[2, 8, 64, 1000, 10000],
        help="P of rank 0's checkpoint write, measured alone",
    )
    parser.add_argument("--part", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        part(args.repeats)
        return 0
    launcher = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    rows = []
    for size in args.ranks:
        command = [launcher, "-n", str(size), sys.executable, __file__, "--part", "--repeats", str(args.repeats)]
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600).stdout
        line = next(line for line in output.splitlines() if line.startswith("COSTS "))
        rows.append(json.loads(line[len("COSTS ") :]))
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    writes = []
    for size in args.checkpoint_ranks:
        row_bytes, median, slowest = checkpoint_cost(size, args.repeats)
        writes.append(
            {
                "ranks": size,
                "record_row_bytes": row_bytes,
                "checkpoint_write_ms": round(median * 1e3, 3),
                "slowest_write_ms": round(slowest * 1e3, 1),
            }
        )
        print(writes[-1], flush=True)
    if writes:
        with args.out.with_name(args.out.stem + "-checkpoint.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(writes[0]))
            writer.writeheader()
            writer.writerows(writes)
    print("start-up:", start_up())
    return 0


if __name__ == "__main__":
    sys.exit(main())
