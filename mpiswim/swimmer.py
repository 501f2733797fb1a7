"""Compiled Swimmer-v5 episodes: the whole step loop in machine code, via numba.

One MuJoCo step of the swimmer costs about 50 µs; the Python around it
(features, Beta draws, Gymnasium's step, bookkeeping) cost another 30-40 µs.
Here one numba function runs a whole episode: the policy's step
(mpiswim.kernels, the same functions the Python loop and render call), MuJoCo's
C `mj_step` called directly, and observation and reward computed exactly as
Gymnasium's Swimmer-v5 does (tests/test_swimmer.py checks them bit for bit
against Gymnasium). The compiled code is
cached on disk (numba `cache=True`), so only the very first run compiles.

Only the stock Swimmer (Gymnasium's v5 defaults) takes this path; every other
task runs the plain Python loop in `mpiswim.env`.

The compiled path leans on things MuJoCo and Gymnasium do not promise: the C
library next to the `mujoco` package, `model._address` and `data._address`,
and Swimmer-v5's `_forward_reward_weight`, `_ctrl_cost_weight` and its reward
and observation formulas. `usable(env)` is the one gate: it checks each of
these, and once per process runs a short episode both compiled and through
Gymnasium's own `env.step` (the self-check). If anything is missing or
differs, the task runs the Python loop and rank 0 prints one warning line:
a new release can make training slower, never silently wrong.
"""

from __future__ import annotations

import glob
import math
import os
import sys
from typing import NamedTuple

import numpy as np

from mpiswim import kernels
from mpiswim.policy import Agent, flat_policy


def _load_mj_step():
    """(MuJoCo's C mj_step(model, data) as a numba external function, None) or (None, why not).

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
        return None, f"expected one libmujoco.so* in {folder}, found {len(libraries)}"
    version = ctypes.CDLL(libraries[0]).mj_version()
    if version != mujoco.mj_version():
        return (
            None,
            f"{os.path.basename(libraries[0])} is MuJoCo {version}, the mujoco package is {mujoco.mj_version()}",
        )
    llvmlite.binding.load_library_permanently(libraries[0])
    return numba.types.ExternalFunction("mj_step", numba.types.void(numba.types.voidptr, numba.types.voidptr)), None


try:
    import numba

    mj_step, _unavailable = _load_mj_step()
except (
    ImportError,
    OSError,
    RuntimeError,
    AttributeError,
) as error:  # no numba, or no loadable libmujoco: the Python loop is used
    numba, mj_step, _unavailable = None, None, f"cannot load numba or libmujoco ({error.__class__.__name__}: {error})"


def available() -> bool:
    """True when compiled Swimmer episodes can run here (numba and MuJoCo's C library load)."""
    return mj_step is not None


class Physics(NamedTuple):
    """What the compiled episode steps: MuJoCo's structs, views of their arrays, and Swimmer-v5's reward weights."""

    model_address: int
    data_address: int
    frame_skip: int
    qpos: np.ndarray  # numpy views of MuJoCo's own data: mj_step updates them in place
    qvel: np.ndarray
    ctrl: np.ndarray
    forward_weight: float
    ctrl_weight: float
    dt: float


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


def _swimmer_episode(physics, acting, scaler, record, observation, rng, T):
    """Run one episode from `observation`; record every step; return (total reward, steps, degenerate).

    The policy's step is mpiswim.kernels' (the Python loop and render use the same functions).
    The expressions follow Gymnasium's Swimmer-v5: reward = forward_weight * x velocity -
    ctrl_weight * |action|^2, observation = [qpos[2:], qvel]. The arguments are grouped in named
    tuples, so a group passed in another's place does not compile.
    """
    qpos, qvel, ctrl = physics.qpos, physics.qvel, physics.ctrl
    obs_dim, action_dim = observation.shape[0], ctrl.shape[0]
    n_positions = qpos.shape[0] - 2  # the observation leaves out the x, y position
    obs = observation.copy()
    phi = np.empty(obs_dim + 1)
    phi[0] = 1.0
    shapes = np.empty(2 * action_dim)
    x = np.empty(action_dim)
    total = 0.0
    for t in range(T):
        kernels.features(obs, acting.scale, scaler.state, scaler.refit_every, scaler.recency, phi)
        block = kernels.feature_block(obs, acting.signed)
        kernels.log_shapes(acting.policy, phi, block, acting.shared_intercept, shapes)
        if not kernels.act(shapes, acting.mean_action, rng, x):
            return total, t, True  # exp() would overflow or underflow (or NaN): degenerate branch
        control_cost = 0.0
        for i in range(action_dim):
            action = acting.low[i] + x[i] * acting.span[i]
            ctrl[i] = action
            control_cost += action * action
        x_before = qpos[0]
        for _ in range(physics.frame_skip):
            mj_step(physics.model_address, physics.data_address)
        reward = physics.forward_weight * ((qpos[0] - x_before) / physics.dt) - physics.ctrl_weight * control_cost

        record.blocks[t] = block
        record.phis[t, :] = phi
        record.observations[t, :] = obs
        record.xs[t, :] = x
        record.rewards[t] = reward
        total += reward
        obs[:n_positions] = qpos[2:]
        obs[n_positions:] = qvel
    return total, T, False


swimmer_episode = numba.njit(cache=True)(_swimmer_episode) if mj_step is not None else None


def physics_of(env) -> Physics:
    """The env's MuJoCo structs and Swimmer-v5's reward weights, grouped for the compiled episode."""
    data = env.data
    return Physics(
        model_address=env.model._address,
        data_address=data._address,
        frame_skip=env.frame_skip,
        qpos=data.qpos,
        qvel=data.qvel,
        ctrl=data.ctrl,
        forward_weight=env._forward_reward_weight,
        ctrl_weight=env._ctrl_cost_weight,
        dt=env.dt,
    )


def run_swimmer_episode(
    task, agent: Agent, rng: np.random.Generator, T: int, mean_action: bool, trajectory, noise: np.random.Generator
) -> tuple[float, bool]:
    """One compiled episode of at most T steps on the task's Swimmer env; the same contract as env.run_episode.

    mean_action: take the Beta mean a/(a+b) instead of a draw; the start state comes from rng, the draws from noise.
    """
    env = task.env
    observation, _ = env.reset(seed=int(rng.integers(2**31)))
    refit_every, recency = task.normalisation or (1, 1.0)
    acting = Acting(
        policy=flat_policy(agent),
        scale=task.scale,
        signed=task.sign_weights is not None,
        shared_intercept=task.shared_intercept,
        mean_action=mean_action,
        low=task.low,
        span=task.high - task.low,
    )
    scaler = Scaler(state=agent.policy_scaler, refit_every=refit_every, recency=recency)
    record = Record(trajectory.blocks, trajectory.phis, trajectory.observations, trajectory.xs, trajectory.rewards)
    total, steps, degenerate = swimmer_episode(physics_of(env), acting, scaler, record, observation, noise, T)
    trajectory.length = steps
    return float(total), bool(degenerate)


# --- the guard: may this env take the compiled path? ---------------------------

SELF_CHECK_STEPS = 25
SELF_CHECK_SEED = 20240917  # the self-check's reset seed
_self_check_result: dict[str, str | None] = {}  # once per process: {"result": None (passed) or what differed}
_warned: set[str] = set()  # the reasons already printed by this process


def gymnasium_swimmer_class():
    """Gymnasium's Swimmer-v5 class, or None if this Gymnasium has none."""
    try:
        from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
    except Exception:  # an import of a private module of a future release may fail in any way
        return None
    return SwimmerEnv


def _looks_like_a_swimmer(env) -> bool:
    """True for anything Gymnasium calls a Swimmer: those ought to run compiled, so a refusal is worth a warning."""
    spec = getattr(env, "spec", None)
    return type(env).__name__ == "SwimmerEnv" or str(getattr(spec, "id", "")).split("/")[-1].startswith("Swimmer")


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
    for name in ("_forward_reward_weight", "_ctrl_cost_weight"):
        if not hasattr(env, name):
            return f"env.{name} is missing"
        value = getattr(env, name)
        if not isinstance(value, float) or not math.isfinite(value):
            return f"env.{name} is {value!r} ({type(value).__name__}), not a finite float"
    frame_skip, dt = getattr(env, "frame_skip", None), getattr(env, "dt", None)
    if not isinstance(frame_skip, int) or isinstance(frame_skip, bool) or frame_skip < 1:
        return f"env.frame_skip is {frame_skip!r}, not a positive int"
    if not isinstance(dt, float) or not dt > 0.0:
        return f"env.dt is {dt!r}, not a positive float"
    for name, length in (("qpos", model.nq), ("qvel", model.nv), ("ctrl", model.nu)):
        if not _float_vector(getattr(data, name, None), length):
            return f"data.{name} is not a contiguous float64 vector of {length}"
    return None


def _not_v5_defaults(env) -> str | None:
    """Where env departs from Swimmer-v5's defaults in a way the compiled episode does not follow; None when it does
    not.
    """
    if getattr(env, "_exclude_current_positions_from_observation", None) is not True:
        return "the observation includes the x, y position (exclude_current_positions_from_observation is not True)"
    model, observation_space, action_space = (
        env.model,
        getattr(env, "observation_space", None),
        getattr(env, "action_space", None),
    )
    if getattr(observation_space, "shape", None) != (model.nq - 2 + model.nv,):
        return f"the observation space {observation_space} is not [qpos[2:], qvel]"
    if getattr(action_space, "shape", None) != (model.nu,) or not (
        np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))
    ):
        return f"the action space {action_space} is not {model.nu} bounded controls"
    return None


def _self_check(env) -> str | None:
    """Run SELF_CHECK_STEPS steps compiled, then the same actions through env.step; None if bit for bit equal, else the
    difference.

    The compiled run is a training episode in every respect but its policy:
    the signed coding with fixed varied weights, mean actions (so the run
    draws nothing and the actions it takes are recorded), the same types as
    training passes (so no second specialisation is compiled). Both runs start
    from env.reset(seed=SELF_CHECK_SEED); every episode resets env with its own seed, so nothing carries over.
    """
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if obs_dim > 16:
        return f"the observation has {obs_dim} values, more than a Swimmer's"
    low = env.action_space.low.astype(np.float64)
    span = env.action_space.high.astype(np.float64) - low
    blocks, features, T = 2**obs_dim, obs_dim + 1, SELF_CHECK_STEPS
    policy = np.random.default_rng(SELF_CHECK_SEED).normal(0.0, 0.5, (blocks, 2 * action_dim, features))
    observations, xs, rewards = np.zeros((T, obs_dim)), np.full((T, action_dim), 0.5), np.zeros(T)
    start, _ = env.reset(seed=SELF_CHECK_SEED)
    data = env.data
    acting = Acting(
        policy=policy, scale=np.ones(obs_dim), signed=True, shared_intercept=False, mean_action=True, low=low, span=span
    )
    record = Record(np.zeros(T, np.int32), np.zeros((T, features)), observations, xs, rewards)
    no_scaler = Scaler(state=np.zeros((0, 0)), refit_every=1, recency=1.0)
    total, steps, degenerate = swimmer_episode(
        physics_of(env), acting, no_scaler, record, start, np.random.default_rng(0), T
    )
    if degenerate or steps != T:
        return f"the compiled episode stopped after {steps} of {T} steps"
    last = np.concatenate([data.qpos[2:], data.qvel])  # the compiled episode's state after its last step
    observation, _ = env.reset(seed=SELF_CHECK_SEED)
    for t in range(T):
        if not np.array_equal(observation, observations[t]):
            return _differs(f"observation {t}", observations[t], observation)
        observation, reward, terminated, _, _ = env.step(low + xs[t] * span)
        if reward != rewards[t]:
            return f"reward of step {t}: compiled {float(rewards[t])!r} != Gymnasium's {float(reward)!r}"
        if terminated:
            return f"Gymnasium's Swimmer terminated at step {t}"
    if not np.array_equal(observation, last):
        return _differs(f"observation {T}", last, observation)
    return None


def _differs(what: str, compiled: np.ndarray, gymnasium) -> str:
    """What differs between the compiled value and Gymnasium's, in a few words."""
    gymnasium = np.asarray(gymnasium, dtype=np.float64)
    if gymnasium.shape != compiled.shape:
        return f"{what}: compiled shape {compiled.shape} != Gymnasium's {gymnasium.shape}"
    return f"{what}: compiled and Gymnasium's differ by up to {float(np.max(np.abs(compiled - gymnasium))):.3g}"


def why_not(env) -> str | None:
    """None when env may run compiled episodes; otherwise what failed, in a few words."""
    if mj_step is None:
        return _unavailable
    expected = gymnasium_swimmer_class()
    if expected is None:
        return "gymnasium.envs.mujoco.swimmer_v5.SwimmerEnv cannot be imported"
    if type(env) is not expected:  # not isinstance: a subclass may change step, reward or observation
        return f"the env is {type(env).__module__}.{type(env).__qualname__}, not Gymnasium's swimmer_v5.SwimmerEnv"
    failure = _missing(env) or _not_v5_defaults(env)
    if failure is None:
        if "result" not in _self_check_result:
            try:
                _self_check_result["result"] = _self_check(env)
            except Exception as error:  # any failure of the check is a failed check
                _self_check_result["result"] = f"{error.__class__.__name__}: {error}"
        if _self_check_result["result"] is not None:
            failure = f"self-check against Gymnasium's step failed: {_self_check_result['result']}"
    return failure


def _rank() -> int:
    """This process's MPI rank if MPI is already running (mpi4py imported), else what the launcher says, else 0."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank()
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def usable(env) -> bool:
    """True when env may run compiled episodes: the one decision (mpiswim.env.make_task asks it).

    Checks that numba and MuJoCo's library loaded, that env is exactly
    Gymnasium's Swimmer-v5 class with every private attribute the compiled
    episode reads (of the expected type) and v5's observation, and that the
    self-check passed. Tasks that are no Swimmer at all quietly return False;
    a Swimmer that fails prints one line on stderr (rank 0, once per reason
    and process) and runs the Python loop.
    """
    failure = why_not(env)
    if failure is None:
        return True
    if _looks_like_a_swimmer(env) and failure not in _warned:
        _warned.add(failure)
        if _rank() == 0:
            print(
                f"mpiswim: warning: compiled Swimmer episodes are off ({failure}); training continues on the slower "
                "Python loop.",
                file=sys.stderr,
                flush=True,
            )
    return False
