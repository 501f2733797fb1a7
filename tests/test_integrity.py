"""Job integrity on a shared cluster (issue 14): one writer per file, no links followed, --out checked
before training, a write interrupted at any point leaves a complete iteration, and a write costs the
same at iteration 10 and 1000. Real `mpiexec` jobs where it is about MPI (helpers from test_faults)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import os
import signal
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from jobs import train_args
from synthetic import write_synthetic_checkpoint
from test_faults import RANKS, assert_same_run, exit_codes, finish, rank_pids, run, start, wait_for, write_config
from test_mpi import read_pool

from mpiswim.checkpoint import INITIAL_BYTES, CheckpointWriter, check_checkpoint, claim, load_checkpoint, read_raw
from mpiswim.checkpoint import format as ckpt_format
from mpiswim.checkpoint import lock as ckpt_lock
from mpiswim.checkpoint import place as ckpt_place
from mpiswim.checkpoint import writer as ckpt_writer
from mpiswim.config import parse_config
from mpiswim.state import RECORD_FIELDS
from mpiswim.train import InputError, prepare

ROOT = Path(__file__).parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 1. one writer per file ------------------------------------------------------


def test_a_second_job_on_the_same_out_exits_2_naming_the_holder_and_the_first_run_stays_whole(tmp_path, reference):
    out = tmp_path / "run.h5"
    config = write_config(tmp_path)
    pause = {"FAULT": "pause", "FAULT_RANK": "1"}  # the first job holds the file until release.1 exists
    first = start(RANKS, "fault", tmp_path, "train", "--config", str(config), "--out", str(out), env=pause)
    wait_for((tmp_path / "paused.1").exists, first, "the first job to be inside iteration 2")
    holder_pid = rank_pids(tmp_path)[0]
    for n, second_args in enumerate(
        [
            ("--config", str(config), "--out", str(out), "--resume-if-exists"),  # a job array with a fixed output name
            ("--config", str(config), "--out", str(out), "--force"),  # --force never takes a running job's file
            ("--resume", str(out)),
        ]
    ):
        folder = tmp_path / f"second-{n}"
        folder.mkdir()
        started = time.monotonic()
        code, output = run(RANKS, "cli", folder, "train", *second_args)
        print(
            f"second job {second_args[-1]}: exit {code} after {time.monotonic() - started:.1f} s"
        )  # shown by pytest -s
        # It ended while the first job still held the file: it was refused, it did not wait for the lock (a job that
        # waited would wait until the first is released below, and run() fails it after its timeout first).
        assert first.poll() is None and not (tmp_path / "release.1").exists(), output
        assert exit_codes(folder, RANKS) == [2] * RANKS, output
        assert output.count("is being written by a job on host") == 1 and f"PID {holder_pid}, started" in output, output
        assert "winner rank" not in output  # nothing trained
    (tmp_path / "release.1").write_text("")
    code, output = finish(first)
    assert code == 0, output
    assert check_checkpoint(out).state.iteration == 4
    assert_same_run(out, read_pool(reference))  # the first job's run, whole, untouched by the three others


# --- 2. no predictable names, no links followed -------------------------------------------


@pytest.mark.slow
def test_a_link_planted_at_the_old_temporary_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in (".run.h5.tmp", ".run.h5.probe"):
        (tmp_path / name).symlink_to(victim)
    config = write_config(tmp_path)
    for args in (
        ("--out", "run.h5"),
        ("--out", "run.h5", "--force"),
        ("--out", "run.h5", "--resume-if-exists", "--iterations", "6"),
    ):
        code, output = run(RANKS, "cli", tmp_path, "train", "--config", str(config), *args)
        assert code == 0, output
    assert victim.read_text() == "precious" and (tmp_path / ".run.h5.tmp").resolve() == victim
    assert check_checkpoint(tmp_path / "run.h5").state.iteration == 6


def test_temporary_names_are_unpredictable_and_created_exclusively(tmp_path, monkeypatch):
    names = []
    real_mkstemp = ckpt_place.tempfile.mkstemp

    def recording(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        names.append(Path(name).name)
        return fd, name

    monkeypatch.setattr(ckpt_place.tempfile, "mkstemp", recording)
    for _ in range(2):
        write_synthetic_checkpoint(tmp_path / "run.h5")
    assert len(set(names)) == 2 and all(name.startswith(".run.h5.") and name != ".run.h5.tmp" for name in names), names


def test_a_huge_iteration_count_preallocates_a_bounded_file(tmp_path):
    config = write_config(tmp_path)
    for iterations in (10_000_000, 1_000_000_000):
        out = tmp_path / f"huge-{iterations}.h5"
        args = Namespace(
            config=str(config), out=str(out), resume=None, iterations=iterations, force=False, resume_if_exists=False
        )
        setup, records, writer = prepare(args, RANKS)
        writer.close()
        print(f"--iterations {iterations}: a file of {out.stat().st_size / 1e6:.1f} MB")  # shown by pytest -s
        assert out.stat().st_size < INITIAL_BYTES + 2_000_000, (
            out.stat().st_size
        )  # rows for a part of the run, not all of it
        assert read_raw(out).attrs["iterations_planned"] == iterations


# --- 3. --out checked before any training -------------------------------------------


def bad_outs(tmp_path: Path) -> dict[str, tuple[Path, str, bool]]:
    """kind -> (--out, words of the message, --force)."""
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "notes.txt").write_text("my notes")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "link.h5").symlink_to(tmp_path / "notes.txt")
    return {
        "an existing directory": (tmp_path / "a-folder", "is a directory", True),
        "the config file itself": (tmp_path / "tiny.toml", "is the config file itself", True),
        "a file that is not a checkpoint": (tmp_path / "notes.txt", "is not an mpiswim checkpoint", True),
        "a parent that is a file": (tmp_path / "a-file" / "run.h5", "is a file, not a directory", False),
        "a symbolic link": (tmp_path / "link.h5", "is a symbolic link", True),
    }


def test_a_bad_out_is_refused_before_training_naming_it(tmp_path):
    config = write_config(tmp_path)
    for kind, (out, words, force) in bad_outs(tmp_path).items():
        before = {p: sha256(p) for p in tmp_path.iterdir() if p.is_file() and not p.is_symlink()}
        args = Namespace(
            config=str(config), out=str(out), resume=None, iterations=None, force=force, resume_if_exists=False
        )
        with pytest.raises(InputError, match=words) as refused:
            prepare(args, RANKS)
        assert str(out) in str(refused.value) and "Fix:" in str(refused.value), kind
        assert {p: sha256(p) for p in tmp_path.iterdir() if p.is_file() and not p.is_symlink()} == before, kind


@pytest.mark.slow
def test_an_existing_directory_as_out_exits_2_on_every_rank_before_training(tmp_path):
    (tmp_path / "a-folder").mkdir()
    code, output = run(
        RANKS, "cli", tmp_path, "train", "--config", str(write_config(tmp_path)), "--out", "a-folder", "--force"
    )
    assert exit_codes(tmp_path, RANKS) == [2] * RANKS, output
    assert output.count("is a directory") == 1 and "iteration" not in output and "free space" not in output


def test_resume_into_another_file_continues_there_and_leaves_the_source_untouched(tmp_path, reference):
    source = tmp_path / "source.h5"
    source.write_bytes(reference.read_bytes())
    before = sha256(source)
    code, output = run(
        RANKS, "cli", tmp_path, "train", "--resume", str(source), "--out", "branch.h5", "--iterations", "6"
    )
    assert code == 0, output
    assert sha256(source) == before
    branch = check_checkpoint(tmp_path / "branch.h5")
    assert branch.state.iteration == 6 and branch.iterations_planned == 6
    np.testing.assert_array_equal(
        read_pool(tmp_path / "branch.h5")["pool/scores"][:4], read_pool(reference)["pool/scores"]
    )
    code, output = run(
        RANKS, "cli", tmp_path, "train", "--resume", str(source), "--out", "branch.h5", "--iterations", "8"
    )
    assert exit_codes(tmp_path, RANKS) == [2] * RANKS and "already exists" in output, (
        output
    )  # the branch is not replaced without --force


def test_a_resume_continues_a_file_with_room_in_place_and_rebuilds_any_other(tmp_path):
    """CheckpointWriter.continue_run: a file compacted at its end, or of format_version 1, is rebuilt with rows for
    the planned iterations under a new name (a new inode); a file of this format_version with rows enough is continued
    in place. Either way the next iteration is appended and the file checks."""
    compacted = write_synthetic_checkpoint(tmp_path / "run.h5", planned=10)  # rows for its 6 iterations only
    old_format = tmp_path / "old.h5"
    old_format.write_bytes((ROOT / "results" / "lin-t1000-alpha1x-12340.h5").read_bytes())  # 7 of 60, format 1
    for path, rebuilt in ((compacted, True), (compacted, False), (old_format, True)):  # the second: 7 of 10 rows
        checkpoint = check_checkpoint(path)
        cfg = dataclasses.replace(checkpoint.config, iterations=checkpoint.iterations_planned)
        inode, done = path.stat().st_ino, checkpoint.state.iteration
        writer = CheckpointWriter.continue_run(path, claim(path), cfg, checkpoint)
        try:
            assert (path.stat().st_ino != inode) == rebuilt and writer.capacity == cfg.iterations, (path, rebuilt)
            last = checkpoint.records[-1]
            record = dataclasses.replace(last, timings=last.timings.copy())
            writer.append(dataclasses.replace(checkpoint.state, iteration=done + 1), [*checkpoint.records, record])
        finally:
            writer.close()
        assert check_checkpoint(path).state.iteration == done + 1
        assert read_raw(path).attrs["format_version"] == ckpt_format.FORMAT_VERSION


FORMAT_2 = ROOT / "results" / "pool_size" / "checkpoints" / "fast-swimmer-P1-0.h5"  # 1 rank, 17 of 17 iterations


FORMAT_3 = ROOT / "results" / "halfcheetah-1.h5"  # 2 ranks, 12 iterations (issue 28's first round)


@pytest.mark.parametrize("old", [FORMAT_2, FORMAT_3], ids=["format-2", "format-3"])
def test_an_older_file_reads_what_it_lacks_as_not_recorded_and_a_resume_rebuilds_it_in_the_new_format(tmp_path, old):
    """A file written before /pool/steps (format 2) or /pool/fresh_score (format 3): what it lacks reads as not
    recorded (steps -1, fresh scores NaN); resumed further, it is rebuilt once in the new format, its old rows (hashed
    as they were written) keep their numbers, the new row has its steps; resumed with nothing left to do, it is left in
    its own format."""
    path = tmp_path / "old.h5"
    path.write_bytes(old.read_bytes())
    checkpoint = check_checkpoint(path)
    done, version, ranks = checkpoint.state.iteration, checkpoint.attrs["format_version"], checkpoint.world_size
    assert version == (2 if old == FORMAT_2 else 3)
    assert all((r.steps == -1).all() == (version == 2) and np.isnan(r.fresh_score) for r in checkpoint.records)
    for iterations, rebuilt in ((done, False), (done + 1, True)):
        cfg = dataclasses.replace(checkpoint.config, iterations=iterations)
        inode = path.stat().st_ino
        writer = CheckpointWriter.continue_run(path, claim(path), cfg, checkpoint)
        try:
            assert (path.stat().st_ino != inode) == rebuilt
            if rebuilt:
                last = checkpoint.records[-1]
                record = dataclasses.replace(last, timings=last.timings.copy(), steps=np.full(ranks, 321))
                writer.append(dataclasses.replace(checkpoint.state, iteration=done + 1), [*checkpoint.records, record])
        finally:
            writer.close()
        assert read_raw(path).attrs["format_version"] == (ckpt_format.FORMAT_VERSION if rebuilt else version)
    resumed = check_checkpoint(path)
    assert resumed.state.iteration == done + 1
    assert [r.steps.tolist() for r in resumed.records] == [r.steps.tolist() for r in checkpoint.records] + [
        [321] * ranks
    ]
    assert all(np.isnan(r.fresh_score) for r in resumed.records)
    for before, after in zip(checkpoint.records, resumed.records, strict=False):
        np.testing.assert_array_equal(before.scores, after.scores)


# --- 7. a write interrupted anywhere; the cost of a write ------------------------------


@pytest.fixture
def five_then_six(tmp_path):
    """A writer holding the synthetic run's first five iterations, and the sixth to append."""
    five, six = (load_checkpoint(write_synthetic_checkpoint(tmp_path / f"{rows}.h5", rows=rows)) for rows in (5, 6))
    cfg = parse_config(five.config_toml, five.world_size)
    writer = CheckpointWriter.create(tmp_path / "run.h5", cfg, five.state, five.records, capacity=10)
    yield writer, five, six
    writer.close()


def crash_images(data_writes: list, every: bool):
    """Subsets of the data writes a crash may leave on disk: every subset (2^n: over a minute, the slow tier), or
    each prefix in write order, each write alone and all but each one (3n + 1: a second)."""
    if every:
        for size in range(len(data_writes) + 1):
            yield from itertools.combinations(data_writes, size)
        return
    n = len(data_writes)
    yield from (data_writes[:k] for k in range(n + 1))
    yield from ([w] for w in data_writes)
    yield from (data_writes[:k] + data_writes[k + 1 :] for k in range(n))


@pytest.mark.parametrize("every", [pytest.param(True, marks=pytest.mark.slow), False], ids=["every subset", "sampled"])
def test_a_crash_at_any_point_of_a_write_leaves_a_complete_iteration(five_then_six, monkeypatch, every):
    """Record the pwrites of appending iteration 6; replay subsets of those before the first fsync
    (the disk may keep any of them: every subset in the slow tier, 3n + 1 of them in the fast one), then
    the commit record torn or whole: the file always reads as iteration 5 or 6, passes every check, and
    holds 6 only once the commit record is complete."""
    writer, five, six = five_then_six
    path = writer.path
    before = path.read_bytes()
    writes, syncs = [], []
    real_write_all = ckpt_writer._write_all

    def recording(fd, data, offset):
        writes.append((offset, bytes(data)))
        real_write_all(fd, data, offset)

    monkeypatch.setattr(ckpt_writer, "_write_all", recording)
    monkeypatch.setattr(ckpt_writer.os, "fsync", lambda fd: syncs.append(len(writes)))
    writer.append(six.state, six.records)
    monkeypatch.undo()
    first_sync, commit_sync = syncs[0], syncs[1]
    data_writes, commit = writes[:first_sync], writes[first_sync:commit_sync]
    assert len(commit) == 1 and len(data_writes) == len(RECORD_FIELDS) + len(ckpt_format._state_agents(six.state))

    def replay(selected) -> int:
        image = bytearray(before)
        for offset, data in selected:
            image[offset : offset + len(data)] = data
        path.write_bytes(bytes(image))
        return check_checkpoint(path).state.iteration

    for subset in crash_images(data_writes, every):
        assert replay(subset) == 5
    offset, data = commit[0]
    for cut in (1, 8, len(data) // 2, len(data) - 1):
        assert replay([*data_writes, (offset, data[:cut])]) == 5
    assert replay([*data_writes, *commit]) == 6
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded.state.agent.policy, six.state.agent.policy)
    assert [r.winner for r in loaded.records] == [r.winner for r in six.records]


def test_the_bytes_written_per_iteration_do_not_grow_with_the_run(tmp_path, monkeypatch):
    """Append 1000 iterations: the bytes written for iteration 10 and for iteration 1000 are the same."""
    six = load_checkpoint(write_synthetic_checkpoint(tmp_path / "six.h5", planned=1000))
    cfg = parse_config(six.config_toml, six.world_size)
    record = six.records[-1]
    monkeypatch.setattr(ckpt_writer.os, "fsync", lambda fd: None)  # counting bytes, not timing the disk
    state = six.state
    writer = CheckpointWriter.create(tmp_path / "run.h5", cfg, state, six.records)
    records, written = list(six.records), {}
    real_write_all = ckpt_writer._write_all

    def counting(fd, data, offset):
        written[state.iteration] = written.get(state.iteration, 0) + len(data)
        real_write_all(fd, data, offset)

    monkeypatch.setattr(ckpt_writer, "_write_all", counting)
    for k in range(7, 1001):
        state = dataclasses.replace(state, iteration=k)
        records.append(dataclasses.replace(record, timings=record.timings.copy()))
        writer.append(state, records)
    writer.close()
    assert written[10] == written[1000] < 200_000, written
    assert read_raw(tmp_path / "run.h5").iterations_done == 1000


# --- 8. run length told up front; the first Ctrl-C -----------------------------------


@pytest.mark.slow
def test_planned_work_a_week_warning_and_the_first_ctrl_c_are_told(tmp_path):
    out = tmp_path / "run.h5"
    job = start(
        RANKS,
        "cli",
        tmp_path,
        *train_args(write_config(tmp_path), out),
        "--iterations",
        "1000000000",
    )
    wait_for(lambda: out.exists() and read_raw(out).iterations_done >= 3, job, "three iterations")
    job.send_signal(signal.SIGINT)
    code, output = finish(job)
    assert code == 130, output
    assert "planned: 1000000000 iterations (1..1000000000) x 2 ranks x (2 + 2) episodes of at most 40 steps" in output
    assert output.count("mpiswim: warning: at ") == 1 and "days more" in output
    assert output.count("Ctrl-C: finishing the iteration in progress and writing it, then stopping") == 1
    assert check_checkpoint(out).state.iteration >= 3


def test_a_file_system_without_locks_gets_a_warning_not_a_refusal(tmp_path, monkeypatch, capsys):
    """Lustre without -o flock answers fcntl locks with ENOSYS: mpiswim warns once and runs unlocked."""

    def no_locks(*args):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(ckpt_lock.fcntl, "fcntl", no_locks)
    ckpt_lock._warn_no_locks.cache_clear()
    write_synthetic_checkpoint(tmp_path / "run.h5")
    write_synthetic_checkpoint(tmp_path / "run.h5")  # replaced: claim() took the (unsupported) lock without complaint
    assert capsys.readouterr().err.count("does not support file locks") == 1
    assert check_checkpoint(tmp_path / "run.h5").state.iteration == 6
