"""Videos: which stored agent --iteration selects, frames that show a moving body (headless
offscreen rendering), .gif and .mp4 files, and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import BEST, BEST_MARK, BEST_ROW, CURRENT_MARK, write_synthetic_checkpoint

from mpiswim import render
from mpiswim.analysis import AnalysisError
from mpiswim.cli import main
from mpiswim.policy import initial_agent


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("render") / "synthetic.h5")


def test_iteration_selects_a_stored_agent_and_refuses_the_others(synthetic):
    best = render.load_agent(synthetic)
    assert (best.iteration, best.kind, best.score) == (BEST_ROW + 1, "best", BEST[-1])
    assert np.all(best.agent.policy == BEST_MARK) and (best.env_id, best.features, best.T) == (
        "Swimmer-v5",
        "signed",
        500,
    )
    last = render.load_agent(synthetic, 6)
    assert last.kind == "last" and np.all(last.agent.policy == CURRENT_MARK) and last.score == 4.0
    initial = render.load_agent(synthetic, 0)
    assert (
        initial.kind == "initial"
        and not initial.agent.policy.any()
        and initial.agent.policy.shape == best.agent.policy.shape
    )
    with pytest.raises(
        AnalysisError, match=r"does not store the agent of iteration 3.*Fix: use --iteration 0 or 5 or 6"
    ):
        render.load_agent(synthetic, 3)
    for k in (7, -1):
        with pytest.raises(
            AnalysisError, match=rf"--iteration {k} is out of range: '.*synthetic.h5' has iterations 1..6"
        ):
            render.load_agent(synthetic, k)


def is_body(frame: np.ndarray) -> np.ndarray:
    """Pixels of the swimmer's orange capsules (rgb 0.8, 0.6, 0.4): red clearly above blue."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return (r - b > 60) & (r > g) & (g > b)


def test_frames_are_not_blank_and_the_body_moves():
    from mpiswim.env import make_task

    task = make_task("Swimmer-v5", "signed", fast=False)
    renderer = render.make_renderer(task.env.model, 160, 120)
    camera = render.tracking_camera(task.env.model)
    film = render.Film()
    agent = initial_agent(task.obs_dim, task.action_dim, "signed")  # uniform random actions: the joints flail
    frames, positions = [], []
    try:
        for frame in render.film_episode(task, agent, 12, np.random.default_rng(1), renderer, camera, film, every=3):
            frames.append(frame)
            positions.append(film.position)  # the film keeps only the latest position (and the first)
    finally:
        renderer.close()
    assert len(frames) == film.frames == 5 and film.steps == 12  # the start state and every 3rd step
    for frame in frames:
        assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
        assert frame.std() > 20 and len(np.unique(frame.reshape(-1, 3), axis=0)) > 50  # not blank, not one colour
        assert is_body(frame).sum() > 100  # the swimmer is in the picture
    masks = [is_body(f) for f in frames]
    assert all(
        (a ^ b).sum() > 20 for a, b in zip(masks, masks[1:], strict=False)
    )  # its shape on screen changes every frame
    assert len({tuple(np.round(p, 6)) for p in positions}) == len(frames)  # and its centre of mass moves
    assert np.array_equal(film.start, positions[0]) and film.distance == pytest.approx(
        np.linalg.norm(positions[-1] - positions[0])
    )


def test_render_writes_a_gif_and_an_mp4(synthetic, tmp_path, capsys):
    from PIL import Image

    gif = tmp_path / "swimmer.gif"
    assert main(["render", str(synthetic), "--out", str(gif), "--steps", "8", "--size", "96x64"]) == 0
    with Image.open(gif) as image:
        assert (
            image.size == (96, 64) and image.n_frames == 5 and image.info["duration"] == 80
        )  # every 2nd step of 0.04 s
        image.seek(4)
        assert np.asarray(image.convert("RGB")).std() > 20
    printed = capsys.readouterr().out
    assert (
        "the best agent (after iteration 5, score 7.00 in the run)" in printed and "sample actions" in printed
    )  # as the run evaluated

    import imageio_ffmpeg

    mp4 = tmp_path / "swimmer.mp4"
    assert (
        main(
            [
                "render",
                str(synthetic),
                "--out",
                str(mp4),
                "--iteration",
                "0",
                "--steps",
                "6",
                "--size",
                "96x64",
                "--action",
                "mean",
            ]
        )
        == 0
    )
    reader = imageio_ffmpeg.read_frames(str(mp4))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(64, 96, 3) for f in reader]
    assert meta["size"] == (96, 64) and meta["fps"] == 25 and len(frames) == 7 and frames[-1].std() > 20
    printed = capsys.readouterr().out
    assert "the initial agent (after iteration 0)" in printed and "mean actions" in printed


def test_render_acts_as_the_run_evaluated_unless_told(tmp_path):
    """A run scored with the Beta mean is filmed with the Beta mean; --action sample overrides."""
    run = write_synthetic_checkpoint(tmp_path / "mean.h5", evaluation_action="mean")
    assert render.load_agent(run).evaluation_action == "mean"
    by_default = render.render_video(run, tmp_path / "a.gif", steps=4, size=(48, 32))
    told = render.render_video(run, tmp_path / "b.gif", steps=4, size=(48, 32), action="sample")
    assert (by_default.action, told.action) == ("mean", "sample")
    # the best agent's shapes are all equal (BEST_MARK), so its mean action is the middle of the range every step,
    # while draws differ: the two films' returns differ
    assert by_default.film.episode_return != told.film.episode_return


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--out", "x.avi"], "unsupported video type '.avi'"),
        (["--out", "x.gif", "--iteration", "99"], "--iteration 99 is out of range"),
        (["--out", "x.gif", "--iteration", "2"], "does not store the agent of iteration 2"),
        (["--out", "x.gif", "--steps", "0"], "--steps 0: must be at least 1"),
        (["--out", "x.gif", "--steps", "200000"], "--steps 200000: more than 100,000 steps"),
        (["--out", "x.gif", "--size", "big"], "--size 'big'"),
    ],
)
def test_bad_render_input_gives_one_message(synthetic, tmp_path, capsys, args, words):
    args = [a if a not in ("x.avi", "x.gif") else str(tmp_path / a) for a in args]
    assert main(["render", str(synthetic), *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mpiswim render:") and words in error and "Fix:" in error and error.count("\n") == 1, error


def test_render_of_a_file_that_is_not_a_checkpoint_names_it(tmp_path, capsys):
    path = tmp_path / "notes.h5"
    path.write_text("hello")
    assert main(["render", str(path), "--out", str(tmp_path / "x.gif")]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "not a readable HDF5 file" in error


@pytest.mark.parametrize("name", ["long.gif", "long.mp4"])
def test_frames_are_streamed_to_the_file_not_kept(tmp_path, name):
    """Memory while writing does not grow with the number of frames: 400 frames of 18 kB each would be 7 MB if kept."""
    import tracemalloc

    def frames(count: int):
        rng = np.random.default_rng(0)
        for _ in range(count):
            yield rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)

    tracemalloc.start()
    try:
        render.write_video(frames(400), tmp_path / name, 25.0, (96, 64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    if name.endswith(".gif"):
        from PIL import Image

        with Image.open(tmp_path / name) as image:
            assert image.n_frames == 400 and image.info["loop"] == 0


def test_render_shows_its_progress_in_a_log(synthetic, tmp_path, capsys, monkeypatch):
    """stderr is not a terminal here (captured): progress comes as plain lines, the last one at 100%."""
    from mpiswim import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)  # a line at every update, as a long render gives one every 10 s
    assert (
        main(["render", str(synthetic), "--out", str(tmp_path / "swimmer.gif"), "--steps", "8", "--size", "48x32"]) == 0
    )
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("render swimmer.gif: 8/8 steps (100%)"), lines
    assert all(line.startswith("render swimmer.gif: ") and "\r" not in line for line in lines)


@pytest.mark.parametrize("env_id", ["Swimmer-v5", "Ant-v5"])
def test_the_film_is_the_episode_training_runs_compiled_or_not(env_id):
    """Compiled steps between frames draw the same frames as the per-step loop, and the filmed return is the one
    run_episode gets for the same stream (drawing reads a copy of the state, so filming changes nothing).
    """
    from mpiswim.env import make_task, run_episode

    films = []
    for fast in (True, False):
        task = make_task(env_id, "linear", fast=fast)
        assert task.compiled == fast
        agent = initial_agent(task.obs_dim, task.action_dim, "linear")
        agent.policy[:] = np.random.default_rng(3).normal(0.0, 0.05, agent.policy.shape)
        renderer = render.make_renderer(task.env.model, 48, 32)
        film = render.Film()
        try:
            frames = list(
                render.film_episode(
                    task, agent, 60, np.random.default_rng(1), renderer, render.tracking_camera(task.env.model), film,
                    every=7,
                )
            )  # fmt: skip
        finally:
            renderer.close()
        episode_return, _ = run_episode(task, agent, np.random.default_rng(1), 60)
        assert film.episode_return == pytest.approx(episode_return, rel=1e-12, abs=1e-12)
        films.append((film.steps, film.frames, np.array(frames)))
    (fast_steps, fast_count, fast_frames), (slow_steps, slow_count, slow_frames) = films
    assert fast_steps == slow_steps and fast_count == slow_count == len(fast_frames)
    np.testing.assert_array_equal(fast_frames, slow_frames)
