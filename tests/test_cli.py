"""The command line as a user runs it: config, train on one rank, info, evaluate."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from mpiswim.config import parse_config

MPISWIM = [sys.executable, "-m", "mpiswim.cli"]


def run(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*MPISWIM, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A 2-iteration single-rank run (a one-rank MPI job needs no launcher)."""
    folder = tmp_path_factory.mktemp("cli")
    config = run("config", cwd=folder).stdout
    config = re.sub(r"(?m)^iterations = \d+", "iterations = 2", config)
    config = re.sub(r"(?m)^T = \d+", "T = 30", config)
    (folder / "small.toml").write_text(config)
    result = run("train", "--config", "small.toml", "--out", "small.h5", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "small.h5"


@pytest.mark.slow
def test_config_prints_a_valid_commented_default():
    text = subprocess.run([*MPISWIM, "config"], capture_output=True, text=True, check=True).stdout
    assert "#" in text
    document = tomllib.loads(text)
    assert set(document) == {"run", "env", "pool", "policy", "ranks"}
    assert parse_config(text, 3).alpha == pytest.approx((1e-6, 1e-5, 1e-4), rel=1e-12)


def test_the_commands_answer_in_process(tmp_path, capsys):
    """config, check, info and evaluate through mpiswim.cli.main in this process, on the synthetic checkpoint (the
    fast tier's look at the command line; the other tests here run `python -m mpiswim.cli` as a user does)."""
    from synthetic import WINNERS, write_synthetic_checkpoint

    from mpiswim.cli import main

    assert main(["config"]) == 0
    assert parse_config(capsys.readouterr().out, 3).alpha == pytest.approx((1e-6, 1e-5, 1e-4), rel=1e-12)
    stored = write_synthetic_checkpoint(tmp_path / "run.h5")
    assert main(["check", str(stored)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("OK: ") and "3 ranks, 6 of 10 iterations" in printed and printed.count("\n") == 1
    assert main(["info", str(stored), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["world_size"], summary["iterations_done"], summary["winners"]) == (3, 6, WINNERS)
    assert summary["wins_per_rank"] == [2, 2, 1] and summary["best_iteration"] == 5  # 1-based, as the log counts
    # each phase: the slowest rank's (train: rank 2's 1.2 s; communicate: rank 0's 0.4 s); the iterations' wall time:
    # the slowest rank's three phases (rank 0: 1.9 s) and rank 0's write (0.05 s), 6 times
    phases = {"train": 7.2, "evaluate": 3.0, "communicate": 2.4, "checkpoint": 0.3}
    assert summary["seconds_per_phase"] == pytest.approx(phases) and summary["iteration_seconds"] == pytest.approx(11.7)
    assert main(["info", str(stored)]) == 0
    text = capsys.readouterr().out
    assert "best score: 7.00 at iteration 5" in text and "wall time of the iterations: 11.7 s" in text, text
    # every rank's steps (synthetic.steps): 6480 in all, 4650 in iterations 1..5
    assert (summary["steps"], summary["steps_to_best"], summary["steps_not_recorded"]) == (6480, 4650, 0)
    assert "environment steps: 6,480 in all (every rank's episodes), 4,650 up to the best score (iteration 5)" in text
    assert main(["evaluate", str(stored), "--episodes", "2", "--T", "20", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert (evaluated["agent"], evaluated["episodes"], evaluated["T"]) == ("best", 2, 20)
    assert len(evaluated["returns"]) == 2 and evaluated["mean"] == pytest.approx(np.mean(evaluated["returns"]))
    for command in ("info", "check", "evaluate"):
        assert main([command, str(tmp_path / "missing.h5")]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "no such file" in error and "Traceback" not in error, error


def test_info_json_summarises_the_checkpoint(small_run):
    result = run("info", str(small_run), "--json", cwd=small_run.parent)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["world_size"] == 1
    assert summary["iterations_done"] == 2
    assert summary["best_iteration"] in (1, 2)
    assert isinstance(summary["best_score"], float)
    assert summary["wins_per_rank"] == [2]


def test_info_text_names_the_run(small_run):
    result = run("info", str(small_run), cwd=small_run.parent)
    assert result.returncode == 0, result.stderr
    assert "iterations done: 2" in result.stdout and "Swimmer-v5" in result.stdout
    assert "winners over time (iterations: most frequent winner): 1: rank 0, 2: rank 0" in result.stdout
    table = result.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.split() == ["rank", "alpha", "eta", "wins", "new", "bests"])
    assert table[header + 1].split()[0] == "0" and table[header + 1].split()[3] == "2"  # rank 0 won both iterations
    assert (
        "[run]" not in result.stdout and f"mpiswim info {small_run} --config" in result.stdout
    )  # a summary, not the config
    stored = run("info", str(small_run), "--config", cwd=small_run.parent)
    assert tomllib.loads(stored.stdout) == tomllib.loads(
        json.loads(run("info", str(small_run), "--json", cwd=small_run.parent).stdout)["config_toml"]
    )


def test_winners_over_time_is_a_short_line_for_a_long_run():
    from mpiswim.report import winners_over_time

    assert winners_over_time([0, -1, 2]) == "1: rank 0, 2: none, 3: rank 2"
    line = winners_over_time([3] * 30 + [1, 1, 2] * 10)
    assert (
        line.startswith("1-6: rank 3 (6 of 6)") and line.endswith("55-60: rank 1 (4 of 6)") and line.count("rank") == 10
    )


def test_evaluate_reports_mean_and_spread_of_the_best_agent(small_run):
    """The returns are the best agent's on 3 fresh episodes (seed 0, the run's T and evaluation action), and the
    mean, spread and range are theirs."""
    from mpiswim.checkpoint import load_checkpoint
    from mpiswim.env import run_episode, task_for

    result = run("evaluate", str(small_run), "--episodes", "3", "--json", cwd=small_run.parent)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["episodes"] == 3 and summary["agent"] == "best"
    checkpoint = load_checkpoint(small_run)
    cfg, rng = checkpoint.config, np.random.default_rng(0)  # evaluate's default --seed 0
    task, mean, best = task_for(cfg), cfg.evaluation_action == "mean", checkpoint.state.best_agent
    expected = [run_episode(task, best, rng, cfg.T, mean_action=mean)[0] for _ in range(3)]
    assert summary["returns"] == pytest.approx(expected, abs=1e-9) and len(set(summary["returns"])) == 3
    returns = np.array(summary["returns"])
    assert (summary["mean"], summary["std"], summary["min"], summary["max"]) == pytest.approx(
        (returns.mean(), returns.std(), returns.min(), returns.max()), abs=1e-12
    )
    other = json.loads(
        run("evaluate", str(small_run), "--episodes", "3", "--seed", "1", "--json", cwd=small_run.parent).stdout
    )
    assert other["returns"] != summary["returns"]  # fresh episodes: another seed, other start states


def test_evaluate_with_another_episode_length(small_run):
    """--T evaluates on longer episodes than the run trained on (e.g. full-length Swimmer-v5)."""
    short, long = (
        json.loads(run("evaluate", str(small_run), "--episodes", "2", "--T", T, "--json", cwd=small_run.parent).stdout)
        for T in ("30", "200")
    )
    assert (short["T"], long["T"]) == (30, 200)
    assert long["mean"] != short["mean"]
    result = run("evaluate", str(small_run), "--T", "0", cwd=small_run.parent)
    assert result.returncode == 2 and "--T 0" in result.stderr and "at least" not in result.stdout


def test_evaluate_with_the_mean_action(small_run):
    """--action mean runs the deterministic controller a/(a+b) from the same start states as --action sample."""
    from mpiswim.checkpoint import load_checkpoint
    from mpiswim.env import make_task, run_episode

    sampled, mean = (
        json.loads(
            run(
                "evaluate",
                str(small_run),
                "--episodes",
                "3",
                "--T",
                "50",
                "--action",
                action,
                "--json",
                cwd=small_run.parent,
            ).stdout
        )
        for action in ("sample", "mean")
    )
    assert (sampled["action"], mean["action"]) == ("sample", "mean")
    assert sampled["returns"] != mean["returns"]
    checkpoint = load_checkpoint(small_run)
    features = tomllib.loads(checkpoint.config_toml)["policy"]["features"]
    task, rng = make_task("Swimmer-v5", features), np.random.default_rng(0)  # evaluate's default --seed 0
    expected = [run_episode(task, checkpoint.state.best_agent, rng, 50, mean_action=True)[0] for _ in range(3)]
    assert mean["returns"] == pytest.approx(expected, abs=1e-9)


def test_evaluate_names_the_action_it_used(small_run):
    """Without --action, the run's [pool] evaluation_action ("mean" in the default config) is used and named."""
    summary = json.loads(run("evaluate", str(small_run), "--episodes", "1", "--json", cwd=small_run.parent).stdout)
    assert summary["action"] == "mean"
    first_line = run("evaluate", str(small_run), "--episodes", "1", cwd=small_run.parent).stdout.splitlines()[0]
    assert "with the Beta mean" in first_line
    first_line = run(
        "evaluate", str(small_run), "--episodes", "1", "--action", "sample", cwd=small_run.parent
    ).stdout.splitlines()[0]
    assert "with Beta draws" in first_line


def test_resume_continues_to_more_iterations(small_run, tmp_path):
    copy = tmp_path / "copy.h5"
    copy.write_bytes(small_run.read_bytes())
    result = run("train", "--resume", str(copy), "--iterations", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(run("info", str(copy), "--json", cwd=tmp_path).stdout)
    assert summary["iterations_done"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("command", ["info", "evaluate"])
def test_not_a_checkpoint_gives_one_clear_error(tmp_path, command):
    bogus = tmp_path / "notes.h5"
    bogus.write_text("not hdf5")
    result = run(command, str(bogus), cwd=tmp_path)
    assert result.returncode == 2
    assert "notes.h5" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["info", "check", "evaluate"])
def test_a_directory_or_a_missing_file_gives_one_plain_line(tmp_path, command):
    """No HDF5 internals, and no advice about truncated files for a file that is not there."""
    for given, problem in ((tmp_path, "is a directory"), (tmp_path / "missing.h5", "no such file")):
        result = run(command, str(given), cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and str(given) in result.stderr and problem in result.stderr, (
            result.stderr
        )
        assert "truncated" not in result.stderr and "HDF5" not in result.stderr


@pytest.mark.parametrize("command", ["analyze", "render"])
def test_an_empty_out_is_refused(small_run, tmp_path, command):
    result = run(command, str(small_run), "--out", "", cwd=tmp_path)
    assert (
        result.returncode == 2
        and result.stderr.count("\n") == 1
        and "--out is empty" in result.stderr
        and "Fix:" in result.stderr
    ), result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--out", ""], "--out is empty"),
        (["--resume", "{folder}"], "is a directory"),
        (["--resume", "{folder}/missing.h5"], "no such file"),
        (["--config", "{folder}"], "is a directory"),
        (["--config", "{folder}/missing.toml"], "no such file"),
        (["--set", "run.seed"], "--set = 'run.seed': is not section.key=value"),
        (["--set", "pool.learner=evolution"], "[pool] learner = 'evolution': unknown learner"),
        (["--resume", "{folder}/run.h5", "--set", "run.seed=3"], "a resumed run keeps the config it started with"),
    ],
)
def test_train_refuses_odd_inputs_in_one_line(tmp_path, options, problem):
    result = run("train", *(option.format(folder=tmp_path) for option in options), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert problem in result.stderr and "Fix:" in result.stderr and "Errno" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the config's default out


def fix_command(stderr: str) -> str:
    """The command in a message's "Fix: ... `command`" hint."""
    return re.search(r"Fix:[^`]*`([^`]+)`", stderr).group(1)


def test_the_already_exists_hint_works_as_printed(small_run, tmp_path):
    """A finished run in a path with a space: the hint has its ranks, the quoted path and iterations that go further."""
    folder = tmp_path / "my runs"
    folder.mkdir()
    (folder / "run one.h5").write_bytes(small_run.read_bytes())
    config = str(small_run.parent / "small.toml")
    result = run("train", "--config", config, "--out", "my runs/run one.h5", cwd=tmp_path)
    assert result.returncode == 2 and "finished run" in result.stderr, result.stderr
    assert fix_command(result.stderr) == "mpirun -n 1 mpiswim train --resume 'my runs/run one.h5' --iterations 4"

    asked = run("train", "--config", config, "--out", "my runs/run one.h5", "--iterations", "3", cwd=tmp_path)
    command = fix_command(asked.stderr)
    assert command == "mpirun -n 1 mpiswim train --resume 'my runs/run one.h5' --iterations 3"
    venv_bin = os.path.dirname(sys.executable)  # mpirun and mpiswim of this venv
    resumed = subprocess.run(
        command,
        shell=True,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=dict(os.environ, PATH=f"{venv_bin}:{os.environ['PATH']}"),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(run("info", "my runs/run one.h5", "--json", cwd=tmp_path).stdout)["iterations_done"] == 3


@pytest.fixture
def run_without_winner(tmp_path) -> Path:
    """Two iterations in which every branch was degenerate: no branch ever won (e.g. Humanoid without observation
    scaling).
    """
    from mpiswim.checkpoint import save_checkpoint
    from mpiswim.config import DEFAULT_CONFIG
    from mpiswim.policy import initial_agent
    from mpiswim.state import IterationRecord, PoolState

    text = re.sub(r"(?m)^iterations = \d+", "iterations = 2", DEFAULT_CONFIG)
    text = re.sub(r"(?m)^T = \d+", "T = 30", text)
    text = re.sub(r"(?m)^features = .*$", 'features = "signed"', text)
    cfg = parse_config(text, 1)
    agent = initial_agent(8, 2, "signed", cfg.time_feature)
    degenerate = IterationRecord(
        scores=np.array([-np.inf]),
        winner=-1,
        train_returns=np.zeros((1, cfg.iterate_episodes)),
        timings=np.zeros((1, 4)),
        degenerate=np.array([True]),
        fell_back=False,
        best_score=-np.inf,
    )
    state = PoolState(2, agent, agent, -np.inf, -1, 0, 2)
    save_checkpoint(tmp_path / "stuck.h5", cfg, state, [degenerate, degenerate])
    return tmp_path / "stuck.h5"


@pytest.mark.slow
def test_a_run_without_a_winner_says_so(run_without_winner):
    folder = run_without_winner.parent
    text = run("info", str(run_without_winner), cwd=folder)
    assert text.returncode == 0, text.stderr
    assert "no winner yet" in text.stdout and "-inf" not in text.stdout
    strict = {"parse_constant": lambda name: pytest.fail(f"info --json wrote {name}, which is not JSON")}
    summary = json.loads(run("info", str(run_without_winner), "--json", cwd=folder).stdout, **strict)
    assert (summary["best_score"], summary["best_iteration"], summary["winners"]) == (None, None, [-1, -1])
    evaluated = run("evaluate", str(run_without_winner), "--episodes", "1", cwd=folder)
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("initial agent (no branch has won yet)")
    assert (
        json.loads(run("evaluate", str(run_without_winner), "--episodes", "1", "--json", cwd=folder).stdout)["agent"]
        == "initial"
    )


def test_trainings_progress_line_without_a_winner_says_so():
    from mpiswim.config import DEFAULT_CONFIG
    from mpiswim.policy import initial_agent
    from mpiswim.state import IterationRecord, PoolState
    from mpiswim.train import progress_line

    cfg = parse_config(DEFAULT_CONFIG, 2)
    agent = initial_agent(8, 2, cfg.features, cfg.time_feature)
    record = IterationRecord(
        np.full(2, -np.inf), -1, np.zeros((2, 1)), np.zeros((2, 4)), np.array([True, True]), False, -np.inf
    )
    line = progress_line(cfg, PoolState(1, agent, agent, -np.inf, -1, 0, 1), record, elapsed=3.0, eta=None)
    assert "every branch degenerate" in line and "no winner yet" in line and "-inf" not in line
    won = progress_line(
        cfg,
        PoolState(2, agent, agent, 5.0, 1, 0, 0),
        IterationRecord(
            np.array([5.0, 1.0]), 0, np.zeros((2, 1)), np.zeros((2, 4)), np.array([False, False]), False, 5.0
        ),
        4.0,
        None,
    )
    assert "best 5.00 (it 2)" in won


def test_the_default_config_leaves_out_to_the_runs_name():
    from mpiswim.config import DEFAULT_CONFIG, default_out, file_name_for

    assert (
        "out" not in tomllib.loads(DEFAULT_CONFIG)["run"] and "# out = " in DEFAULT_CONFIG
    )  # a commented line says the default
    assert parse_config(DEFAULT_CONFIG, 2).out == "runs/swimmer-default.h5"
    assert (
        file_name_for("my run/2: final") == "my-run-2-final"
        and file_name_for("../..") == "run"
        and file_name_for(".hidden") == "hidden"
    )
    assert default_out("Schwimmer ü") == "runs/Schwimmer.h5"
    given = DEFAULT_CONFIG.replace("[run]\n", '[run]\nout = "elsewhere.h5"\n')
    assert parse_config(given, 2).out == "elsewhere.h5"


@pytest.mark.slow
def test_a_config_without_out_writes_runs_name_h5(tmp_path):
    """The newcomer's path: after `make run` (runs/default.h5), `mpiswim config > my.toml` and train it: no
    collision.
    """
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "default.h5").write_bytes(b"make run's checkpoint")  # left alone
    config = run("config", cwd=tmp_path).stdout
    config = re.sub(r"(?m)^iterations = \d+", "iterations = 1", config)
    config = re.sub(r"(?m)^T = \d+", "T = 20", config)
    config = re.sub(r'(?m)^name = "[^"]*"', 'name = "my first run"', config)
    (tmp_path / "my.toml").write_text(config)
    result = run("train", "--config", "my.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["default.h5", "my-first-run.h5"]
    assert "checkpoint runs/my-first-run.h5" in result.stdout

    again = run("train", "--config", "my.toml", cwd=tmp_path)  # the same name twice: the hint continues that run
    assert (
        again.returncode == 2
        and fix_command(again.stderr) == "mpirun -n 1 mpiswim train --resume runs/my-first-run.h5 --iterations 2"
    ), again.stderr


def test_nothing_to_do_hint_is_a_command(small_run, tmp_path):
    copy = tmp_path / "copy.h5"
    copy.write_bytes(small_run.read_bytes())
    result = run("train", "--resume", "copy.h5", "--iterations", "1", cwd=tmp_path)
    assert result.returncode == 0 and "nothing to do" in result.stdout, result.stderr
    assert "`mpirun -n 1 mpiswim train --resume copy.h5 --iterations 4`" in result.stdout


def test_a_damaged_checkpoint_at_out_is_not_offered_a_resume(small_run, tmp_path):
    """A file that is a checkpoint by its format mark but cannot be read: the fix is `mpiswim check`, not a resume that
    would fail.
    """
    import h5py

    from mpiswim.train import InputError, check_out_path

    damaged = tmp_path / "damaged run.h5"
    damaged.write_bytes(small_run.read_bytes())
    with h5py.File(damaged, "r+") as f:
        del f["pool"]
    with pytest.raises(InputError) as error:
        check_out_path(damaged, force=False, iterations=5)
    assert "cannot be read" in str(error.value) and "--resume" not in str(error.value)
    assert fix_command(str(error.value)) == f"mpiswim check {shlex.quote(str(damaged))}"


def run_with_closed_stdout(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run mpiswim with a stdout whose reader has gone away before the first byte (as `| head -3` once head has its
    lines).
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*MPISWIM, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=240, cwd=cwd
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["config"],
        ["info", "{run}"],
        ["info", "{run}", "--json"],
        ["check", "{run}"],
        ["evaluate", "{run}", "--episodes", "1"],
    ],
)
def test_a_closed_stdout_ends_the_command_quietly(small_run, args):
    result = run_with_closed_stdout(*(a.format(run=small_run) for a in args), cwd=small_run.parent)
    assert result.returncode == 141 and result.stderr == "", result.stderr


@pytest.mark.slow
def test_train_whose_stdout_reader_has_gone_trains_on_to_the_end(tmp_path):
    """`mpiswim train | head -1` on one process: the progress lines go nowhere, the run finishes and is intact.

    (Under mpiexec the launcher itself gets SIGPIPE and ends the job; the checkpoint then keeps
    the last completed iteration, docs/faults.md.)
    """
    config = tmp_path / "tiny.toml"
    config.write_text(
        '[run]\nname = "pipe"\niterations = 3\n[env]\nid = "Swimmer-v5"\nT = 30\n[pool]\niterate_episodes = '
        "1\nevaluate_episodes = 1\ncommon_evaluation = false\n"
        'evaluation_action = "sample"\n[policy]\nfeatures = "signed"\nupdate = "unit-density"\nbaseline = '
        '"state"\n[ranks]\nalpha = 1e-4\neta = 1e-3\n'
    )
    result = run_with_closed_stdout("train", "--config", str(config), "--out", "run.h5", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    check = subprocess.run([*MPISWIM, "check", "run.h5"], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert check.returncode == 0 and "3 of 3 iterations" in check.stdout, check.stdout + check.stderr


def test_info_piped_into_head_prints_no_traceback(small_run):
    """The issue's own command through a shell: whether head exits before or after mpiswim writes, no traceback, no
    message.
    """
    command = (
        f"set -o pipefail; {shlex.quote(sys.executable)} -m mpiswim.cli info {shlex.quote(str(small_run))} | head -3"
    )
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=240)
    assert result.returncode in (0, 141) and len(result.stdout.splitlines()) == 3 and result.stderr == "", result.stderr


def test_evaluate_shows_its_progress_in_a_log(small_run, capsys, monkeypatch):
    from mpiswim import progress
    from mpiswim.cli import main

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    assert main(["evaluate", str(small_run), "--episodes", "2"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("evaluate small.h5: 2/2 episodes (100%)"), lines


@pytest.mark.slow
def test_bench_task_times_a_body_against_bare_mujoco(tmp_path):
    """`mpiswim bench --task ID --json`: one row per body, the compiled path, the steps its episodes really ran."""
    result = run("bench", "--task", "Hopper-v5", "--task", "Swimmer-v5", "--rounds", "1", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["env_id"] for row in rows] == ["Hopper-v5", "Swimmer-v5"]
    hopper, swimmer = rows
    assert hopper["compiled"] and swimmer["compiled"]
    assert hopper["mean_episode_steps"] < 500 == swimmer["mean_episode_steps"]  # an untrained hopper falls
    for row in rows:
        assert row["bare_steps_per_s"] > 0 and 0.2 < row["eval_ratio"] < 5 and 0.05 < row["train_ratio"] < 5
    refused = run("bench", "--task", "Swimmer-v5", "--task", "CartPole-v1", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""  # checked before anything is measured
    assert "bench --task = 'CartPole-v1': not one of Gymnasium's registered MuJoCo tasks" in refused.stderr


def test_info_says_when_steps_were_not_recorded(tmp_path, capsys):
    """A file written before checkpoint format 3 has no steps: info says so instead of a number; a resumed one has them
    for its new iterations only, and the steps to the best score are then not known."""
    import dataclasses

    from synthetic import write_synthetic_checkpoint

    from mpiswim.checkpoint import load_checkpoint, save_checkpoint
    from mpiswim.cli import main

    old = Path(__file__).parents[1] / "results" / "pool_size" / "checkpoints" / "fast-swimmer-P1-0.h5"  # format 2
    assert main(["info", str(old), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["steps"], summary["steps_to_best"], summary["steps_not_recorded"]) == (None, None, 17)
    assert main(["info", str(old)]) == 0
    assert "environment steps: not recorded (the file was written before" in capsys.readouterr().out
    loaded = load_checkpoint(write_synthetic_checkpoint(tmp_path / "run.h5"))
    records = [dataclasses.replace(r, steps=np.full(3, -1) if k < 2 else r.steps) for k, r in enumerate(loaded.records)]
    save_checkpoint(tmp_path / "resumed.h5", loaded.config, loaded.state, records)
    assert main(["info", str(tmp_path / "resumed.h5")]) == 0
    said = "environment steps: 5,520 in iterations 3..6 (iterations 1..2 were written before mpiswim recorded steps)"
    assert said + "; up to the best score: not known" in capsys.readouterr().out


def test_a_time_limit_is_planned_projected_and_stops_the_run_with_exit_0_and_the_resume_command():
    """The planned-work line names both budgets; the ETA says which binds; rank 0's time-limit bit ends the run with
    exit code 0 (unless the iterations were done anyway, or a signal came too); the message says how to resume."""
    from pathlib import Path as P

    from mpiswim.config import DEFAULT_CONFIG
    from mpiswim.policy import initial_agent
    from mpiswim.state import PoolState
    from mpiswim.train import (
        EXIT_CODES,
        STOP_SIGTERM,
        STOP_TIME_LIMIT,
        Setup,
        planned_work,
        projection,
        stop_reason,
        time_limit_message,
    )

    limited = parse_config(DEFAULT_CONFIG.replace("max_seconds = 0", "max_seconds = 600"), 2)
    unlimited = parse_config(DEFAULT_CONFIG, 2)
    assert planned_work(limited, 2, 0).endswith("; or 0:10:00 of wall time (time limit), whichever comes first: the "
                                                "ETA says which")  # fmt: skip
    assert "time limit" not in planned_work(unlimited, 2, 0)
    # 10 s per iteration after the first, 30 s used after 2: the 118 left need 1180 s, the budget ends in iteration 59
    assert projection(unlimited, 2, 20.0, 30.0, 2, 30.0) == (1180.0, "")
    assert projection(limited, 2, 20.0, 30.0, 2, 30.0) == (570.0, "time limit, about iteration 59")
    assert projection(limited, 100, 20.0, 1010.0, 100, 300.0) == (200.0, "iterations")  # 20 left, room for 30
    agent = initial_agent(8, 2, "linear")
    state = PoolState(7, agent, agent, 12.5, 3, 0, 0)
    assert stop_reason(STOP_TIME_LIMIT, state, limited) == "time limit" and EXIT_CODES["time limit"] == 0
    assert stop_reason(0, state, limited) is None
    assert stop_reason(STOP_TIME_LIMIT | STOP_SIGTERM, state, limited) == "SIGTERM"
    assert stop_reason(STOP_TIME_LIMIT, PoolState(120, agent, agent, 12.5, 3, 0, 0), limited) == "done"
    message = time_limit_message(2, Setup(limited, P("runs/my run.h5"), state), state, 601.0)
    assert message.startswith("mpiswim: time limit reached after 7 iterations (0:10:01 of wall time; [run] max_seconds")
    assert "holds the 7 completed iterations of 120 planned; best score 12.50 at iteration 4" in message
    assert "Resume with: `mpirun -n 2 mpiswim train --resume 'runs/my run.h5'` (the resumed job gets 600 s again" in (
        message
    )
    given = Setup(limited, P("run.h5"), state, time_limit_from="--time-limit")
    assert "(add --time-limit SECONDS to give it a time budget too)" in time_limit_message(2, given, state, 601.0)


def test_info_shows_the_ranks_as_a_table_for_any_pool_size(tmp_path, capsys):
    from synthetic import write_synthetic_checkpoint

    from mpiswim.cli import main

    assert main(["info", str(write_synthetic_checkpoint(tmp_path / "run.h5"))]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("ranks (step sizes, wins, new bests: wins that raised the best score):")
    assert [line.split() for line in lines[start + 1 : start + 5]] == [
        ["rank", "alpha", "eta", "wins", "new", "bests"],
        ["0", "1e-05", "0.0001", "2", "2"],
        ["1", "0.0001", "0.001", "2", "2"],
        ["2", "0.0001", "0.001", "1", "0"],
    ]
    assert len({len(line) for line in lines[start + 1 : start + 5]}) == 1  # aligned columns


def test_evaluate_reports_every_episodes_length(tmp_path, capsys):
    """On Hopper a random policy falls within a few dozen steps: the lengths, not only the returns, say so."""
    from mpiswim.checkpoint import save_checkpoint
    from mpiswim.cli import main
    from mpiswim.config import DEFAULT_CONFIG, apply_overrides
    from mpiswim.policy import Agent, initial_agent
    from mpiswim.state import IterationRecord, PoolState

    cfg = parse_config(apply_overrides(DEFAULT_CONFIG, ['env.id="Hopper-v5"', "env.T=300", "run.iterations=2"]), 2)
    zero = initial_agent(11, 3, cfg.features, cfg.time_feature)
    agent = Agent(np.random.default_rng(1).normal(0, 0.5, zero.policy.shape), *zero[1:])
    record = IterationRecord(
        scores=np.array([1.0, 0.5]), winner=0, train_returns=np.zeros((2, cfg.iterate_episodes)),
        timings=np.zeros((2, 4)), degenerate=np.zeros(2, bool), fell_back=False, best_score=1.0,
        steps=np.array([10, 10]),
    )  # fmt: skip
    path = tmp_path / "hopper.h5"
    save_checkpoint(path, cfg, PoolState(1, agent, agent, 1.0, 0, 0, 0), [record])
    assert main(["evaluate", str(path), "--episodes", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["lengths"]) == 3 and all(0 < n < 300 for n in summary["lengths"])
    assert summary["mean_length"] == pytest.approx(np.mean(summary["lengths"]))
    assert main(["evaluate", str(path), "--episodes", "3"]) == 0
    text = capsys.readouterr().out
    assert f"episode length mean {np.mean(summary['lengths']):.1f}" in text and "3 of 3 ended before 300 steps" in text


def test_resume_if_exists_keeps_an_extended_plan_and_follows_a_shortened_config(tmp_path):
    """A run extended beyond the config it was started with (`--resume --iterations 10` on a config of 8) is not cut
    back to 8 by `--resume-if-exists` with that config; a run that was not extended follows a config that asks for
    less (a batch script shortening the next allocation, as slurm/test_slurm.sh's requeue case does).
    """
    from argparse import Namespace

    from synthetic import write_synthetic_checkpoint

    from mpiswim.checkpoint import check_checkpoint, load_checkpoint
    from mpiswim.config import apply_overrides
    from mpiswim.train import prepare

    def plan(path, asked: int) -> tuple[int, int | None]:
        config = tmp_path / "run.toml"
        config.write_text(apply_overrides(load_checkpoint(path).config_toml, [f"run.iterations={asked}"]))
        args = Namespace(config=str(config), out=str(path), resume=None, resume_if_exists=True, iterations=None)
        setup, _, writer = prepare(args, 3)
        writer.close()
        return setup.cfg.iterations, setup.config_iterations

    started = write_synthetic_checkpoint(tmp_path / "started.h5", planned=10)  # 6 of 10 done, its config says 10
    assert plan(started, 8) == (8, None)  # not extended: the shortened config is followed
    extended = write_synthetic_checkpoint(tmp_path / "extended.h5", planned=8)
    resume = Namespace(config=None, out=None, resume=str(extended), resume_if_exists=False, iterations=10, set=None)
    _, _, writer = prepare(resume, 3)  # `--resume extended.h5 --iterations 10` on a run whose config says 8
    writer.close()
    assert load_checkpoint(extended).config.iterations == 8 and check_checkpoint(extended).iterations_planned == 10
    assert plan(extended, 8) == (10, 8)  # extended: not cut back to the config's 8
    assert plan(extended, 12) == (12, None)  # the larger: the config's


def test_the_eta_of_a_run_with_a_target_is_an_upper_bound_and_says_so():
    from mpiswim.config import DEFAULT_CONFIG, apply_overrides
    from mpiswim.train import planned_work, projection

    cfg = parse_config(apply_overrides(DEFAULT_CONFIG, ["run.target=340", "run.iterations=100"]), 2)
    eta, binds = projection(cfg, 10, 5.0, 14.0, 10, 14.0)
    assert eta == pytest.approx(90.0) and binds == "at most: sooner if the target 340 is reached"
    assert "stops sooner once the best agent scores the target 340 (the ETA is an upper bound)" in planned_work(
        cfg, 2, 0
    )
    without = parse_config(apply_overrides(DEFAULT_CONFIG, ["run.iterations=100"]), 2)
    assert projection(without, 10, 5.0, 14.0, 10, 14.0) == (pytest.approx(90.0), "")
