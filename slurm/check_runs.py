"""Checks on mpiswim checkpoints for slurm/test_slurm.sh (`make slurm-test`).

    python slurm/check_runs.py complete RUN.h5 --iterations N --ranks P
    python slurm/check_runs.py same RESUMED.h5 UNINTERRUPTED.h5
    python slurm/check_runs.py distinct RUN.h5 RUN.h5 ...

Each prints one line per file or pair and exits 1 on the first failed check.
The summary comes from `mpiswim info --json` (as a user would read it); array
shapes and contents through `mpiswim.checkpoint.read_raw` (the rows of the
iterations done and the current agent slot, checksums verified), the expected
shapes from the checkpoint's schema (mpiswim.state.RECORD_FIELDS).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from mpiswim.checkpoint import RawCheckpoint, read_raw, stored_config
from mpiswim.state import PHASES, RECORD_FIELDS

# What must be bit-identical between a resumed and an uninterrupted run: every record field but the wall times.
COMPARED = (
    *(f"pool/{field.name}" for field in RECORD_FIELDS if field.unit != "s"),
    "agent/current/policy",
    "agent/current/baseline",
    "agent/best/policy",
    "agent/best/baseline",
)


def arrays(raw: RawCheckpoint) -> dict[str, np.ndarray]:
    """A checkpoint's arrays (as read_raw gives them) by their dataset names (pool rows trimmed to the iterations
    done).
    """
    data = {f"pool/{name}": values for name, values in raw.pool.items()}
    data |= {f"hyperparameters/{name}": values for name, values in raw.hyperparameters.items()}
    for which in ("current", "best"):
        data |= {f"agent/{which}/{part}": values for part, values in raw.agent(which)._asdict().items() if values.size}
    return data


def fail(message: str) -> None:
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def info(path: str) -> dict:
    mpiswim = shutil.which("mpiswim") or str(Path(sys.executable).with_name("mpiswim"))
    result = subprocess.run([mpiswim, "info", path, "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"`mpiswim info {path} --json` exited {result.returncode}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def complete(path: str, iterations: int, ranks: int) -> None:
    if not Path(path).is_file():
        fail(f"{path}: no such file")
    summary = info(path)
    for key, want in (("iterations_done", iterations), ("iterations_planned", iterations), ("world_size", ranks)):
        if summary[key] != want:
            fail(f"{path}: {key} is {summary[key]}, expected {want}")
    raw = read_raw(path)
    f, cfg = arrays(raw), stored_config(raw.attrs, raw.hyperparameters)
    time_weight = cfg.time_feature  # one more baseline column
    sizes = {"P": ranks, "E": cfg.iterate_episodes, "phases": len(PHASES)}
    shapes = {f"pool/{field.name}": (iterations, *field.row_shape(sizes)) for field in RECORD_FIELDS}
    shapes["hyperparameters/alpha"] = (ranks,)
    for name, shape in shapes.items():
        if f[name].shape != shape:
            fail(f"{path}: /{name} has shape {f[name].shape}, expected {shape}")
    policy, baseline = f["agent/current/policy"].shape, f["agent/current/baseline"].shape
    if f["agent/best/policy"].shape != policy or policy[0] != baseline[0] or policy[-1] + time_weight != baseline[-1]:
        fail(f"{path}: agent shapes disagree: policy {policy}, baseline {baseline}")
    scores, winner = f["pool/scores"][()], f["pool/winner"][()]
    if not np.isfinite(scores).all() or not ((winner >= 0) & (winner < ranks)).all():
        fail(f"{path}: non-finite scores or a winner outside 0..{ranks - 1}")
    if not (scores[np.arange(iterations), winner] == scores.max(axis=1)).all():
        fail(f"{path}: a recorded winner is not the argmax of its row of scores")
    print(
        f"ok: {path}: {iterations} iterations x {ranks} ranks, best score {summary['best_score']:.2f}, agent policy "
        f"{policy}",
        flush=True,
    )


def same(resumed: str, reference: str) -> None:
    a, b = arrays(read_raw(resumed)), arrays(read_raw(reference))
    for name in COMPARED:
        x, y = a[name][()], b[name][()]
        if x.shape != y.shape:
            fail(f"/{name}: shape {x.shape} in {resumed}, {y.shape} in {reference}")
        if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            rows = np.argwhere(x != y)
            fail(
                f"/{name} differs between {resumed} and {reference} (first difference at index "
                f"{rows[0].tolist() if rows.size else '?'})"
            )
    print(f"ok: {resumed} and {reference} are identical in {', '.join('/' + n for n in COMPARED)}", flush=True)


def distinct(paths: list[str]) -> None:
    seeds, scores = {}, {}
    for path in paths:
        raw = read_raw(path)
        seeds[path] = stored_config(raw.attrs, raw.hyperparameters).seed
        scores[path] = raw.pool["scores"]
    if len(set(seeds.values())) != len(paths):
        fail(f"the runs do not have one seed each: {seeds}")
    for a, b in itertools.combinations(paths, 2):
        if np.array_equal(scores[a], scores[b]):
            fail(f"{a} and {b} have identical scores: the seeds did not reach the runs")
    print(f"ok: {len(paths)} runs with seeds {list(seeds.values())} and pairwise different scores", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("complete")
    one.add_argument("path")
    one.add_argument("--iterations", type=int, required=True)
    one.add_argument("--ranks", type=int, required=True)
    pair = commands.add_parser("same")
    pair.add_argument("resumed")
    pair.add_argument("reference")
    many = commands.add_parser("distinct")
    many.add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.command == "complete":
        complete(args.path, args.iterations, args.ranks)
    elif args.command == "same":
        same(args.resumed, args.reference)
    else:
        distinct(args.paths)


if __name__ == "__main__":
    main()
