"""Random-search branches (mpiswim/search.py): the directions, the nudge and ARS's pooled step, without MPI."""

from __future__ import annotations

import numpy as np
import pytest

from mpiswim.config import parse_config
from mpiswim.env import Trajectory, make_task
from mpiswim.policy import Agent, initial_agent
from mpiswim.search import direction_shape, directions, explore, nudge, search_step

SEARCH_CONFIG = """\
[run]
seed = 3
iterations = 2
[env]
id = "Swimmer-v5"
T = 30
[pool]
learner = "random-search"
iterate_episodes = 4
evaluate_episodes = 1
evaluation_action = "mean"
common_evaluation = false
[policy]
features = "linear"
update = "unit-density"
baseline = "state"
[ranks]
alpha = 0.1
[search]
noise = 0.1
{extra}
"""


def search_config(world_size: int = 2, extra: str = ""):
    return parse_config(SEARCH_CONFIG.format(extra=extra), world_size)


def test_directions_are_the_same_for_every_rank_and_new_each_iteration():
    cfg = search_config(world_size=3)
    shape = (1, 2, 9)
    first = directions(cfg, 5, shape)
    assert first.shape == (3, 2, *shape)  # P ranks x iterate_episodes / 2 directions
    np.testing.assert_array_equal(first, directions(cfg, 5, shape))  # what another rank regenerates
    assert not np.allclose(first, directions(cfg, 6, shape))


def test_directions_leave_the_intercept_unless_asked():
    shape = (1, 2, 9)
    assert np.all(directions(search_config(), 0, shape)[..., 0] == 0.0)
    searched = directions(search_config(extra="intercept = true"), 0, shape)
    assert np.all(searched[..., 0] != 0.0)


def test_nudge_moves_the_mean_action_and_keeps_the_concentration():
    rng = np.random.default_rng(0)
    agent = Agent(rng.normal(size=(1, 2, 2, 9)), rng.normal(size=(1, 10)))
    delta = rng.normal(size=direction_shape(agent))
    moved = nudge(agent, delta, 0.5)
    np.testing.assert_allclose(
        moved.policy[:, 0] + moved.policy[:, 1], agent.policy[:, 0] + agent.policy[:, 1]
    )  # log a + log b
    np.testing.assert_allclose(moved.policy[:, 0] - agent.policy[:, 0], 0.5 * delta)
    phi = np.concatenate([[1.0], rng.normal(size=8)])

    def mean_action(policy: np.ndarray) -> np.ndarray:  # a / (a + b) of each action dimension
        a, b = np.exp(policy[0].reshape(4, 9) @ phi).reshape(2, 2)
        return a / (a + b)

    assert not np.allclose(mean_action(moved.policy), mean_action(agent.policy))
    np.testing.assert_array_equal(agent.policy, nudge(agent, delta, 0.0).policy)
    assert moved.baseline is agent.baseline  # random search leaves the baseline alone


def test_search_step_is_ars_basic_random_search():
    rng = np.random.default_rng(1)
    deltas = rng.normal(size=(2, 2, 1, 2, 3))  # 2 ranks x 2 directions
    returns = np.array([[10.0, 4.0, 3.0, 5.0], [7.0, 7.5, 1.0, 0.0]])  # [r+, r-] per direction, rank by rank
    plus, minus = returns[:, 0::2].ravel(), returns[:, 1::2].ravel()
    flat = deltas.reshape(4, 1, 2, 3)
    expected = sum((plus[i] - minus[i]) * flat[i] for i in range(4)) / (4 * returns.std())
    np.testing.assert_allclose(search_step(returns, deltas, top=0), expected)


def test_search_step_keeps_the_top_directions_by_their_better_side():
    rng = np.random.default_rng(2)
    deltas = rng.normal(size=(2, 2, 1, 1, 2))
    returns = np.array([[10.0, 4.0, 3.0, 5.0], [7.0, 7.5, 1.0, 0.0]])  # better sides: 10, 5, 7.5, 1
    kept = [0, 2]  # 10 and 7.5
    flat = deltas.reshape(4, 1, 1, 2)
    spread = np.array([10.0, 4.0, 7.0, 7.5]).std()
    expected = ((10.0 - 4.0) * flat[kept[0]] + (7.0 - 7.5) * flat[kept[1]]) / (2 * spread)
    np.testing.assert_allclose(search_step(returns, deltas, top=2), expected)


def test_search_step_leaves_out_broken_directions_and_takes_no_step_without_information():
    deltas = np.ones((1, 2, 1, 1, 2))
    with_broken = search_step(np.array([[3.0, np.nan, 2.0, 1.0]]), deltas, top=0)
    np.testing.assert_allclose(with_broken, search_step(np.array([[2.0, 1.0]]), deltas[:, 1:], top=0))
    assert np.all(search_step(np.full((1, 4), np.nan), deltas, top=0) == 0.0)
    assert np.all(search_step(np.full((1, 4), 5.0), deltas, top=0) == 0.0)  # equal returns: no spread, no step


def test_both_sides_of_a_direction_meet_the_same_start_state():
    cfg = search_config()
    task = make_task(cfg.env_id, cfg.features)
    agent = initial_agent(task.obs_dim, task.action_dim, cfg.features)
    trajectory = Trajectory.empty(cfg.T, task.obs_dim, task.action_dim)
    zero = np.zeros((2, *direction_shape(agent)))
    returns = explore(agent, task, np.random.default_rng(0), cfg, zero, trajectory)
    assert returns[0] == returns[1] and returns[2] == returns[3]  # a zero direction: the two sides are one policy
    assert returns[0] != returns[2]  # two directions, two start states
    moved = explore(
        agent, task, np.random.default_rng(0), cfg, directions(cfg, 0, direction_shape(agent))[0], trajectory
    )
    assert moved[0] != moved[1]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t.replace("iterate_episodes = 4", "iterate_episodes = 3"), "[pool] iterate_episodes = 3"),
        (
            lambda t: t.replace('evaluation_action = "mean"', 'evaluation_action = "sample"'),
            "[pool] evaluation_action = 'sample'",
        ),
        (lambda t: t.replace("noise = 0.1", "noise = -0.1"), "[search] noise = -0.1"),
        (lambda t: t.replace("noise = 0.1", "noise = 0.1\ntop = 5"), "[search] top = 5"),
        (lambda t: t.replace('learner = "random-search"', ""), "[search] = "),
        (lambda t: t.replace('learner = "random-search"', 'learner = "ars"'), "[pool] learner = 'ars'"),
    ],
)
def test_bad_search_settings_name_the_field(edit, field):
    from mpiswim.config import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_config(edit(SEARCH_CONFIG.format(extra="")), 2)
    assert field in str(error.value) and "Fix:" in str(error.value)


def test_random_search_needs_no_baseline_step_size():
    cfg = search_config()
    assert cfg.eta == (0.0, 0.0) and cfg.alpha == (0.1, 0.1)
    assert cfg.search_noise == 0.1 and cfg.search_top == 0 and cfg.search_intercept is False
