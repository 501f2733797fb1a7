"""Side-by-side on Swimmer-v5: how many environment steps and CPU-seconds each tool needs to a trained swimmer.

What it measures. For each tool and seed, the learner is trained and, every
`--interval` environment steps (SB3) or every few pool iterations (mpiswim), its
deterministic policy is scored on fresh episodes: 5 episodes of T = 500 steps
and 5 of T = 1000 steps, start states drawn from numpy's generator seeded
with 1_000_000 + (number of the evaluation), the same start states for every
tool (SB3: `predict(deterministic=True)`; mpiswim: the pool's best agent with
the Beta mean as the action, `run_episode(..., mean_action=True)`). A run's
figure for a target is the first evaluation whose mean reaches it: 150 at
T = 500, 340 at T = 1000. A run stops when both are reached or its learner has
used `--cpu-cap` CPU-seconds.

CPU-seconds are the learner's process CPU time (user + system, all threads)
with its start-up (imports, environment, model) included and the outside
evaluations excluded:
- SB3 / sb3-contrib: each seed runs in its own process (`run` sub-command);
  `getrusage(RUSAGE_SELF)` counts from process start, and the CPU spent in
  the evaluations is measured around them and subtracted. torch uses one
  thread (`torch.set_num_threads(1)`), as mpiswim's ranks do.
- mpiswim: `mpiexec -n P mpiswim train` runs in segments of a few iterations,
  each segment continuing the checkpoint with `--resume` (a resumed run gives
  exactly the numbers of an uninterrupted one); the ranks' and the launcher's
  CPU comes from `getrusage(RUSAGE_CHILDREN)` deltas around each segment.
  Every segment pays start-up again (Python, JAX, numba, MPI), which an
  uninterrupted run pays once. After the segmented run, the same seed is run
  uninterrupted to the same iteration; the extra start-up per segment is
  (sum of segments - uninterrupted) / (segments - 1), and `cpu_s` at a
  segment's end is the segments' sum so far minus that much per segment
  after the first (`cpu_s_all_startups` keeps the uncorrected sum).

Steps: SB3's `num_timesteps`; mpiswim's iterations x P x (iterate_episodes +
evaluate_episodes) x T (Swimmer-v5 episodes never terminate early).

Hyperparameters are RL Zoo's for Swimmer (DLR-RM/rl-baselines3-zoo,
hyperparams/ars.yml, ppo.yml and td3.yml, entry `Swimmer-v4`, read at commit
22e3ff2450fd92033f7f032915e1f64894a09584); rl_zoo3 itself is not needed.

Usage (after `make peers`):
    python analysis/side_by_side.py all [--seeds 0 1 2] [--cpu-cap 300]   # every tool; skips runs already logged
    python analysis/side_by_side.py run ars --seed 0                       # one run
    python analysis/side_by_side.py report                                 # table into docs/results.md, plot into
    docs/img/
Raw logs: results/side_by_side/<tool>-<seed>.json, rewritten after every evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "results" / "side_by_side"
BIN = Path(sys.executable).parent
ENV_ID = "Swimmer-v5"
TARGETS = ((500, 150.0), (1000, 340.0))
EPISODES = 5
EVAL_SEED = 1_000_000

# RL Zoo, hyperparams/ars.yml, Swimmer-v4 ("Params closest to original paper"):
# n_envs 1, LinearPolicy, learning_rate 0.02, delta_std 0.01, n_delta 1, n_top 1, alive_bonus_offset 0, no
# normalisation.
ARS_KWARGS = dict(learning_rate=0.02, delta_std=0.01, n_delta=1, n_top=1, alive_bonus_offset=0)
# RL Zoo, hyperparams/ppo.yml, Swimmer-v4 (tuned): the mujoco defaults (normalize: true, MlpPolicy) with
# gamma 0.9999, n_envs 4, n_steps 1024, batch_size 256, learning_rate 6e-4, gae_lambda 0.98.
PPO_KWARGS = dict(gamma=0.9999, n_steps=1024, batch_size=256, learning_rate=6e-4, gae_lambda=0.98)
PPO_ENVS = 4
# RL Zoo, hyperparams/td3.yml, Swimmer-v4 (tuned): the mujoco defaults (MlpPolicy, learning_starts 10000,
# normal action noise 0.1, train_freq 1, gradient_steps 1, learning_rate 1e-3, batch_size 256,
# net_arch [400, 300]) with gamma 0.9999.
TD3_KWARGS = dict(
    gamma=0.9999, learning_starts=10000, train_freq=1, gradient_steps=1, learning_rate=1e-3, batch_size=256
)

MPISWIM_CONFIGS = {
    # tool name: (config file or None for the embedded default, ranks, iterations per segment, base seed)
    "mpiswim-default": (None, 2, 2, 0),
    "mpiswim-improved-mean-eval": ("configs/improved-mean-eval.toml", 10, 3, 12340),
    "mpiswim-fast": ("configs/fast-swimmer.toml", 2, 2, 0),
}
PROVISIONAL_STARTUP = 3.0  # CPU-s of one 2-rank start-up, for the cap only; the logged cpu_s uses the measured value
MAIN_SEEDS = (0, 1, 2)  # every tool's seeds in the table and plot; others get a row of their own
HELD_OUT = "(seeds not used in tuning)"
TOOLS = ("ars", "mpiswim-fast", "mpiswim-default", "ppo", "td3", "mpiswim-improved-mean-eval")


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_starts(evaluation: int) -> list[int]:
    """Reset seeds of the fresh episodes of evaluation number `evaluation`, the same for every tool and T."""
    rng = np.random.default_rng(EVAL_SEED + evaluation)
    return [int(rng.integers(2**31)) for _ in range(EPISODES)]


class RunLog:
    """One run's raw log: every evaluation (steps, CPU-seconds, fresh scores), rewritten to JSON each time."""

    def __init__(self, tool: str, seed: int, settings: dict):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.path = LOGS / f"{tool}-{seed}.json"
        self.data = {
            "tool": tool,
            "seed": seed,
            "env": ENV_ID,
            "episodes_per_evaluation": EPISODES,
            "settings": settings,
            "status": "running",
            "evaluations": [],
        }
        self.write()
        signal.signal(signal.SIGTERM, self.stopped)

    def stopped(self, signum, frame) -> None:
        """SIGTERM (a deadline, `timeout`): keep what was measured, say that the run was stopped."""
        self.finish("stopped by SIGTERM before a target or the CPU cap")
        raise SystemExit(143)

    def add(self, **row) -> bool:
        """Record one evaluation; True when every target has been reached."""
        self.data["evaluations"].append(row)
        self.write()
        print(json.dumps(row), flush=True)
        return all(any(e[f"score_T{T}"] >= target for e in self.data["evaluations"]) for T, target in TARGETS)

    def finish(self, status: str, **extra) -> None:
        self.data["status"] = status
        self.data.update(extra)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".json.part")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)


# ---------------------------------------------------------------- SB3 / sb3-contrib


def run_sb3(tool: str, seed: int, cpu_cap: float, interval: int) -> None:
    import gymnasium as gym
    import torch

    torch.set_num_threads(1)
    from sb3_contrib import ARS
    from stable_baselines3 import PPO, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import VecNormalize

    if tool == "ars":
        model = ARS("LinearPolicy", gym.make(ENV_ID), seed=seed, verbose=0, **ARS_KWARGS)
        settings = {"algorithm": "sb3-contrib ARS", **ARS_KWARGS, "policy": "LinearPolicy", "n_envs": 1}
    elif tool == "ppo":
        env = VecNormalize(make_vec_env(ENV_ID, n_envs=PPO_ENVS, seed=seed), gamma=PPO_KWARGS["gamma"])
        model = PPO("MlpPolicy", env, seed=seed, verbose=0, **PPO_KWARGS)
        settings = {"algorithm": "SB3 PPO", **PPO_KWARGS, "policy": "MlpPolicy", "n_envs": PPO_ENVS, "normalize": True}
    elif tool == "td3":
        env = gym.make(ENV_ID)
        noise = NormalActionNoise(mean=np.zeros(env.action_space.shape), sigma=0.1 * np.ones(env.action_space.shape))
        model = TD3(
            "MlpPolicy",
            env,
            seed=seed,
            verbose=0,
            action_noise=noise,
            policy_kwargs=dict(net_arch=[400, 300]),
            **TD3_KWARGS,
        )
        settings = {"algorithm": "SB3 TD3", **TD3_KWARGS, "noise": "normal 0.1", "net_arch": [400, 300]}
    else:
        raise SystemExit(f"unknown SB3 tool {tool!r}")
    settings.update(cpu_cap_s=cpu_cap, interval_steps=interval, torch=torch.__version__)
    log = RunLog(tool, seed, settings)
    normalizer = model.get_vec_normalize_env()
    eval_env = gym.make(ENV_ID, max_episode_steps=1000)
    eval_cpu = 0.0

    def score(T: int, starts: list[int]) -> float:
        returns = []
        for start in starts:
            obs, _ = eval_env.reset(seed=start)
            total = 0.0
            for _ in range(T):
                x = normalizer.normalize_obs(obs) if normalizer is not None else obs
                action, _ = model.predict(x, deterministic=True)
                obs, reward, terminated, _, _ = eval_env.step(action)
                total += float(reward)
                if terminated:
                    break
            returns.append(total)
        return float(np.mean(returns))

    evaluation = 0
    while True:
        model.learn(total_timesteps=interval, reset_num_timesteps=evaluation == 0)
        before = cpu_self()
        starts = fresh_starts(evaluation)
        row = {"evaluation": evaluation, "steps": int(model.num_timesteps), "cpu_s": round(before - eval_cpu, 2)}
        row.update({f"score_T{T}": round(score(T, starts), 2) for T, _ in TARGETS})
        eval_cpu += cpu_self() - before
        evaluation += 1
        if log.add(**row):
            log.finish("targets reached")
            return
        if row["cpu_s"] >= cpu_cap:
            log.finish("cpu cap reached")
            return


# ---------------------------------------------------------------- mpiswim


def run_mpiswim(tool: str, seed_index: int, cpu_cap: float, max_iterations: int) -> None:
    from mpiswim.report import evaluation_returns

    config_file, ranks, per_segment, base_seed = MPISWIM_CONFIGS[tool]
    seed = base_seed + seed_index
    work = ROOT / "runs" / "side_by_side"
    work.mkdir(parents=True, exist_ok=True)
    config_text = (
        (ROOT / config_file).read_text()
        if config_file
        else subprocess.run([str(BIN / "mpiswim"), "config"], capture_output=True, text=True, check=True).stdout
    )
    # The run's own seed; no [run] target: the side-by-side's fresh evaluations decide when a run has arrived.
    lines = [
        f"seed = {seed}" if line.split("=")[0].strip() == "seed" else line
        for line in config_text.splitlines()
        if line.split("=")[0].strip() != "target"
    ]
    config_path = work / f"{tool}-{seed}.toml"
    config_path.write_text("\n".join(lines) + "\n")
    cfg = tomllib.loads(config_path.read_text())
    assert cfg["run"]["seed"] == seed
    steps_per_iteration = ranks * (cfg["pool"]["iterate_episodes"] + cfg["pool"]["evaluate_episodes"]) * cfg["env"]["T"]
    out = work / f"{tool}-{seed}.h5"
    mpiexec = [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "mpiswim"), "train"]
    settings = {"algorithm": "mpiswim", "config": config_file or "embedded default", "ranks": ranks, "seed": seed}
    settings.update(iterations_per_segment=per_segment, steps_per_iteration=steps_per_iteration, cpu_cap_s=cpu_cap)
    log = RunLog(tool, seed_index, settings)

    def train(args: list[str]) -> float:
        before = cpu_children()
        subprocess.run(mpiexec + args, check=True, stdout=subprocess.DEVNULL)
        return cpu_children() - before

    segments: list[float] = []
    iteration, evaluation, status = 0, 0, "iteration limit reached"
    while iteration < max_iterations:
        iteration += per_segment
        if iteration == per_segment:
            segments.append(
                train(["--config", str(config_path), "--out", str(out), "--iterations", str(iteration), "--force"])
            )
        else:
            segments.append(train(["--resume", str(out), "--iterations", str(iteration)]))
        starts_seed = EVAL_SEED + evaluation  # fresh_starts(evaluation) draws from this generator, as run_episode does
        row = {
            "evaluation": evaluation,
            "iteration": iteration,
            "steps": iteration * steps_per_iteration,
            "cpu_s_all_startups": round(sum(segments), 2),
        }
        for T, _ in TARGETS:
            returns, _, _, _ = evaluation_returns(str(out), EPISODES, seed=starts_seed, T=T, action="mean")
            row[f"score_T{T}"] = round(float(np.nanmean(returns)), 2)
        evaluation += 1
        if log.add(**row):
            status = "targets reached"
            break
        # The cap applies to the learner's CPU without the extra start-ups, estimated here at PROVISIONAL_STARTUP per
        # segment (below the 3.4-3.7 CPU-s measured for 2 ranks, so a run rather overshoots the cap than stops short).
        if sum(segments) - (len(segments) - 1) * PROVISIONAL_STARTUP * ranks / 2 >= cpu_cap:
            status = "cpu cap reached"
            break
    log.finish(status + "; measuring the uninterrupted reference", segment_cpu_s=[round(s, 2) for s in segments])
    reference = work / f"{tool}-{seed}-uninterrupted.h5"
    uninterrupted = train(
        ["--config", str(config_path), "--out", str(reference), "--iterations", str(iteration), "--force"]
    )
    same = (
        evaluation_returns(str(out), EPISODES, seed=EVAL_SEED)[0].tolist()
        == evaluation_returns(str(reference), EPISODES, seed=EVAL_SEED)[0].tolist()
    )
    extra = (sum(segments) - uninterrupted) / max(len(segments) - 1, 1)
    for k, row in enumerate(log.data["evaluations"]):
        row["cpu_s"] = round(sum(segments[: k + 1]) - k * extra, 2)
    log.finish(
        status,
        segment_cpu_s=[round(s, 2) for s in segments],
        uninterrupted_cpu_s=round(uninterrupted, 2),
        extra_startup_cpu_s_per_segment=round(extra, 2),
        uninterrupted_same_best_agent=same,
    )


# ---------------------------------------------------------------- all runs, report


def run_all(tools: list[str], seeds: list[int], cpu_cap: float) -> None:
    for tool in tools:
        for seed in seeds:
            path = LOGS / f"{tool}-{seed}.json"
            if path.exists() and not json.loads(path.read_text())["status"].startswith("running"):
                print(f"{tool} seed {seed}: logged already ({path.name})", flush=True)
                continue
            print(f"{tool} seed {seed}: running", flush=True)
            subprocess.run(
                [sys.executable, __file__, "run", tool, "--seed", str(seed), "--cpu-cap", str(cpu_cap)], check=False
            )


def cpu_of(row: dict) -> float:
    """CPU-seconds of an evaluation row; an mpiswim run stopped before its uninterrupted reference has only the sum with
    every start-up.
    """
    return row.get("cpu_s", row.get("cpu_s_all_startups"))


def first_reach(run: dict, T: int, target: float) -> dict | None:
    return next((e for e in run["evaluations"] if e[f"score_T{T}"] >= target), None)


def write_between_markers(table: str, name: str) -> None:
    """Put `table` into docs/results.md between its `<!-- NAME: begin -->` and `<!-- NAME: end -->` markers."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    results = ROOT / "docs" / "results.md"
    text = results.read_text()
    if begin in text:
        text = text[: text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end) :]
        results.write_text(text)
    else:
        print(f"docs/results.md has no '{begin}' marker: table not written there", file=sys.stderr)


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(p.read_text()) for p in sorted(LOGS.glob("*.json"))]
    runs = [run for run in runs if run["env"] == ENV_ID]  # side_by_side_bodies.py logs other bodies here
    by_tool: dict[str, list[dict]] = {}
    for run in runs:
        by_tool.setdefault(run["tool"] if run["seed"] in MAIN_SEEDS else f"{run['tool']} {HELD_OUT}", []).append(run)
    lines = [
        "| tool | seeds | reached 150 at T = 500 | steps (per seed) | CPU-s (per seed) | median / worst CPU-s "
        "| reached 340 at T = 1000 | steps (per seed) | CPU-s (per seed) | median / worst CPU-s | CPU cap per seed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tool in [t for t in TOOLS if t in by_tool] + [t for t in by_tool if t.endswith(HELD_OUT)]:
        group = sorted(by_tool[tool], key=lambda r: r["seed"])
        cells = [tool, ", ".join(str(r["settings"].get("seed", r["seed"])) for r in group)]
        for T, target in TARGETS:
            hits = [first_reach(r, T, target) for r in group]
            cpu = [cpu_of(h) for h in hits if h]
            steps = ", ".join(f"{h['steps'] / 1000:.0f}k" if h else _miss(r) for h, r in zip(hits, group, strict=True))
            cpus = ", ".join(f"{cpu_of(h):.0f}" + ("" if "cpu_s" in h else "*") if h else "-" for h in hits)
            worst = "not reached" if len(cpu) < len(group) else f"{max(cpu):.0f}"
            median = float(np.median([cpu_of(h) if h else np.inf for h in hits]))
            median = f"{median:.0f}" if np.isfinite(median) else "not reached"
            cells += [f"{len(cpu)} of {len(group)}", steps, cpus, f"{median} / {worst}"]
        cells.append(f"{group[0]['settings'].get('cpu_cap_s', '-'):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "\\* every segment's start-up counted (no uninterrupted reference run measured for this run, or not yet): an "
        "upper bound."
    )
    table = "\n".join(lines)
    print(table)
    write_between_markers(table, "side-by-side table")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = dict(zip(TOOLS, ["tab:orange", "black", "tab:blue", "tab:green", "tab:red", "tab:purple"], strict=True))
    for ax, (T, target) in zip(axes, TARGETS, strict=True):
        for tool in [t for t in TOOLS if t in by_tool]:
            for k, run in enumerate(sorted(by_tool[tool], key=lambda r: r["seed"])):
                rows = run["evaluations"]
                ax.plot(
                    [cpu_of(e) for e in rows],
                    [e[f"score_T{T}"] for e in rows],
                    color=colors[tool],
                    alpha=0.8,
                    label=tool if k == 0 else None,
                )
        ax.axhline(target, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("learner CPU-seconds (start-up included, evaluations excluded)")
        ax.set_ylabel(f"fresh score, mean of {EPISODES} episodes of T = {T}")
        ax.set_title(f"Swimmer-v5, target {target:.0f} at T = {T}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out = ROOT / "docs" / "img" / "side_by_side.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def _miss(run: dict) -> str:
    rows = run["evaluations"]
    if not rows:
        return "no evaluation"
    return f"not by {rows[-1]['steps'] / 1000:.0f}k ({run['status']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="one tool, one seed (its own process, so its start-up is counted)")
    one.add_argument("tool", choices=TOOLS)
    one.add_argument("--seed", type=int, default=0, help="SB3: the seed; mpiswim: added to the config's base seed")
    one.add_argument(
        "--cpu-cap",
        type=float,
        default=300.0,
        help="stop once the learner has used this many CPU-seconds (default 300)",
    )
    one.add_argument(
        "--interval", type=int, default=10_000, help="SB3: environment steps between evaluations (default 10000)"
    )
    one.add_argument(
        "--max-iterations", type=int, default=200, help="mpiswim: stop after this many pool iterations (default 200)"
    )
    every = sub.add_parser("all", help="every tool (or --tools), every seed; runs already logged are skipped")
    every.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    every.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    every.add_argument("--cpu-cap", type=float, default=300.0)
    sub.add_parser(
        "report", help="summary table into docs/results.md (between its markers) and docs/img/side_by_side.png"
    )
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.command == "run":
        if args.tool.startswith("mpiswim"):
            run_mpiswim(args.tool, args.seed, args.cpu_cap, args.max_iterations)
        else:
            run_sb3(args.tool, args.seed, args.cpu_cap, args.interval)
    elif args.command == "all":
        run_all(args.tools, args.seeds, args.cpu_cap)
    else:
        report()


if __name__ == "__main__":
    main()
