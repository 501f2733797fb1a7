"""Live TensorBoard curves (mpiswim.live): what rank 0 writes, and one clear error when tensorboardX is missing."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import BEST, SCORES, WINNERS, steps, timings

from mpiswim.cli import build_parser
from mpiswim.live import LiveLog
from mpiswim.policy import initial_agent
from mpiswim.state import IterationRecord, PoolState
from mpiswim.train import InputError, prepare


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the event files in `folder`: tag -> {step: value} (TFRecord framing, tensorboardX's protos)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_the_live_log_has_scores_step_sizes_times_and_steps_per_iteration(tmp_path):
    agent = initial_agent(8, 2, "linear")
    log = LiveLog(tmp_path / "tb", alpha=[1e-5, 1e-4, 1e-3], eta=[1e-3] * 3, total_steps=1000)
    for row in (0, 1, 2):  # iteration 3: every branch degenerate, no winner
        record = IterationRecord(
            scores=SCORES[row], winner=WINNERS[row], train_returns=np.zeros((3, 1)), timings=timings(row),
            degenerate=~np.isfinite(SCORES[row]), fell_back=False, best_score=BEST[row], steps=steps(row),
            fresh_score=4.5 if row == 1 else np.nan,  # best_by = "fresh": only iteration 2's winner played them
        )  # fmt: skip
        log.iteration(PoolState(row + 1, agent, agent, BEST[row], 0, 0, 0), record)
    log.close()
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["score/winner"] == {1: 3.0, 2: 5.0}
    assert scalars["score/best"] == {1: 3.0, 2: 5.0, 3: 5.0}
    assert scalars["score/winner_fresh"] == {2: 4.5}
    assert scalars["winner/alpha"] == pytest.approx({1: 1e-4, 2: 1e-5})
    assert scalars["rank_score/rank2"] == {1: 2.0}  # -inf (degenerate) is left out
    assert scalars["step_size/alpha_rank2"][1] == pytest.approx(1e-3)
    assert scalars["seconds/train"][1] == pytest.approx(1.2) and scalars["seconds/iteration"][1] == pytest.approx(1.95)
    assert scalars["steps/iteration"] == {1: 330, 2: 630, 3: 930}
    assert scalars["steps/total"] == {1: 1330, 2: 1960, 3: 2890}  # on from the 1000 of the iterations before


def test_a_missing_tensorboardx_is_one_error_naming_the_extra_before_the_run_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if it were not installed
    out = tmp_path / "run.h5"
    args = build_parser().parse_args(["train", "--out", str(out), "--tensorboard", str(tmp_path / "tb")])
    with pytest.raises(InputError, match=r"--tensorboard .*needs the package tensorboardX.*mpiswim\[tensorboard\]"):
        prepare(args, 2)
    args = build_parser().parse_args(["train", "--out", str(out), "--set", "run.tensorboard=true"])
    with pytest.raises(InputError, match=r"\[run\] tensorboard = true\) needs the package tensorboardX"):
        prepare(args, 2)
    assert not out.exists()  # refused before the checkpoint was made


@pytest.mark.slow  # an MPI job
def test_a_run_with_tensorboard_writes_live_curves_beside_its_checkpoint(tmp_path):
    from test_faults import ITERATIONS, RANKS, run, write_config

    from mpiswim.analysis import history, read_run

    code, output = run(
        RANKS, "cli", tmp_path, "train", "--config", str(write_config(tmp_path)), "--out", "run.h5",
        "--set", "run.tensorboard=true",
    )  # fmt: skip
    assert code == 0, output
    assert "TensorBoard events in run.tb/" in output
    starting = output.index(f"mpiswim: starting {RANKS} ranks; importing and compiling")
    assert starting < output.index("mpiswim: planned:") and output.count("starting") == 1  # rank 0 alone says it
    scalars = read_scalars(tmp_path / "run.tb")
    rows = history(read_run(tmp_path / "run.h5"))
    steps = list(range(1, ITERATIONS + 1))
    assert sorted(scalars["score/best"]) == steps
    np.testing.assert_allclose([scalars["score/best"][k] for k in steps], rows["best_score"], rtol=1e-6)
    assert [scalars["steps/total"][k] for k in steps] == rows["total_steps"].tolist()
    assert {f"rank_score/rank{r}" for r in range(RANKS)} <= set(scalars)
