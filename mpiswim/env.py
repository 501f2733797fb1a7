"""Environment loop: making a Gymnasium MuJoCo task and running one episode on it.

Episodes end after T steps or when the task terminates. We step the unwrapped
environment and apply the T limit ourselves, so Gymnasium's own time limit
(1000 steps for Swimmer-v5) never cuts an episode short of T.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mpiswim.config import MAX_SIGNED_OBS_DIM, ConfigError
from mpiswim.policy import Agent, active_block, active_blocks, draw_beta, flat_policy, log_shapes_usable, sign_weights


@dataclass
class Trajectory:
    """Per-step records of one episode, preallocated for T steps and reused."""

    blocks: np.ndarray  # (T,) int32: active feature block
    phis: np.ndarray  # (T, F): [1, s]
    xs: np.ndarray  # (T, A): Beta draws on [0, 1]
    rewards: np.ndarray  # (T,)
    length: int = 0

    @classmethod
    def empty(cls, T: int, obs_dim: int, action_dim: int) -> Trajectory:
        return cls(
            blocks=np.zeros(T, np.int32),
            phis=np.zeros((T, obs_dim + 1)),
            xs=np.full((T, action_dim), 0.5),
            rewards=np.zeros(T),
        )


@dataclass
class Task:
    """A ready environment and what the policy needs to know about it.

    `step(action) -> (observation, reward, terminated)` is Gymnasium's step,
    or for Swimmer-v5 a direct MuJoCo step that gives the same numbers
    without Gymnasium's per-step Python (see `swimmer_step`).
    """

    env: object
    step: Callable[[np.ndarray], tuple[np.ndarray, float, bool]]
    obs_dim: int
    action_dim: int
    low: np.ndarray
    high: np.ndarray
    sign_weights: np.ndarray | None


def check_environment(env_id: str, features: str) -> tuple[int, int]:
    """Check that env_id is usable by mpiswim; return (obs_dim, action_dim) or raise ConfigError."""
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except Exception as error:  # gymnasium raises several types for unknown ids
        raise ConfigError(
            f"config error: [env] id = {env_id!r}: Gymnasium cannot make it ({error.__class__.__name__}: {error}). "
            "Fix: use a registered MuJoCo id such as 'Swimmer-v5', 'Hopper-v5' or 'HalfCheetah-v5'."
        ) from None
    try:
        action_space, observation_space = env.action_space, env.observation_space
    finally:
        env.close()
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ConfigError(f"config error: [env] id = {env_id!r}: action space {action_space} is not a 1-D Box. Fix: use a task with continuous actions.")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ConfigError(
            f"config error: [env] id = {env_id!r}: action space {action_space} is unbounded, but Beta actions need finite bounds. "
            "Fix: use a task with bounded actions (all Gymnasium MuJoCo tasks have them)."
        )
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(f"config error: [env] id = {env_id!r}: observation space {observation_space} is not a 1-D Box. Fix: use a task with vector observations.")
    obs_dim = observation_space.shape[0]
    if features == "signed" and obs_dim > MAX_SIGNED_OBS_DIM:
        raise ConfigError(
            f"config error: [policy] features = 'signed': {env_id} has {obs_dim} observation values, so the signed coding "
            f"would need 2^{obs_dim} blocks (at most 2^{MAX_SIGNED_OBS_DIM} allowed). Fix: set features = \"linear\" in [policy]."
        )
    return obs_dim, action_space.shape[0]


def gymnasium_step(env) -> Callable:
    """The environment's own step, reduced to (observation, reward, terminated)."""

    def step(action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        obs, reward, terminated, _, _ = env.step(action)
        return obs, reward, terminated

    return step


def swimmer_step(env) -> Callable:
    """Swimmer-v5's step as Gymnasium computes it, minus its per-step Python.

    Gymnasium also builds an info dict, copies positions and calls
    mj_rnePostConstraint (derived forces that Swimmer's reward never reads);
    that is a third of a step's cost. Observation and reward are computed
    with the same expressions, so they are bit-identical (tests/test_env.py).
    """
    import mujoco

    model, data, frame_skip, dt = env.model, env.data, env.frame_skip, env.dt
    forward_weight, ctrl_weight = env._forward_reward_weight, env._ctrl_cost_weight

    def step(action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        x_before = data.qpos[0]
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=frame_skip)
        x_velocity = (data.qpos[0] - x_before) / dt
        reward = forward_weight * x_velocity - ctrl_weight * np.square(action).sum()
        return np.concatenate([data.qpos[2:], data.qvel]), reward, False

    return step


def has_fast_step(env) -> bool:
    """True for an unmodified Swimmer (v5 defaults), whose step swimmer_step reproduces."""
    return type(env).__name__ == "SwimmerEnv" and getattr(env, "_exclude_current_positions_from_observation", False) is True


def make_task(env_id: str, features: str, fast: bool = True) -> Task:
    """Create the environment for one rank; fast=False always steps through Gymnasium."""
    import gymnasium as gym

    env = gym.make(env_id).unwrapped
    obs_dim = env.observation_space.shape[0]
    return Task(
        env=env,
        step=swimmer_step(env) if fast and has_fast_step(env) else gymnasium_step(env),
        obs_dim=obs_dim,
        action_dim=env.action_space.shape[0],
        low=env.action_space.low.astype(np.float64),
        high=env.action_space.high.astype(np.float64),
        sign_weights=sign_weights(obs_dim) if features == "signed" else None,
    )


def run_episode(task: Task, agent: Agent, rng: np.random.Generator, T: int, trajectory: Trajectory | None = None) -> tuple[float, bool]:
    """Run one episode of at most T steps; return (total reward, degenerate).

    degenerate is True when the policy's Beta shapes stopped being usable
    (overflow, underflow, NaN); the episode stops there. When `trajectory` is
    given, every step is recorded in it for the learning update.
    """
    low, span = task.low, task.high - task.low
    policy = flat_policy(agent)
    phi = np.ones(task.obs_dim + 1)
    obs, _ = task.env.reset(seed=int(rng.integers(2**31)))
    total = 0.0
    for t in range(T):
        phi[1:] = obs
        block = active_block(obs, task.sign_weights)
        x = draw_beta(policy[block].dot(phi).tolist(), rng)
        if x is None:
            return total, True
        obs, reward, terminated = task.step(low + x * span)
        if trajectory is not None:
            trajectory.blocks[t] = block
            trajectory.phis[t] = phi
            trajectory.xs[t] = x
            trajectory.rewards[t] = reward
            trajectory.length = t + 1
        total += reward
        if terminated:
            break
    return float(total), False


def run_evaluation(tasks: list[Task], agent: Agent, rng: np.random.Generator, T: int) -> tuple[np.ndarray, bool]:
    """Returns of len(tasks) no-update episodes, one per task, stepped in lock-step.

    The policy is computed for all running episodes at once, so its numpy
    cost is shared; MuJoCo still steps each environment on its own. Returns
    (returns, degenerate); on degenerate the returns are incomplete.
    """
    first = tasks[0]
    action_dim, low, span = first.action_dim, first.low, first.high - first.low
    policy = flat_policy(agent)
    obs = np.stack([task.env.reset(seed=int(rng.integers(2**31)))[0] for task in tasks])
    phis = np.ones((len(tasks), first.obs_dim + 1))
    totals = np.zeros(len(tasks))
    running = np.arange(len(tasks))
    for _ in range(T):
        phis[running, 1:] = obs[running]
        blocks = active_blocks(obs[running], first.sign_weights)
        log_shapes = np.einsum("nkf,nf->nk", policy[blocks], phis[running])
        if not log_shapes_usable(log_shapes):
            return totals, True
        shapes = np.exp(log_shapes)
        actions = low + rng.beta(shapes[:, :action_dim], shapes[:, action_dim:]) * span
        finished = []
        for row, episode in enumerate(running):
            obs[episode], reward, terminated = tasks[episode].step(actions[row])
            totals[episode] += reward
            if terminated:
                finished.append(episode)
        if finished:
            running = np.setdiff1d(running, finished)
            if running.size == 0:
                break
    return totals, False
