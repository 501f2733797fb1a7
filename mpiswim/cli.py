"""Command line: `mpiswim config | train | evaluate | info | check | analyze | render`.

Heavy imports (MPI, JAX, MuJoCo) happen inside the commands that need them,
so `mpiswim config` and `mpiswim info` start quickly and never initialise MPI.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import numpy as np

import mpiswim
from mpiswim.config import EVALUATION_ACTIONS, has_control_character


def is_first_process() -> bool:
    """False in a process that a launcher (mpiexec, srun) started as rank 1 or later; read from its variables, before
    MPI
    starts.
    """
    from mpiswim.launcher import detect_launcher  # standard library only: cheap, and it does not start MPI

    launcher = detect_launcher(os.environ)
    return launcher is None or launcher.rank in (None, 0)


def usage_error(message: str) -> int:
    """A usage error found before MPI starts: every process of `mpiexec -n P` has it, so only rank 0 says it. Exit code
    2.
    """
    if is_first_process():
        print(f"mpiswim: {message}", file=sys.stderr)
    return 2


def announce_start() -> None:
    """Rank 0's first line, before the imports and compilation that take seconds before the planned-work line."""
    from mpiswim.launcher import detect_launcher

    launcher = detect_launcher(os.environ)
    if launcher is None or launcher.rank in (None, 0):
        ranks = "1 rank" if launcher is None else f"{launcher.size or 'the'} ranks"
        try:
            print(f"mpiswim: starting {ranks}; importing and compiling", flush=True)
        except BrokenPipeError:  # `mpiswim train | head -0`: train goes on silently (train.say)
            pass


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error printed by rank 0 only (the subcommands' parsers are of this class too)."""

    def error(self, message: str):
        if is_first_process():
            super().error(message)  # prints usage and the message, exits 2
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mpiswim", description="Pooled branch-and-merge REINFORCE for MuJoCo bodies over MPI.")
    parser.add_argument("--version", action="version", version=f"mpiswim {mpiswim.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    config = commands.add_parser("config", help="print a valid, commented default config (TOML)")
    config.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="change one key of it (repeatable), e.g. --set run.iterations=40",
    )

    train = commands.add_parser(
        "train",
        help="train a pool (run under mpirun/mpiexec, one rank per pool member)",
        description="Train a pool. Without --config or --resume, the embedded default config (`mpiswim config`) is "
        "used.",
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="TOML config (read by rank 0 only)")
    source.add_argument("--resume", metavar="RUN.h5", help="continue a stopped run with the same number of ranks")
    train.add_argument(
        "--out",
        metavar="RUN.h5",
        help="checkpoint path (default: [run] out of the config; if it has none, runs/<[run] name>.h5)",
    )
    train.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="iterations in all (overrides the config; with --resume: continue until N)",
    )
    train.add_argument("--force", action="store_true", help="replace an existing output file")
    train.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one config key (repeatable), e.g. --set run.seed=3 --set env.id=Hopper-v5; stored in the "
        "checkpoint's config",
    )
    train.add_argument(
        "--stall-timeout",
        type=float,
        metavar="SECONDS",
        help="end the job (exit code 5, naming the rank) when a rank keeps the others waiting at a collective this "
        "long "
        "(at least 20 x the slowest iteration; 600 s for set-up and the first iteration); 0 = never. Overrides [run] "
        "stall_timeout (default 600)",
    )
    train.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="time budget: after this much wall time the run finishes the iteration in progress, writes it and exits 0 "
        "with the command that resumes it; 0 = no limit. Overrides [run] max_seconds (default 0); on --resume too",
    )
    train.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write live TensorBoard curves (scores, step sizes, phase times, steps) into DIR during the run (rank 0; "
        "needs the tensorboard extra: pip install 'mpiswim[tensorboard]'); [run] tensorboard = true writes them to "
        "RUN.tb/ beside the checkpoint",
    )
    train.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="if the --out checkpoint exists, resume it (its config must match --config except [run] iterations); "
        "otherwise start from the config",
    )

    evaluate = commands.add_parser("evaluate", help="mean and spread of the best agent's return")
    evaluate.add_argument("checkpoint", metavar="RUN.h5")
    evaluate.add_argument("--episodes", type=int, default=10, metavar="N")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes (default 0)")
    evaluate.add_argument("--agent", choices=("best", "current"), default="best")
    evaluate.add_argument(
        "--T",
        type=int,
        metavar="N",
        help="steps per episode at most (default: the run's T); e.g. 1000 for full-length Swimmer-v5 episodes",
    )
    evaluate.add_argument(
        "--action",
        choices=EVALUATION_ACTIONS,
        help="draw actions from the Beta policy, or take its mean a/(a+b) "
        "(default: the run's [pool] evaluation_action)",
    )
    evaluate.add_argument("--json", action="store_true")

    bench = commands.add_parser(
        "bench", help="throughput against bare MuJoCo, MPI and checkpoint costs (takes a few minutes)"
    )
    bench.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (median reported)")
    bench.add_argument("--ranks", default="1,2,4", help="pool sizes for the MPI part, comma-separated")
    bench.add_argument("--iterations", type=int, default=4, help="pool iterations per pool size")
    bench.add_argument(
        "--task",
        action="append",
        metavar="ID",
        help="measure only the throughput of this task against bare MuJoCo (repeatable; 'all': the six bodies, "
        "Swimmer-v5 to Humanoid-v5)",
    )
    bench.add_argument(
        "--python-loop", action="store_true", help="with --task: time the plain Python loop instead (for comparison)"
    )
    bench.add_argument("--json", action="store_true")

    check = commands.add_parser(
        "check",
        help="validate a checkpoint (schema, shapes, values, checksum); exit 0 and one OK line, or 2 and what is wrong",
    )
    check.add_argument("checkpoint", metavar="RUN.h5")

    info = commands.add_parser("info", help="summarise a checkpoint")
    info.add_argument("checkpoint", metavar="RUN.h5")
    info.add_argument("--json", action="store_true", help="everything, as one JSON object")
    info.add_argument(
        "--config", action="store_true", help="print the run's stored config (TOML) instead of the summary"
    )

    analyze = commands.add_parser(
        "analyze",
        help="plots and tables of one or more runs (learning curve, who wins, where time goes); works while a run is "
        "in progress",
        description="Write learning_curve.png/.csv, wins.png/.md and timings.png/.md/.csv into DIR; with several runs, "
        "one subfolder per run and compare.png/.csv/.md. Runs whose configs differ only in [run] seed (and name, "
        "file, planned iterations) form a config group: each group is one curve, its mean over its runs with a band "
        "(the 95% confidence interval with 3 runs or more, the min-max range with 2); groups are never averaged "
        "together. Each run is shown over its own length, the range every run covers is marked. A note names every "
        "way the configs differ (pool size, episode length T, a setting).",
    )
    analyze.add_argument("checkpoints", nargs="+", metavar="RUN.h5")
    analyze.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    analyze.add_argument(
        "--x",
        choices=("iterations", "steps", "cpu-seconds", "wall-seconds"),
        default="iterations",
        help="the plots' x-axis: iterations (default), environment steps of every rank, CPU-seconds of every rank, "
        "or wall seconds of the iterations (compare.csv's x column follows it)",
    )
    analyze.add_argument(
        "--reference",
        metavar="CURVE.csv",
        help="a reference learning curve to draw (dashed, labelled with the file name without .csv) on the "
        "learning-curve and compare plots: "
        "a CSV file with a header row and the columns iteration and score (other columns are ignored, a blank score is "
        "a gap)",
    )

    render = commands.add_parser(
        "render",
        help="video (.mp4 or .gif) of the best agent, or of --iteration K, with a camera that follows the body "
        "(headless)",
        description="Run one episode of a stored agent and film it with MuJoCo's offscreen renderer (MUJOCO_GL=egl by "
        "default, osmesa works too). "
        "The checkpoint keeps the initial agent (iteration 0), the best agent and the last iteration's agent; other "
        "iterations' agents are not stored.",
    )
    render.add_argument("checkpoint", metavar="RUN.h5")
    render.add_argument("--out", required=True, metavar="FILE", help="output video: .mp4 or .gif")
    render.add_argument(
        "--iteration",
        type=int,
        metavar="K",
        help="the agent after iteration K: 0 (initial), the best iteration, or the last (default: the best agent)",
    )
    render.add_argument("--steps", type=int, metavar="N", help="steps to film (default: the run's episode length T)")
    render.add_argument(
        "--every", type=int, metavar="N", help="keep every Nth step as a frame (default 1 for .mp4, 2 for .gif)"
    )
    render.add_argument(
        "--size", default=None, metavar="WxH", help="frame size in pixels (default 480x360 for .mp4, 320x240 for .gif)"
    )
    render.add_argument(
        "--action",
        choices=EVALUATION_ACTIONS,
        help="draw actions from the Beta policy or take its mean a/(a+b) (default: the run's [pool] evaluation_action)",
    )
    render.add_argument(
        "--seed", type=int, default=0, help="seed of the episode's start state and action draws (default 0)"
    )
    return parser


def evaluate_command(args) -> int:
    from mpiswim.config import MAX_T

    if args.episodes < 1:
        raise ValueError(f"--episodes {args.episodes}: must be at least 1")
    if args.T is not None and not 1 <= args.T <= MAX_T:
        raise ValueError(f"--T {args.T}: must be between 1 and {MAX_T}")
    from mpiswim.report import evaluate_agent

    evaluation = evaluate_agent(args.checkpoint, args.episodes, args.seed, args.agent, args.T, args.action)
    returns = evaluation.returns
    summary = {
        "agent": evaluation.agent,
        "action": evaluation.action,  # the one used: --action, or the run's [pool] evaluation_action
        "episodes": args.episodes,
        "T": evaluation.T,
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "min": float(np.min(returns)),
        "max": float(np.max(returns)),
        "returns": returns.tolist(),
        "lengths": evaluation.lengths.tolist(),  # steps of each episode: T, or fewer where the body fell (Hopper)
        "mean_length": float(np.mean(evaluation.lengths)),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        acting = "with the Beta mean a/(a+b)" if evaluation.action == "mean" else "with Beta draws"
        agent = (
            "initial agent (no branch has won yet)" if evaluation.agent == "initial" else f"{evaluation.agent} agent"
        )
        print(
            f"{agent} of {args.checkpoint}: {evaluation.env_id}, {args.episodes} episodes of at most {evaluation.T} "
            f"steps, {acting}"
        )
        print(
            f"mean return {summary['mean']:.2f}  std {summary['std']:.2f}  min {summary['min']:.2f}  max "
            f"{summary['max']:.2f}"
        )
        lengths = evaluation.lengths
        ended = int((lengths < evaluation.T).sum())
        print(
            f"episode length mean {lengths.mean():.1f}  min {lengths.min()}  max {lengths.max()} steps; "
            f"{ended} of {len(lengths)} ended before {evaluation.T} steps (terminated or degenerate)"
        )
    return 0


def info_command(args) -> int:
    from mpiswim.report import info_summary, winners_over_time

    summary = info_summary(_load(args.checkpoint))
    if args.json:
        print(json.dumps(summary))
        return 0
    if args.config:
        print(summary["config_toml"].rstrip())
        return 0
    done, planned = summary["iterations_done"], summary["iterations_planned"]
    print(f"{args.checkpoint}: run '{summary['run_name']}' on {summary['env_id']} with {summary['world_size']} ranks")
    print(
        f"iterations done: {done} of {planned} planned"
        + ("" if done >= planned else " (stopped early or still running; `mpiswim train --resume` continues it)")
    )
    if summary["best_iteration"] is None:
        print(
            f"best score: no winner yet (every branch degenerate in all {done} iterations; the best agent is the "
            "initial one)"
        )
    else:
        fresh = summary["fresh_checks"]
        how = f' (the mean of its fresh episodes: best_by = "fresh", {fresh} winners played them)' if fresh else ""
        print(f"best score: {summary['best_score']:.2f} at iteration {summary['best_iteration']}{how}")
    print("ranks (step sizes, wins, new bests: wins that raised the best score):")
    print(rank_table(summary))
    if summary["winners"]:
        print("winners over time (iterations: most frequent winner): " + winners_over_time(summary["winners"]))
    print(f"degenerate branches: {summary['degenerate_branches']}, fallbacks to best: {summary['fallbacks']}")
    print(f"environment steps: {steps_line(summary)}")
    print(f"wall time of the iterations: {summary['iteration_seconds']:.1f} s (start-up and pauses not counted)")
    print(
        "time per phase (each the slowest rank's, summed over iterations: ranks are slowest in different phases, so "
        "their sum can exceed the wall time): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in summary["seconds_per_phase"].items())
    )
    print(f"the run's config: `mpiswim info {shlex.quote(args.checkpoint)} --config`")
    return 0


def rank_table(summary: dict) -> str:
    """info's per-rank values as an aligned table, one line per rank, for any number of ranks."""
    header = ("rank", "alpha", "eta", "wins", "new bests")
    rows = [
        (str(r), f"{a:g}", f"{e:g}", str(w), str(b))
        for r, (a, e, w, b) in enumerate(
            zip(summary["alpha"], summary["eta"], summary["wins_per_rank"], summary["new_bests_per_rank"], strict=True)
        )
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in (header, *rows)
    )


def steps_line(summary: dict) -> str:
    """What info says about the run's environment steps: in all, and up to the best score."""
    total, missing, done = summary["steps"], summary["steps_not_recorded"], summary["iterations_done"]
    if total is None:
        return "not recorded (the file was written before mpiswim recorded steps, checkpoint format 3)"
    if missing:
        return (
            f"{total:,} in iterations {missing + 1}..{done} (iterations 1..{missing} were written before mpiswim "
            "recorded steps); up to the best score: not known"
        )
    best = summary["best_iteration"]
    to_best = "" if best is None else f", {summary['steps_to_best']:,} up to the best score (iteration {best})"
    return f"{total:,} in all (every rank's episodes){to_best}"


def check_command(args) -> int:
    """`mpiswim check RUN.h5`: one OK line, or a CheckpointError naming what is wrong (exit 2)."""
    from mpiswim.checkpoint import check_checkpoint, checkpoint_summary

    print(checkpoint_summary(args.checkpoint, check_checkpoint(args.checkpoint)))
    return 0


def _load(path: str):
    from mpiswim.checkpoint import load_checkpoint

    return load_checkpoint(path)


def analysis_command(args) -> int:
    """`mpiswim analyze` and `mpiswim render`: bad input gives one message and exit code 2."""
    from mpiswim.analysis import AnalysisError

    try:
        if args.command == "analyze":
            from mpiswim.analysis import analyze_command

            return analyze_command(args)
        from mpiswim.render import render_command

        return render_command(args)
    except AnalysisError as error:
        print(f"mpiswim {args.command}: {error}", file=sys.stderr)
        return 2


# What a command exits with when the reader of its output went away early (`mpiswim info run.h5 | head -3`):
# 128 + SIGPIPE, what the shell reports for cat, grep or seq cut off the same way, so a script with
# `set -o pipefail` treats mpiswim as it treats them, and nobody takes the cut output for all of it.
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run one command; if its stdout is closed early, stop quietly (no traceback) with EXIT_BROKEN_PIPE."""
    try:
        code = run_command(argv)
        # here, not at exit: a failed flush at exit would print "Exception ignored ... BrokenPipeError"
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit finds no closed pipe to complain about."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (
        OSError,
        ValueError,
    ):  # a stdout without a file descriptor (e.g. captured by a test): nothing to flush at exit
        pass


def run_command(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; return its exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "config":
        from mpiswim.config import ConfigError, check_overridden
        from mpiswim.tasks import embedded_config

        try:
            text = embedded_config(args.set or ())
            check_overridden(text)
        except ConfigError as error:
            return usage_error(str(error))
        sys.stdout.write(text)
        return 0
    if args.command == "train":
        if args.iterations is not None and args.iterations < 1:
            return usage_error(
                f"--iterations {args.iterations}: must be at least 1. Fix: give the number of iterations the run "
                "should have in all, e.g. --iterations 100."
            )
        if args.out is not None and not args.out.strip():
            from mpiswim.train import EMPTY_OUT

            return usage_error(EMPTY_OUT)
        if args.out is not None and has_control_character(args.out):
            return usage_error(
                f"--out {args.out!r} contains a control character (a newline would split the log's lines). Fix: give "
                "a file name without one."
            )
        if args.resume_if_exists and (args.resume or args.force):
            return usage_error(
                "--resume-if-exists goes with --config/--out, not with --resume or --force. Fix: drop one of them."
            )
        from mpiswim.launcher import start_mpi

        launcher_problem = start_mpi()  # before the first line: a launcher of another MPI prints nothing on stdout
        if launcher_problem is not None:
            print(launcher_problem, file=sys.stderr, flush=True)
            return 2
        announce_start()
        from mpiswim.train import train_command

        return train_command(args)

    if args.command == "bench":
        from mpiswim.bench import BODIES, format_bodies, format_report, measure_bodies, run_benchmark

        if args.task:
            from mpiswim.config import ConfigError
            from mpiswim.tasks import make_env

            env_ids = tuple(BODIES if "all" in args.task else args.task)
            try:
                for env_id in env_ids:  # every id checked before the first is measured
                    make_env(env_id).close()
            except ConfigError as error:
                return usage_error(str(error).removeprefix("config error: ").replace("[env] id", "bench --task", 1))
            rows = measure_bodies(env_ids, args.rounds, fast=not args.python_loop)
            print(json.dumps(rows) if args.json else format_bodies(rows))
            return 0
        report = run_benchmark(args.rounds, tuple(int(p) for p in args.ranks.split(",")), args.iterations)
        print(json.dumps(report) if args.json else format_report(report))
        return 0

    if args.command in ("analyze", "render"):
        if (
            not args.out.strip()
        ):  # argparse accepts --out "": it would mean the current folder, or a file without a type
            wanted = (
                "a folder, such as plots/"
                if args.command == "analyze"
                else "a video file name, such as swimmer.mp4 or swimmer.gif"
            )
            return usage_error(f"{args.command} --out is empty. Fix: give {wanted}.")
        return analysis_command(args)

    from mpiswim.checkpoint import CheckpointError
    from mpiswim.config import ConfigError

    try:
        if args.command == "check":
            return check_command(args)
        return evaluate_command(args) if args.command == "evaluate" else info_command(args)
    except (CheckpointError, ConfigError, ValueError) as error:
        print(f"mpiswim: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
