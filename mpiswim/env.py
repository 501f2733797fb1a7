"""Environment loop: making a Gymnasium MuJoCo task and running one episode on it.

Episodes end after T steps or when the task terminates. We step the unwrapped
environment and apply the T limit ourselves, so Gymnasium's own time limit
(1000 steps for Swimmer-v5) never cuts an episode short of T.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mpiswim import compiled, kernels
from mpiswim.bodies import Body
from mpiswim.config import Config
from mpiswim.policy import Agent, flat_policy, sign_weights
from mpiswim.tasks import make_env


@dataclass
class Trajectory:
    """Per-step records of one episode, preallocated for T steps and reused."""

    blocks: np.ndarray  # (T,) int32: active feature block
    phis: np.ndarray  # (T, F): [1, s / scale], or [1, scaled s] as the running scaler scaled it while acting
    observations: np.ndarray  # (T, d): s, as the environment gave it
    xs: np.ndarray  # (T, A): Beta draws on [0, 1]
    rewards: np.ndarray  # (T,)
    length: int = 0

    @classmethod
    def empty(cls, T: int, obs_dim: int, action_dim: int) -> Trajectory:
        return cls(
            blocks=np.zeros(T, np.int32),
            phis=np.zeros((T, obs_dim + 1)),
            observations=np.zeros((T, obs_dim)),
            xs=np.full((T, action_dim), 0.5),
            rewards=np.zeros(T),
        )


@dataclass
class Task:
    """A ready environment and what the policy needs to know about it.

    `step(action) -> (observation, reward, terminated)` is Gymnasium's step.
    Tasks with a `body` (Gymnasium's v5 Swimmer, Hopper, HalfCheetah, Walker2d,
    Ant and Humanoid) run whole episodes in `mpiswim.compiled` instead, with the
    same numbers and no per-step Python.
    """

    env: object
    step: Callable[[np.ndarray], tuple[np.ndarray, float, bool]]
    body: Body | None  # what the compiled episode needs to know about the body; None: the Python loop
    obs_dim: int
    action_dim: int
    low: np.ndarray
    high: np.ndarray
    sign_weights: np.ndarray | None
    scale: np.ndarray  # (obs_dim,): phi = [1, s / scale]
    shared_intercept: bool = False  # one intercept for every block: block 0's column 0 (mpiswim.policy)
    normalisation: tuple[int, float] | None = None  # (refit_every, recency): phi = [1, running-scaled s]
    steps: int = 0  # environment steps run on this task so far: every episode adds its length (the pool's record)

    @property
    def compiled(self) -> bool:
        """True when episodes run compiled (mpiswim.compiled)."""
        return self.body is not None


def gymnasium_step(env) -> Callable:
    """The environment's own step, reduced to (observation, reward, terminated)."""

    def step(action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        obs, reward, terminated, _, _ = env.step(action)
        return obs, reward, terminated

    return step


def make_task(
    env_id: str,
    features: str,
    fast: bool = True,
    observation_scale: float | tuple[float, ...] = 1.0,
    shared_intercept: bool = False,
    normalisation: tuple[int, float] | None = None,
) -> Task:
    """Create the environment for one rank; fast=False always runs the Python loop through Gymnasium.

    observation_scale is the config's [policy] observation_scale: the features
    are s / observation_scale. normalisation: (refit_every, recency) of the
    running scaler the agent carries ([policy] normalisation = "running").
    """
    env = make_env(env_id).unwrapped
    obs_dim = env.observation_space.shape[0]
    return Task(
        env=env,
        step=gymnasium_step(env),
        body=compiled.compiled_body(env) if fast else None,  # checked against Gymnasium's step once per process
        obs_dim=obs_dim,
        action_dim=env.action_space.shape[0],
        low=env.action_space.low.astype(np.float64),
        high=env.action_space.high.astype(np.float64),
        sign_weights=sign_weights(obs_dim) if features == "signed" else None,
        scale=np.broadcast_to(np.asarray(observation_scale, dtype=np.float64), (obs_dim,)).copy(),
        shared_intercept=shared_intercept,
        normalisation=normalisation,
    )


def task_for(cfg: Config, fast: bool = True) -> Task:
    """make_task with everything the config says about features."""
    normalisation = (cfg.refit_every, cfg.recency) if cfg.normalisation == "running" else None
    return make_task(cfg.env_id, cfg.features, fast, cfg.observation_scale, cfg.intercept == "shared", normalisation)


def policy_action(
    task: Task, agent: Agent, policy: np.ndarray, obs: np.ndarray, phi: np.ndarray, x: np.ndarray, mean_action: bool,
    rng: np.random.Generator, shapes: np.ndarray,
) -> tuple[int, bool]:  # fmt: skip
    """One step of the policy on `task` (policy_step with the task's feature settings)."""
    return policy_step(
        policy, obs, phi, x, shapes, mean_action, rng, task.scale, agent.policy_scaler, task.normalisation,
        task.sign_weights is not None, task.shared_intercept,
    )  # fmt: skip


def policy_step(
    policy: np.ndarray, obs: np.ndarray, phi: np.ndarray, x: np.ndarray, shapes: np.ndarray, mean_action: bool,
    rng: np.random.Generator, scale: np.ndarray, scaler: np.ndarray, normalisation: tuple[int, float] | None,
    signed: bool, shared_intercept: bool,
) -> tuple[int, bool]:  # fmt: skip
    """One step of the policy (mpiswim.kernels, as the compiled episode takes it): phi, its block and the action x.

    policy is flat_policy(agent); phi, x and shapes (2A log shapes) are filled in. With running
    normalisation ((refit_every, recency)) the policy scaler first sees obs (in place). x is the Beta
    mean, or a draw from rng. Returns (block, usable): False when a Beta shape overflowed, underflowed
    or is NaN. Training, evaluation and mpiswim.load_policy's Policy.act all act through it.
    """
    refit_every, recency = normalisation or (1, 1.0)
    kernels.features(obs, scale, scaler, refit_every, recency, phi)
    block = kernels.feature_block(obs, signed)
    kernels.log_shapes(policy, phi, block, shared_intercept, shapes)
    if not kernels.usable(shapes):
        return block, False
    if mean_action:
        kernels.mean_action(shapes, x)
    else:  # kernels.act's draws, with the Generator's own beta (kernels.beta_draw is its bit-for-bit copy)
        for i, (log_a, log_b) in enumerate(zip(shapes[: len(x)], shapes[len(x) :], strict=True)):
            x[i] = rng.beta(math.exp(log_a), math.exp(log_b))
    return block, True


def run_episode(
    task: Task,
    agent: Agent,
    rng: np.random.Generator,
    T: int,
    trajectory: Trajectory | None = None,
    mean_action: bool = False,
    noise: np.random.Generator | None = None,
) -> tuple[float, bool]:
    """Run one episode of at most T steps; return (total reward, degenerate).

    degenerate is True when the policy's Beta shapes stopped being usable
    (overflow, underflow, NaN); the episode stops there. When `trajectory` is
    given, every step is recorded in it for the learning update. mean_action
    takes the Beta mean a/(a+b) instead of a draw (`[pool] evaluation_action`);
    then only the start state is random. The start state is drawn from rng,
    the Beta draws from `noise` if given (`[pool] common_action_noise`), else
    from rng too. With running normalisation the
    agent's policy scaler sees every observation before it is used (in
    place: the scaler is the agent's own state, carried on with it).
    """
    low, span = task.low, task.high - task.low
    if task.compiled:
        if trajectory is None:
            trajectory = Trajectory.empty(T, task.obs_dim, task.action_dim)
        return compiled.run_compiled_episode(task, agent, rng, T, mean_action, trajectory, noise or rng)
    policy = flat_policy(agent)
    phi, x, shapes = np.ones(task.obs_dim + 1), np.empty(task.action_dim), np.empty(2 * task.action_dim)
    obs, _ = task.env.reset(seed=int(rng.integers(2**31)))
    noise = noise or rng
    total = 0.0
    for t in range(T):
        obs = np.ascontiguousarray(obs, dtype=np.float64)
        block, usable = policy_action(task, agent, policy, obs, phi, x, mean_action, noise, shapes)
        if not usable:
            return total, True
        obs_before = obs
        obs, reward, terminated = task.step(low + x * span)
        task.steps += 1
        if trajectory is not None:
            trajectory.blocks[t] = block
            trajectory.phis[t] = phi
            trajectory.observations[t] = obs_before
            trajectory.xs[t] = x
            trajectory.rewards[t] = reward
            trajectory.length = t + 1
        total += reward
        if terminated:
            break
    return float(total), False
