"""A file is data, never code (issue 25): what a file someone hands you can make mpiswim do.

- an env id written 'module:name' (in a config, a --set, or a checkpoint's stored config)
  never imports the module: every command refuses it in one line with exit 2, and creates
  nothing;
- a checkpoint whose stored task does not fit its agent is refused by check, info,
  evaluate, render and train --resume alike;
- the checkpoint's path is watched: deleted, cut short or replaced while the run goes on,
  the run is written there again or rescued, never reported "done" into a lost file;
- the target check does not look like a stall, and a signal during it is acted on.

The hyperparameter file's HDF5 cases are in tests/test_config.py, the checkpoint's in
tests/test_integrity.py's neighbour here (test_a_checkpoint_that_reads_another_file_*).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from jobs import environment, finish_job, start_job, train_args, without_start_line
from synthetic import write_synthetic_checkpoint
from test_mpi import TINY_CONFIG, mpiexec, read_pool

from mpiswim.checkpoint import CheckpointWriter, check_checkpoint, load_checkpoint, read_raw, save_checkpoint
from mpiswim.config import parse_config
from mpiswim.train import EXIT_CHECKPOINT_LOST, STOP_CHECKPOINT_LOST, finish_file, write_checkpoint

TIMEOUT = 240  # seconds for a whole job; reaching it fails the test
MPISWIM = str(Path(sys.executable).with_name("mpiswim"))
EVIL = "import pathlib\npathlib.Path('IMPORTED').write_text('mpiswim imported evil.py')\n"


def run_command(args: list[str], cwd: Path, ranks: int | None = None, **env: str) -> tuple[int, str]:
    """`mpiswim ARGS` in `cwd` (under `mpiexec -n ranks` if given), with the current folder on the import path."""
    command = [mpiexec(), "-n", str(ranks), MPISWIM, *args] if ranks else [MPISWIM, *args]
    job = start_job(command, cwd, environment(PYTHONPATH=".", **env))
    return finish_job(job, TIMEOUT, f"mpiswim {args[0]}")


def stored_with_env(folder: Path, env_id: str) -> Path:
    """A valid checkpoint (Swimmer-shaped agents) whose stored config names `env_id`, written as mpiswim writes one."""
    source = load_checkpoint(write_synthetic_checkpoint(folder / "source.h5"))
    text = source.config.toml_text.replace('id = "Swimmer-v5"', f'id = "{env_id}"')
    assert text != source.config.toml_text
    cfg = dataclasses.replace(source.config, env_id=env_id, toml_text=text)
    path = folder / f"stored-{env_id.replace(':', '-').replace('/', '-')}.h5"
    save_checkpoint(path, cfg, source.state, source.records)
    (folder / "source.h5").unlink()
    return path


def one_line_refusal(code: int, output: str, *expected: str) -> None:
    """Exit 2 and one line saying it all (rank 0's start line aside)."""
    output = without_start_line(output)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert len(lines) == 1 and "Traceback" not in output, output
    assert all(text in lines[0] for text in expected), output


# --- env ids are names, not import paths ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["config", "set", "config command"])
def test_a_module_in_the_env_id_of_a_config_is_refused_and_never_imported(tmp_path, how):
    (tmp_path / "evil.py").write_text(EVIL)
    config = tmp_path / "run.toml"
    config.write_text(TINY_CONFIG.format(alpha="1e-4").replace('"Swimmer-v5"', '"evil:Swimmer-v5"'))
    args = {
        "config": train_args(config.name, "out.h5"),
        "set": ("train", "--set", 'env.id="evil:Swimmer-v5"', "--out", "out.h5"),
        "config command": ("config", "--set", 'env.id="evil:Swimmer-v5"'),
    }[how]
    code, output = run_command(list(args), tmp_path, ranks=None if how == "config command" else 2)
    one_line_refusal(code, output, "[env] id", "evil:Swimmer-v5", "never imports", "Fix:")
    assert not (tmp_path / "IMPORTED").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.py", "run.toml"]


# Every command that reads a checkpoint's stored config (STORED: the file).
READERS = {
    "check": ["check", "STORED"],
    "info": ["info", "STORED"],
    "evaluate": ["evaluate", "STORED", "--episodes", "1"],
    "render": ["render", "STORED", "--out", "film.gif"],
    "resume": ["train", "--resume", "STORED", "--out", "new.h5"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", READERS)
def test_a_checkpoint_whose_stored_env_id_names_a_module_imports_nothing(tmp_path, command):
    (tmp_path / "evil.py").write_text(EVIL)
    stored = stored_with_env(tmp_path, "evil:Swimmer-v5").name
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [part.replace("STORED", stored) for part in READERS[command]]
    code, output = run_command(args, tmp_path, ranks=3 if command == "resume" else None)
    one_line_refusal(code, output, stored, "evil:Swimmer-v5")
    assert not (tmp_path / "IMPORTED").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no film, no new.h5, no temporary file


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_id", "expected"),
    [("CartPole-v1", "not one of Gymnasium's registered MuJoCo tasks"), ("Hopper-v5", "its agent is for 2 actions")],
)
@pytest.mark.parametrize("command", READERS)
def test_a_checkpoint_whose_task_does_not_fit_its_agent_is_refused_by_every_command(
    tmp_path, env_id, expected, command
):
    stored = stored_with_env(tmp_path, env_id).name
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [part.replace("STORED", stored) for part in READERS[command]]
    code, output = run_command(args, tmp_path, ranks=3 if command == "resume" else None)
    one_line_refusal(code, output, stored, env_id, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_a_broken_mujoco_gl_is_named_as_the_cause(tmp_path):
    stored = write_synthetic_checkpoint(tmp_path / "run.h5").name
    for args in (["evaluate", stored, "--episodes", "1"], ["render", stored, "--out", "film.gif"]):
        code, output = run_command(args, tmp_path, MUJOCO_GL="garbage")
        one_line_refusal(code, output, "MUJOCO_GL = 'garbage'", "Fix: unset MUJOCO_GL")
    code, output = run_command(
        list(train_args("none.toml", "x.h5"))[:1] + ["--out", "x.h5"], tmp_path, 2, MUJOCO_GL="x"
    )
    assert code == 2 and "MUJOCO_GL = 'x'" in output and "Traceback" not in output, output
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["--out", "[run] out"])
def test_an_out_with_a_newline_is_refused(tmp_path, where):
    config = tmp_path / "run.toml"
    text = TINY_CONFIG.format(alpha="1e-4")
    config.write_text(text.replace('name = "tiny"', 'name = "tiny"\nout = "a\\nb.h5"') if where != "--out" else text)
    args = ["train", "--config", "run.toml"] + (["--out", "a\nb.h5"] if where == "--out" else [])
    code, output = run_command(args, tmp_path, ranks=2)
    one_line_refusal(code, output, "control character", "Fix:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


@pytest.mark.slow
def test_a_pipe_given_as_a_checkpoint_or_hyperparameter_file_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "pipe.h5")
    code, output = run_command(["check", "pipe.h5"], tmp_path)
    one_line_refusal(code, output, "not a regular file")
    config = tmp_path / "run.toml"
    text = TINY_CONFIG.format(alpha="1e-4").replace("alpha = 1e-4\neta = 1e-3", 'hyperparameters = "pipe.h5"')
    config.write_text(text)
    code, output = run_command(["train", "--config", "run.toml", "--out", "x.h5"], tmp_path, ranks=2)
    one_line_refusal(code, output, "[ranks] hyperparameters", "not a regular file")


# --- checkpoints are read as plain data ----------------------------------------------


@pytest.mark.slow
def test_a_checkpoint_that_reads_another_file_is_refused_naming_the_dataset(tmp_path):
    """An /hyperparameters dataset with external raw storage would read any file (a password file) into `info`."""
    path = write_synthetic_checkpoint(tmp_path / "run.h5")
    secret = tmp_path / "secret"
    secret.write_bytes(np.array([1e-5, 1e-4, 1e-4]).tobytes())
    with h5py.File(path, "r+") as f:
        del f["hyperparameters/alpha"]
        f["hyperparameters"].create_dataset("alpha", shape=(3,), dtype="<f8", external=[(str(secret), 0, 24)])
    for args in (["check", path.name], ["info", path.name], ["analyze", path.name, "--out", "plots"]):
        code, output = run_command(args, tmp_path)
        assert code == 2 and "'/hyperparameters/alpha' has external raw storage" in output, output
        assert "Traceback" not in output and "1e-05" not in output


# --- the checkpoint's path is watched ------------------------------------------------


@pytest.fixture
def writer_at(tmp_path, monkeypatch):
    """A writer of a one-iteration checkpoint at tmp_path/runs/run.h5, and the same run with two iterations."""
    monkeypatch.chdir(tmp_path)
    one, two = (load_checkpoint(write_synthetic_checkpoint(tmp_path / f"{k}.h5", rows=k)) for k in (1, 2))
    cfg = parse_config(one.config_toml, one.world_size)
    out = tmp_path / "runs" / "run.h5"
    out.parent.mkdir()
    writer = CheckpointWriter.create(out, cfg, one.state, one.records)
    yield writer, cfg, two
    writer.close()


@pytest.mark.parametrize("fault", ["deleted", "cut"])
def test_a_checkpoint_deleted_or_cut_under_the_run_is_written_again(writer_at, capsys, fault):
    writer, cfg, two = writer_at
    if fault == "deleted":
        writer.path.unlink()
    else:
        os.truncate(writer.path, 0)
    assert write_checkpoint(writer, cfg, two.state, two.records) == 0  # the run goes on
    assert f"was {fault}" in capsys.readouterr().err
    assert check_checkpoint(writer.path).state.iteration == 2
    three = dataclasses.replace(two.state, iteration=3)
    assert write_checkpoint(writer, cfg, three, [*two.records, two.records[-1]]) == 0  # and appends to the new file
    assert check_checkpoint(writer.path).state.iteration == 3


def test_a_checkpoint_deleted_at_the_very_end_is_written_again_before_done(writer_at, capsys):
    writer, cfg, two = writer_at
    assert write_checkpoint(writer, cfg, two.state, two.records) == 0
    writer.path.unlink()
    assert finish_file(writer, cfg, two.state, two.records)
    assert check_checkpoint(writer.path).state.iteration == 2


def test_another_file_moved_over_the_checkpoint_is_kept_and_the_run_rescued(writer_at, tmp_path, capsys):
    writer, cfg, two = writer_at
    other = write_synthetic_checkpoint(tmp_path / "other.h5", rows=4)
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    os.replace(other, writer.path)
    assert write_checkpoint(writer, cfg, two.state, two.records) == STOP_CHECKPOINT_LOST
    message = capsys.readouterr().err
    assert hashlib.sha256(writer.path.read_bytes()).hexdigest() == digest  # not this run's to replace
    (rescue,) = writer.path.parent.glob("run.rescued-*.h5")
    assert f"are in '{rescue}'" in message and "replaced by another file" in message and "--resume" in message
    assert check_checkpoint(rescue).state.iteration == 2


def test_a_checkpoint_whose_folder_is_removed_is_rescued_in_the_current_folder(writer_at, tmp_path, capsys):
    writer, cfg, two = writer_at
    shutil.rmtree(writer.path.parent)
    assert write_checkpoint(writer, cfg, two.state, two.records) == STOP_CHECKPOINT_LOST
    message = capsys.readouterr().err
    (rescue,) = tmp_path.glob("run.rescued-*.h5")
    assert "deleted with its folder" in message and f"'{rescue}'" in message
    assert check_checkpoint(rescue).state.iteration == 2


def start_training(folder: Path, config_text: str, *extra: str):
    (folder / "run.toml").write_text(config_text)
    command = [mpiexec(), "-n", "2", MPISWIM, *train_args("run.toml", "runs/run.h5"), *extra]
    return start_job(command, folder, environment())


def wait_for_iterations(path: Path, job, k: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            if int(read_raw(path).iterations_done) >= k:
                return
        except Exception:  # not created yet
            pass
        assert job.poll() is None and time.monotonic() < deadline, "the run ended before the fault could be made"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_run_whose_checkpoint_is_deleted_writes_it_again_and_ends_with_it_whole(tmp_path):
    """The file is deleted while rank 1 holds the run in iteration 3 (tests/mpi_driver.py's pause, its 10th
    episode), after iteration 2 is on disk: the run cannot have ended first, however slowly this test runs."""
    from test_faults import start, wait_for

    (tmp_path / "run.toml").write_text(TINY_CONFIG.format(alpha="1e-4").replace("iterations = 3", "iterations = 40"))
    hold = {"FAULT": "pause", "FAULT_RANK": "1", "FAULT_EPISODE": "10"}
    job = start(2, "fault", tmp_path, *train_args("run.toml", "runs/run.h5"), env=hold)
    wait_for((tmp_path / "paused.1").exists, job, "rank 1 to hold the run in iteration 3")
    assert read_raw(tmp_path / "runs" / "run.h5").iterations_done == 2
    (tmp_path / "runs" / "run.h5").unlink()
    (tmp_path / "release.1").write_text("")
    code, output = finish_job(job, TIMEOUT, "the training job")
    assert code == 0 and "was deleted" in output and "done: 40 iterations" in output, output
    assert check_checkpoint(tmp_path / "runs" / "run.h5").state.iteration == 40


@pytest.mark.slow
def test_a_run_whose_folder_is_removed_stops_on_every_rank_and_says_where_its_iterations_are(tmp_path):
    config = TINY_CONFIG.format(alpha="1e-4").replace("iterations = 3", "iterations = 100000")
    job = start_training(tmp_path, config)
    wait_for_iterations(tmp_path / "runs" / "run.h5", job, 2)
    shutil.rmtree(tmp_path / "runs")
    code, output = finish_job(job, TIMEOUT, "the training job")
    assert code == EXIT_CHECKPOINT_LOST, output
    assert "done" not in output and "Traceback" not in output and "deleted with its folder" in output, output
    (rescue,) = tmp_path.glob("run.rescued-*.h5")
    assert f"are in '{rescue}'" in output
    kept = check_checkpoint(rescue).state.iteration
    assert kept >= 2 and f"The {kept} completed iterations" in output

    # Nothing was lost: the rescued run continues to exactly the numbers of an uninterrupted one.
    reference, rescued = tmp_path / "reference", tmp_path / "rescued"
    for folder, args in ((reference, ()), (rescued, ("--resume", str(rescue)))):
        folder.mkdir()
        (folder / "run.toml").write_text(config)
        command = [mpiexec(), "-n", "2", MPISWIM, "train", "--out", "run.h5", "--iterations", str(kept + 2)]
        command += list(args) or ["--config", "run.toml"]
        code, output = finish_job(start_job(command, folder, environment()), TIMEOUT, "a run")
        assert code == 0, output
    expected, actual = read_pool(reference / "run.h5"), read_pool(rescued / "run.h5")
    for name, values in expected.items():
        if name != "pool/timings":
            np.testing.assert_array_equal(actual[name], values, err_msg=name)


# --- the target check is no stall ------------------------------------------------------

# Iterations of about 20 ms: the stall deadline after the first iteration is the 1 s minimum, and a target check of
# 3,000 fresh episodes takes seconds. Seed 7's pool finds new bests after iteration 1, so the check runs then.
LONG_CHECK = (
    TINY_CONFIG.format(alpha="1e-4")
    .replace("iterations = 3", "iterations = 4\nstall_timeout = 1\ntarget = 1e9\ntarget_episodes = 3000")
    .replace('evaluation_action = "sample"', 'evaluation_action = "mean"')
)


@pytest.mark.slow
def test_a_long_target_check_is_not_taken_for_a_stall(tmp_path):
    job = start_training(tmp_path, LONG_CHECK)
    code, output = finish_job(job, TIMEOUT, "the training job")
    checks = [line for line in output.splitlines() if "target check" in line]
    assert code == 0 and "stalled" not in output and "done: 4 iterations" in output, output
    assert len(checks) >= 2, output  # at least one check after the first iteration, where the deadline is 1 s


@pytest.mark.slow
def test_a_signal_during_the_target_check_is_acted_on_at_once(tmp_path):
    job = start_training(tmp_path, LONG_CHECK.replace("target_episodes = 3000", "target_episodes = 10000"))
    wait_for_iterations(tmp_path / "runs" / "run.h5", job, 1)  # rank 0 is in the check of iteration 1 (minutes)
    time.sleep(0.5)
    signalled = time.monotonic()
    job.send_signal(signal.SIGTERM)
    code, output = finish_job(job, TIMEOUT, "the training job")
    assert code == 143 and "target check: interrupted by a signal" in output, output
    # The message shows the check was cut short; the bound is only a backstop (the check's 10,000 episodes take
    # minutes), wide enough that a machine shared with other jobs cannot break it by scheduling alone (was 30 s).
    assert time.monotonic() - signalled < 120, output
    assert check_checkpoint(tmp_path / "runs" / "run.h5").state.iteration == 1
