"""The fault matrix of issue 4 (docs/faults.md): real MPI jobs hit by real faults.

Each test starts `mpiexec` on a tiny config (2 ranks, T = 40, 2 + 2 episodes),
injects one fault and checks the guarantees: the whole job ends within
FAULT_BOUND seconds with a non-zero exit and one clear message, the
checkpoint holds the last completed iteration and passes `check_checkpoint`,
and resuming gives exactly the numbers of an uninterrupted run (`reference`).
Faults inside a rank come from tests/mpi_driver.py's `fault` mode; the
checkpoint write is paused with MPISWIM_TEST_PAUSE_IN_CHECKPOINT.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_mpi import DRIVER, TINY_CONFIG, exit_codes, mpiexec, read_pool

from mpiswim.checkpoint import CHECKSUM, TEST_PAUSE_VARIABLE, CheckpointError, check_checkpoint, estimated_size, load_checkpoint
from mpiswim.config import parse_config
from mpiswim.policy import pack_agent
from mpiswim.train import InputError, check_output, prepare

RANKS = 2
ITERATIONS = 4
FAULT_BOUND = 30  # seconds from the fault to the end of every rank (issue 4, guarantee 1)
TIMEOUT = 240  # a generous limit for a whole job on a loaded machine; reaching it fails the test


# --- launching and watching jobs ----------------------------------------------


def write_config(folder: Path, alpha: str = "1e-4", iterations: int = ITERATIONS, name: str = "tiny.toml", **changes: str) -> Path:
    """The tiny config of tests/test_mpi.py; `changes` replace whole lines, e.g. T="T = 50"."""
    text = TINY_CONFIG.format(alpha=alpha).replace("iterations = 3", f"iterations = {iterations}")
    for key, line in changes.items():
        text = "\n".join(line if row.startswith(f"{key} =") else row for row in text.splitlines()) + "\n"
        if line not in text:
            text = text.replace("[pool]\n", f"[pool]\n{line}\n")
    path = folder / name
    path.write_text(text)
    return path


def start(ranks: int, mode: str, folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the test driver under mpiexec in its own session (so a hung job can be killed whole)."""
    command = [mpiexec(), "-n", str(ranks), sys.executable, str(DRIVER), mode, str(folder), *args]
    environment = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **(env or {}))
    return subprocess.Popen(command, cwd=folder, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(job: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Wait for the job; return (exit code, stdout + stderr). Kill it and fail if it outlives the timeout."""
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        pytest.fail(f"MPI job did not finish within {timeout} s (a rank hung?):\n{out}\n{err}")
    return job.returncode, out + err


def run(ranks: int, mode: str, folder: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    return finish(start(ranks, mode, folder, *args, env=env))


def wait_for(condition: Callable[[], bool], job: subprocess.Popen, what: str) -> None:
    """Poll until `condition` holds; fail if the job ends or TIMEOUT passes first."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if job.poll() is not None or time.monotonic() > deadline:
            code, output = finish(job, timeout=5)
            pytest.fail(f"gave up waiting for {what} (job exit code {code}):\n{output}")
        time.sleep(0.02)


def rank_pids(folder: Path) -> list[int]:
    return [int(path.read_text()) for path in sorted(folder.glob("pid.*"))]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def assert_job_ended(folder: Path, since: float, output: str) -> None:
    """Guarantee 1: the launcher and every rank are gone within FAULT_BOUND seconds of the fault."""
    pids = rank_pids(folder)
    assert len(pids) == RANKS
    while any(alive(pid) for pid in pids) and time.monotonic() - since < FAULT_BOUND:
        time.sleep(0.1)  # the launcher may return while the ranks it killed are still exiting
    elapsed = time.monotonic() - since
    print(f"every rank ended {elapsed:.1f} s after the fault")  # shown by pytest -s
    assert elapsed < FAULT_BOUND, f"the job took {elapsed:.1f} s to end after the fault:\n{output}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_run(path: Path, reference: dict[str, np.ndarray]) -> None:
    """Guarantee 3: the resumed run's numbers equal the uninterrupted run's, bit for bit."""
    actual = read_pool(path)
    for name, values in reference.items():
        if name != "pool/timings":
            np.testing.assert_array_equal(actual[name], values, err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny config: ITERATIONS iterations on RANKS ranks."""
    folder = tmp_path_factory.mktemp("reference")
    code, output = run(RANKS, "cli", folder, "train", "--config", str(write_config(folder)), "--out", "run.h5")
    assert code == 0, output
    return folder / "run.h5"


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 2 MB tmpfs (needs root, as on the development machines; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> None:
    """Write zeros until the file system is full."""
    with open(disk / "filler", "ab", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(4096))
        except OSError as error:
            assert error.errno == errno.ENOSPC, error


# --- the fault matrix ------------------------------------------------------------


def test_kill_9_of_a_rank_mid_iteration_ends_the_job_and_keeps_the_checkpoint(tmp_path):
    config = write_config(tmp_path)
    job = start(RANKS, "fault", tmp_path, "train", "--config", str(config), "--out", "run.h5", env={"FAULT": "pause", "FAULT_RANK": "1"})
    paused = tmp_path / "paused.1"
    wait_for(paused.exists, job, "rank 1 to reach the middle of iteration 2")
    killed = time.monotonic()
    os.kill(int(paused.read_text()), signal.SIGKILL)
    code, output = finish(job)
    assert_job_ended(tmp_path, killed, output)
    assert code != 0
    assert check_checkpoint(tmp_path / "run.h5").state.iteration == 1  # iteration 2 was in progress
    # (resuming such a checkpoint: the tests of rank 0's kill, SIGTERM and a full disk)


def test_kill_9_of_rank_0_while_it_writes_the_checkpoint_keeps_the_previous_one(tmp_path, reference):
    config = write_config(tmp_path)
    out, temporary = tmp_path / "run.h5", tmp_path / ".run.h5.tmp"
    job = start(RANKS, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5", env={TEST_PAUSE_VARIABLE: "2"})
    # Every write pauses half-way; a temporary file beside a finished checkpoint is the second write.
    wait_for(lambda: out.exists() and temporary.exists(), job, "rank 0 to be inside its second checkpoint write")
    killed = time.monotonic()
    os.kill(rank_pids(tmp_path)[0], signal.SIGKILL)
    code, output = finish(job)
    assert_job_ended(tmp_path, killed, output)
    assert code != 0
    assert temporary.exists()  # the half-written file the kill left behind; the checkpoint itself is intact:
    assert check_checkpoint(out).state.iteration == 1

    code, output = run(RANKS, "cli", tmp_path, "train", "--resume", "run.h5")
    assert code == 0, output
    assert not temporary.exists()
    assert_same_run(out, read_pool(reference))


@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_to_the_launcher_finishes_the_iteration_then_stops_with_its_exit_code(tmp_path, reference, signum, expected):
    config = write_config(tmp_path)
    # As a SLURM job runs it: --resume-if-exists starts fresh here (no file yet) and resumes below.
    train = ("train", "--config", str(config), "--out", "run.h5", "--resume-if-exists")
    job = start(RANKS, "fault", tmp_path, *train, env={"FAULT": "pause", "FAULT_RANK": "1", "FAULT_SECONDS": "3"})
    wait_for((tmp_path / "paused.1").exists, job, "rank 1 to reach the middle of iteration 2")
    signalled = time.monotonic()
    job.send_signal(signum)  # to mpiexec only; hydra passes it on to every rank
    code, output = finish(job)
    assert_job_ended(tmp_path, signalled, output)
    assert code == expected, output
    assert exit_codes(tmp_path, RANKS) == [expected] * RANKS
    assert output.count("mpiswim: stopped by") == 1 and "Traceback" not in output
    assert f"stopped by {signal.Signals(signum).name} after iteration 2 of {ITERATIONS}" in output
    assert check_checkpoint(tmp_path / "run.h5").state.iteration == 2  # the iteration in progress was finished
    assert not (tmp_path / ".run.h5.tmp").exists()

    if signum == signal.SIGTERM:  # resume as a requeued SLURM job does (the same command again)
        code, output = run(RANKS, "cli", tmp_path, *train)
        assert code == 0, output
        assert_same_run(tmp_path / "run.h5", read_pool(reference))


def test_exception_in_one_ranks_episode_loop_ends_every_rank_with_one_message(tmp_path):
    config = write_config(tmp_path)
    job = start(RANKS, "fault", tmp_path, "train", "--config", str(config), "--out", "run.h5", env={"FAULT": "raise", "FAULT_RANK": "1"})
    raised = tmp_path / "raised.1"
    wait_for(raised.exists, job, "rank 1 to raise in iteration 2")
    failed = time.monotonic()
    code, output = finish(job)
    assert_job_ended(tmp_path, failed, output)
    assert code != 0
    assert output.count("mpiswim: rank 1 failed: RuntimeError: injected failure inside rank 1's episode loop; aborting every rank") == 1
    assert check_checkpoint(tmp_path / "run.h5").state.iteration == 1  # it failed in iteration 2


def test_branch_with_non_finite_parameters_never_wins_and_the_run_goes_on(tmp_path):
    config = write_config(tmp_path, alpha="[1e-4, 1e300]")  # rank 1's step overflows its parameters
    code, output = run(RANKS, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5")
    assert code == 0, output
    data = read_pool(tmp_path / "run.h5")
    assert data["pool/degenerate"][:, 1].all() and not data["pool/degenerate"][:, 0].any()
    assert (data["pool/scores"][:, 1] == -np.inf).all() and np.isfinite(data["pool/scores"][:, 0]).all()
    assert (data["pool/winner"] == 0).all()
    assert check_checkpoint(tmp_path / "run.h5").state.iteration == ITERATIONS


def test_every_branch_degenerate_stops_with_exit_3_and_an_intact_checkpoint(tmp_path):
    config = write_config(tmp_path, alpha="1e300", max_degenerate_iterations="max_degenerate_iterations = 2")
    code, output = run(RANKS, "cli", tmp_path, "train", "--config", str(config), "--out", "run.h5")
    assert exit_codes(tmp_path, RANKS) == [3] * RANKS, output
    assert output.count("smaller step sizes") == 1
    checkpoint = check_checkpoint(tmp_path / "run.h5")
    assert checkpoint.state.iteration == 2 and [r.winner for r in checkpoint.records] == [-1, -1]


def test_unwritable_or_full_output_is_refused_before_training(tmp_path, small_disk):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError, match="Not a directory"):
        check_output(blocker / "run.h5", force=False, size=1000)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(InputError, match="Read-only file system"):
        check_output(small_disk / "run.h5", force=False, size=1000)
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)

    fill(small_disk)
    config = write_config(tmp_path)
    code, output = run(RANKS, "cli", tmp_path, "train", "--config", str(config), "--out", str(small_disk / "run.h5"))
    assert exit_codes(tmp_path, RANKS) == [2] * RANKS, output
    assert output.count("cannot write the output file") == 1 and "No space left on device" in output
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no checkpoint, no probe left behind


def test_full_disk_during_the_run_keeps_the_previous_checkpoint(tmp_path, small_disk, reference):
    config = write_config(tmp_path)
    out, temporary = small_disk / "run.h5", small_disk / ".run.h5.tmp"
    job = start(RANKS, "cli", tmp_path, "train", "--config", str(config), "--out", str(out), env={TEST_PAUSE_VARIABLE: "2"})
    wait_for(lambda: out.exists() and temporary.exists(), job, "rank 0 to be inside its second checkpoint write")
    fill(small_disk)  # the rest of the write finds the disk full
    filled = time.monotonic()
    code, output = finish(job)
    assert_job_ended(tmp_path, filled, output)
    assert code == 4 and exit_codes(tmp_path, RANKS) == [4] * RANKS, output
    assert output.count("cannot write the checkpoint") == 1 and "No space left on device" in output and "Traceback" not in output
    assert check_checkpoint(out).state.iteration == 1
    assert not temporary.exists()  # the failed write cleaned up after itself

    (small_disk / "filler").unlink()
    code, output = run(RANKS, "cli", tmp_path, "train", "--resume", str(out))
    assert code == 0, output
    assert_same_run(out, read_pool(reference))


def test_resume_from_a_truncated_or_corrupted_checkpoint_is_refused_and_the_file_untouched(tmp_path, reference):
    good = reference.read_bytes()
    corrupted = tmp_path / "corrupted.h5"  # a silent change in the middle of the current agent's policy
    with h5py.File(reference, "r") as f:
        offset = f["agent/current/policy"].id.get_offset() + f["agent/current/policy"].id.get_storage_size() // 2
    corrupted.write_bytes(good[:offset] + b"\xa5" * 64 + good[offset + 64 :])
    before = sha256(corrupted)
    code, output = run(RANKS, "cli", tmp_path, "train", "--config", str(write_config(tmp_path)), "--out", corrupted.name, "--resume-if-exists")
    assert exit_codes(tmp_path, RANKS) == [2] * RANKS, output
    assert output.count("mpiswim:") == 1 and "Traceback" not in output
    assert "corrupted.h5" in output and "checksum" in output and "Fix:" in output  # only the checksum shows this change
    assert sha256(corrupted) == before

    truncated = tmp_path / "truncated.h5"  # the same refusal, on rank 0 alone (prepare), for a truncated file
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"cannot open '.*truncated\.h5' as HDF5"):
        prepare(Namespace(resume=str(truncated), iterations=None), RANKS)
    assert truncated.read_bytes() == good[: len(good) // 2]


def test_any_damaged_byte_range_is_refused_or_harmless(tmp_path, reference):
    """Overwrite 16 bytes at 60 places across the file: load_checkpoint refuses it or reads the very same run."""
    good, original = reference.read_bytes(), load_checkpoint(reference)
    damaged = tmp_path / "damaged.h5"
    for offset in np.linspace(0, len(good) - 16, 60).astype(int):
        damaged.write_bytes(good[:offset] + b"\xa5" * 16 + good[offset + 16 :])
        try:
            loaded = load_checkpoint(damaged)
        except CheckpointError:
            continue
        assert np.array_equal(pack_agent(loaded.state.agent), pack_agent(original.state.agent)), offset
        assert loaded.config_toml == original.config_toml and [r.winner for r in loaded.records] == [r.winner for r in original.records], offset


def test_resume_with_another_config_is_refused_saying_what_differs(tmp_path, reference):
    shutil.copy(reference, tmp_path / "run.h5")
    before = sha256(tmp_path / "run.h5")
    changed = write_config(tmp_path, alpha="[1e-4, 1e-3]", name="changed.toml", T="T = 50")
    code, output = run(RANKS, "cli", tmp_path, "train", "--config", str(changed), "--out", "run.h5", "--resume-if-exists")
    assert exit_codes(tmp_path, RANKS) == [2] * RANKS, output
    assert output.count("mpiswim:") == 1 and "Traceback" not in output
    assert "[env] T is 40 in the checkpoint but 50 in the config" in output and "[ranks] alpha" in output
    assert sha256(tmp_path / "run.h5") == before
    # (a different number of ranks: tests/test_mpi.py::test_existing_output_is_not_overwritten_and_resume_needs_same_ranks)


def test_only_the_iteration_count_may_change_on_resume(tmp_path, reference):
    shutil.copy(reference, tmp_path / "run.h5")
    longer = write_config(tmp_path, iterations=ITERATIONS + 3, name="longer.toml")
    args = Namespace(config=str(longer), out=str(tmp_path / "run.h5"), resume=None, resume_if_exists=True, iterations=None, force=False)
    setup, records = prepare(args, RANKS)
    assert setup.cfg.iterations == ITERATIONS + 3 and setup.state.iteration == len(records) == ITERATIONS
    reseeded = write_config(tmp_path, iterations=ITERATIONS + 3, name="reseeded.toml", seed="seed = 8")
    with pytest.raises(InputError, match=r"\[run\] seed is 7 in the checkpoint but 8 in the config"):
        prepare(Namespace(**{**vars(args), "config": str(reseeded)}), RANKS)


# --- mpiswim check and the checkpoint format ---------------------------------------


def test_check_command_prints_one_ok_line_or_names_the_problem(tmp_path, reference):
    command = [sys.executable, "-m", "mpiswim.cli", "check"]
    result = subprocess.run([*command, str(reference)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ") and result.stdout.count("\n") == 1
    assert f"{RANKS} ranks, {ITERATIONS} of {ITERATIONS} iterations" in result.stdout and "checksum verified" in result.stdout

    broken = tmp_path / "broken.h5"  # a consistent-looking file (no checksum, as older ones) with a wrong winner
    shutil.copy(reference, broken)
    with h5py.File(broken, "a") as f:
        del f.attrs[CHECKSUM]
        f["pool/winner"][1] = (f["pool/winner"][1] + 1) % RANKS
    result = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert "/pool/winner[1]" in result.stderr and "Fix:" in result.stderr and result.stderr.count("\n") == 1


def test_checkpoints_without_a_checksum_still_load(tmp_path, reference):
    """Files written before the checksum existed (format_version 1 all the same) load and check as before."""
    old = tmp_path / "old.h5"
    shutil.copy(reference, old)
    with h5py.File(old, "a") as f:
        del f.attrs[CHECKSUM]
    assert check_checkpoint(old).state.iteration == ITERATIONS
    assert CHECKSUM not in load_checkpoint(old).attrs


def test_the_disk_space_estimate_covers_the_real_checkpoint(reference):
    checkpoint = load_checkpoint(reference)
    cfg = parse_config(checkpoint.config_toml, RANKS, check_env=False)
    policy = checkpoint.state.agent.policy
    assert estimated_size(cfg, policy.shape[-1] - 1, policy.shape[2]) >= reference.stat().st_size
