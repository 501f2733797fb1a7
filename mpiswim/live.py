"""Live curves: a TensorBoard event stream that rank 0 writes during `mpiswim train`.

Asked for with `train --tensorboard DIR` or `[run] tensorboard = true` (then beside the
checkpoint: RUN.h5 -> RUN.tb/). The events are written by tensorboardX (the optional
extra `tensorboard`), one flush per iteration, so `tensorboard --logdir DIR` shows the
run as it trains. The checkpoint stays the record; the stream is only for watching.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpiswim.state import PHASES, IterationRecord, PoolState

MISSING = (
    "TensorBoard logging ({what}) needs the package tensorboardX, which is not installed. Fix: pip install "
    "'mpiswim[tensorboard]' (or `make venv EXTRAS=mpi,test,analysis,tensorboard`), or leave TensorBoard off."
)


class LiveLogError(Exception):
    """TensorBoard logging was asked for but cannot be: one message naming the fix."""


def tensorboard_folder(out: Path, asked: str | None, configured: bool) -> Path | None:
    """Where the event stream goes: --tensorboard DIR, else RUN.tb/ beside the checkpoint if the config asks; None: off.

    Checks that tensorboardX can be imported (a LiveLogError naming the extra to install if not), so a missing
    package stops the job before the run starts.
    """
    if asked is None and not configured:
        return None
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        what = f"--tensorboard {asked}" if asked is not None else "[run] tensorboard = true"
        raise LiveLogError(MISSING.format(what=what)) from None
    folder = Path(asked) if asked is not None else out.with_suffix(".tb")
    if folder.exists() and not folder.is_dir():
        raise LiveLogError(
            f"the TensorBoard folder '{folder}' is a file. Fix: give --tensorboard a folder name, such as runs/tb."
        )
    return folder


class LiveLog:
    """Rank 0's TensorBoard writer: one set of scalars per iteration, at step = the iteration (counted from 1)."""

    def __init__(self, folder: Path, alpha: np.ndarray, eta: np.ndarray, total_steps: int = 0) -> None:
        """`total_steps`: the steps of the iterations done before (a resumed run's), where steps/total goes on from."""
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(folder), flush_secs=3600)  # flushed after every iteration instead
        self.alpha, self.eta = np.asarray(alpha, dtype=float), np.asarray(eta, dtype=float)
        self.total_steps = total_steps

    def iteration(self, state: PoolState, record: IterationRecord) -> None:
        """The scalars of the iteration just done: scores, the winner and its step sizes, times, steps."""
        k, add = state.iteration, self.writer.add_scalar
        if record.winner >= 0:
            add("score/winner", float(record.scores[record.winner]), k)
            add("winner/rank", record.winner, k)
            add("winner/alpha", self.alpha[record.winner], k)
            add("winner/eta", self.eta[record.winner], k)
        if state.best_iteration >= 0:
            add("score/best", float(state.best_score), k)
        if np.isfinite(record.fresh_score):  # best_by = "fresh": the winner played fresh episodes
            add("score/winner_fresh", float(record.fresh_score), k)
        for rank, score in enumerate(record.scores):
            if np.isfinite(score):
                add(f"rank_score/rank{rank}", float(score), k)
            add(f"step_size/alpha_rank{rank}", self.alpha[rank], k)
            add(f"step_size/eta_rank{rank}", self.eta[rank], k)
        timings = np.asarray(record.timings)  # (P, phases): seconds of each rank
        for column, phase in enumerate(PHASES):
            add(f"seconds/{phase}", float(timings[:, column].max()), k)  # the slowest rank's
        busy = timings[:, : PHASES.index("checkpoint")].sum(axis=1)
        add("seconds/iteration", float(busy.max() + timings[0, PHASES.index("checkpoint")]), k)
        steps = np.asarray(record.steps)
        if (steps >= 0).all():
            self.total_steps += int(steps.sum())
            add("steps/iteration", int(steps.sum()), k)
            add("steps/total", self.total_steps, k)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
