"""The environment loop: episodes respect T, the action bounds and termination; broken policies are caught."""

from __future__ import annotations

import numpy as np
import pytest

from mpiswim.env import Trajectory, make_task, run_episode
from mpiswim.policy import initial_agent


def test_episode_length_is_T_and_actions_stay_in_bounds():
    task = make_task("Swimmer-v5", "signed", fast=False)
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
    _, degenerate = run_episode(
        task, initial_agent(task.obs_dim, task.action_dim, "linear"), np.random.default_rng(0), 1000, trajectory
    )
    assert not degenerate and trajectory.length < 1000  # a uniform-random hopper falls over


@pytest.mark.parametrize("log_shape", [800.0, -800.0, np.nan])
@pytest.mark.parametrize("fast", [True, False])
def test_unusable_beta_shapes_make_the_episode_degenerate(log_shape, fast):
    task = make_task("Swimmer-v5", "signed", fast=fast)
    assert task.compiled == fast
    agent = initial_agent(8, 2, "signed")
    agent.policy[..., 0] = log_shape  # the bias weight of every block
    _, degenerate = run_episode(task, agent, np.random.default_rng(0), 20)
    assert degenerate


@pytest.mark.parametrize("fast", [True, False])
def test_a_shared_noise_stream_gives_two_ranks_the_same_draws_from_their_own_start_states(fast):
    """[pool] common_action_noise: start states from the rank's stream, Beta draws from the shared one.
    With the uniform initial policy the draws do not depend on the state, so they are equal."""
    task = make_task("Swimmer-v5", "signed", fast=fast)
    records = []
    for rank in (0, 1):
        trajectory = Trajectory.empty(30, 8, 2)
        run_episode(
            task,
            initial_agent(8, 2, "signed"),
            np.random.default_rng([0, 0, rank]),
            30,
            trajectory,
            noise=np.random.default_rng(99),
        )
        records.append(trajectory)
    np.testing.assert_array_equal(records[0].xs, records[1].xs)
    assert not np.array_equal(records[0].observations[0], records[1].observations[0])
    alone = Trajectory.empty(30, 8, 2)
    run_episode(
        task, initial_agent(8, 2, "signed"), np.random.default_rng([0, 0, 0]), 30, alone
    )  # without noise: the rank's stream
    assert not np.array_equal(alone.xs, records[0].xs)
    np.testing.assert_array_equal(alone.observations[0], records[0].observations[0])


@pytest.mark.parametrize("env_id", ["Swimmer-v5", "Hopper-v5"])
def test_the_task_counts_every_environment_step_its_episodes_ran(env_id):
    task = make_task(env_id, "linear")
    agent = initial_agent(task.obs_dim, task.action_dim, "linear")
    trajectory = Trajectory.empty(300, task.obs_dim, task.action_dim)
    lengths = []
    for seed in range(3):
        run_episode(task, agent, np.random.default_rng(seed), 300, trajectory)
        lengths.append(trajectory.length)
    run_episode(task, agent, np.random.default_rng(9), 300, mean_action=True)  # no trajectory: still counted
    assert task.steps > sum(lengths) and task.steps - sum(lengths) <= 300
    if env_id == "Hopper-v5":
        assert max(lengths) < 300  # the hopper falls: steps are what ran, not episodes times T


def test_making_half_cheetah_prints_no_settotalmass_warning_but_other_mujoco_warnings_still_show(capfd):
    """MuJoCo 4 warns (in C, on stderr) that Gymnasium's half_cheetah.xml uses the deprecated `settotalmass`, on every
    rank at every start; mpiswim drops exactly that message while it makes a task, and no other."""
    import mujoco

    from mpiswim.tasks import make_env, quiet_settotalmass

    make_env("HalfCheetah-v5").close()
    assert "settotalmass" not in capfd.readouterr().err
    with quiet_settotalmass():
        mujoco.get_mju_user_warning()("Nan, Inf or huge value in QACC at DOF 0")  # as MuJoCo would call it
    assert capfd.readouterr().err == "WARNING: Nan, Inf or huge value in QACC at DOF 0\n"
    assert mujoco.get_mju_user_warning() is None  # MuJoCo's own printing is back afterwards
