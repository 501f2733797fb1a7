"""Learning against pool size for one config: how many ranks get to the config's [run] target soonest.

For each pool size P and seed, runs `mpiexec -n P mpiswim train --config CONFIG`
(with [run] seed replaced; the config's [ranks] spreads stretch over the P
ranks) until its [run] target stops it or its iterations run out, and
records: iterations, environment steps (P x episodes per rank x T per
iteration; the target checks' episodes not counted), wall seconds and CPU
seconds of the whole job (launcher and every rank, start-up included, from
getrusage of the children), and the best agent's mean return on 50 fresh
episodes (`mpiswim evaluate --episodes 50`, the run's T and action).

Usage:
    python analysis/pool_size.py CONFIG --ranks 1 2 4 8 --seeds 0 1 2 [--out results/pool_size/NAME.csv]
Runs already in the CSV are skipped, so a stopped study continues.
Checkpoints go to runs/pool_size/.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import resource
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COLUMNS = (
    "ranks",
    "seed",
    "iterations",
    "target_reached",
    "steps",
    "wall_s",
    "cpu_s",
    "best_score",
    "fresh_mean",
    "fresh_std",
)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(config: Path, ranks: int, seed: int) -> dict:
    """Train one pool to its target (or its iterations) and measure it."""
    work = ROOT / "runs" / "pool_size"
    work.mkdir(parents=True, exist_ok=True)
    name = f"{config.stem}-P{ranks}-{seed}"
    settings = tomllib.loads(config.read_text())
    out = work / f"{name}.h5"
    command = [
        str(BIN / "mpiexec"),
        "-n",
        str(ranks),
        str(BIN / "mpiswim"),
        "train",
        "--config",
        str(config),
        "--set",
        f"run.seed={seed}",
        "--out",
        str(out),
        "--force",
    ]
    cpu, wall = children_cpu(), time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu, wall = children_cpu() - cpu, time.perf_counter() - wall
    (work / f"{name}.log").write_text(result.stdout + result.stderr)
    iterations = sum(1 for line in result.stdout.splitlines() if line.startswith("iteration "))
    best = re.search(r"best score ([-\d.]+)", result.stdout.splitlines()[-1])
    evaluation = subprocess.run(
        [str(BIN / "mpiswim"), "evaluate", str(out), "--episodes", "50", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    fresh = json.loads(evaluation.stdout)
    pool = settings["pool"]
    return {
        "ranks": ranks,
        "seed": seed,
        "iterations": iterations,
        "target_reached": "target reached" in result.stdout,
        "steps": iterations * ranks * (pool["iterate_episodes"] + pool["evaluate_episodes"]) * settings["env"]["T"],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "best_score": float(best.group(1)) if best else float("nan"),
        "fresh_mean": round(fresh["mean"], 2),
        "fresh_std": round(fresh["std"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="CSV (default results/pool_size/<config name>.csv)")
    args = parser.parse_args()
    out = args.out or ROOT / "results" / "pool_size" / f"{args.config.stem}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        with out.open() as handle:
            done = {(int(row["ranks"]), int(row["seed"])) for row in csv.DictReader(handle)}
    for ranks in args.ranks:
        for seed in args.seeds:
            if (ranks, seed) in done:
                continue
            row = run_one(args.config, ranks, seed)
            print(row, flush=True)
            new = not out.exists()
            with out.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
