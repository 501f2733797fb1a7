"""Videos of a trained agent: one episode filmed with MuJoCo's offscreen renderer.

`mpiswim render RUN.h5 --out swimmer.mp4|swimmer.gif` runs one episode of an
agent stored in the checkpoint and films it with `mujoco.Renderer` and a
tracking camera that follows the body's centre of mass, so a swimmer never
leaves the picture. It needs no display: importing this module sets
`MUJOCO_GL=egl` (OpenGL through EGL; Mesa's software renderer works on a
machine without a GPU) unless the variable is already set, e.g. to `osmesa`.
MuJoCo reads the variable once, when it is first imported, so import this
module before anything that imports mujoco (gymnasium, `mpiswim.env`), or set
MUJOCO_GL in the environment. (`mpiswim` itself does not set it: a MUJOCO_GL
whose libraries are missing can make `import mujoco` fail, and training
must never depend on OpenGL.)

Which agent: the checkpoint keeps three agents, so `--iteration K` can mean
the agent the pool held after iteration K only for
- K = 0: the initial agent A_0 (policy zero: uniform random actions),
- K = the best iteration: `/agent/best`, the run's result (the default),
- K = the last iteration: `/agent/current`, what a resume starts from.
Other iterations' agents are not stored (one Swimmer agent with the signed
coding is 92 kB: a 400-iteration run would carry 37 MB of them), so asking
for one is an error that names the iterations that can be rendered.

Actions: by default the film acts as the run's evaluation did (`[pool]
evaluation_action`), so it shows the agent whose score the checkpoint
records: `sample` draws each action from the policy's Beta distributions,
`mean` takes the mean a/(a+b) of each Beta, the policy's deterministic
controller. `--action` chooses either for any run.

Writing: both types go through imageio-ffmpeg's bundled ffmpeg, streamed
frame by frame, so memory stays the same for 10 steps or MAX_STEPS: .mp4 as
H.264, .gif with a 64-colour palette made for each frame (ffmpeg's palettegen
and paletteuse filters). A progress bar (mpiswim.progress) counts the steps.
Shadows, reflections and the sky box are switched off: with software OpenGL
they cost most of the rendering time and show little.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is first imported in this process (see above)

import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiswim.analysis import AnalysisError, read_checkpoint
from mpiswim.checkpoint import CheckpointError, check_task_fits, pool_record, stored_config
from mpiswim.config import EVALUATION_ACTIONS, MAX_T, Config, ConfigError
from mpiswim.policy import Agent, flat_policy
from mpiswim.progress import progress_bar

VIDEO_TYPES = (".mp4", ".gif")
DEFAULT_SIZE = {".mp4": (480, 360), ".gif": (320, 240)}
DEFAULT_EVERY = {".mp4": 1, ".gif": 2}
MAX_STEPS = (
    MAX_T  # the longest episode a config may ask for ([env] T); frames are streamed, so this bounds time, not memory
)
# ffmpeg filters for a GIF: a 64-colour palette computed from each frame alone, so nothing waits for the whole video.
GIF_FILTER = "split[a][b];[a]palettegen=max_colors=64:stats_mode=single[p];[b][p]paletteuse=new=1:dither=none"


@dataclass(frozen=True)
class StoredAgent:
    """An agent read from a checkpoint, with what is known about it."""

    agent: Agent
    iteration: int  # the pool held this agent after this iteration (1-based); 0 = the initial agent
    kind: str  # "initial", "best" or "last" (or "best and last")
    score: float | None  # its evaluation score in the run, if recorded
    env_id: str
    features: str
    T: int
    observation_scale: float | tuple[float, ...] = 1.0
    evaluation_action: str = "sample"  # how the run scored its branches: Beta draws or the Beta mean
    cfg: Config | None = None  # the run's config, for its feature map


def load_agent(path: str | Path, iteration: int | None = None) -> StoredAgent:
    """The agent after `iteration` (1-based; 0 = initial; None = the best agent), or an AnalysisError.

    Only iteration 0, the best iteration and the last iteration are stored
    (see the module docstring); any other K is refused with a message naming them.
    """
    raw = read_checkpoint(path)
    done = raw.iterations_done
    best, current = raw.best, raw.current
    best_row, best_score = raw.best_iteration, raw.best_score
    try:
        cfg = stored_config(raw.attrs, raw.hyperparameters)
    except ConfigError as error:
        raise AnalysisError(
            f"'{path}': the stored config is not valid here ({error}). Fix: render with the mpiswim version that wrote "
            "the run."
        ) from None
    try:
        check_task_fits(raw, cfg, Path(path))  # as `mpiswim check` does: a registered task that fits the agent
    except CheckpointError as error:
        raise AnalysisError(str(error)) from None

    best_iteration = best_row + 1  # 1-based; 0 when no iteration has a winner yet
    stored = sorted({0, best_iteration, done})
    if iteration is None:
        iteration = best_iteration
    if not 0 <= iteration <= done:
        raise AnalysisError(
            f"--iteration {iteration} is out of range: '{path}' has iterations 1..{done} (0 = the initial agent). "
            f"Fix: use one of the stored agents' iterations {', '.join(map(str, stored))}, or omit --iteration for the "
            "best agent."
        )
    if iteration not in stored:
        raise AnalysisError(
            f"--iteration {iteration}: '{path}' does not store the agent of iteration {iteration}; a checkpoint keeps "
            "only the initial agent (0), "
            f"the best agent (iteration {best_iteration}) and the last iteration's agent ({done}). "
            f"Fix: use --iteration {' or '.join(map(str, stored))}, or omit --iteration for the best agent."
        )

    def last_score() -> float | None:
        last = pool_record(raw.pool, done - 1) if done else None
        if last is None or last.winner < 0 or last.fell_back:
            return (
                None  # after a fallback or an all-degenerate iteration the pool's agent is not that iteration's winner
            )
        return float(last.scores[last.winner])

    if iteration == 0:
        agent, kind, score = (
            Agent(*(np.zeros_like(part) for part in best)),
            "initial",
            None,
        )  # zeros: A_0, and scalers that saw nothing
    elif iteration == best_iteration:
        agent, kind, score = best, "best and last" if iteration == done else "best", best_score
    else:
        agent, kind, score = current, "last", last_score()
    return StoredAgent(
        agent,
        iteration,
        kind,
        score,
        cfg.env_id,
        cfg.features,
        cfg.T,
        cfg.observation_scale,
        cfg.evaluation_action,
        cfg,
    )


@dataclass
class Film:
    """What one filmed episode did (filled in while its frames are drawn)."""

    frames: int = 0
    steps: int = 0
    episode_return: float = 0.0
    degenerate: bool = False  # the policy's Beta shapes broke: the film stops there
    start: np.ndarray | None = None  # (x, y) of the filmed body's centre of mass at the first frame
    position: np.ndarray | None = None  # ... and at the latest frame (only these two are kept: memory stays bounded)

    @property
    def distance(self) -> float:
        """Straight-line distance the body's centre of mass moved from the first frame to the last."""
        return float(np.linalg.norm(self.position - self.start)) if self.frames > 1 else 0.0


def tracking_camera(model, default_config: dict | None = None):
    """A camera that follows the centre of mass of body 1 (the torso: the root of every Gymnasium MuJoCo body).

    Distance and elevation come from the task's own Gymnasium camera settings
    when it has them, otherwise 0.6 times the model's extent and 50 degrees from above.
    """
    import mujoco

    config = default_config or {}
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    camera.trackbodyid = 1
    camera.distance = float(config.get("distance", 0.6 * model.stat.extent))
    camera.elevation = float(config.get("elevation", -50.0))
    camera.azimuth = float(config.get("azimuth", 90.0))
    return camera


def _environment_gl() -> str:
    return os.environ.get("MUJOCO_GL", "").lower().strip()


def mujoco_gl() -> str:
    """The MUJOCO_GL back-end MuJoCo chose when it was first imported, as MuJoCo normalised it.

    MuJoCo keeps it under a private name (`_MUJOCO_GL` of the gl_context
    module its Renderer uses); if no GL module here records it as a string,
    the environment's MUJOCO_GL stands in (then a change of the variable after
    MuJoCo's import goes unnoticed, which costs only the hint in make_renderer's error).
    """
    import mujoco

    renderer_module = sys.modules.get(getattr(getattr(mujoco, "Renderer", None), "__module__", ""))
    for module in (
        getattr(renderer_module, "gl_context", None),
        sys.modules.get("mujoco.rendering.classic.gl_context"),
        sys.modules.get("mujoco.gl_context"),
    ):
        chosen = getattr(module, "_MUJOCO_GL", None)
        if isinstance(chosen, str):
            return chosen
    return _environment_gl()


def make_renderer(model, width: int, height: int):
    """mujoco.Renderer of width x height with shadows, reflections and sky box off, or an AnalysisError."""
    import mujoco

    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    try:
        renderer = mujoco.Renderer(model, height, width)
    except Exception as error:  # the GL back-ends raise several types
        chosen = mujoco_gl()
        early = (
            f" (MuJoCo was imported with MUJOCO_GL={chosen!r}, before mpiswim could choose EGL)"
            if chosen != _environment_gl()
            else ""
        )
        raise AnalysisError(
            f"cannot start MuJoCo's offscreen renderer with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}{early} "
            f"({error.__class__.__name__}: {error}). "
            "Fix: on a machine without a display set MUJOCO_GL=egl (Mesa's EGL: Debian packages libegl1 and "
            "libgl1-mesa-dri) "
            "or MUJOCO_GL=osmesa (Debian package libosmesa6) in the environment before starting."
        ) from None
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        renderer.scene.flags[flag] = False
    return renderer


def film_episode(
    task,
    agent: Agent,
    steps: int,
    rng: np.random.Generator,
    renderer,
    camera,
    film: Film,
    action: str = "sample",
    every: int = 1,
) -> Iterator[np.ndarray]:
    """Run one episode of at most `steps` steps and yield RGB frames (height, width, 3) uint8.

    The first frame is the start state, then one frame after every `every`
    steps. The per-step policy is the one training uses (one feature block,
    Beta shapes exp(theta . phi)); `film` collects the return, the steps and
    the body's positions as the frames are drawn.
    """
    import mujoco

    from mpiswim.compiled import compiled_steps
    from mpiswim.env import Trajectory, policy_action

    model, data = task.env.model, task.env.data
    low, span = task.low, task.high - task.low
    policy = flat_policy(agent)
    phi, x, shapes = np.ones(task.obs_dim + 1), np.empty(task.action_dim), np.empty(2 * task.action_dim)
    scene = mujoco.MjData(model)  # drawn from a copy: the episode's own data stays exactly as training steps it

    def frame() -> np.ndarray:
        scene.qpos[:], scene.qvel[:] = data.qpos, data.qvel
        mujoco.mj_forward(model, scene)  # positions of the state just reached (mj_step leaves them a substep behind)
        renderer.update_scene(scene, camera)
        film.frames += 1
        film.position = scene.subtree_com[1, :2].copy()
        if film.start is None:
            film.start = film.position
        return renderer.render()

    obs, _ = task.env.reset(seed=int(rng.integers(2**31)))
    yield frame()
    if task.compiled:  # compiled steps between frames (mpiswim.compiled): the numbers training gets
        obs = np.array(obs, dtype=np.float64)
        scratch = Trajectory.empty(every, task.obs_dim, task.action_dim)
        while film.steps < steps:
            chunk = min(every - film.steps % every, steps - film.steps)
            total, ran, degenerate, terminated = compiled_steps(task, agent, obs, chunk, action == "mean", scratch, rng)
            film.steps, film.episode_return = film.steps + ran, film.episode_return + float(total)
            if degenerate:
                film.degenerate = True
                return
            yield frame()
            if terminated:
                return
        return
    for t in range(steps):
        obs = np.ascontiguousarray(obs, dtype=np.float64)
        _, usable = policy_action(task, agent, policy, obs, phi, x, action == "mean", rng, shapes)
        if not usable:
            film.degenerate = True
            return
        obs, reward, terminated = task.step(low + x * span)
        film.steps, film.episode_return = t + 1, film.episode_return + float(reward)
        if terminated or (t + 1) % every == 0 or t + 1 == steps:
            yield frame()
        if terminated:
            return


def write_video(frames: Iterator[np.ndarray], out: Path, fps: float, size: tuple[int, int]) -> None:
    """Stream `frames` to ffmpeg (imageio-ffmpeg's bundled one): H.264 for .mp4, an endlessly looping GIF for .gif.

    Each frame goes to ffmpeg as soon as it is drawn, so only one frame is in memory at a time.
    """
    import imageio_ffmpeg

    if out.suffix.lower() == ".gif":
        options = {
            "codec": "gif",
            "pix_fmt_out": "pal8",
            "quality": None,
            "macro_block_size": 1,
            "output_params": ["-filter_complex", GIF_FILTER, "-loop", "0"],
        }
    else:
        options = {"codec": "libx264", "quality": 7, "macro_block_size": 8}
    writer = imageio_ffmpeg.write_frames(str(out), size, fps=fps, ffmpeg_log_level="error", **options)
    writer.send(None)
    try:
        for f in frames:
            writer.send(np.ascontiguousarray(f))
    finally:
        writer.close()


def parse_size(text: str) -> tuple[int, int]:
    """'480x360' -> (480, 360), or an AnalysisError."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not match or not (16 <= int(match[1]) <= 4096 and 16 <= int(match[2]) <= 4096):
        raise AnalysisError(
            f"--size {text!r}: expected WIDTHxHEIGHT in pixels, each 16..4096. Fix: e.g. --size 480x360."
        )
    width, height = int(match[1]), int(match[2])
    return width + width % 2, height + height % 2  # H.264 needs even sizes


@dataclass(frozen=True)
class Rendered:
    """What `render_video` wrote."""

    out: Path
    stored: StoredAgent
    film: Film
    fps: float
    size: tuple[int, int]
    every: int
    action: str  # "sample" or "mean": how the film chose its actions


def check_video_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in VIDEO_TYPES:
        raise AnalysisError(
            f"--out {out}: unsupported video type {out.suffix or '(none)'!r}. Fix: end the file name in .mp4 or .gif."
        )
    return out


def render_video(
    checkpoint: str | Path,
    out: str | Path,
    iteration: int | None = None,
    steps: int | None = None,
    every: int | None = None,
    size: tuple[int, int] | None = None,
    action: str | None = None,
    seed: int = 0,
) -> Rendered:
    """Film one episode of a stored agent into `out` (.mp4 or .gif); see the module docstring."""
    out = check_video_path(out)
    kind = out.suffix.lower()
    if steps is not None and steps < 1:
        raise AnalysisError(f"--steps {steps}: must be at least 1. Fix: e.g. --steps 300.")
    if steps is not None and steps > MAX_STEPS:
        raise AnalysisError(
            f"--steps {steps}: more than {MAX_STEPS:,} steps (the longest episode a run may have). Fix: film at most "
            f"{MAX_STEPS}, e.g. --steps 1000."
        )
    if every is not None and every < 1:
        raise AnalysisError(f"--every {every}: must be at least 1. Fix: --every 1 keeps every step.")
    if action is not None and action not in EVALUATION_ACTIONS:
        raise AnalysisError(f"--action {action!r}: must be one of {', '.join(EVALUATION_ACTIONS)}.")
    stored = load_agent(checkpoint, iteration)
    action = action or stored.evaluation_action
    every = every or DEFAULT_EVERY[kind]
    width, height = size or DEFAULT_SIZE[kind]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AnalysisError(
            f"cannot create the folder of --out {out} ({error.strerror}). Fix: choose a writable path."
        ) from None

    from mpiswim.env import task_for

    task = task_for(stored.cfg)  # compiled steps between frames where the body has them
    expected = (2, task.action_dim, task.obs_dim + 1)
    if stored.agent.policy.shape[1:] != expected:
        raise AnalysisError(
            f"'{checkpoint}': the stored policy has shape {stored.agent.policy.shape}, but {stored.env_id} needs "
            f"(blocks, *{expected}). Fix: use an intact checkpoint."
        )
    renderer = make_renderer(task.env.model, width, height)
    camera = tracking_camera(
        task.env.model, getattr(getattr(task.env, "mujoco_renderer", None), "default_cam_config", None)
    )
    fps = 1.0 / (task.env.dt * every)
    film = Film()
    steps = steps or stored.T
    frames = film_episode(task, stored.agent, steps, np.random.default_rng(seed), renderer, camera, film, action, every)
    bar = progress_bar(steps, f"render {out.name}", "step")
    try:
        write_video(counted(frames, film, bar), out, fps, (width, height))
    except ImportError as error:
        raise AnalysisError(
            f"writing {kind} needs {error.name}, which is not installed. Fix: `make venv` (installs the analysis "
            "extra) or pip install 'mpiswim[analysis]'."
        ) from None
    finally:
        bar.close()
        renderer.close()
        task.env.close()
    return Rendered(out, stored, film, fps, (width, height), every, action)


def counted(frames: Iterator[np.ndarray], film: Film, bar) -> Iterator[np.ndarray]:
    """`frames` unchanged, moving the progress `bar` to the steps filmed so far."""
    for frame in frames:
        bar.update(film.steps - bar.n)
        yield frame


def _every(n: int) -> str:
    """'every step', 'every 2nd step', 'every 3rd step', 'every 4th step', ..."""
    if n == 1:
        return "every step"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"every {n}{suffix} step"


def render_command(args) -> int:
    """The CLI's `mpiswim render RUN.h5 --out FILE.mp4|FILE.gif [--iteration K] [--steps N] ...`."""
    size = parse_size(args.size) if args.size else None
    result = render_video(
        args.checkpoint, args.out, args.iteration, args.steps, args.every, size, args.action, args.seed
    )
    stored, film = result.stored, result.film
    score = f", score {stored.score:.2f} in the run" if stored.score is not None and math.isfinite(stored.score) else ""
    print(
        f"wrote {result.out}: the {stored.kind} agent (after iteration {stored.iteration}{score}), {stored.env_id}, "
        f"{film.steps} steps, {film.frames} frames ({_every(result.every)}, {result.fps:.3g} fps), "
        f"{result.size[0]}x{result.size[1]}, "
        f"{result.action} actions; this episode's return {film.episode_return:.2f}, the body moved {film.distance:.2f} "
        "m"
    )
    if film.degenerate:
        print(
            f"mpiswim render: the agent's Beta shapes broke after {film.steps} steps (degenerate agent); the video "
            "stops there.",
            file=sys.stderr,
        )
    return 0
