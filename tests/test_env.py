"""The environment loop: the Swimmer fast path equals Gymnasium, episodes respect T and bounds."""

from __future__ import annotations

import numpy as np
import pytest

from mpiswim.env import Trajectory, make_task, run_episode, run_evaluation
from mpiswim.policy import initial_agent


def test_swimmer_fast_step_matches_gymnasium_bit_for_bit():
    fast, slow = make_task("Swimmer-v5", "signed"), make_task("Swimmer-v5", "signed", fast=False)
    assert fast.step is not slow.step
    obs_fast, _ = fast.env.reset(seed=3)
    obs_slow, _ = slow.env.reset(seed=3)
    np.testing.assert_array_equal(obs_fast, obs_slow)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(300, 2))
    for action in actions:
        obs_fast, reward_fast, done_fast = fast.step(action)
        obs_slow, reward_slow, done_slow = slow.step(action)
        np.testing.assert_array_equal(obs_fast, obs_slow)
        assert reward_fast == reward_slow
        assert done_fast == done_slow is False


def test_same_seed_gives_the_same_episode_on_both_paths():
    agent = initial_agent(8, 2, "signed")
    results = []
    for fast in (True, False):
        task = make_task("Swimmer-v5", "signed", fast=fast)
        trajectory = Trajectory.empty(100, 8, 2)
        total, degenerate = run_episode(task, agent, np.random.default_rng(5), 100, trajectory)
        results.append((total, trajectory.rewards.copy(), trajectory.blocks.copy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])


def test_episode_length_is_T_and_actions_stay_in_bounds():
    task = make_task("Swimmer-v5", "signed")
    seen = []
    real_step = task.step
    task.step = lambda action: (seen.append(action.copy()), real_step(action))[1]
    trajectory = Trajectory.empty(60, 8, 2)
    _, degenerate = run_episode(task, initial_agent(8, 2, "signed"), np.random.default_rng(1), 60, trajectory)
    assert not degenerate and trajectory.length == 60 and len(seen) == 60
    actions = np.array(seen)
    assert np.all(actions >= task.low) and np.all(actions <= task.high)
    assert np.all((trajectory.xs[:60] >= 0) & (trajectory.xs[:60] <= 1))


def test_terminating_task_ends_the_episode_early():
    task = make_task("Hopper-v5", "linear")
    trajectory = Trajectory.empty(1000, task.obs_dim, task.action_dim)
    _, degenerate = run_episode(task, initial_agent(task.obs_dim, task.action_dim, "linear"), np.random.default_rng(0), 1000, trajectory)
    assert not degenerate and trajectory.length < 1000  # a uniform-random hopper falls over


def test_lockstep_evaluation_runs_one_episode_per_task():
    tasks = [make_task("Hopper-v5", "linear") for _ in range(3)]
    agent = initial_agent(tasks[0].obs_dim, tasks[0].action_dim, "linear")
    returns, degenerate = run_evaluation(tasks, agent, np.random.default_rng(0), 200)
    assert not degenerate and returns.shape == (3,) and len(set(returns.tolist())) == 3


@pytest.mark.parametrize("log_shape", [800.0, -800.0, np.nan])
def test_unusable_beta_shapes_make_the_episode_degenerate(log_shape):
    task = make_task("Swimmer-v5", "signed")
    agent = initial_agent(8, 2, "signed")
    agent.policy[..., 0] = log_shape  # the bias weight of every block
    _, degenerate = run_episode(task, agent, np.random.default_rng(0), 20)
    assert degenerate
    _, degenerate = run_evaluation([task], agent, np.random.default_rng(0), 20)
    assert degenerate
