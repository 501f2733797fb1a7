"""Benchmark: mpiswim's throughput against bare MuJoCo, measured in the same run.

Speed claims are ratios to a reference measured in the same process, rounds
interleaved, so a shared, noisy machine slows both alike:
- reference: a bare loop that replays the controls of the phase's last episode
  and calls mj_step with the task's frame skip, nothing else (CPU time, as the
  phases; `mpiswim bench --task ID` for any body);
- train: `improve_branch` (episodes with recording plus the JAX update);
- evaluate: `evaluate_branch` (no-update episodes).
The pool part runs real `mpiexec -n P` jobs (P = 1, 2, 4) of the seed run's
iteration shape and reports iteration time, pure collective time (Allgather +
Bcast after a barrier), checkpoint time and peak memory per rank. Start-up
(imports plus JIT compilation) is timed in a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mpiswim.config import DEFAULT_CONFIG, apply_overrides, parse_config

BENCH_T = 500
BENCH_EPISODES = 10


BODIES = ("Swimmer-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5")


def bench_config(
    iterations: int, world_size: int, T: int = BENCH_T, episodes: int = BENCH_EPISODES, env_id: str = "Swimmer-v5"
) -> str:
    """The default config reshaped to the seed run's iteration: T = 500, 10 + 10 episodes, on env_id."""
    text = apply_overrides(
        DEFAULT_CONFIG,
        [
            f"run.iterations={iterations}",
            f'env.id="{env_id}"',
            f"env.T={T}",
            f"pool.iterate_episodes={episodes}",
            f"pool.evaluate_episodes={episodes}",
        ],
    )
    parse_config(text, world_size)
    return text


def bare_mujoco(task, controls: np.ndarray, steps: int) -> float:
    """CPU seconds for `steps` bare MuJoCo steps of the task's model replaying `controls`, one episode per replay.

    The reference does only what stepping the body needs: set the controls, mj_step with the
    task's frame skip (and mj_rnePostConstraint for the bodies whose observation or reward reads
    contact forces, as Gymnasium's step computes them), mj_resetData between episodes. It replays
    the controls of an episode mpiswim ran (same length, same actions), because MuJoCo's cost per
    step depends on the state the body is in: random controls would time another motion.
    """
    import mujoco

    from mpiswim.bodies import body_of

    env = task.env
    model, data, frame_skip = env.model, env.data, env.frame_skip
    body, _ = body_of(env)
    contact_forces = body is not None and body.post_constraint
    length = len(controls)
    started = time.process_time()
    for t in range(steps):
        if t % length == 0:
            mujoco.mj_resetData(model, data)
        data.ctrl[:] = controls[t % length]
        mujoco.mj_step(model, data, nstep=frame_skip)
        if contact_forces:
            mujoco.mj_rnePostConstraint(model, data)
    return time.process_time() - started


def measure_throughput(
    rounds: int = 3, T: int = BENCH_T, episodes: int = BENCH_EPISODES, env_id: str = "Swimmer-v5", fast: bool = True
) -> dict:
    """Single-process steps per CPU-second of bare MuJoCo, the training and the evaluation phase on env_id.

    The phases count the steps their episodes really ran (a body that falls ends its episode
    early); the bare loop then runs as many steps of the same model. Rounds are interleaved and
    medians of the ratios reported. fast=False times the plain Python loop instead (for comparison).
    """
    from mpiswim.env import Trajectory, task_for
    from mpiswim.learn import improve_branch, update_agent, update_steps, use_compilation_cache
    from mpiswim.policy import initial_agent
    from mpiswim.pool import evaluate_branch
    from mpiswim.tasks import check_task

    use_compilation_cache()

    cfg = parse_config(bench_config(1, 1, T, episodes, env_id), 1)
    check_task(cfg)
    task = task_for(cfg, fast)
    rng = np.random.default_rng(0)
    agent = initial_agent(task.obs_dim, task.action_dim, cfg.features, cfg.time_feature, cfg.scaler, cfg.eta_travels)
    # A policy with varied shapes, as after some training (the zero policy is a special case of the sampler).
    agent.policy[:] = rng.normal(0.0, 0.3 / np.sqrt(task.obs_dim / 8), agent.policy.shape)
    trajectory = Trajectory.empty(T, task.obs_dim, task.action_dim)
    improve_branch(agent, task, rng, cfg, cfg.alpha[0], cfg.eta[0], trajectory)  # JIT compile, warm caches
    for steps in sorted({update_steps(length, T) for length in range(1, T + 1)}):  # every shape the update takes
        trajectory.length = steps
        update_agent(agent, trajectory, cfg.alpha[0], cfg.eta[0], cfg)

    def steps_and_seconds(phase) -> tuple[int, float, float]:
        """The phase's steps, CPU seconds, and bare MuJoCo's CPU seconds for as many steps of its last episode."""
        steps, started = task.steps, time.process_time()
        phase()
        steps, seconds = task.steps - steps, time.process_time() - started
        controls = task.low + trajectory.xs[: max(trajectory.length, 1)] * (task.high - task.low)
        return steps, seconds, bare_mujoco(task, controls, steps)

    rows = []
    for _ in range(rounds):
        train_steps, train_seconds, train_bare = steps_and_seconds(
            lambda: improve_branch(agent, task, rng, cfg, cfg.alpha[0], cfg.eta[0], trajectory)
        )
        eval_steps, eval_seconds, eval_bare = steps_and_seconds(
            lambda: evaluate_branch(agent, task, rng, cfg, trajectory)
        )
        update_seconds = []
        for _ in range(episodes):
            started = time.process_time()
            update_agent(agent, trajectory, cfg.alpha[0], cfg.eta[0], cfg)
            update_seconds.append(time.process_time() - started)
        train_rate, eval_rate = train_steps / train_seconds, eval_steps / eval_seconds
        bare_rates = (train_steps / train_bare, eval_steps / eval_bare)
        episode_seconds = train_seconds / episodes
        rows.append((*bare_rates, train_rate, eval_rate, float(np.median(update_seconds)), episode_seconds))

    train_bare, eval_bare, train, evaluate, update, episode = (np.array(column) for column in zip(*rows, strict=True))
    return {
        "env_id": cfg.env_id,
        "compiled": task.compiled,
        "T": T,
        "episodes": episodes,
        "rounds": rounds,
        "mean_episode_steps": float(task.steps / (episodes * (2 * rounds + 1))),
        "bare_steps_per_s": float(np.median(np.concatenate([train_bare, eval_bare]))),
        "train_steps_per_s": float(np.median(train)),
        "eval_steps_per_s": float(np.median(evaluate)),
        "train_ratio": float(np.median(train / train_bare)),
        "eval_ratio": float(np.median(evaluate / eval_bare)),
        "update_seconds_per_episode": float(np.median(update)),
        "update_share_of_episode": float(np.median(update / episode)),
    }


def measure_bodies(env_ids: tuple[str, ...] = BODIES, rounds: int = 3, fast: bool = True) -> list[dict]:
    """measure_throughput on each body, one after the other in this process."""
    return [measure_throughput(rounds, env_id=env_id, fast=fast) for env_id in env_ids]


def format_bodies(rows: list[dict]) -> str:
    """The per-body table of docs/performance.md."""
    lines = [
        f"mpiswim bench --task: T={rows[0]['T']}, {rows[0]['episodes']} episodes per phase, {rows[0]['rounds']} "
        "rounds, steps per CPU-second (medians)",
        "",
        "| body | compiled | mean episode | bare MuJoCo | training | ratio | evaluation | ratio | update share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['env_id']} | {'yes' if row['compiled'] else 'no'} | {row['mean_episode_steps']:.0f} steps "
            f"| {row['bare_steps_per_s']:,.0f} | {row['train_steps_per_s']:,.0f} | {row['train_ratio']:.2f} "
            f"| {row['eval_steps_per_s']:,.0f} | {row['eval_ratio']:.2f} | {row['update_share_of_episode']:.1%} |"
        )
    return "\n".join(lines)


def measure_startup(cold: bool = False) -> float:
    """Wall seconds for a fresh process to import everything, run one compiled episode and one JAX update.

    Warm: the compiled code comes from the on-disk caches (numba's and JAX's),
    as on every run after the first. Cold: empty caches, so everything compiles.
    """
    code = (
        "import dataclasses, mpiswim, numpy as np\n"
        "from mpi4py import MPI\n"
        "from mpiswim.config import DEFAULT_CONFIG, parse_config\n"
        "from mpiswim.env import Trajectory, make_task, run_episode\n"
        "from mpiswim.learn import update_agent, use_compilation_cache\n"
        "from mpiswim.policy import initial_agent\n"
        "use_compilation_cache()\n"
        "task = make_task('Swimmer-v5', 'signed')\n"
        "agent = initial_agent(task.obs_dim, task.action_dim, 'signed')\n"
        f"trajectory = Trajectory.empty({BENCH_T}, 8, 2)\n"
        f"run_episode(task, agent, np.random.default_rng(0), {BENCH_T}, trajectory)\n"
        "cfg = parse_config(DEFAULT_CONFIG, 1)\n"
        "update_agent(agent, trajectory, 1e-4, 1e-3, dataclasses.replace(cfg, features='signed', "
        "update='unit-density', baseline='state'))\n"
    )
    command = [sys.executable, "-c", code]
    with tempfile.TemporaryDirectory() as empty:
        env = None
        if cold:
            env = dict(os.environ, NUMBA_CACHE_DIR=empty, JAX_COMPILATION_CACHE_DIR=empty)
        else:
            subprocess.run(command, check=True)  # fills the caches if this is the very first run
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env)
        return time.perf_counter() - started


def pool_part(outdir: str, iterations: int) -> None:
    """Inside `mpiexec -n P`: run real pool iterations, then time the collectives alone."""
    import resource

    from mpiswim.launcher import start_mpi

    problem = start_mpi()  # a launcher of another MPI would measure P pools of 1: stop with its message
    if problem is not None:
        print(problem, file=sys.stderr, flush=True)
        sys.exit(2)
    from mpi4py import MPI

    from mpiswim.checkpoint import CheckpointWriter
    from mpiswim.env import task_for
    from mpiswim.learn import use_compilation_cache
    from mpiswim.policy import initial_agent
    from mpiswim.pool import allgather_scores, broadcast_agent
    from mpiswim.state import initial_state
    from mpiswim.train import Setup, run_loop

    use_compilation_cache()

    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    cfg = parse_config(bench_config(iterations, size), size)
    out = Path(outdir) / f"bench-{size}.h5"
    task = task_for(cfg)
    agent = initial_agent(task.obs_dim, task.action_dim, cfg.features, cfg.time_feature, cfg.scaler, cfg.eta_travels)
    state = initial_state(agent)
    writer = CheckpointWriter.create(out, cfg, state, []) if rank == 0 else None
    records = []
    started = time.perf_counter()
    run_loop(comm, Setup(cfg, out, state), records, writer=writer)
    run_seconds = time.perf_counter() - started

    repeats, collective = 20, []
    for repeat in range(repeats):
        comm.Barrier()
        started = time.perf_counter()
        scores = allgather_scores(comm, float(rank))
        broadcast_agent(comm, agent, root=int(np.argmax(scores)) if repeat % 2 else 0)
        collective.append(time.perf_counter() - started)
    peak_mb = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, root=0)
    if rank == 0:
        timings = np.array([r.timings for r in records])  # (iterations, P, phases)
        # The first iteration includes JIT compilation; leave it out of the per-iteration figures.
        steady = timings[1:] if len(timings) > 1 else timings
        iteration_seconds = steady[:, :, :3].sum(axis=2).max(axis=1) + steady[:, 0, 3]
        result = {
            "ranks": size,
            "iterations": iterations,
            "run_seconds": run_seconds,
            "iteration_seconds": float(np.median(iteration_seconds)),
            "collective_seconds": float(np.median(collective)),
            "checkpoint_seconds": float(np.median(steady[:, 0, 3])),
            "peak_memory_mb_per_rank": float(max(peak_mb)),
        }
        result["collective_share"] = result["collective_seconds"] / result["iteration_seconds"]
        result["checkpoint_share"] = result["checkpoint_seconds"] / result["iteration_seconds"]
        print("BENCH " + json.dumps(result), flush=True)


def random_record(rng: np.random.Generator, world_size: int, episodes: int):
    """An iteration record of plausible random numbers, to time checkpoint writes without training."""
    from mpiswim.state import PHASES, IterationRecord

    scores = rng.normal(100, 10, world_size)
    return IterationRecord(
        scores,
        int(np.argmax(scores)),
        rng.normal(100, 10, (world_size, episodes)),
        rng.uniform(0, 1, (world_size, len(PHASES))),
        np.zeros(world_size, bool),
        False,
        float(scores.max()),
    )


def measure_checkpoint_writes(
    at: tuple[int, ...] = (100, 10_000), world_size: int = 10, repeats: int = 7
) -> list[dict]:
    """Seconds to write iteration k into the checkpoint of a run that already holds k - 1 iterations.

    The seed run's pool shape (P = 10, 10 + 10 episodes) on the stock default
    config. `append`: mpiswim's write (the row, the agents, the commit record,
    two fsyncs). `rewrite`: the reference, writing the whole file anew as
    format 1 did every iteration (build in memory, temporary file, fsync,
    rename). Rounds interleaved, medians reported.
    """
    from mpiswim.checkpoint import CheckpointWriter, save_checkpoint
    from mpiswim.policy import initial_agent
    from mpiswim.state import initial_state

    cfg = parse_config(bench_config(max(at) + repeats + 1, world_size), world_size)
    rng = np.random.default_rng(0)
    state = initial_state(initial_agent(8, 2, cfg.features, cfg.time_feature, cfg.scaler, cfg.eta_travels))

    results = []
    with tempfile.TemporaryDirectory(dir=".") as folder:  # on the disk a run would write to, not a RAM /tmp
        for k in at:
            records = [random_record(rng, world_size, cfg.iterate_episodes) for _ in range(k - 1)]
            writer = CheckpointWriter.create(
                Path(folder) / f"append-{k}.h5", cfg, replace(state, iteration=k - 1), records
            )
            append, rewrite = [], []
            for _ in range(repeats):
                records.append(random_record(rng, world_size, cfg.iterate_episodes))
                done = replace(state, iteration=len(records))
                append.append(writer.append(done, records))
                started = time.perf_counter()
                save_checkpoint(Path(folder) / f"rewrite-{k}.h5", cfg, done, records)
                rewrite.append(time.perf_counter() - started)
            writer.close()
            result = {
                "iteration": k,
                "append_seconds": float(np.median(append)),
                "rewrite_seconds": float(np.median(rewrite)),
            }
            result["append_vs_rewrite"] = result["append_seconds"] / result["rewrite_seconds"]
            results.append(result)
    return results


def measure_pool(ranks: list[int], iterations: int) -> list[dict]:
    """Launch the pool part under mpiexec for each pool size."""
    launcher = Path(sys.executable).with_name("mpiexec")
    launcher = str(launcher) if launcher.exists() else shutil.which("mpiexec") or shutil.which("mpirun")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    results = []
    with tempfile.TemporaryDirectory() as outdir:
        for size in ranks:
            command = [
                launcher,
                "-n",
                str(size),
                sys.executable,
                "-m",
                "mpiswim.bench",
                "--pool-part",
                outdir,
                str(iterations),
            ]
            output = subprocess.run(
                command, stdout=subprocess.PIPE, text=True, env=env, check=True, timeout=1800
            ).stdout  # stderr: to the terminal
            line = next(line for line in output.splitlines() if line.startswith("BENCH "))
            results.append(json.loads(line[len("BENCH ") :]))
    return results


def run_benchmark(rounds: int = 3, ranks: tuple[int, ...] = (1, 2, 4), iterations: int = 4) -> dict:
    report = {"cores": os.cpu_count(), **measure_throughput(rounds)}
    report["startup_seconds"] = measure_startup()
    report["startup_seconds_cold"] = measure_startup(cold=True)
    report["pool"] = measure_pool(list(ranks), iterations)
    report["checkpoint_writes"] = measure_checkpoint_writes()
    by_size = {row["ranks"]: row for row in report["pool"]}
    if 1 in by_size and 2 in by_size:
        report["weak_scaling_2_vs_1"] = by_size[2]["iteration_seconds"] / by_size[1]["iteration_seconds"]
    return report


def format_report(report: dict) -> str:
    lines = [
        f"mpiswim bench: {report['env_id']}, T={report['T']}, {report['episodes']} episodes per phase, "
        f"{report['rounds']} rounds, {report['cores']} cores",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| bare MuJoCo (reference) | {report['bare_steps_per_s']:,.0f} steps/CPU-s | |",
        f"| training phase | {report['train_steps_per_s']:,.0f} steps/CPU-s = {report['train_ratio']:.2f} x bare "
        "| >= 0.85 |",
        f"| evaluation phase | {report['eval_steps_per_s']:,.0f} steps/CPU-s = {report['eval_ratio']:.2f} x bare "
        "| >= 0.90 |",
        f"| JAX update per episode | {report['update_seconds_per_episode'] * 1e3:.2f} ms = "
        f"{report['update_share_of_episode']:.1%} of the episode | <= 5% |",
        f"| start-up per rank (imports + compiled code from the caches) | {report['startup_seconds']:.1f} s | <= 5 s |",
        "| start-up per rank, first run (empty caches: numba and XLA compile) "
        f"| {report['startup_seconds_cold']:.1f} s | |",
    ]
    for row in report["pool"]:
        lines.append(
            f"| P = {row['ranks']}: iteration | {row['iteration_seconds']:.2f} s; collectives "
            f"{row['collective_seconds'] * 1e3:.2f} ms "
            f"= {row['collective_share']:.2%}; checkpoint {row['checkpoint_seconds'] * 1e3:.1f} ms = "
            f"{row['checkpoint_share']:.2%}; "
            f"peak memory {row['peak_memory_mb_per_rank']:.0f} MB/rank | <= 1% (P=4), <= 2%, <= 400 MB |"
        )
    if "weak_scaling_2_vs_1" in report:
        lines.append(f"| P = 2 vs P = 1 iteration time | {report['weak_scaling_2_vs_1']:.2f} x | <= 1.10 x |")
    for row in report.get("checkpoint_writes", []):
        lines.append(
            f"| checkpoint write of iteration {row['iteration']:,} (P = 10) | {row['append_seconds'] * 1e3:.1f} ms; "
            "rewriting the whole file "
            f"(format 1): {row['rewrite_seconds'] * 1e3:.1f} ms = {1 / row['append_vs_rewrite']:.1f} x | the same at "
            "100 and 10,000 |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pool-part"]:
        pool_part(sys.argv[2], int(sys.argv[3]))
