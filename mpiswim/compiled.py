"""Compiled episodes for Gymnasium's MuJoCo v5 bodies: the whole step loop in machine code, via numba.

One MuJoCo step costs 10-100 µs; the Python around it (features, Beta draws,
Gymnasium's step, bookkeeping) cost another 30-40 µs. Here one numba function
runs a whole episode: the policy's step (mpiswim.kernels, the same functions
the Python loop and render call), MuJoCo's C `mj_step` called directly with
the task's frame skip, and the observation, reward and termination computed as
Gymnasium's v5 step does, for Swimmer, Hopper, HalfCheetah, Walker2d, Ant and
Humanoid. What differs between the bodies is a `mpiswim.bodies.Body`;
tests/test_bodies.py checks every body against Gymnasium's own step bit for
bit, across resets, terminations and long episodes. The compiled code is
cached on disk (numba `cache=True`), so only the very first run compiles.

The compiled path leans on things MuJoCo and Gymnasium do not promise: the C
library next to the `mujoco` package, `model._address` and `data._address`,
and each body's private weights, ranges and formulas. `usable(env)` is the one
gate: it checks each of these, and once per process and body runs a short
episode both compiled and through Gymnasium's own `env.step` (the self-check).
If anything is missing or differs, the task runs the Python loop and rank 0
prints one warning line: a new release can make training slower, never
silently wrong.
"""

from __future__ import annotations

import glob
import math
import os
import sys
from typing import NamedTuple

import numpy as np

from mpiswim import bodies, kernels
from mpiswim.jit import njit
from mpiswim.policy import Agent, flat_policy


def _load_mujoco():
    """(MuJoCo's C mj_step and mj_rnePostConstraint as numba external functions, None), or (None, None, why not).

    The library must be the one the `mujoco` package itself runs: the file
    named after its version if there is one, and its mj_version() must equal
    the package's (a stale libmujoco.so.* left next to a newer package would
    otherwise step a struct layout it does not know).
    """
    import ctypes

    import llvmlite.binding
    import mujoco
    import numba

    folder = os.path.dirname(mujoco.__file__)
    libraries = sorted(glob.glob(os.path.join(folder, "libmujoco.so*")))
    named = [path for path in libraries if path.endswith(".so." + mujoco.__version__)]
    if named:
        libraries = named
    if len(libraries) != 1:
        return None, None, f"expected one libmujoco.so* in {folder}, found {len(libraries)}"
    version = ctypes.CDLL(libraries[0]).mj_version()
    if version != mujoco.mj_version():
        return (
            None,
            None,
            f"{os.path.basename(libraries[0])} is MuJoCo {version}, the mujoco package is {mujoco.mj_version()}",
        )
    llvmlite.binding.load_library_permanently(libraries[0])
    signature = numba.types.void(numba.types.voidptr, numba.types.voidptr)  # (const mjModel*, mjData*)
    return (
        numba.types.ExternalFunction("mj_step", signature),
        numba.types.ExternalFunction("mj_rnePostConstraint", signature),
        None,
    )


try:
    import numba

    mj_step, mj_rne_post_constraint, _unavailable = _load_mujoco()
except (
    ImportError,
    OSError,
    RuntimeError,
    AttributeError,
) as error:  # no numba, or no loadable libmujoco: the Python loop is used
    numba, mj_step, mj_rne_post_constraint = None, None, None
    _unavailable = f"cannot load numba or libmujoco ({error.__class__.__name__}: {error})"


def available() -> bool:
    """True when compiled episodes can run here (numba and MuJoCo's C library load)."""
    return mj_step is not None


class Physics(NamedTuple):
    """What the compiled episode steps: MuJoCo's structs and numpy views of their arrays (flattened, C order)."""

    model_address: int
    data_address: int
    frame_skip: int
    dt: float
    qpos: np.ndarray  # views of MuJoCo's own data: mj_step updates them in place
    qvel: np.ndarray
    ctrl: np.ndarray
    xpos: np.ndarray  # (nbody * 3,) body positions
    xipos: np.ndarray  # (nbody * 3,) body centres of mass
    body_mass: np.ndarray  # (nbody,) the model's
    cinert: np.ndarray  # (nbody * 10,)
    cvel: np.ndarray  # (nbody * 6,)
    qfrc_actuator: np.ndarray  # (nv,)
    cfrc_ext: np.ndarray  # (nbody * 6,)


class Acting(NamedTuple):
    """How the policy acts: flat_policy(agent), its features and the action bounds (mpiswim.kernels)."""

    policy: np.ndarray  # (blocks, 2A, F)
    scale: np.ndarray  # phi = [1, s / scale] without a running scaler
    signed: bool
    shared_intercept: bool
    mean_action: bool
    low: np.ndarray
    span: np.ndarray


class Scaler(NamedTuple):
    """The running observation scaler the agent carries (state.size == 0: none), updated in place."""

    state: np.ndarray
    refit_every: int
    recency: float


class Record(NamedTuple):
    """The trajectory's arrays, filled step by step for the learning update (mpiswim.env.Trajectory)."""

    blocks: np.ndarray
    phis: np.ndarray
    observations: np.ndarray
    xs: np.ndarray
    rewards: np.ndarray


# --- the body's step, as Gymnasium's v5 step computes it ----------------------


def _sum(values, start, n):
    """values[start:start + n].sum() in numpy's order for n <= 128: pairwise, eight running sums from 8 values up.

    (numpy halves longer arrays first; mpiswim.bodies refuses bodies with sums that long.)
    """
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total += values[i]
        return total
    partial = values[start : start + 8].copy()
    i = 8
    while i < n - n % 8:
        for j in range(8):
            partial[j] += values[start + i + j]
        i += 8
    total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
        (partial[4] + partial[5]) + (partial[6] + partial[7])
    )
    while i < n:
        total += values[start + i]
        i += 1
    return total


def _source(physics, code):
    """The MuJoCo array an observation segment reads (mpiswim.bodies' QPOS..CFRC_EXT)."""
    if code == bodies.QPOS:
        return physics.qpos
    if code == bodies.QVEL:
        return physics.qvel
    if code == bodies.CINERT:
        return physics.cinert
    if code == bodies.CVEL:
        return physics.cvel
    if code == bodies.QFRC_ACTUATOR:
        return physics.qfrc_actuator
    return physics.cfrc_ext


def _clip(value, low, high):
    """np.clip's value: NaN stays NaN."""
    if value < low:
        return low
    if value > high:
        return high
    return value


def _observe(physics, body, obs):
    """obs = the body's observation: its segments of MuJoCo's arrays, each clipped as v5 clips it."""
    at = 0
    for k in range(body.segments.shape[0]):
        values = _source(physics, body.segments[k, 0])
        low, high = body.clips[k, 0], body.clips[k, 1]
        for i in range(body.segments[k, 1], body.segments[k, 2]):
            obs[at] = _clip(values[i], low, high)
            at += 1


def _forward_position(physics, body):
    """The x the forward reward differences: qpos[0], the main body's x, or the mass centre's x (Humanoid)."""
    if body.position == bodies.POSITION_QPOS:
        return physics.qpos[0]
    if body.position == bodies.POSITION_BODY:
        return physics.xpos[3 * body.main_body]
    weighted = 0.0  # np.einsum("b,bj->j", body_mass, xipos)[0]: in body order
    for b in range(physics.body_mass.shape[0]):
        weighted += physics.body_mass[b] * physics.xipos[3 * b]
    return weighted / _sum(physics.body_mass, 0, physics.body_mass.shape[0])


def _healthy(physics, body):
    """The body's is_healthy after the step (v5's comparisons: strict, but Ant's height bounds are inclusive)."""
    qpos = physics.qpos
    if body.healthy == bodies.HEALTHY_PLANAR:
        healthy = body.z_range[0] < qpos[1] < body.z_range[1] and body.angle_range[0] < qpos[2] < body.angle_range[1]
        if body.state_range.shape[0] == 2:  # Hopper: every value of qpos[2:], qvel within the state range
            low, high = body.state_range[0], body.state_range[1]
            for i in range(2, qpos.shape[0]):
                healthy = healthy and low < qpos[i] < high
            for i in range(physics.qvel.shape[0]):
                healthy = healthy and low < physics.qvel[i] < high
        return healthy
    if body.healthy == bodies.HEALTHY_ANT:
        for i in range(qpos.shape[0]):
            if not math.isfinite(qpos[i]):
                return False
        for i in range(physics.qvel.shape[0]):
            if not math.isfinite(physics.qvel[i]):
                return False
        return body.z_range[0] <= qpos[2] <= body.z_range[1]
    if body.healthy == bodies.HEALTHY_HUMANOID:
        return body.z_range[0] < qpos[2] < body.z_range[1]
    return True


def _contact_cost(physics, body, squares):
    """Ant: weight * sum(clip(cfrc_ext)^2); Humanoid: clip(weight * sum(cfrc_ext^2)). squares is scratch space."""
    forces = physics.cfrc_ext
    n = forces.shape[0]
    if body.contact == bodies.CONTACT_CLIPPED_FORCES:
        for i in range(n):
            force = _clip(forces[i], body.contact_range[0], body.contact_range[1])
            squares[i] = force * force
        return body.contact_weight * _sum(squares, 0, n)
    for i in range(n):
        squares[i] = forces[i] * forces[i]
    return _clip(body.contact_weight * _sum(squares, 0, n), body.contact_range[0], body.contact_range[1])


def _body_episode(physics, body, acting, scaler, record, obs, rng, T):
    """Run at most T steps from the observation `obs` (updated in place); record each; return (total reward, steps,
    degenerate, terminated).

    The policy's step is mpiswim.kernels' (the Python loop and render use the same functions). The
    step follows Gymnasium's v5 source for the body: reward = (forward_weight * x velocity +
    healthy reward) - (ctrl_weight * |action|^2 + contact cost), each term only where the body has it,
    then the observation of the new state. The arguments are grouped in named tuples, so a group
    passed in another's place does not compile.
    """
    ctrl = physics.ctrl
    obs_dim, action_dim = obs.shape[0], ctrl.shape[0]
    phi = np.empty(obs_dim + 1)
    phi[0] = 1.0
    shapes = np.empty(2 * action_dim)
    x = np.empty(action_dim)
    squares = np.empty(max(action_dim, physics.cfrc_ext.shape[0]))
    total = 0.0
    for t in range(T):
        kernels.features(obs, acting.scale, scaler.state, scaler.refit_every, scaler.recency, phi)
        block = kernels.feature_block(obs, acting.signed)
        kernels.log_shapes(acting.policy, phi, block, acting.shared_intercept, shapes)
        if not kernels.act(shapes, acting.mean_action, rng, x):
            return total, t, True, False  # exp() would overflow or underflow (or NaN): degenerate branch
        for i in range(action_dim):
            action = acting.low[i] + x[i] * acting.span[i]
            ctrl[i] = action
            squares[i] = action * action
        ctrl_cost = body.ctrl_weight * _sum(squares, 0, action_dim)
        x_before = _forward_position(physics, body)
        for _ in range(physics.frame_skip):
            mj_step(physics.model_address, physics.data_address)
        if body.post_constraint:  # Gymnasium computes cfrc_ext (and cacc, cfrc_int) after every step
            mj_rne_post_constraint(physics.model_address, physics.data_address)
        rewards = body.forward_weight * ((_forward_position(physics, body) - x_before) / physics.dt)
        healthy = _healthy(physics, body)
        if body.healthy != bodies.HEALTHY_ALWAYS:
            rewards = rewards + body.healthy_weight * (1.0 if healthy else 0.0)
        costs = ctrl_cost
        if body.contact != bodies.CONTACT_NONE:
            costs = ctrl_cost + _contact_cost(physics, body, squares)
        reward = rewards - costs

        record.blocks[t] = block
        record.phis[t, :] = phi
        record.observations[t, :] = obs
        record.xs[t, :] = x
        record.rewards[t] = reward
        total += reward
        _observe(physics, body, obs)
        if body.terminate and not healthy:
            return total, t + 1, False, True
    return total, T, False, False


if mj_step is not None:
    _sum, _source, _clip, _observe = (njit(cache=True)(f) for f in (_sum, _source, _clip, _observe))
    _forward_position, _healthy, _contact_cost = (
        njit(cache=True)(f) for f in (_forward_position, _healthy, _contact_cost)
    )
    body_episode = njit(cache=True)(_body_episode)
else:
    body_episode = None


def physics_of(env) -> Physics:
    """The env's MuJoCo structs and views of the arrays the compiled episode reads."""
    model, data = env.model, env.data
    return Physics(
        model_address=model._address,
        data_address=data._address,
        frame_skip=env.frame_skip,
        dt=env.dt,
        qpos=data.qpos,
        qvel=data.qvel,
        ctrl=data.ctrl,
        xpos=data.xpos.reshape(-1),
        xipos=data.xipos.reshape(-1),
        body_mass=model.body_mass,
        cinert=data.cinert.reshape(-1),
        cvel=data.cvel.reshape(-1),
        qfrc_actuator=data.qfrc_actuator,
        cfrc_ext=data.cfrc_ext.reshape(-1),
    )


def acting_of(task, agent: Agent, mean_action: bool) -> Acting:
    """The policy's parameters and the task's features and action bounds, grouped for the compiled episode."""
    return Acting(
        policy=flat_policy(agent),
        scale=task.scale,
        signed=task.sign_weights is not None,
        shared_intercept=task.shared_intercept,
        mean_action=mean_action,
        low=task.low,
        span=task.high - task.low,
    )


def scaler_of(task, agent: Agent) -> Scaler:
    """The agent's running observation scaler with the task's refit settings (an empty state: none)."""
    refit_every, recency = task.normalisation or (1, 1.0)
    return Scaler(state=agent.policy_scaler, refit_every=refit_every, recency=recency)


def compiled_steps(
    task, agent: Agent, obs: np.ndarray, T: int, mean_action: bool, trajectory, noise: np.random.Generator
) -> tuple[float, int, bool, bool]:
    """At most T compiled steps from the env's current state, whose observation `obs` is updated in place.

    Returns (reward summed over the steps, steps run, degenerate, terminated); the steps are
    recorded in trajectory from its first row. Render calls this between frames.
    """
    record = Record(trajectory.blocks, trajectory.phis, trajectory.observations, trajectory.xs, trajectory.rewards)
    total, steps, degenerate, terminated = body_episode(
        physics_of(task.env), task.body, acting_of(task, agent, mean_action), scaler_of(task, agent), record, obs,
        noise, T,
    )  # fmt: skip
    task.steps += steps
    return total, steps, degenerate, terminated


def run_compiled_episode(
    task, agent: Agent, rng: np.random.Generator, T: int, mean_action: bool, trajectory, noise: np.random.Generator
) -> tuple[float, bool]:
    """One compiled episode of at most T steps on the task's env; the same contract as env.run_episode.

    mean_action: take the Beta mean a/(a+b) instead of a draw; the start state comes from rng, the draws from noise.
    """
    observation, _ = task.env.reset(seed=int(rng.integers(2**31)))
    obs = np.array(observation, dtype=np.float64)
    total, steps, degenerate, _ = compiled_steps(task, agent, obs, T, mean_action, trajectory, noise)
    trajectory.length = steps
    return float(total), bool(degenerate)


# --- the guard: may this env take the compiled path? ---------------------------

SELF_CHECK_STEPS = 25
SELF_CHECK_SEED = 20240917  # the self-check's reset seed
SELF_CHECK_SIGNED = 12  # the self-check acts with the signed coding up to this many observation values, else linear
_self_check_results: dict[tuple[str, str], str | None] = {}  # once per process and body: None (passed) or the failure
_warned: set[str] = set()  # the reasons already printed by this process


def _looks_like_a_body(env) -> bool:
    """True for an env Gymnasium names after one of the compiled bodies: those ought to run compiled, so a refusal is
    worth a warning.
    """
    spec_id = str(getattr(getattr(env, "spec", None), "id", "")).split("/")[-1]
    names = {name for _, name in bodies.BODIES}
    prefixes = {name.removesuffix("Env") for name in names}
    return type(env).__name__ in names or any(spec_id.startswith(prefix) for prefix in prefixes)


def _float_vector(value, length: int) -> bool:
    return (
        isinstance(value, np.ndarray)
        and value.dtype == np.float64
        and value.shape == (length,)
        and value.flags.c_contiguous
    )


def _missing(env) -> str | None:
    """What the compiled episode needs from env and cannot find (or finds of the wrong type); None when all is there."""
    import mujoco

    model, data = getattr(env, "model", None), getattr(env, "data", None)
    if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
        return "env.model / env.data are not a mujoco.MjModel / MjData"
    for owner, name in ((model, "model"), (data, "data")):
        address = getattr(owner, "_address", None)
        if not isinstance(address, int) or isinstance(address, bool) or address == 0:
            return f"{name}._address is {type(address).__name__}, not a non-zero int (MuJoCo's private struct address)"
    frame_skip, dt = getattr(env, "frame_skip", None), getattr(env, "dt", None)
    if not isinstance(frame_skip, int) or isinstance(frame_skip, bool) or frame_skip < 1:
        return f"env.frame_skip is {frame_skip!r}, not a positive int"
    if not isinstance(dt, float) or not dt > 0.0:
        return f"env.dt is {dt!r}, not a positive float"
    nbody = model.nbody
    for name, length in (
        ("qpos", model.nq), ("qvel", model.nv), ("ctrl", model.nu), ("qfrc_actuator", model.nv),
        ("xpos", 3 * nbody), ("xipos", 3 * nbody), ("cinert", 10 * nbody), ("cvel", 6 * nbody), ("cfrc_ext", 6 * nbody),
    ):  # fmt: skip
        array = getattr(data, name, None)
        if not isinstance(array, np.ndarray) or not _float_vector(array.reshape(-1), length) or array.base is None:
            return f"data.{name} is not a contiguous float64 view of {length} values"
    if not _float_vector(getattr(model, "body_mass", None), nbody):
        return f"model.body_mass is not a contiguous float64 vector of {nbody}"
    action_space = getattr(env, "action_space", None)
    if getattr(action_space, "shape", None) != (model.nu,) or not (
        np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))
    ):
        return f"the action space {action_space} is not {model.nu} bounded controls"
    return None


def _self_check(env, body: bodies.Body) -> str | None:
    """Run up to SELF_CHECK_STEPS steps compiled, then the same actions through env.step; None if bit for bit equal,
    else the difference.

    The compiled run is a training episode in every respect but its policy:
    fixed varied weights (the signed coding where the observation is small),
    mean actions (so the run draws nothing and the actions it takes are
    recorded), the same types as training passes (so no second specialisation
    is compiled). Both runs start from env.reset(seed=SELF_CHECK_SEED) and end
    at the same step (T, or the step the body terminates at); every episode
    resets env with its own seed, so nothing carries over.
    """
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    signed = obs_dim <= SELF_CHECK_SIGNED
    low = env.action_space.low.astype(np.float64)
    span = env.action_space.high.astype(np.float64) - low
    blocks, features, T = 2**obs_dim if signed else 1, obs_dim + 1, SELF_CHECK_STEPS
    policy = np.random.default_rng(SELF_CHECK_SEED).normal(0.0, 0.5, (blocks, 2 * action_dim, features))
    policy[..., 1:] /= features  # varied actions, not saturated ones, however many observation values there are
    observations, xs, rewards = np.zeros((T, obs_dim)), np.full((T, action_dim), 0.5), np.zeros(T)
    start, _ = env.reset(seed=SELF_CHECK_SEED)
    acting = Acting(
        policy=policy, scale=np.ones(obs_dim), signed=signed, shared_intercept=False, mean_action=True, low=low,
        span=span,
    )  # fmt: skip
    record = Record(np.zeros(T, np.int32), np.zeros((T, features)), observations, xs, rewards)
    no_scaler = Scaler(state=np.zeros((0, 0)), refit_every=1, recency=1.0)
    last = np.array(start, dtype=np.float64)
    total, steps, degenerate, terminated = body_episode(
        physics_of(env), body, acting, no_scaler, record, last, np.random.default_rng(0), T
    )
    if degenerate or steps < 1:
        return f"the compiled episode stopped after {steps} steps (degenerate)"
    observation, _ = env.reset(seed=SELF_CHECK_SEED)
    for t in range(steps):
        if not np.array_equal(observation, observations[t]):
            return _differs(f"observation {t}", observations[t], observation)
        observation, reward, gymnasium_terminated, _, _ = env.step(low + xs[t] * span)
        if reward != rewards[t]:
            return f"reward of step {t}: compiled {float(rewards[t])!r} != Gymnasium's {float(reward)!r}"
        if gymnasium_terminated != (terminated and t == steps - 1):
            return f"step {t}: Gymnasium's terminated is {gymnasium_terminated}, the compiled episode's is not"
    if not np.array_equal(observation, last):
        return _differs(f"observation {steps}", last, observation)
    return None


def _differs(what: str, compiled: np.ndarray, gymnasium) -> str:
    """What differs between the compiled value and Gymnasium's, in a few words."""
    gymnasium = np.asarray(gymnasium, dtype=np.float64)
    if gymnasium.shape != compiled.shape:
        return f"{what}: compiled shape {compiled.shape} != Gymnasium's {gymnasium.shape}"
    return f"{what}: compiled and Gymnasium's differ by up to {float(np.max(np.abs(compiled - gymnasium))):.3g}"


def why_not(env) -> tuple[bodies.Body | None, str | None]:
    """(the env's Body, None) when env may run compiled episodes; otherwise (None, what failed, in a few words)."""
    if mj_step is None:
        return None, _unavailable
    body, failure = bodies.body_of(env)
    failure = failure or _missing(env)
    if failure is not None:
        return None, failure
    key = bodies.known_body(env)
    if key not in _self_check_results:
        try:
            _self_check_results[key] = _self_check(env, body)
        except Exception as error:  # any failure of the check is a failed check
            _self_check_results[key] = f"{error.__class__.__name__}: {error}"
    if _self_check_results[key] is not None:
        return None, f"self-check against Gymnasium's step failed: {_self_check_results[key]}"
    return body, None


def _rank() -> int:
    """This process's MPI rank if MPI is already running (mpi4py imported), else what the launcher says, else 0."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank()
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def compiled_body(env) -> bodies.Body | None:
    """The env's Body when it may run compiled episodes, else None: the one decision (mpiswim.env.make_task asks it).

    Checks that numba and MuJoCo's library loaded, that env is exactly one of
    Gymnasium's v5 body classes with every private attribute the compiled
    episode reads (of the expected type), and that the self-check passed.
    Tasks that are none of these bodies quietly return None; a body that
    fails prints one line on stderr (rank 0, once per reason and process) and
    runs the Python loop.
    """
    body, failure = why_not(env)
    if failure is None:
        return body
    if _looks_like_a_body(env) and failure not in _warned:
        _warned.add(failure)
        if _rank() == 0:
            name = str(getattr(getattr(env, "spec", None), "id", type(env).__name__))
            print(
                f"mpiswim: warning: compiled {name} episodes are off ({failure}); training continues on the slower "
                "Python loop.",
                file=sys.stderr,
                flush=True,
            )
    return None
