"""Stall watch: every collective of a run completed against a deadline, and the silent rank named.

A rank that never reaches a collective (a hung node, a process stopped with
`kill -STOP`, a stuck file system) would otherwise keep every other rank
waiting forever, MPICH's blocking calls spinning on a core. `StallWatch.wait`
completes the non-blocking requests of one collective (posted by the MPI
helpers in pool.py) by polling them with short naps, while the ranks tell
each other with tiny point-to-point messages how far they are. Past the
deadline, one rank prints one message (who, where, what the checkpoint
holds, the fix) and calls MPI_Abort.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import socket
import sys
import time

import numpy as np

from mpiswim.launcher import resume_command

START_UP_TIMEOUT = (
    600.0  # set-up and a job's first iteration (imports, environment checks, JIT compilation) get at least this
)
STALL_FACTOR = 20  # ... and later collectives at least this many times the slowest iteration so far
MAX_HEARTBEAT = 30.0  # a waiting rank says it is still there at least this often (seconds)
SPIN = (
    0.002  # seconds a waiting rank tests its requests without sleeping (only yielding the core): most waits end sooner
)
MAX_NAP = 0.001  # then it sleeps at most this long between two tests
HERE_TAG = 7411  # tag of the watch's point-to-point messages (MPI guarantees tags up to 32767)
ABORT_DELAY = 0.5  # seconds between the stall message and MPI_Abort
ABORT_GRACE = 10.0  # seconds the launcher has to end a rank once its MPI_Abort has returned; then it ends itself
ABORT_LAST_RESORT = 30  # seconds from the decision to abort to SIGALRM, should anything on the way never return
CARD_BYTES = 64  # a message: int64 progress, then "host, pid N" (UTF-8, zero-padded)

# The collectives of a run, as the stall message names them.
SETUP, SHARE, SCORES, WINNER, FRESH, RECORD, STOP, END = (
    "the set-up broadcast",
    "the allgather of the learner's shared rows (random search's returns)",
    "the allgather of scores",
    "the broadcast of the winner's agent",
    'the allgather of the winner\'s fresh returns (best_by = "fresh")',
    "the gather of the iteration record",
    "the stop check",
    "the end of the run",
)


class StallWatch:
    """Completes each collective of a run against a deadline; names the ranks that never come.

    A rank that has waited at a collective for one heartbeat tells rank 0 so,
    again every heartbeat while it waits, and when it leaves; rank 0 tells
    every rank the same (tiny point-to-point messages: its progress, host and
    pid). A collective that completes within a heartbeat, as they all do in a
    healthy run, costs no message at all: rank 0 would otherwise send and
    receive 2 (P - 1) of them per collective, about 0.14 s per iteration at
    P = 1,000 (docs/scaling.md). Only during set-up and the job's first
    iteration does every rank speak at once on arrival, so that rank 0 learns
    every rank's host and pid and the others rank 0's.
    A waiting rank tests its requests, yielding the core for the first SPIN
    seconds, then with naps of at most MAX_NAP seconds, so it no longer spins
    on a core as MPICH's blocking calls do. When the deadline
    passes, rank 0 names the ranks that have neither left this collective nor
    been heard from for two heartbeats: ranks still computing, or stopped (a
    rank stopped within a heartbeat of arriving reads as not arrived). The
    other ranks judge rank 0 only, in the same way (one after the other, so
    usually one message). The judge prints one message and calls comm.Abort,
    which ends every rank.

    The deadline: `timeout` seconds (0 = no watch: plain blocking waits), at
    least START_UP_TIMEOUT during set-up and the job's first iteration, and at
    least STALL_FACTOR times the slowest later iteration (the first one, until
    a second has completed).
    """

    def __init__(self, comm, timeout: float = 0.0, abort_code: int = 1) -> None:
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.timeout, self.abort_code = timeout, abort_code
        self.out: str | None = None  # the run's checkpoint, once set up
        self.resume_iterations: int | None = None  # the --iterations the resume hint must keep
        self.written: int | None = None  # rank 0: iterations the checkpoint holds
        self.iteration: int | None = None  # the iteration in progress (1-based); None during set-up
        self.first: int | None = None  # this job's first iteration
        self.first_seconds = self.slowest = self.began = 0.0
        self.stage, self.stage_id = SETUP, 0
        self.progress = np.full(self.size, -1)  # 2 * stage id on reaching it, + 1 on leaving it
        self.heard = np.full(self.size, -np.inf)  # time.monotonic() of each rank's last message
        self.who = [""] * self.size
        self.hosts: list[str] | None = None  # rank 0: every rank's host, gathered at start-up (pool.gather_hosts)
        self.who[self.rank] = f"{socket.gethostname()[:40]}, pid {os.getpid()}"
        name = self.who[self.rank].encode()[: CARD_BYTES - 8]
        self.card = np.zeros(CARD_BYTES, dtype=np.uint8)  # what this rank sends, progress in the first 8 bytes
        self.card[8 : 8 + len(name)] = np.frombuffer(name, dtype=np.uint8)
        self.box, self.inbox, self.sends, self.entered = np.zeros(CARD_BYTES, dtype=np.uint8), None, [], 0.0
        self.last_word = 0.0  # time.monotonic() of rank 0's last still_working message

    def start_run(self, timeout: float, out: str, written: int, resume_iterations: int | None = None) -> None:
        """The run is set up: its stall timeout, checkpoint and the iterations that checkpoint holds.

        `resume_iterations`: the --iterations a resume must repeat (the run goes beyond the checkpoint's plan), or None.
        """
        self.timeout, self.out, self.resume_iterations = timeout, out, resume_iterations
        self.written = written if self.rank == 0 else None

    def begin_iteration(self, iteration: int) -> None:
        """Iteration `iteration` (1-based) starts: time the previous one."""
        now = time.monotonic()
        if self.iteration is not None and self.iteration == self.first:
            self.first_seconds = now - self.began
        elif self.iteration is not None:
            self.slowest = max(self.slowest, now - self.began)
        self.first = iteration if self.first is None else self.first
        self.iteration, self.began = iteration, now

    def limit(self) -> float:
        """Seconds the collective now starting may wait for the other ranks."""
        if self.iteration is None or self.iteration == self.first:
            return max(self.timeout, START_UP_TIMEOUT)
        return max(self.timeout, STALL_FACTOR * (self.slowest or self.first_seconds))

    def still_working(self) -> None:
        """Rank 0, busy outside any collective while the others wait (the target check): tell them it is alive.

        At most every half heartbeat; a waiting rank judges rank 0 silent only after two.
        """
        now = time.monotonic()
        if self.timeout and self.size > 1 and now - self.last_word > min(self.limit() / 4, MAX_HEARTBEAT) / 2:
            self._say(2 * self.stage_id + 1)  # "left the last collective": true, and it keeps the others' verdict
            self.last_word = now

    def wait(self, requests: list, stage: str) -> None:
        """Complete this rank's requests of one collective, or end the job if a rank stays silent too long."""
        from mpi4py import MPI

        if not self.timeout or self.size == 1:
            MPI.Request.Waitall(requests)
            return
        self.stage, self.stage_id = stage, self.stage_id + 1
        self._listen(open_inbox=True)
        limit = self.limit()
        heartbeat = min(limit / 4, MAX_HEARTBEAT)
        self.entered = said = time.monotonic()
        spoke = self.iteration is None or self.iteration == self.first  # set-up and first iteration: introduce yourself
        if spoke:
            self._say(2 * self.stage_id)
        deadline = self.entered + limit + (0.0 if self.rank == 0 else min(self.rank - 1, 10))  # rank 0 judges first
        while not MPI.Request.Testall(requests):
            now = time.monotonic()
            self._listen()
            if now - said > heartbeat:
                self._say(2 * self.stage_id)
                said, spoke = now, True
            if now > deadline:
                deadline = self._judge(now, limit, heartbeat)
            if now - self.entered < SPIN:
                os.sched_yield()
            else:
                time.sleep(min(MAX_NAP, (now - self.entered) / 20))
        if spoke:  # only a rank that said it was here says it has gone
            self._say(2 * self.stage_id + 1)
        self._listen(close_inbox=True)

    def _say(self, progress: int) -> None:
        """Tell rank 0 (rank 0: every rank) how far this rank is; finished sends are dropped."""
        card = self.card.copy()  # a buffer of its own: earlier sends may still read theirs
        card[:8].view(np.int64)[0] = progress
        self.sends = [(request, buffer) for request, buffer in self.sends if not request.Test()]
        for dest in range(1, self.size) if self.rank == 0 else (0,):
            self.sends.append((self.comm.Isend(card, dest=dest, tag=HERE_TAG), card))

    def _listen(self, open_inbox: bool = False, close_inbox: bool = False) -> None:
        """Note every message that has come in (rank 0: from any rank; the others: from rank 0)."""
        from mpi4py import MPI

        if open_inbox:
            self.inbox = self.comm.Irecv(self.box, source=MPI.ANY_SOURCE if self.rank == 0 else 0, tag=HERE_TAG)
        status = MPI.Status()
        while self.inbox.Test(status):
            self._note(status.Get_source())
            self.inbox = self.comm.Irecv(self.box, source=MPI.ANY_SOURCE if self.rank == 0 else 0, tag=HERE_TAG)
        if close_inbox:
            self.inbox.Cancel()
            self.inbox.Wait(status)
            if not status.Is_cancelled():
                self._note(status.Get_source())

    def _note(self, source: int) -> None:
        self.progress[source] = max(self.progress[source], int(self.box[:8].view(np.int64)[0]))
        self.heard[source] = time.monotonic()
        self.who[source] = bytes(self.box[8:]).rstrip(b"\0").decode(errors="replace")

    def _judge(self, now: float, limit: float, heartbeat: float) -> float:
        """Past the deadline: end the job naming the silent ranks, or return the time to look again."""
        suspects = range(1, self.size) if self.rank == 0 else (0,)
        silent = [
            r for r in suspects if self.progress[r] < 2 * self.stage_id + 1 and now - self.heard[r] > 2 * heartbeat
        ]
        if silent or (
            self.rank == 0 and now > self.entered + 2 * limit
        ):  # everyone talks, yet nothing moves: give up too
            self._give_up(silent, limit, now)
        return now + heartbeat

    def _give_up(self, silent: list[int], limit: float, now: float) -> None:
        """Print one message (who, where, what the checkpoint holds, the fix), then end every rank."""
        end_by_alarm()  # whatever blocks from here on (a write to a launcher that cannot be reached), the rank ends
        print(stall_message(self, silent, limit, now), file=sys.stderr, flush=True)
        sys.stdout.flush()
        abort_every_rank(self.comm, self.abort_code)


def known_hosts(watch: StallWatch) -> list[str] | None:
    """Every rank's host as gathered at start-up, or None before (or if the gather did not give one per rank)."""
    return watch.hosts if watch.hosts is not None and len(watch.hosts) == watch.size else None


def unreachable_hosts(watch: StallWatch, silent: list[int]) -> dict[str, list[int]]:
    """The hosts none of whose ranks answers (each with its ranks), in rank order; {} if the hosts are not known.

    A node that is down or cut off the network silences every rank on it; a rank on a live node may be silent
    too (held inside the MPI library's progress towards the lost node), and is named after them.
    """
    hosts = known_hosts(watch)
    if hosts is None:
        return {}
    on: dict[str, list[int]] = {}
    for rank, host in enumerate(hosts):
        on.setdefault(host, []).append(rank)
    quiet = set(silent)
    return {host: ranks for host, ranks in on.items() if quiet.issuperset(ranks)}


def stall_message(watch: StallWatch, silent: list[int], limit: float, now: float) -> str:
    """The one message of a stalled job, written by the rank that judged it.

    A host none of whose ranks answers is named first, with its ranks; then the other silent ranks.
    """
    where = watch.stage if watch.iteration is None else f"{watch.stage} of iteration {watch.iteration}"
    lost = unreachable_hosts(watch, silent)
    gone = [r for ranks in lost.values() for r in ranks]
    parts = []
    for group in (gone, [r for r in silent if r not in gone]):  # the lost hosts' ranks first
        late = [r for r in group if watch.progress[r] < 2 * watch.stage_id]
        quiet = [r for r in group if r not in late]
        if late:
            parts.append(
                f"{_ranks(watch, late)} {'has' if len(late) == 1 else 'have'} not reached {where} within {limit:.1f} s"
            )
        if quiet:
            parts.append(
                f"{_ranks(watch, quiet)} reached {where} but then stopped answering (nothing heard for "
                f"{now - watch.heard[quiet].max():.0f} s)"
            )
    if not silent:
        parts.append(
            f"every rank still answers, but {where} has not completed in {now - watch.entered:.0f} s (a fault inside "
            "MPI or the network)"
        )
    if watch.rank != 0:
        parts[-1] += f" (rank {watch.rank} hears from rank 0 only; other ranks may be silent too)"
    if lost:
        parts[0] = f"no rank on {' or '.join(lost)} answers (a node down or cut off the network?): {parts[0]}"
    held, fix = checkpoint_note(watch)
    look = _where_to_look(silent)
    if lost:
        look = f"{' and '.join(lost)} first (is it up, and can {watch.hosts[0]} reach it?), then {look}"
    return (
        f"mpiswim: stalled: {'; '.join(parts)}: a hung node, a stopped process or a stuck file system. Aborting every "
        f"rank (exit code {watch.abort_code}). "
        f"{held} Fix: look at {look}, then {fix}. "
        f"({timeout_note(watch, limit)})"
    )


def timeout_note(watch: StallWatch, limit: float) -> str:
    """Where the deadline came from."""
    given = f"[run] stall_timeout or --stall-timeout: {watch.timeout:g} s"
    if watch.iteration is None or watch.iteration == watch.first:
        return (
            f"The stall timeout is at least {START_UP_TIMEOUT:g} s during set-up and a job's first iteration "
            f"(imports, JIT compilation); {given}."
        )
    return (
        f"The stall timeout, {limit:.1f} s here, is the larger of {given}, and {STALL_FACTOR} x the slowest "
        f"iteration so far, {watch.slowest or watch.first_seconds:.2f} s."
    )


def _where_to_look(silent: list[int]) -> str:
    if not silent:
        return "the MPI library and the network between the nodes"
    return (
        f"{'that node' if len(silent) == 1 else 'those nodes'} and what the "
        f"process{'' if len(silent) == 1 else 'es'} there {'is' if len(silent) == 1 else 'are'} doing"
    )


def _ranks(watch: StallWatch, ranks: list[int]) -> str:
    """'rank 3 (node7, pid 4242)', several joined; at most 20 named."""
    host = known_hosts(watch)
    named = [
        f"rank {r} ({watch.who[r] or (f'{host[r]}, never heard from' if host else 'never heard from')})"
        for r in ranks[:20]
    ]
    return ", ".join(named) + (f" and {len(ranks) - 20} more" if len(ranks) > 20 else "")


def checkpoint_note(watch: StallWatch) -> tuple[str, str]:
    """What the run's checkpoint holds, seen from this rank, and how to go on."""
    if watch.out is None or watch.iteration is None:
        return "Training had not started: no iteration was written by this job.", "start the job again"
    out, k = watch.out, watch.iteration
    resume = f"resume with `{resume_command(watch.size, out, watch.resume_iterations)}`"
    if watch.written is not None:  # rank 0 knows
        done = watch.written
    elif watch.stage == STOP:
        return (
            f"The last completed iteration is {k - 1} or {k}: '{out}' holds iterations 1..{k - 1}, or 1..{k} if rank 0 "
            f"finished writing it (`mpiswim check {shlex.quote(out)}` tells).",
            resume,
        )
    else:
        done = k if watch.stage == END else k - 1
    if done == 0:
        return f"No iteration was completed: '{out}' holds none of this run.", "start the run again"
    return f"The last completed iteration is {done}: '{out}' holds iterations 1..{done}.", resume


def end_by_alarm() -> None:
    """This process ends (SIGALRM's default action) within ABORT_LAST_RESORT seconds, whatever it is doing.

    The last resort of abort_every_rank, should MPI_Abort itself, or a write to stderr before it, never return.
    """
    with contextlib.suppress(ValueError):  # not the main thread: SIGALRM keeps its handler (Python's is the default)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(ABORT_LAST_RESORT, math.ceil(ABORT_DELAY + ABORT_GRACE) + 1))


def abort_every_rank(comm, code: int) -> None:
    """MPI_Abort, after a pause (MPICH's launcher may otherwise kill the job before it has passed on what this rank
    wrote); and if the launcher has not ended this rank ABORT_GRACE seconds after MPI_Abort returned, it ends itself.

    MPICH's MPI_Abort returns as soon as it has asked the launcher to end the job (hydra's proxy, or srun's
    slurmstepd over PMI-2), and the launcher then kills every rank, this one within a second or so. On a node cut
    off the network the launcher cannot: slurmstepd there reaches neither srun nor slurmctld, and the ranks of that
    node ran on as orphans until the link came back (make cluster-test, case partition). Never returns.
    """
    end_by_alarm()
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(ABORT_DELAY)
    comm.Abort(code)
    time.sleep(ABORT_GRACE)
    print(
        f"mpiswim: rank {comm.Get_rank()} ({socket.gethostname()}, pid {os.getpid()}): still running {ABORT_GRACE:g} s "
        f"after MPI_Abort: the launcher cannot reach this node (cut off the network?); exiting with code {code}",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os._exit(code)
