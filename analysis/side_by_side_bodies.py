"""Side-by-side on Hopper-v5 and HalfCheetah-v5: sb3-contrib ARS (RL Zoo's settings) against mpiswim's ARS runs.

Issue 28 asks for the Swimmer side-by-side (analysis/side_by_side.py, whose helpers this reuses) on the bodies with
a linear-policy threshold (Mania, Guy and Recht 2018): Hopper-v5 3,120 and HalfCheetah-v5 3,430 at T = 1000. Per
body and seed: the environment steps and CPU-seconds to the threshold.

sb3-contrib ARS (`run` sub-command, one process per seed). RL Zoo's hyperparameters (below) with its observation
normalisation, VecNormalize(norm_obs=True, norm_reward=False) around make_vec_env(id, n_envs=1, seed=seed), the
model seeded with the same seed. Every `--interval` environment steps (Hopper 100k, HalfCheetah 200k; the
evaluation falls at the first ARS iteration boundary at or past each multiple) the deterministic policy
(`predict(deterministic=True)`) is scored on the 10 fresh episodes below, its observations normalised by the
training statistics as they stand (`normalize_obs`, which reads them without updating them: the evaluation
neither sees nor changes the training's statistics). A run's figure is the first evaluation whose mean reaches
the threshold. A run stops there, at RL Zoo's step budget (Hopper 7M, HalfCheetah 12.5M) or once its learner
has used `--cpu-cap` CPU-seconds (900 here). CPU-seconds are measured as in analysis/side_by_side.py:
getrusage(RUSAGE_SELF) of the run's own process (start-up, imports and model set-up included; torch on one
thread) minus the CPU measured around the evaluations.

Fresh episodes (both tools): `gymnasium.make(id)` with Gymnasium's own TimeLimit of 1000, reset seeds
1000-1009, the same for every evaluation and every tool (analysis/rescore_gymnasium.py's episodes).

mpiswim (`report`; nothing is trained again). The committed runs results/<body>-{0,1,2}.h5
(configs/hopper.toml, configs/halfcheetah.toml, 2 ranks, seeds 0-2) stop at the first new best agent
that passes their `[run] target` check (10 fresh episodes in mpiswim's own episode loop) or at their time
limit. Their figure is taken at the iteration of the best agent: the target check's iteration where the run
stopped on it, else (never passed) the best agent's. Steps and CPU-seconds are the running totals of
`mpiswim.analysis.history` there (what `mpiswim analyze --x steps` / `--x cpu-seconds` plot): steps are every
rank's episodes, exploration and the pool's evaluation episodes alike; CPU-seconds are the ranks' phase timings
(train + evaluate + communicate, summed over the ranks, plus the checkpoint write): wall-clock time of each phase,
so on a loaded machine they count time spent waiting for a core, and start-up and the target checks are not in
them. The target check is replayed here (`mpiswim.pool.fresh_score` at that iteration) to confirm it, and the
best agent is scored on the same 10 fresh Gymnasium episodes as sb3's (`mpiswim.load_policy`, Beta mean).

RL Zoo, hyperparams/ars.yml (DLR-RM/rl-baselines3-zoo at commit c6c209e7d487635f0b835fb916ec4468142b28ff;
the v4 entries, as side_by_side.py uses `Swimmer-v4`); rl_zoo3 itself is not needed:
    Hopper-v4:      n_envs 1, policy 'LinearPolicy', n_timesteps 7e6, learning_rate 0.01, delta_std 0.025,
                    n_delta 8, n_top 4, alive_bonus_offset -1, normalize "dict(norm_obs=True, norm_reward=False)"
    HalfCheetah-v4: n_envs 1, policy 'LinearPolicy', n_timesteps 1.25e7, learning_rate 0.02, delta_std 0.03,
                    n_delta 32, n_top 4, alive_bonus_offset 0, normalize "dict(norm_obs=True, norm_reward=False)"
Everything else is sb3-contrib's default (zero_policy True, n_eval_episodes 1, no AsyncEval).

Usage (after `make peers`; one run at a time):
    nice -n 10 python analysis/side_by_side_bodies.py run Hopper-v5 --seed 0 --cpu-cap 900   # one sb3 run
    nice -n 10 python analysis/side_by_side_bodies.py all --seeds 0 1 2 --cpu-cap 900        # skips logged runs
    python analysis/side_by_side_bodies.py report [--remeasure]   # mpiswim's runs measured (once), table into
                                                                   # docs/results.md
Raw logs: results/side_by_side/ars-<id>-<seed>.json (sb3, rewritten after every evaluation) and
results/side_by_side/mpiswim-ars-<id>-<seed>.json (what `report` measured on mpiswim's committed runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from side_by_side import (  # analysis/side_by_side.py, beside this script
    LOGS,
    ROOT,
    RunLog,
    cpu_self,
    write_between_markers,
)
from thresholds_table import THRESHOLD  # analysis/thresholds_table.py: the bodies' linear-policy thresholds

EPISODES = 10
RESET_SEEDS = tuple(range(1000, 1000 + EPISODES))  # analysis/rescore_gymnasium.py's start states
BODIES = {
    # id: (threshold at T = 1000, RL Zoo's step budget, evaluation interval in steps, RL Zoo's ARS kwargs)
    "Hopper-v5": (
        float(THRESHOLD["Hopper-v5"]),
        7_000_000,
        100_000,
        dict(learning_rate=0.01, delta_std=0.025, n_delta=8, n_top=4, alive_bonus_offset=-1),
    ),
    "HalfCheetah-v5": (
        float(THRESHOLD["HalfCheetah-v5"]),
        12_500_000,
        200_000,
        dict(learning_rate=0.02, delta_std=0.03, n_delta=32, n_top=4, alive_bonus_offset=0),
    ),
}
NORMALIZE = dict(norm_obs=True, norm_reward=False)
MPISWIM_RUNS = {"Hopper-v5": "results/hopper-{seed}.h5", "HalfCheetah-v5": "results/halfcheetah-{seed}.h5"}


class BodyLog(RunLog):
    """RunLog (side_by_side.py) for one body: one fresh score per evaluation, reached when its mean passes the
    threshold."""

    def __init__(self, tool: str, env_id: str, seed: int, settings: dict, threshold: float):
        super().__init__(f"{tool}-{env_id}", seed, settings)
        self.threshold = threshold
        self.data.update(tool=tool, env=env_id, episodes_per_evaluation=EPISODES, reset_seeds=list(RESET_SEEDS))
        self.data["threshold"] = threshold
        self.write()

    def add(self, **row) -> bool:
        self.data["evaluations"].append(row)
        self.write()
        print(json.dumps({k: v for k, v in row.items() if k != "returns"}), flush=True)
        return row["score"] >= self.threshold


def fresh_returns(env_id: str, act) -> list[float]:
    """Returns of `act(observation) -> action` on the fresh episodes: gymnasium.make's own TimeLimit (1000 for both
    bodies), reset seeds RESET_SEEDS."""
    import gymnasium as gym

    env = gym.make(env_id)
    assert env.spec.max_episode_steps == 1000
    returns = []
    for start in RESET_SEEDS:
        observation, _ = env.reset(seed=start)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(act(observation))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


# ---------------------------------------------------------------- sb3-contrib ARS


def run_ars(env_id: str, seed: int, cpu_cap: float, interval: int | None) -> None:
    import torch

    torch.set_num_threads(1)
    from sb3_contrib import ARS
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    threshold, budget, default_interval, kwargs = BODIES[env_id]
    interval = interval or default_interval
    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), **NORMALIZE)
    model = ARS("LinearPolicy", env, seed=seed, verbose=0, **kwargs)
    normalizer = model.get_vec_normalize_env()
    assert normalizer is env
    settings = {"algorithm": "sb3-contrib ARS", "policy": "LinearPolicy", "n_envs": 1, **kwargs}
    settings.update(normalize=NORMALIZE, n_timesteps=budget, cpu_cap_s=cpu_cap, interval_steps=interval)
    settings.update(torch=torch.__version__, threshold=threshold)
    log = BodyLog("ars", env_id, seed, settings, threshold)
    started = time.time()

    def act(observation: np.ndarray) -> np.ndarray:
        action, _ = model.predict(normalizer.normalize_obs(observation), deterministic=True)
        return action

    eval_cpu, evaluation = 0.0, 0
    while True:
        mark = min((evaluation + 1) * interval, budget)
        model.learn(total_timesteps=mark - model.num_timesteps, reset_num_timesteps=evaluation == 0)
        before = cpu_self()
        row = {"evaluation": evaluation, "steps": int(model.num_timesteps), "cpu_s": round(before - eval_cpu, 2)}
        returns = fresh_returns(env_id, act)
        row.update(score=round(float(np.mean(returns)), 2), sd=round(float(np.std(returns)), 2))
        row.update(returns=[round(r, 2) for r in returns], wall_s=round(time.time() - started, 1))
        eval_cpu += cpu_self() - before
        evaluation += 1
        if log.add(**row):
            log.finish("threshold reached", eval_cpu_s=round(eval_cpu, 2))
            return
        if model.num_timesteps >= budget:
            log.finish("RL Zoo's step budget reached", eval_cpu_s=round(eval_cpu, 2))
            return
        if row["cpu_s"] >= cpu_cap:
            log.finish("cpu cap reached", eval_cpu_s=round(eval_cpu, 2))
            return


def run_all(bodies: list[str], seeds: list[int], cpu_cap: float) -> None:
    """Every seed of every body, one process at a time (seed-major: seed 0 of each body first)."""
    for seed in seeds:
        for env_id in bodies:
            path = LOGS / f"ars-{env_id}-{seed}.json"
            if path.exists() and not json.loads(path.read_text())["status"].startswith("running"):
                print(f"ars {env_id} seed {seed}: logged already ({path.name})", flush=True)
                continue
            print(f"ars {env_id} seed {seed}: running", flush=True)
            command = [sys.executable, __file__, "run", env_id, "--seed", str(seed), "--cpu-cap", str(cpu_cap)]
            subprocess.run(command, check=False)


# ---------------------------------------------------------------- mpiswim's committed runs


def measure_mpiswim(env_id: str, seed: int) -> dict:
    """Steps, CPU-seconds and the fresh score of a committed mpiswim run at its figure's iteration (see the module
    docstring); logged to results/side_by_side/mpiswim-ars-<id>-<seed>.json."""
    from mpiswim import load_policy
    from mpiswim.analysis import read_run
    from mpiswim.analysis.statistics import history
    from mpiswim.checkpoint import load_checkpoint
    from mpiswim.env import Trajectory, task_for
    from mpiswim.pool import fresh_score

    path = MPISWIM_RUNS[env_id].format(seed=seed)
    run = read_run(ROOT / path)
    columns = history(run)
    checkpoint = load_checkpoint(ROOT / path)
    cfg, state = checkpoint.config, checkpoint.state
    assert cfg.env_id == env_id and cfg.seed == seed and run.world_size == 2
    row = state.best_iteration  # 0-based; the check after it used iteration row + 1, as train.py's target_reached
    task = task_for(cfg)
    check = fresh_score(state.best_agent, task, cfg, row + 1, Trajectory.empty(cfg.T, task.obs_dim, task.action_dim))
    # The run stopped on its target check iff the check passed after its last iteration (a pass stops the run).
    stopped_on_target = cfg.target is not None and row == run.iterations - 1 and check >= cfg.target
    policy = load_policy(ROOT / path)
    returns = fresh_returns(env_id, policy.act)
    result = {
        "tool": "mpiswim-ars",
        "env": env_id,
        "seed": seed,
        "run": path,
        "threshold": BODIES[env_id][0],
        "config_target": cfg.target,
        "target_episodes": cfg.target_episodes,
        "iterations_done": run.iterations,
        "steps_done": int(columns["total_steps"][-1]),
        "iteration": row + 1,
        "steps": int(columns["total_steps"][row]),
        "cpu_s": round(float(columns["total_cpu_seconds"][row]), 2),
        "wall_s_iterations": round(float(columns["total_wall_seconds"][row]), 2),
        "target_check_replayed": round(float(check), 2),
        "stopped_on_target": bool(stopped_on_target),
        "score": round(float(np.mean(returns)), 2),
        "sd": round(float(np.std(returns)), 2),
        "returns": [round(r, 2) for r in returns],
        "reset_seeds": list(RESET_SEEDS),
    }
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"mpiswim-ars-{env_id}-{seed}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "returns"}), flush=True)
    return result


# ---------------------------------------------------------------- table


def _millions(steps: float) -> str:
    return f"{steps / 1e6:.2f}M"


def ars_row(env_id: str, seed: int) -> list[str]:
    path = LOGS / f"ars-{env_id}-{seed}.json"
    if not path.exists():
        return ["sb3-contrib ARS", "-", "-", "-", "not run"]
    run = json.loads(path.read_text())
    rows = run["evaluations"]
    hit = next((e for e in rows if e["score"] >= run["threshold"]), None)
    shown = hit or (max(rows, key=lambda e: e["score"]) if rows else None)
    if shown is None:
        return ["sb3-contrib ARS", "-", "-", "no evaluation", run["status"]]
    score = f"{shown['score']:,.1f} ± {shown['sd']:,.1f}"
    if hit:
        return ["sb3-contrib ARS", _millions(hit["steps"]), f"{hit['cpu_s']:.0f}", score, "yes"]
    last = rows[-1]
    return [
        "sb3-contrib ARS",
        f"not by {_millions(last['steps'])}",
        f"not by {last['cpu_s']:.0f}",
        f"best evaluation {score} (at {_millions(shown['steps'])})",
        f"no ({run['status']})",
    ]


def mpiswim_row(result: dict) -> list[str]:
    score = f"{result['score']:,.1f} ± {result['sd']:,.1f}"
    check = f"target check {result['target_check_replayed']:,.1f}"
    if result["stopped_on_target"]:
        reached = f"yes ({check}); 10 fresh: {'yes' if result['score'] >= result['threshold'] else 'no'}"
        return ["mpiswim ARS (2 ranks)", _millions(result["steps"]), f"{result['cpu_s']:.0f}", score, reached]
    return [
        "mpiswim ARS (2 ranks)",
        f"not by {_millions(result['steps'])} (best agent)",
        f"not by {result['cpu_s']:.0f} (best agent)",
        score,
        f"no: not stopped on its target in {result['iterations_done']} iterations, "
        f"{_millions(result['steps_done'])} steps (best agent's {check})",
    ]


def report(seeds: list[int], remeasure: bool) -> None:
    lines = [
        "| body (threshold) | seed | tool | steps to threshold | CPU-s to threshold | fresh score there "
        f"({EPISODES} episodes, mean ± sd) | reached |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id, (threshold, *_rest) in BODIES.items():
        for seed in seeds:
            body = f"{env_id} ({threshold:,.0f})"
            lines.append("| " + " | ".join([body, str(seed), *ars_row(env_id, seed)]) + " |")
            logged = LOGS / f"mpiswim-ars-{env_id}-{seed}.json"
            result = json.loads(logged.read_text()) if logged.exists() and not remeasure else None
            result = result or measure_mpiswim(env_id, seed)
            lines.append("| " + " | ".join([body, str(seed), *mpiswim_row(result)]) + " |")
    table = "\n".join(lines)
    print(table)
    write_between_markers(table, "side-by-side bodies table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="sb3-contrib ARS, one body, one seed (its own process: its start-up counted)")
    one.add_argument("env_id", choices=list(BODIES))
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--cpu-cap", type=float, default=900.0, help="learner CPU-seconds before it stops (900)")
    one.add_argument("--interval", type=int, help="steps between evaluations (Hopper 100k, HalfCheetah 200k)")
    every = sub.add_parser("all", help="every body and seed, one run at a time; runs already logged are skipped")
    every.add_argument("--bodies", nargs="+", choices=list(BODIES), default=list(BODIES))
    every.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    every.add_argument("--cpu-cap", type=float, default=900.0)
    table = sub.add_parser("report", help="mpiswim's committed runs measured, the table into docs/results.md")
    table.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    table.add_argument("--remeasure", action="store_true", help="score mpiswim's runs again, not from their logs")
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.command == "run":
        run_ars(args.env_id, args.seed, args.cpu_cap, args.interval)
    elif args.command == "all":
        run_all(args.bodies, args.seeds, args.cpu_cap)
    else:
        report(args.seeds, args.remeasure)


if __name__ == "__main__":
    main()
