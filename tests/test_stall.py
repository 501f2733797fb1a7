"""A stalled rank ends the job (issue 14, item 6): real MPI jobs with one rank stopped by SIGSTOP.

A rank stopped with `kill -STOP` (as a hung node or a stuck file system
would stop it) never reaches the next collective. mpiswim.stall.StallWatch
must then end the whole job within the stall timeout with exit code 5 and one
message naming the silent rank and the last completed iteration; the
checkpoint must pass `mpiswim check` and resume to exactly the numbers of an
uninterrupted run. The jobs use the tiny config of tests/test_mpi.py and
`--stall-timeout 5`; set-up and the first iteration always get 600 s, so every
stop happens after iteration 3. The checkpoint is read through
mpiswim.checkpoint only (its layout is not this file's business).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from jobs import environment, start_job, train_args
from test_faults import finish, start, wait_for
from test_mpi import TINY_CONFIG, mpiexec

from mpiswim.checkpoint import check_checkpoint, load_checkpoint
from mpiswim.config import DEFAULT_CONFIG, parse_config
from mpiswim.policy import pack_agent
from mpiswim.stall import START_UP_TIMEOUT, STOP, StallWatch, checkpoint_note, stall_message
from mpiswim.train import EXIT_STALLED, config_differences

STALL_TIMEOUT = 5.0  # seconds, the --stall-timeout of these jobs
# Seconds from the stop to the end of every rank, beyond the reported timeout: judging, the 0.5 s before MPI_Abort,
# and the exit of every rank, which take 0.5-0.7 s on an idle machine but wait for a share of a core on a loaded one.
# 15 s was broken by scheduling alone on a 2-core machine shared with other test runs. What the bound tells apart
# is a watch that acts at its timeout (5 s here) from one that waits for the 600 s start-up timeout or never acts;
# 60 s still does.
MARGIN = 60.0
ITERATIONS = 5
STOP_EPISODE = 14  # 2 + 2 episodes per iteration: episode 14 is the second training episode of iteration 4
TIMEOUT = 240  # a limit for a whole job; reaching it fails the test


# --- launching, stopping and watching jobs -----------------------------------------


def write_config(folder: Path, alpha: str = "1e-4", iterations: int = ITERATIONS) -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY_CONFIG.format(alpha=alpha).replace("iterations = 3", f"iterations = {iterations}"))
    return path


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture
def stopped():
    """Processes a test stops; whatever is still there at the end is continued and killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def stop(pid: int, stopped: list[int]) -> float:
    stopped.append(pid)
    os.kill(pid, signal.SIGSTOP)
    return time.monotonic()


def assert_every_rank_gone(pids: list[int], since: float, bound: float) -> float:
    """Every rank (the stopped one too) has ended within `bound` seconds of `since`; return when that was seen."""
    while any(alive(pid) for pid in pids) and time.monotonic() - since < bound:
        time.sleep(0.05)
    elapsed = time.monotonic() - since
    assert not any(alive(pid) for pid in pids), (
        f"ranks {[p for p in pids if alive(p)]} still running {elapsed:.1f} s after the stop"
    )
    return elapsed


def stall_line(output: str) -> tuple[str, float]:
    """The one stall message and the timeout it reports."""
    lines = [line for line in output.splitlines() if line.startswith("mpiswim: stalled:")]
    assert len(lines) == 1, output
    reported = re.search(r"The stall timeout, ([0-9.]+) s here", lines[0])
    assert reported, lines[0]
    return lines[0], float(reported.group(1))


def mpiswim_check(path: Path) -> str:
    """`mpiswim check PATH` must pass; its one line."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mpiswim")), "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK:"), result.stdout
    return result.stdout


def assert_same_run(path: Path, reference: Path) -> None:
    """The numbers of `path` equal the uninterrupted run's, bit for bit (timings aside)."""
    run, ref = load_checkpoint(path), load_checkpoint(reference)
    assert run.state.iteration == ref.state.iteration == len(run.records) == len(ref.records)
    for k, (mine, theirs) in enumerate(zip(run.records, ref.records, strict=True)):
        np.testing.assert_array_equal(mine.scores, theirs.scores, err_msg=f"scores of iteration {k + 1}")
        assert mine.winner == theirs.winner, f"winner of iteration {k + 1}"
        np.testing.assert_array_equal(
            mine.train_returns, theirs.train_returns, err_msg=f"training returns of iteration {k + 1}"
        )
        np.testing.assert_array_equal(mine.degenerate, theirs.degenerate)
    for which in ("agent", "best_agent"):
        assert pack_agent(getattr(run.state, which)).tobytes() == pack_agent(getattr(ref.state, which)).tobytes(), which
    assert run.state.best_score == ref.state.best_score


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny config (with the default stall timeout)."""
    folder = tmp_path_factory.mktemp("reference")
    code, output = finish(start(2, "cli", folder, "train", "--config", str(write_config(folder)), "--out", "run.h5"))
    assert code == 0, output
    return folder / "run.h5"


# --- the real thing ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["rank 1 stopped", "rank 0 stopped"])
def test_a_stopped_rank_ends_the_job_naming_it_and_the_checkpoint_resumes(tmp_path, reference, stopped, victim):
    config = write_config(tmp_path)
    train = ("train", "--config", str(config), "--out", "run.h5", "--stall-timeout", str(STALL_TIMEOUT))
    # The victim stops in the middle of its iteration-4 training, its pid in paused.<rank>; then SIGSTOP.
    job = start(
        2,
        "fault",
        tmp_path,
        *train,
        env={"FAULT": "pause", "FAULT_RANK": str(victim), "FAULT_EPISODE": str(STOP_EPISODE)},
    )
    paused = tmp_path / f"paused.{victim}"
    wait_for(paused.exists, job, f"rank {victim} to reach iteration 4")
    since = stop(int(paused.read_text()), stopped)
    code, output = finish(job)
    line, limit = stall_line(output)
    elapsed = assert_every_rank_gone(
        [int((tmp_path / f"pid.{r}").read_text()) for r in range(2)], since, limit + MARGIN
    )
    print(
        f"rank {victim} stopped: every rank ended {elapsed:.1f} s after the stop (stall timeout {limit:.1f} s)\n{line}"
    )  # pytest -s

    assert code == EXIT_STALLED, output
    # 5 s, or 20 x the slowest of iterations 2-3 (0.05-0.1 s each, more on a loaded machine): not the start-up limit
    assert STALL_TIMEOUT <= limit < START_UP_TIMEOUT, line
    assert (
        f"rank {victim} (" in line
        and f"pid {paused.read_text()}" in line
        and f"rank {1 - victim} (" not in line.split("(rank")[0]
    )
    assert "of iteration 4" in line and "The last completed iteration is 3" in line
    assert "mpirun -n 2 mpiswim train --resume run.h5" in line
    assert check_checkpoint(tmp_path / "run.h5").state.iteration == 3
    assert "3 of 5 iterations" in mpiswim_check(tmp_path / "run.h5")

    code, output = finish(
        start(2, "cli", tmp_path, "train", "--resume", "run.h5", "--stall-timeout", str(STALL_TIMEOUT))
    )
    assert code == 0, output
    assert_same_run(tmp_path / "run.h5", reference)


# After a checkpoint write, rank 0 sleeps for as long as the file `slow-writes` exists
# (`sleeping` says it does), so the other ranks wait in the stop check (an Iallreduce).
# A rank inside the stop check's waiting loop while rank 0 sleeps writes `waiting.<rank>`.
SLOW_WRITER = """\
import os, sys, time
from pathlib import Path
import mpiswim
from mpiswim import stall, train
from mpiswim.cli import main

rank = os.environ['PMI_RANK']
Path(f"pid.{rank}").write_text(str(os.getpid()))
real_write = train.write_checkpoint
real_listen = stall.StallWatch._listen

def listen(self, *args, **kwargs):
    # Called with no arguments only inside StallWatch.wait's loop, after a test of the requests found them unfinished.
    if not args and not kwargs and self.stage == stall.STOP and Path("sleeping").exists():
        Path(f"waiting.{rank}").touch()
    return real_listen(self, *args, **kwargs)

def slow_write(*args, **kwargs):
    written = real_write(*args, **kwargs)
    if Path("slow-writes").exists():
        Path("sleeping").write_text("")
        while Path("slow-writes").exists():
            time.sleep(0.01)
    return written

train.write_checkpoint = slow_write
stall.StallWatch._listen = listen
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_rank_stopped_inside_a_collective_is_named_and_the_ranks_it_holds_up_are_not(tmp_path, stopped):
    """Four ranks. Rank 1 is stopped while it waits in the stop check, where MPICH's Iallreduce
    needs it to pass data on: rank 3 then waits behind it for ever, alive. Rank 1 sends no
    heartbeats any more and is named; rank 3, still sending them, is not."""
    config = write_config(tmp_path, iterations=5000)
    (tmp_path / "driver.py").write_text(SLOW_WRITER)
    command = [
        mpiexec(),
        "-n",
        "4",
        sys.executable,
        "driver.py",
        *train_args(config, "run.h5"),
        "--stall-timeout",
        str(STALL_TIMEOUT),
    ]
    job = start_job(command, tmp_path, environment())

    def iterations_done() -> int:
        try:
            return load_checkpoint(tmp_path / "run.h5").state.iteration
        except Exception:  # not written yet, or caught mid-write: look again
            return 0

    wait_for(lambda: iterations_done() >= 3, job, "three iterations")
    (tmp_path / "slow-writes").write_text("")
    wait_for((tmp_path / "sleeping").exists, job, "rank 0 to sleep after a write")
    pids = [int((tmp_path / f"pid.{r}").read_text()) for r in range(4)]
    # Rank 0 sleeps after its write, so rank 1 cannot leave this stop check: stopped now, it is stopped inside it.
    wait_for((tmp_path / "waiting.1").exists, job, "rank 1 to wait in the stop check")
    since = stop(pids[1], stopped)
    (tmp_path / "slow-writes").unlink()
    code, output = finish(job)
    line, limit = stall_line(output)
    elapsed = assert_every_rank_gone(pids, since, limit + MARGIN)
    print(f"rank 1 stopped in the stop check: every rank ended {elapsed:.1f} s after the stop\n{line}")

    assert code == EXIT_STALLED, output
    assert "rank 1 (" in line and "rank 0 (" not in line and "rank 2 (" not in line and "rank 3 (" not in line
    done = check_checkpoint(tmp_path / "run.h5").state.iteration
    assert done >= 3 and f"The last completed iteration is {done}:" in line
    mpiswim_check(tmp_path / "run.h5")


@pytest.mark.slow
def test_a_bad_stall_timeout_is_refused_before_anything_is_written(tmp_path):
    config = write_config(tmp_path)
    command = [
        str(Path(sys.executable).with_name("mpiswim")),
        *train_args(config, "run.h5"),
        "--stall-timeout",
        "-1",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--stall-timeout = -1.0" in result.stderr and "Fix:" in result.stderr
    assert not (tmp_path / "run.h5").exists()


# --- the deadline and the message, without MPI ------------------------------------------


class OneRank:
    """Enough of a communicator for StallWatch's bookkeeping."""

    def __init__(self, rank: int = 0, size: int = 2) -> None:
        self.rank, self.size = rank, size

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size


def test_the_deadline_is_generous_at_start_up_then_follows_the_slowest_iteration(monkeypatch):
    clock = iter([0.0, 30.0, 30.5, 31.0, 33.0, 35.0])  # iteration 1 (start-up, JIT): 30 s; 2: 0.5 s; 3: 0.5 s; 4: 2 s
    monkeypatch.setattr("mpiswim.stall.time.monotonic", lambda: next(clock))
    watch = StallWatch(OneRank(), timeout=5.0)
    assert watch.limit() == START_UP_TIMEOUT  # set-up
    watch.begin_iteration(11)  # a resumed job: its first iteration is 11
    assert watch.limit() == START_UP_TIMEOUT
    watch.begin_iteration(12)
    assert watch.limit() == 20 * 30.0  # only the first iteration is known so far
    watch.begin_iteration(13)
    assert watch.limit() == 20 * 0.5  # from now on the iterations after the first
    watch.begin_iteration(14)
    assert watch.limit() == 20 * 0.5
    watch.begin_iteration(15)
    assert watch.limit() == 20 * 2.0
    assert StallWatch(OneRank(), timeout=3600.0).limit() == 3600.0  # a larger timeout wins


def test_the_message_says_who_where_what_the_checkpoint_holds_and_the_fix():
    watch = StallWatch(OneRank(rank=0, size=4), timeout=5.0, abort_code=EXIT_STALLED)
    watch.start_run(5.0, "runs/my run.h5", written=6)
    watch.iteration, watch.first, watch.slowest, watch.entered = 7, 1, 0.4, 0.0
    watch.stage, watch.stage_id = STOP, 30
    watch.progress[:] = [61, 60, 59, 59]  # rank 1 reached the stop check and went quiet; ranks 2 and 3 never came
    watch.who[1:] = ["n1, pid 11", "n2, pid 22", ""]
    message = stall_message(watch, [1, 2, 3], limit=8.0, now=20.0)
    assert message.startswith(
        "mpiswim: stalled: rank 2 (n2, pid 22), rank 3 (never heard from) have not reached the stop check of iteration "
        "7 within 8.0 s"
    )
    assert "rank 1 (n1, pid 11) reached the stop check of iteration 7 but then stopped answering" in message
    assert (
        "exit code 5" in message
        and "The last completed iteration is 6: 'runs/my run.h5' holds iterations 1..6." in message
    )
    assert "resume with `mpirun -n 4 mpiswim train --resume 'runs/my run.h5'`" in message
    assert "20 x the slowest iteration so far, 0.40 s" in message and "\n" not in message

    other = StallWatch(OneRank(rank=2, size=4), timeout=5.0)  # another rank knows only what rank 0 did before
    other.start_run(5.0, "run.h5", written=6)
    other.iteration, other.first, other.stage = 7, 1, STOP
    assert checkpoint_note(other)[0].startswith(
        "The last completed iteration is 6 or 7: 'run.h5' holds iterations 1..6, or 1..7 if rank 0 finished"
    )
    other.stage = "the allgather of scores"
    assert checkpoint_note(other) == (
        "The last completed iteration is 6: 'run.h5' holds iterations 1..6.",
        "resume with `mpirun -n 4 mpiswim train --resume run.h5`",
    )
    other.start_run(
        5.0, "run.h5", written=6, resume_iterations=50
    )  # a resumed run that asked beyond the checkpoint's plan
    assert checkpoint_note(other)[1] == "resume with `mpirun -n 4 mpiswim train --resume run.h5 --iterations 50`"
    assert "Training had not started" in checkpoint_note(StallWatch(OneRank()))[0]


def test_a_host_none_of_whose_ranks_answers_is_named_first():
    # A 2 x 2 pool whose node n2 went off the network during the allgather of scores of iteration 7: ranks 2 and 3
    # (n2) are silent, and so is rank 1 on the live node n1, held inside MPI's progress towards n2.
    watch = StallWatch(OneRank(rank=0, size=4), timeout=5.0, abort_code=EXIT_STALLED)
    watch.start_run(5.0, "run.h5", written=6)
    watch.iteration, watch.first, watch.slowest, watch.entered = 7, 1, 0.4, 0.0
    watch.stage, watch.stage_id = "the allgather of scores", 30
    watch.progress[:] = [60, 60, 59, 59]
    watch.heard[:] = [0.0, 1.0, -np.inf, 2.0]
    watch.who[1:] = ["n1, pid 11", "", "n2, pid 33"]  # rank 2 was never heard from: its host is known all the same
    watch.hosts = ["n1", "n1", "n2", "n2"]
    message = stall_message(watch, [1, 2, 3], limit=8.0, now=20.0)
    assert message.startswith(
        "mpiswim: stalled: no rank on n2 answers (a node down or cut off the network?): rank 2 (n2, never heard "
        "from), rank 3 (n2, pid 33) have not reached the allgather of scores of iteration 7 within 8.0 s; rank 1 "
        "(n1, pid 11) reached"
    ), message
    assert "Fix: look at n2 first (is it up, and can n1 reach it?), then those nodes" in message
    # Silent ranks on a host that still answers (rank 1 alone) name no host first; nor do unknown hosts.
    assert stall_message(watch, [1], limit=8.0, now=20.0).startswith("mpiswim: stalled: rank 1 (n1, pid 11) reached")
    # A silent rank listed after a live one in rank order still comes after the lost host's ranks.
    watch.hosts = ["n1", "n2", "n2", "n1"]
    watch.who[1:] = ["n2, pid 11", "", "n1, pid 33"]
    watch.progress[:] = [60, 60, 60, 59]
    assert stall_message(watch, [1, 2, 3], limit=8.0, now=20.0).startswith(
        "mpiswim: stalled: no rank on n2 answers (a node down or cut off the network?): rank 1 (n2, pid 11), rank 2 "
        "(n2, never heard from) reached the allgather of scores of iteration 7 but then stopped answering (nothing "
        "heard for 19 s); rank 3 (n1, pid 33) has not reached"
    )
    watch.hosts = None
    assert stall_message(watch, [1, 2, 3], limit=8.0, now=20.0).startswith("mpiswim: stalled: rank 3 (n1, pid 33)")


ABORTING = """
import sys, time
import mpiswim.stall as stall

class Comm:
    def Get_rank(self):
        return 2

    def Abort(self, code):  # {abort}
        {body}

stall.ABORT_DELAY, stall.ABORT_GRACE, stall.ABORT_LAST_RESORT = 0.0, 0.5, 2
print("aborting", flush=True)
stall.abort_every_rank(Comm(), 5)
print("abort_every_rank returned", flush=True)
"""


@pytest.mark.parametrize(
    "abort, body, returncode",
    [
        ("returns at once, as MPICH's does; no launcher ends the rank", "return None", 5),
        ("never returns: the launcher cannot be reached", "time.sleep(60)", -signal.SIGALRM),
    ],
)
def test_a_rank_the_launcher_does_not_end_after_mpi_abort_ends_itself(abort, body, returncode):
    # MPICH's MPI_Abort returns once it has asked the launcher to end the job. On a node cut off the network
    # (make cluster-test, partition) no launcher ever ends the rank: it must not run on as an orphan.
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", ABORTING.format(abort=abort, body=body)],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment(),
    )
    assert result.returncode == returncode, result.stdout + result.stderr
    assert result.stdout == "aborting\n"
    if returncode == 5:
        assert "still running 0.5 s after MPI_Abort: the launcher cannot reach this node" in result.stderr
    assert time.monotonic() - started < 20


def test_the_stall_timeout_may_change_when_a_run_is_resumed():
    stored = parse_config(DEFAULT_CONFIG, 2)
    given = parse_config(DEFAULT_CONFIG.replace("stall_timeout = 600", "stall_timeout = 60"), 2)
    assert given.stall_timeout == 60 and config_differences(stored, given) == []
