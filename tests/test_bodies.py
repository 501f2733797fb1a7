"""Every compiled body against Gymnasium's own v5 step, bit for bit: observations, rewards, terminations.

The compiled episode (mpiswim.compiled) runs the policy and MuJoCo's C step
for the whole episode; here its recorded actions are replayed through
`gymnasium.make(id).step` from the same reset seed, and every observation,
reward and the step the body terminates at must be the same to the last bit.
Episodes run back to back on one task (resets), to termination (the bodies
that fall) and for 1000 steps (those that do not, or when told not to end).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from mpiswim import bodies, compiled
from mpiswim.env import Task, Trajectory, gymnasium_step, make_task, run_episode
from mpiswim.policy import initial_agent

BODIES = ["Swimmer-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5"]
FALLS = {"Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5"}  # have a healthy test and end when it fails


def varied_agent(task, seed: int, spread: float = 0.3):
    """A linear policy with varied weights, scaled so every body gets varied, unsaturated actions."""
    agent = initial_agent(task.obs_dim, task.action_dim, "linear")
    weights = np.random.default_rng(seed).normal(0.0, spread, agent.policy.shape)
    weights[..., 1:] /= np.sqrt(task.obs_dim)
    agent.policy[:] = weights
    return agent


def replay(env_id: str, reset_seed: int, trajectory: Trajectory, low, span, make_kwargs=None):
    """Gymnasium's observations, rewards and terminated flags for the recorded actions, from the same reset."""
    reference = gym.make(env_id, **(make_kwargs or {})).unwrapped
    observation, _ = reference.reset(seed=reset_seed)
    observations, rewards, terminated = [observation], [], []
    for t in range(trajectory.length):
        observation, reward, ended, _, _ = reference.step(low + trajectory.xs[t] * span)
        observations.append(observation)
        rewards.append(reward)
        terminated.append(ended)
    return np.array(observations), np.array(rewards), terminated


def assert_same_as_gymnasium(env_id, task, agent, seed, T, mean_action=False, make_kwargs=None):
    """One compiled episode on task, replayed through Gymnasium: equal to the last bit; returns its length."""
    assert task.compiled, compiled.why_not(task.env)[1]  # (a failed self-check would fall back to the Python loop)
    trajectory = Trajectory.empty(T, task.obs_dim, task.action_dim)
    total, degenerate = run_episode(task, agent, np.random.default_rng(seed), T, trajectory, mean_action=mean_action)
    assert not degenerate
    n = trajectory.length
    reset_seed = int(np.random.default_rng(seed).integers(2**31))  # the episode's own reset seed
    observations, rewards, terminated = replay(
        env_id, reset_seed, trajectory, task.low, task.high - task.low, make_kwargs
    )
    np.testing.assert_array_equal(trajectory.observations[:n], observations[:n], err_msg=env_id)
    np.testing.assert_array_equal(trajectory.rewards[:n], rewards, err_msg=env_id)
    assert total == sum(trajectory.rewards[:n].tolist())
    # the compiled episode ends exactly where Gymnasium's terminates, or runs to T without a termination
    assert not any(terminated[:-1])
    assert terminated[-1] == (n < T), (env_id, n, T, terminated[-1])
    return n


@pytest.mark.parametrize("env_id", BODIES)
def test_every_body_runs_compiled_here(env_id):
    task = make_task(env_id, "linear")
    assert task.compiled, compiled.why_not(task.env)[1]


@pytest.mark.parametrize("env_id", BODIES)
def test_episodes_equal_gymnasiums_step_bit_for_bit(env_id):
    """Back-to-back episodes on one task, sampled and mean actions; the falling bodies fall, the others run long."""
    task = make_task(env_id, "linear")
    lengths = []
    for seed, spread, mean_action in ((1, 0.3, False), (2, 1.0, False), (3, 0.3, True), (4, 2.0, False)):
        lengths.append(
            assert_same_as_gymnasium(env_id, task, varied_agent(task, seed, spread), seed, 1000, mean_action)
        )
    if env_id in FALLS:
        assert min(lengths) < 1000  # a termination was checked
    else:
        assert lengths == [1000] * 4


@pytest.mark.parametrize("env_id", sorted(FALLS))
def test_long_episodes_equal_gymnasiums_when_the_body_does_not_end(env_id):
    """terminate_when_unhealthy = False: 1000 steps, the healthy reward switching off and on as v5 computes it."""
    env = gym.make(env_id, terminate_when_unhealthy=False).unwrapped
    body = compiled.compiled_body(env)
    assert body is not None and not body.terminate
    task = as_task(env, body)
    for seed in (5, 6):
        n = assert_same_as_gymnasium(
            env_id, task, varied_agent(task, seed, 1.0), seed, 1000, make_kwargs={"terminate_when_unhealthy": False}
        )
        assert n == 1000


@pytest.mark.parametrize(
    ("env_id", "make_kwargs"),
    [
        ("Hopper-v5", {"healthy_reward": 2.5, "ctrl_cost_weight": 0.01, "forward_reward_weight": 2.0}),
        ("Ant-v5", {"include_cfrc_ext_in_observation": False, "contact_cost_weight": 1e-3}),
        ("Humanoid-v5", {"include_cinert_in_observation": False, "include_cvel_in_observation": False}),
        ("Walker2d-v5", {"healthy_z_range": (0.9, 1.8), "healthy_angle_range": (-0.5, 0.5)}),
    ],
)
def test_the_bodys_own_arguments_are_followed(env_id, make_kwargs):
    """The Body is read from the env, so gymnasium.make's arguments change the compiled numbers as they change v5's."""
    env = gym.make(env_id, **make_kwargs).unwrapped
    body = compiled.compiled_body(env)
    assert body is not None
    task = as_task(env, body)
    for seed in (7, 8):
        assert_same_as_gymnasium(env_id, task, varied_agent(task, seed), seed, 400, make_kwargs=make_kwargs)


def as_task(env, body) -> Task:
    """A compiled Task around an env made with arguments of its own (make_task makes the registered defaults)."""
    return Task(
        env=env,
        step=gymnasium_step(env),
        body=body,
        obs_dim=env.observation_space.shape[0],
        action_dim=env.action_space.shape[0],
        low=env.action_space.low.astype(np.float64),
        high=env.action_space.high.astype(np.float64),
        sign_weights=None,
        scale=np.ones(env.observation_space.shape[0]),
    )


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Ant-v5"])
def test_compiled_and_python_loops_run_the_same_episode(env_id):
    """Same policy and stream through both loops: the same actions, rewards and length (summation order aside)."""
    results = []
    for fast in (True, False):
        task = make_task(env_id, "linear", fast=fast)
        trajectory = Trajectory.empty(300, task.obs_dim, task.action_dim)
        rng = np.random.default_rng(12)
        total, _ = run_episode(task, varied_agent(task, 12), rng, 300, trajectory)
        results.append((total, trajectory, rng.integers(2**62), task.steps))
    (fast_total, fast, fast_next, fast_steps), (slow_total, slow, slow_next, slow_steps) = results
    assert fast.length == slow.length == fast_steps == slow_steps
    np.testing.assert_allclose(fast.xs[: fast.length], slow.xs[: slow.length], rtol=0, atol=1e-9)
    assert fast_total == pytest.approx(slow_total, abs=1e-6)
    assert fast_next == slow_next  # both drew exactly as many numbers from the stream


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 8, 9, 15, 16, 17, 84, 127, 128])
def test_compiled_sums_follow_numpys_order(n):
    """np.sum adds pairwise (eight running sums from 8 values up); the compiled reward terms must add the same way."""
    rng = np.random.default_rng(n)
    for _ in range(50):
        values = rng.normal(size=n) * 10.0 ** rng.uniform(-8, 8, size=n)
        assert compiled._sum(values, 0, n) == np.sum(values)
        padded = np.concatenate([rng.normal(size=3), values])
        assert compiled._sum(padded, 3, n) == np.sum(values)


def test_a_subclass_of_a_body_runs_the_python_loop():
    """A subclass may change step, reward or observation: only Gymnasium's own classes are compiled."""
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv

    class MyHopper(HopperEnv):
        pass

    body, reason = bodies.body_of(MyHopper())
    assert body is None and "not one of Gymnasium's v5 bodies" in reason
