"""Post-hoc analysis: numbers from a checkpoint with known content, the files `mpiswim analyze`
writes, clear errors on bad input, and reading a checkpoint while a real MPI run writes it."""

from __future__ import annotations

import csv
import dataclasses
import os
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from jobs import environment, train_args
from synthetic import ALPHA, BEST, BEST_ROW, SCORES, WINNERS, write_synthetic_checkpoint

from mpiswim import analysis, checkpoint
from mpiswim.analysis import read_run
from mpiswim.cli import main
from mpiswim.config import apply_overrides


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("analysis") / "synthetic.h5")


def test_reading_a_checkpoint_for_analysis_does_not_import_jax():
    """analysis reads through mpiswim.checkpoint.read_raw, which must stay light (no pool, no JAX, no numba)."""
    probe = "import sys, mpiswim.analysis; sys.exit(any(m in sys.modules for m in ('jax', 'numba', 'mpiswim.pool')))"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_read_run_returns_what_was_written(synthetic):
    run = read_run(synthetic)
    assert (run.iterations, run.world_size, run.iterations_planned, run.in_progress, run.stopped_early) == (
        6,
        3,
        10,
        False,
        True,
    )
    np.testing.assert_array_equal(run.scores, SCORES)
    np.testing.assert_array_equal(run.winner, WINNERS)
    assert run.phases == ("train", "evaluate", "communicate", "checkpoint")
    assert run.timings.shape == (6, 3, 4)
    assert run.alpha.tolist() == ALPHA and run.best_iteration == BEST_ROW
    assert run.label == "synthetic" and run.env_id == "Swimmer-v5" and run.evaluate_episodes == 5
    assert (
        run.T == 500
        and run.settings["evaluate_episodes"] == 5
        and "name" not in run.settings
        and "seed" not in run.settings
    )


def test_a_run_is_in_progress_only_while_a_job_holds_its_file(synthetic, tmp_path, monkeypatch):
    """`mpiswim train` locks its checkpoint for as long as it runs: a file nobody holds is a run that stopped."""
    path = tmp_path / "run.h5"
    shutil.copy(synthetic, path)
    stopped = read_run(path)
    assert (
        not stopped.in_progress
        and analysis.plot_title(stopped) == "run: Swimmer-v5, 3 ranks, stopped at iteration 6 of 10"
    )
    fd = checkpoint.claim(path)  # what a running `mpiswim train` holds
    try:
        running = read_run(path)
    finally:
        os.close(fd)
    assert (
        running.in_progress
        and analysis.plot_title(running) == "run: Swimmer-v5, 3 ranks, iteration 6 of 10 (in progress)"
    )
    complete = read_run(write_synthetic_checkpoint(tmp_path / "complete.h5", planned=6))
    assert (
        not complete.in_progress
        and not complete.stopped_early
        and analysis.plot_title(complete) == "complete: Swimmer-v5, 3 ranks, 6 iterations"
    )
    monkeypatch.setattr(checkpoint.lock, "lock_is_held", lambda path: None)  # a file system that cannot report locks
    assert checkpoint.finished_cleanly(path) and not read_run(path).in_progress  # compacted at a clean end


def test_learning_curve_follows_the_winner_and_the_finite_spread(synthetic):
    curve = analysis.learning_curve(read_run(synthetic))
    assert curve["iteration"].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(curve["winner_score"], [3, 5, np.nan, 6, 7, 4])  # NaN: no winner
    np.testing.assert_array_equal(curve["best_score"], BEST)
    np.testing.assert_array_equal(curve["ranks_min"], [1, 4, np.nan, 2, 0, 2])  # -inf (degenerate) is left out
    np.testing.assert_array_equal(curve["ranks_max"], [3, 5, np.nan, 6, 7, 4])
    np.testing.assert_allclose(curve["ranks_mean"][:2], [2.0, 4.5])


def test_win_table_counts_wins_and_shares_per_rank_and_per_hyperparameter(synthetic):
    run = read_run(synthetic)
    rows = analysis.win_table(run)
    assert [r.wins for r in rows] == [2, 2, 1]
    assert [r.share for r in rows] == [0.4, 0.4, 0.2]  # of the 5 iterations that had a winner
    assert [(r.first_win, r.last_win) for r in rows] == [(2, 5), (1, 4), (6, 6)]
    assert [r.new_bests for r in rows] == [2, 2, 0]
    assert [r.degenerate for r in rows] == [1, 1, 2]
    by_value = {(v.name, v.value): v for v in analysis.win_share_by_hyperparameter(run)}
    cautious = by_value[("alpha", 1e-5)]
    assert cautious.ranks == (0,) and cautious.wins == 2 and cautious.share == 0.4
    assert cautious.rank_share == pytest.approx(1 / 3) and cautious.ratio == pytest.approx(1.2)
    assert by_value[("eta", 1e-3)].ranks == (1, 2) and by_value[("eta", 1e-3)].wins == 3


def test_timing_table_splits_the_iteration_time(synthetic):
    run = read_run(synthetic)
    per_iteration = analysis.phase_seconds(run)
    np.testing.assert_allclose(per_iteration["train"], 1.1)  # mean over ranks of 1.0, 1.1, 1.2
    np.testing.assert_allclose(per_iteration["communicate"], 0.2)
    np.testing.assert_allclose(per_iteration["checkpoint"], 0.05)  # rank 0's write
    rows = {r.phase: r for r in analysis.timing_table(run)}
    assert rows["train"].seconds == pytest.approx(6 * 1.1)
    assert rows["train"].slowest_rank == 2 and rows["communicate"].slowest_rank == 0
    assert sum(r.share for r in rows.values()) == pytest.approx(1.0)


def test_compare_runs_gives_mean_and_t_interval_per_iteration_each_run_over_its_own_length(tmp_path):
    paths = [
        write_synthetic_checkpoint(tmp_path / f"seed{i}.h5", rows=rows, offset=offset, settings={"run.seed": i})
        for i, (rows, offset) in enumerate(((6, 0.0), (6, 1.0), (4, 5.0)))
    ]
    runs = analysis.read_runs(paths)
    stats = analysis.compare_runs(runs)
    assert set(stats["group"]) == {"swimmer-default"}  # seeds of one config: one group
    assert stats["iteration"].tolist() == [1, 2, 3, 4, 5, 6]  # the short run ends after iteration 4; the others go on
    assert stats["runs"].tolist() == [3, 3, 3, 3, 2, 2]
    assert np.isnan(stats["winner_mean"][2])  # no winner in any run
    np.testing.assert_allclose(stats["best_mean"][:4], np.array(BEST[:4]) + 2.0)
    half = 4.303 * np.std([0.0, 1.0, 5.0], ddof=1) / np.sqrt(3)  # the 95% t-interval of 3 runs
    np.testing.assert_allclose(stats["best_high"][:4] - stats["best_mean"][:4], half)
    np.testing.assert_allclose(stats["best_mean"][:4] - stats["best_low"][:4], half)
    # iterations 5 and 6: the two runs that have them, their range as the band
    np.testing.assert_allclose(stats["best_mean"][4:], np.array(BEST[4:]) + 0.5)
    np.testing.assert_allclose(stats["best_low"][4:], BEST[4:])
    np.testing.assert_allclose(stats["best_high"][4:], np.array(BEST[4:]) + 1.0)
    mean, half, n = analysis.mean_and_ci(np.array([1.0, 2.0, 4.0]))
    assert (mean, n) == (pytest.approx(7 / 3), 3)
    assert half == pytest.approx(4.303 * np.std([1, 2, 4], ddof=1) / np.sqrt(3))
    summaries = analysis.run_summaries(runs)
    assert [s.best_score for s in summaries] == [7.0, 8.0, 11.0] and summaries[2].best_iteration == 4
    assert [s.best_score for s in analysis.run_summaries(analysis.common_part(runs))] == [
        6.0,
        7.0,
        11.0,
    ]  # the best up to iteration 4


def test_analyze_writes_plots_and_tables(synthetic, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(synthetic), "--out", str(out)]) == 0
    for name in ("learning_curve.png", "wins.png", "timings.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "learning_curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and rows[2]["winner_score"] == "" and float(rows[3]["score_rank2"]) == 6.0
    wins = (out / "wins.md").read_text()
    assert "| 0 | 1e-05 | 0.0001 | 2 | 40.0% |" in wins and "| alpha | 1e-05 | 0 | 2 | 40.0% | 33.3% | 1.20 |" in wins
    assert "| train | 6.6 |" in (out / "timings.md").read_text()
    printed = capsys.readouterr().out
    assert (
        "3 ranks, 6 of 10 iterations (stopped early)" in printed
        and "wins per rank: 0: 2 (40%), 1: 2 (40%), 2: 1 (20%)" in printed
    )


@pytest.mark.slow  # analyze of several runs: 7-10 figures, 5-10 CPU-s
def test_two_runs_of_different_length_are_each_shown_over_their_own_length_with_a_range(tmp_path, capsys):
    """Two seeds of one config, one cut short: the mean covers both while both have data, then the longer alone; the
    band is the range of the two, not a t-interval, and a length difference is no warning.
    """
    a = write_synthetic_checkpoint(tmp_path / "a.h5")
    b = write_synthetic_checkpoint(tmp_path / "b.h5", rows=4, offset=10.0, settings={"run.seed": 1})
    out = tmp_path / "out"
    assert main(["analyze", str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    with open(out / "compare.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["iteration"]) for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [row["runs"] for row in rows] == ["2"] * 4 + ["1"] * 2
    a_scores = analysis.winner_scores(read_run(a))
    for row, score in zip(rows[:4], a_scores[:4], strict=True):
        if np.isfinite(score):  # mean of the two runs, band = their range
            assert (float(row["winner_mean"]), float(row["winner_low"]), float(row["winner_high"])) == (
                score + 5,
                score,
                score + 10,
            )
    assert float(rows[5]["winner_mean"]) == a_scores[5] and rows[5]["winner_low"] == ""  # one run: no band
    table = (out / "compare.md").read_text()
    assert "best by 4 = its best up to iteration 4" in table and "±" not in table
    assert "| swimmer-default | range of 2 runs | 3 | 4-6 | 10.00 (range 4.00 to 16.00) |" in table
    legend = [
        text.get_text() for text in analysis.compare_figure(analysis.read_runs([a, b])).axes[0].get_legend().get_texts()
    ]
    assert "swimmer-default: range of 2 runs" in legend and "every run has data up to here" in legend
    assert "95% CI" not in " ".join(legend)


@pytest.mark.slow  # analyze of several runs: 7-10 figures, 5-10 CPU-s
def test_runs_that_differ_in_pool_size_episode_length_or_config_give_one_note_each(tmp_path, capsys):
    a = write_synthetic_checkpoint(tmp_path / "a.h5", settings={"run.name": '"a"', "run.seed": 1})
    b = write_synthetic_checkpoint(
        tmp_path / "b.h5", settings={"run.name": '"b"', "run.seed": 2, "env.T": 200, "env.gamma": 0.99}
    )
    assert main(["analyze", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    notes = capsys.readouterr().err.splitlines()
    assert notes == [
        f"mpiswim analyze: note: the runs differ in episode length T: {a} has 500, {b} has 200",
        f"mpiswim analyze: note: the runs differ in the config setting gamma: {a} has 1, {b} has 0.99",
    ]  # not in name or seed
    assert "- the runs differ in episode length T:" in (tmp_path / "out" / "compare.md").read_text()
    runs = analysis.read_runs([a, b])
    bigger = dataclasses.replace(runs[1], world_size=4)
    assert analysis.run_differences([runs[0], bigger])[0] == f"the runs differ in pool size P: {a} has 3, {b} has 4"
    assert analysis.run_differences([runs[0], runs[0]]) == []


@pytest.mark.slow  # analyze of several runs: 7-10 figures, 5-10 CPU-s
def test_analyze_several_runs_compares_them(tmp_path):
    a = write_synthetic_checkpoint(tmp_path / "a" / "run.h5")
    b = write_synthetic_checkpoint(tmp_path / "b" / "run.h5")
    c = write_synthetic_checkpoint(tmp_path / "c" / "run.h5", offset=3.0)
    out = tmp_path / "out"
    assert main(["analyze", str(a), str(b), str(c), "--out", str(out)]) == 0
    assert (
        (out / "compare.png").exists()
        and (out / "1-run" / "wins.png").exists()
        and (out / "3-run" / "timings.png").exists()
    )
    table = (out / "compare.md").read_text()
    assert "| 1-run | swimmer-default |" in table and "| 3-run | swimmer-default |" in table
    half = 4.303 * np.std([4, 4, 7], ddof=1) / np.sqrt(3)  # final winner scores 4, 4, 7
    assert f"| swimmer-default | 95% CI, n = 3 | 3 | 6 | 5.00 ± {half:.2f} |" in table
    with open(out / "compare.csv") as handle:
        assert [row["runs"] for row in csv.DictReader(handle)] == ["3"] * 6


def test_learning_curve_legend_names_every_kind_of_line_once(synthetic):
    run = read_run(synthetic)
    fell_back = np.array([False, True, False, True, False, False])
    legend = [
        text.get_text()
        for text in analysis.learning_curve_figure(dataclasses.replace(run, fell_back=fell_back))
        .axes[0]
        .get_legend()
        .get_texts()
    ]
    assert legend.count("no winner: every branch degenerate") == 1  # iteration 3, dashed
    assert legend.count("then back to the best agent (patience)") == 1  # iterations 2 and 4, dotted
    assert (
        analysis.learning_curve_figure(run).axes[0].get_title()
        == "synthetic: Swimmer-v5, 3 ranks, stopped at iteration 6 of 10"
    )


def test_timings_plot_keeps_the_first_iteration_off_the_scale(synthetic):
    """Iteration 1 (JAX compiling) would flatten the others: the axis fits iterations 2+ and a note gives iteration 1's
    time.
    """
    run = read_run(synthetic)
    assert analysis.timing_axis_top(np.array([1.85] * 6)) is None  # nothing to leave out
    assert analysis.timing_axis_top(np.array([20.0, 1.0, 2.0])) == pytest.approx(1.15 * np.percentile([1.0, 2.0], 99))
    timings = run.timings.copy()
    timings[0, :, 0] = 20.0  # train took 20 s on every rank in iteration 1
    axis = analysis.timings_figure(dataclasses.replace(run, timings=timings)).axes[0]
    assert axis.get_ylim()[1] == pytest.approx(1.15 * 1.85) and any(
        "iteration 1: 20.8 s, off the scale" in t.get_text() for t in axis.texts
    )
    plain = analysis.timings_figure(run).axes[0]
    assert plain.get_ylim()[1] >= 1.85 and not any("off the scale" in t.get_text() for t in plain.texts)


def test_wins_plot_has_no_win_share_panel_for_a_value_every_rank_shares(synthetic):
    run = read_run(synthetic)

    def titles(figure) -> list[str]:
        return [ax.get_title() for ax in figure.axes]

    assert titles(analysis.wins_figure(run))[2:] == ["win share against alpha", "win share against eta"]
    one_eta = analysis.wins_figure(dataclasses.replace(run, eta=np.full(3, 1e-3)))
    assert "win share against eta" not in titles(one_eta) and "win share against alpha" in titles(one_eta)
    assert "eta = 0.001 on every rank (no win-share panel)" in one_eta._suptitle.get_text()
    both = analysis.wins_figure(dataclasses.replace(run, alpha=np.full(3, 1e-4), eta=np.full(3, 1e-3)))
    assert titles(both) == ["wins per rank (share of decided iterations)", "winner over time"]


def test_reference_curve_is_drawn_on_the_learning_curve_and_compare_plots(synthetic, tmp_path):
    curve = tmp_path / "ars-seed0.csv"
    curve.write_text(
        "iteration,score,seconds\n1,2.5,0.1\n2,4.0,0.2\n3,,0.3\n9,8.0,0.4\n"
    )  # 9: beyond the run, not drawn
    reference = analysis.read_reference(curve)
    assert (
        reference.label == "ars-seed0" and reference.iteration.tolist() == [1, 2, 3, 9] and np.isnan(reference.score[2])
    )
    run = read_run(synthetic)
    lines = {line.get_label(): line for line in analysis.learning_curve_figure(run, reference).axes[0].get_lines()}
    assert lines["ars-seed0"].get_xdata().tolist() == [1, 2, 3] and lines["ars-seed0"].get_linestyle() == "--"
    compare = analysis.compare_figure(analysis.read_runs([synthetic, synthetic]), reference).axes[0]
    assert "ars-seed0" in [text.get_text() for text in compare.get_legend().get_texts()]
    out = tmp_path / "out"
    assert main(["analyze", str(synthetic), "--reference", str(curve), "--out", str(out)]) == 0
    assert (out / "learning_curve.png").stat().st_size > 0


def test_a_bad_reference_curve_gives_one_message_naming_the_file_and_the_problem(synthetic, tmp_path, capsys):
    files = {
        "nowhere.csv": (None, "does not exist"),
        "no_score.csv": ("iteration,return\n1,2\n", "has no column 'score' (its header is iteration, return)"),
        "empty.csv": ("", "has no column 'iteration' (the file is empty)"),
        "header_only.csv": ("iteration,score\n", "has a header but no rows"),
        "word.csv": ("iteration,score\n1,2\n2,lots\n", "line 3: the score 'lots' is not a number"),
        "no_iteration.csv": ("iteration,score\n,2\n", "line 2: the iteration '' is not a number"),
        "binary.csv": (b"\x89PNG\r\n\x1a\n\xff\xfe", "cannot be read as CSV text"),
    }
    for name, (text, words) in files.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text)
        assert main(["analyze", str(synthetic), "--reference", str(path), "--out", str(tmp_path / "out")]) == 2, name
        error = capsys.readouterr().err
        assert (
            error.startswith("mpiswim analyze: reference curve")
            and f"'{path}'" in error
            and words in error
            and "Fix:" in error
        ), (name, error)
        assert error.count("\n") == 1, error
    assert not (tmp_path / "out").exists()  # nothing written


def test_analyze_help_documents_the_reference_option(capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    assert "--reference CURVE.csv" in capsys.readouterr().out


def bad_files(tmp_path: Path, synthetic: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1, 2, 3]
    no_timings = tmp_path / "no_timings.h5"
    shutil.copy(synthetic, no_timings)
    with h5py.File(no_timings, "a") as f:
        del f["pool/timings"]
    return {
        "missing": (tmp_path / "nowhere.h5", "does not exist"),
        "a directory": (tmp_path, "is a directory"),
        "not hdf5": (text, "not a readable HDF5 file"),
        "not a checkpoint": (foreign, "not an mpiswim checkpoint"),
        "missing dataset": (no_timings, "not an intact mpiswim checkpoint"),
    }


def test_bad_input_gives_one_message_naming_file_and_fix(synthetic, tmp_path, capsys):
    for kind, (path, words) in bad_files(tmp_path, synthetic).items():
        assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2, kind
        error = capsys.readouterr().err
        assert error.startswith("mpiswim analyze:") and words in error and str(path) in error and "Fix:" in error, (
            kind,
            error,
        )
        assert error.count("\n") == 1, error


@pytest.mark.slow
def test_bad_input_from_the_real_command_line_exits_2_without_traceback(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not HDF5")
    result = subprocess.run(
        [sys.executable, "-m", "mpiswim.cli", "analyze", str(path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(path) in result.stderr


def live_config(iterations: int) -> str:
    """The tiny config of tests/test_mpi.py, named "live", with T = 60 and `iterations` iterations."""
    from test_mpi import TINY_CONFIG

    return apply_overrides(
        TINY_CONFIG.format(alpha="1e-4"), ['run.name="live"', f"run.iterations={iterations}", "env.T=60"]
    )


# Rank 0 of the live run: after writing iteration k of GATES it waits (at most 120 s) until the reader has written
# go-k, so the reader sees the run at those stages however the two are scheduled on a loaded machine.
GATED_WRITER = """\
import sys, time
from pathlib import Path
from mpiswim import train
from mpiswim.cli import main

GATES = {gates}
real_write = train.write_checkpoint

def gated_write(writer, cfg, state, *args, **kwargs):
    written = real_write(writer, cfg, state, *args, **kwargs)
    if state.iteration in GATES:
        until = time.monotonic() + 120
        while not Path(f"go-{{state.iteration}}").exists() and time.monotonic() < until:
            time.sleep(0.01)
    return written

train.write_checkpoint = gated_write
sys.exit(main(sys.argv[1:]))
"""
GATES = (5, 10, 15, 20)


@pytest.mark.slow
def test_reading_while_a_real_run_writes_neither_fails_nor_disturbs_it(tmp_path):
    """A 2-rank run rewrites its checkpoint every iteration while we read it as fast as we can,
    sometimes holding the file open across the writer's appends and its final rename. Every read must
    succeed, see a complete and growing run, and the run must finish normally with every iteration on
    disk. At the GATES rank 0 waits for the reader (a bound on events, not on how fast either runs):
    the reader sees those stages and holds the file open while the writer goes on from each."""
    iterations = 25
    (tmp_path / "live.toml").write_text(live_config(iterations))
    (tmp_path / "driver.py").write_text(GATED_WRITER.format(gates=GATES))
    launcher = Path(sys.executable).with_name("mpiexec")
    launcher = str(launcher) if launcher.exists() else shutil.which("mpiexec")
    if launcher is None:
        pytest.fail("no mpiexec found: run the tests through `make test`, which installs MPI")
    out = tmp_path / "live.h5"
    command = [launcher, "-n", "2", sys.executable, "driver.py", *train_args("live.toml", out)]
    env = environment()
    job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, reads, held = [], 0, 0

    def hold(iterations_read: int, release: Path | None = None) -> None:
        """Keep a handle open while the writer appends (and at the end renames a compacted file over it)."""
        with h5py.File(out, "r", locking=False) as handle:
            if release is not None:
                release.write_text("")  # the writer goes on while we hold the file
            time.sleep(0.15)
            assert handle["pool/scores"].shape[0] >= iterations_read and handle["commit"].shape == (2,)

    try:
        deadline = time.monotonic() + 240
        while job.poll() is None:
            assert time.monotonic() < deadline, "the MPI run did not finish in time"
            if not out.exists():
                time.sleep(0.02)
                continue
            run = read_run(out)  # any exception here fails the test
            assert (
                run.scores.shape == (run.iterations, 2)
                and np.isfinite(analysis.learning_curve(run)["best_score"]).all()
            )
            assert run.in_progress or run.iterations == iterations  # the job holds its file until the end
            seen.append(run.iterations)
            reads += 1
            gate = tmp_path / f"go-{run.iterations}"
            if run.iterations in GATES and not gate.exists():
                hold(run.iterations, release=gate)
                held += 1
            elif reads % 5 == 0:
                hold(run.iterations)
                held += 1
    finally:
        if job.poll() is None:
            job.kill()
        stdout, stderr = job.communicate(timeout=30)
    assert job.returncode == 0, stderr
    assert "done: 25 iterations" in stdout
    assert seen == sorted(seen) and set(GATES) <= set(seen), seen  # read at every gate, never going backwards
    assert held >= len(GATES), (reads, held)
    print(f"{reads} reads, {held} with the file held open, {len(set(seen))} stages seen")  # shown by pytest -s
    final = read_run(out)
    assert final.iterations == iterations and not final.in_progress
    assert not list(tmp_path.glob(".live.h5.*"))  # no temporary file left behind


@pytest.mark.parametrize("script", ["learning_curve", "wins", "timings", "compare_runs"])
def test_analysis_scripts_write_their_files(synthetic, tmp_path, script):
    """The thin scripts in analysis/ (their write functions, through the shared script_main)."""
    module = runpy.run_path(str(Path(__file__).parents[1] / "analysis" / f"{script}.py"))
    assert (
        analysis.script_main(
            module["__doc__"],
            module["write"],
            several=script == "compare_runs",
            argv=[str(synthetic), "--out", str(tmp_path)],
        )
        == 0
    )
    expected = {
        "learning_curve": "learning_curve.csv",
        "wins": "wins.md",
        "timings": "timings.md",
        "compare_runs": "compare.md",
    }[script]
    assert (tmp_path / expected).stat().st_size > 0
    assert analysis.script_main("x", module["write"], argv=[str(tmp_path / "missing.h5"), "--out", str(tmp_path)]) == 2


def test_milestones_groups_runs_by_name_and_finds_the_first_iteration_at_the_target(tmp_path):
    """analysis/milestones.py (docs/results.md's tables): winner scores 3, 5, -, 6, 7, 4 reach 6 at iteration 4;
    their ten-iteration mean (3, 4, 4, 4.67, 5.25, 5) reaches 5 at iteration 5; two runs make one group."""
    runs = [str(write_synthetic_checkpoint(tmp_path / f"grp-{seed}.h5")) for seed in (1, 2)]
    milestones = runpy.run_path(str(Path(__file__).parents[1] / "analysis" / "milestones.py"))
    np.testing.assert_allclose(
        milestones["trailing_mean"](np.array([3, 5, np.nan, 6, 7, 4.0])), [3, 4, 4, 14 / 3, 5.25, 5]
    )
    table = milestones["milestone_table"](runs, 6.0)
    group = next(line for line in table.splitlines() if line.startswith("| **grp**"))
    cells = [c.strip() for c in group.strip("|").split("|")]
    assert cells[0] == "**grp** (2 runs)" and cells[5:8] == ["4 ± 0", "not reached", "7.0 ± 0.0"]
    assert (
        milestones["milestone_table"](runs, 5.0).count("| 2 | 5 | 7.0 |") == 2
    )  # per run: 5 first reached at 2, its mean at 5
    assert milestones["main"]([*runs, "--target", "6", "--plot", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_the_notebook_api_gives_history_and_agents_as_arrays(synthetic):
    from synthetic import BEST_MARK, CURRENT_MARK

    run = read_run(synthetic)
    rows = analysis.history(run)
    np.testing.assert_array_equal(rows["iteration"], np.arange(1, 7))
    np.testing.assert_array_equal(rows["winner"], WINNERS)
    for rank in range(3):
        np.testing.assert_array_equal(rows[f"score_rank{rank}"], SCORES[:, rank])
    agents = analysis.read_agents(synthetic)
    assert agents["best_iteration"] == BEST_ROW + 1 and agents["best_score"] == BEST[-1]
    assert np.all(agents["best"].policy == BEST_MARK) and np.all(agents["current"].policy == CURRENT_MARK)


def test_history_frame_is_pandas_or_one_clear_error(synthetic):
    run = read_run(synthetic)
    try:
        import pandas  # noqa: F401  (not a dependency: both outcomes are what a user gets)
    except ImportError:
        with pytest.raises(analysis.AnalysisError, match="pip install pandas"):
            analysis.history_frame(run)
    else:
        frame = analysis.history_frame(run)
        assert list(frame.index) == list(range(1, 7)) and list(frame["winner"]) == WINNERS


@pytest.mark.slow
def test_the_two_runs_example_plots_two_checkpoints(synthetic, tmp_path):
    other = write_synthetic_checkpoint(tmp_path / "other.h5", offset=5.0)
    script = Path(__file__).resolve().parent.parent / "analysis" / "two_runs.py"
    result = subprocess.run(
        [sys.executable, str(script), str(synthetic), str(other), "--out", str(tmp_path / "two.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "two.png").stat().st_size > 10_000
    assert (
        f"best {BEST[-1]:.2f} at iteration {BEST_ROW + 1}" in result.stdout
        and f"best {BEST[-1] + 5:.2f}" in result.stdout
    )


def test_the_learning_curve_counts_environment_steps_and_compare_shows_steps_to_the_best(synthetic, tmp_path):
    """Steps to a score is what papers report: per iteration (every rank's), in total, and up to the best iteration;
    a file written before steps were recorded says "not recorded" rather than a number."""
    from synthetic import steps

    curve = analysis.learning_curve(read_run(synthetic))
    per_iteration = [steps(k).sum() for k in range(6)]  # 330, 630, ..., 1830
    np.testing.assert_array_equal(curve["steps"], per_iteration)
    np.testing.assert_array_equal(curve["total_steps"], np.cumsum(per_iteration))
    old = Path(__file__).parents[1] / "results" / "pool_size" / "checkpoints" / "fast-swimmer-P1-0.h5"  # format 2
    assert np.isnan(analysis.learning_curve(read_run(old))["total_steps"]).all()
    table = analysis.compare_markdown(analysis.read_runs([synthetic, old]))
    assert "| steps to best |" in table and "| 5 | 4,650 |" in table and "| not recorded |" in table, table


def two_configs(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Two seeds of the default config (the second with twice the steps per iteration) and three of a variant with
    other step sizes, one of them 4 iterations long."""
    default = [
        write_synthetic_checkpoint(tmp_path / f"default-{seed}.h5", settings={"run.seed": seed}, step_factor=seed + 1)
        for seed in (0, 1)
    ]
    variant = [
        write_synthetic_checkpoint(
            tmp_path / f"variant-{seed}.h5",
            rows=4 if seed == 2 else 6,
            offset=10.0 * seed,
            settings={"run.seed": seed, "run.name": '"variant"', "ranks.alpha": [1e-4, 1e-3, 1e-3]},
        )
        for seed in (0, 1, 2)
    ]
    return default, variant


def test_runs_are_grouped_by_config_and_averaged_only_within_a_group(tmp_path):
    default, variant = two_configs(tmp_path)
    runs = analysis.read_runs([default[0], variant[0], default[1], variant[1], variant[2]])
    groups = analysis.group_runs(runs)
    assert [(g.name, [r.path for r in g.runs]) for g in groups] == [
        ("swimmer-default", default),
        ("variant", variant),
    ]
    assert [g.label for g in groups] == ["swimmer-default (2 runs)", "variant (3 runs)"]
    stats = analysis.compare_runs(runs)
    rows = stats["group"] == "variant"
    assert stats["iteration"][rows].tolist() == [1, 2, 3, 4, 5, 6] and stats["runs"][rows].tolist() == [3] * 4 + [2] * 2
    np.testing.assert_allclose(stats["best_mean"][rows][:4], np.array(BEST[:4]) + 10.0)  # offsets 0, 10, 20
    np.testing.assert_allclose(stats["best_mean"][~rows], BEST)  # the default's seeds alone: offsets 0 and 0
    # the only real difference between the groups is named; seed, name and length are not
    assert analysis.run_differences(runs) == [
        "the runs differ in the config setting alpha: "
        + ", ".join(
            f"{p} has {a}"
            for p, a in zip(
                [default[0], variant[0], default[1], variant[1], variant[2]],
                ["(1e-05, 0.0001, 0.0001)", "(0.0001, 0.001, 0.001)", "(1e-05, 0.0001, 0.0001)"]
                + ["(0.0001, 0.001, 0.001)"] * 2,
                strict=True,
            )
        )  # fmt: skip
    ]
    table = analysis.compare_markdown(runs)
    assert "| swimmer-default | range of 2 runs | 3 | 6 |" in table
    assert "| variant | 95% CI, n = 3 | 3 | 4-6 |" in table
    assert "| variant-2 | variant |" in table


def test_the_same_step_size_on_every_rank_is_no_difference_whatever_the_pool_size(synthetic):
    run = read_run(synthetic)
    four = dataclasses.replace(run, world_size=4, settings={**run.settings, "eta": (1e-3,) * 4})
    three = dataclasses.replace(run, settings={**run.settings, "eta": (1e-3,) * 3})
    assert analysis.run_differences([three, four]) == [
        f"the runs differ in pool size P: {synthetic} has 3, {synthetic} has 4"
    ]  # no eta line: 1e-3 on every rank in both
    assert len(analysis.group_runs([three, four])) == 2  # other pool sizes are other configs


def test_history_has_steps_and_the_cost_of_every_iteration(synthetic):
    rows = analysis.history(read_run(synthetic))
    assert rows["steps"].tolist() == [330, 630, 930, 1230, 1530, 1830]
    assert rows["total_steps"][-1] == 6480
    # synthetic timings: ranks busy 1.0 + 0.5 + 0.4 (rank 0), 1.1 + 0.5 + 0.2, 1.2 + 0.5 + 0.0; rank 0 writes 0.05 s
    np.testing.assert_allclose(rows["wall_seconds"], 1.9 + 0.05)
    np.testing.assert_allclose(rows["cpu_seconds"], 1.9 + 1.8 + 1.7 + 0.05)
    np.testing.assert_allclose(rows["total_wall_seconds"], 1.95 * np.arange(1, 7))
    np.testing.assert_allclose(rows["total_cpu_seconds"], 5.45 * np.arange(1, 7))


def test_compare_on_a_steps_axis_takes_each_run_at_its_own_cost(tmp_path):
    default, _ = two_configs(tmp_path)
    runs = analysis.read_runs(default)
    stats = analysis.compare_runs(runs, "steps")
    assert list(stats)[:3] == ["group", "total_steps", "runs"]
    totals = np.cumsum(300 * np.arange(1, 7) + 30)  # 330, 960, ...: seed 0; seed 1 used twice the steps
    assert stats["total_steps"].tolist() == sorted(set(totals) | set(2 * totals))
    at = dict(zip(stats["total_steps"].tolist(), stats["best_mean"].tolist(), strict=True))
    # at 960 steps seed 0 has done iteration 2 (best 5), seed 1 only iteration 1 (660 steps: best 3)
    assert at[960] == pytest.approx(4.0)
    # past seed 0's last point (6480 steps) only seed 1 counts
    runs_at = dict(zip(stats["total_steps"].tolist(), stats["runs"].tolist(), strict=True))
    assert runs_at[6480] == 2 and runs_at[2 * 6480] == 1
    assert analysis.common_end(runs, "steps") == 6480


def test_a_run_without_recorded_steps_cannot_be_drawn_against_steps(synthetic, tmp_path, capsys):
    old = tmp_path / "old.h5"
    shutil.copy(synthetic, old)
    run = dataclasses.replace(read_run(old), steps=np.full((6, 3), -1))
    with pytest.raises(analysis.AnalysisError, match=r"old.h5' has no environment steps.*Fix: use --x iterations"):
        analysis.x_values(run, "steps")
    with pytest.raises(SystemExit) as stopped:
        main(["analyze", str(synthetic), "--x", "hours", "--out", str(tmp_path / "o")])
    assert stopped.value.code == 2 and "invalid choice: 'hours'" in capsys.readouterr().err


def test_the_win_table_gives_each_rank_its_share_of_new_bests(synthetic):
    rows = analysis.win_table(read_run(synthetic))
    # new bests at iterations 1 (rank 1), 2 (rank 0), 4 (rank 1), 5 (rank 0); rank 2's win at 6 improved nothing
    assert [(r.wins, r.new_bests, r.new_best_share) for r in rows] == [(2, 2, 0.5), (2, 2, 0.5), (1, 0, 0.0)]
    text = analysis.wins_markdown(read_run(synthetic))
    assert "| rank | alpha | eta | wins | share | new bests | share of new bests |" in text
    assert "| 2 | 0.0001 | 0.001 | 1 | 20.0% | 0 | 0.0% |" in text
    assert "Most new bests: rank 0 (alpha 1e-05, eta 0.0001), 2 of 4 (50%)." in text


@pytest.mark.slow  # analyze of five runs: 17 figures
def test_analyze_draws_one_curve_per_config_group_on_a_steps_axis(tmp_path, capsys):
    default, variant = two_configs(tmp_path)
    out = tmp_path / "out"
    assert main(["analyze", *map(str, default + variant), "--x", "steps", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"config group swimmer-default (2 runs): {default[0]}, {default[1]}" in captured.out
    assert "warning" not in captured.err and "length" not in captured.err
    with open(out / "compare.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["group"] for row in rows} == {"swimmer-default", "variant"} and "total_steps" in rows[0]
    figure = analysis.compare_figure(analysis.read_runs(default + variant), x_axis="steps")
    legend = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    assert legend == [
        "swimmer-default (2 runs): mean",
        "swimmer-default: range of 2 runs",
        "variant (3 runs): mean",
        "variant: 95% CI, n = 3",
        "every run has data up to here",
    ]
    assert figure.axes[0].get_xlabel().startswith("environment steps")
