"""Random-search branches (mpiswim/search.py): the directions, the nudge and ARS's pooled step, without MPI."""

from __future__ import annotations

import numpy as np
import pytest

from mpiswim import normalise
from mpiswim.config import parse_config
from mpiswim.env import Trajectory, make_task, run_episode
from mpiswim.policy import Agent, initial_agent
from mpiswim.search import direction_shape, directions, explore, nudge, random_search_branch, search_step

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
    returns, lengths, _ = explore(agent, task, np.random.default_rng(0), cfg, zero, trajectory, cfg.search_noise[0])
    assert returns[0] == returns[1] and returns[2] == returns[3]  # a zero direction: the two sides are one policy
    assert returns[0] != returns[2]  # two directions, two start states
    first = directions(cfg, 0, direction_shape(agent))[0]
    moved, _, _ = explore(agent, task, np.random.default_rng(0), cfg, first, trajectory, cfg.search_noise[0])
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
    assert cfg.search_noise == (0.1, 0.1) and cfg.search_top == 0 and cfg.search_intercept is False


# --- ARS V2: pooled normalisation and the shift ---------------------------------


def hopper_config(extra: str, world_size: int = 2, pooled: bool = False):
    """The search config on Hopper-v5 (which falls, so episodes differ in length), T = 60."""
    text = (
        SEARCH_CONFIG.format(extra=extra).replace('id = "Swimmer-v5"', 'id = "Hopper-v5"').replace("T = 30", "T = 60")
    )
    if pooled:
        text = text.replace('features = "linear"', 'features = "linear"\nnormalisation = "pooled"')
    return parse_config(text, world_size)


def test_pooled_statistics_are_those_of_every_state_every_rank_explored():
    """Each rank's share carries the statistics of the states its exploration visited; merged in rank order they are
    the count, mean and variance of all those states, the same on every rank, and acting only reads them.
    """
    cfg = hopper_config("", world_size=2, pooled=True)
    task = make_task(cfg.env_id, cfg.features)
    agent = initial_agent(task.obs_dim, task.action_dim, cfg.features, scaler=cfg.scaler)
    assert agent.policy_scaler.shape == (1, 2 + 2 * task.obs_dim)
    trajectory = Trajectory.empty(cfg.T, task.obs_dim, task.action_dim)
    deltas = directions(cfg, 0, direction_shape(agent))
    rows, states = [], []
    for rank in range(2):  # what each rank explores: its returns, lengths and states' statistics
        returns, lengths, visited = explore(
            agent, task, np.random.default_rng(rank), cfg, deltas[rank], trajectory, cfg.search_noise[rank]
        )
        rows.append(np.concatenate([returns, visited]))
        assert visited[0] == lengths.sum()
    for rank in range(2):  # the states themselves, replayed episode by episode
        rng = np.random.default_rng(rank)
        for delta in deltas[rank]:
            start = int(rng.integers(2**63))
            for sign in (1.0, -1.0):
                side = nudge(agent, delta, sign * cfg.search_noise[rank])
                run_episode(task, side, np.random.default_rng(start), cfg.T, trajectory, mean_action=True)
                states.append(trajectory.observations[: trajectory.length].copy())
    states = np.concatenate(states)
    table = np.array(rows)
    branches = [
        random_search_branch(
            agent, task, np.random.default_rng(rank), cfg, rank, 0, trajectory, None, lambda row: table
        )[0]
        for rank in range(2)
    ]
    merged = branches[0].policy_scaler
    np.testing.assert_array_equal(merged, branches[1].policy_scaler)  # every rank holds the same statistics
    d = task.obs_dim
    assert merged[0, normalise.COUNT] == len(states)
    np.testing.assert_allclose(merged[0, normalise.MEAN : normalise.MEAN + d], states.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged[0, normalise.MEAN + d :], states.var(axis=0), rtol=1e-10)
    assert np.all(agent.policy_scaler == 0.0)  # the agent that explored acted on its own (empty) statistics

    # acting with the statistics reads them and changes nothing: the features are the standardised observations
    before = merged.copy()
    run_episode(task, branches[0], np.random.default_rng(9), cfg.T, trajectory, mean_action=True)
    np.testing.assert_array_equal(branches[0].policy_scaler, before)
    n = trajectory.length
    expected = (trajectory.observations[:n] - states.mean(axis=0)) / states.std(axis=0)
    np.testing.assert_allclose(trajectory.phis[:n, 1:], expected, rtol=1e-9, atol=1e-9)


def test_the_shift_moves_the_step_and_leaves_the_recorded_returns_whole():
    """ARS's shift: the step sees each return less shift per step survived; the recorded returns stay whole."""
    plain, shifted = hopper_config("", 1), hopper_config("shift = 1.0", 1)
    task = make_task(plain.env_id, plain.features)
    agent = initial_agent(task.obs_dim, task.action_dim, plain.features)
    trajectory = Trajectory.empty(plain.T, task.obs_dim, task.action_dim)
    shared = {}

    def share(row):
        shared["row"] = row
        return row[None]

    results = {}
    for name, cfg in (("plain", plain), ("shifted", shifted)):
        branch, returns, _ = random_search_branch(
            agent, task, np.random.default_rng(4), cfg, 0, 0, trajectory, None, share
        )
        results[name] = (branch, returns, shared["row"].copy())
    (_, plain_returns, _), (shifted_branch, shifted_returns, shifted_row) = results["plain"], results["shifted"]
    np.testing.assert_array_equal(plain_returns, shifted_returns)  # the record: whole returns
    first = directions(shifted, 0, direction_shape(agent))[0]
    _, lengths, _ = explore(agent, task, np.random.default_rng(4), shifted, first, trajectory, shifted.search_noise[0])
    assert len(set(lengths)) > 1  # the hopper falls sooner or later: the lengths differ, so the shift moves the step
    np.testing.assert_allclose(shifted_row[: lengths.size], plain_returns - lengths)
    step = search_step(shifted_row[None, : lengths.size], directions(shifted, 0, direction_shape(agent)), 0)
    np.testing.assert_array_equal(shifted_branch.policy, nudge(agent, step, shifted.alpha[0]).policy)


def test_each_rank_explores_at_its_own_noise():
    """[search] noise per rank (a list, or a {min, max} spread like [ranks] alpha): rank r's tries are theta +- noise_r
    delta, so its exploration returns are those of explore at its own noise, and differ from another rank's noise."""
    cfg = parse_config(SEARCH_CONFIG.format(extra="").replace("noise = 0.1", "noise = {min = 0.05, max = 0.2}"), 2)
    assert cfg.search_noise == pytest.approx((0.05, 0.2))
    task = make_task(cfg.env_id, cfg.features)
    agent = initial_agent(task.obs_dim, task.action_dim, cfg.features)
    trajectory = Trajectory.empty(cfg.T, task.obs_dim, task.action_dim)
    deltas = directions(cfg, 0, direction_shape(agent))
    for rank in range(2):
        _, returns, _ = random_search_branch(
            agent, task, np.random.default_rng(rank), cfg, rank, 0, trajectory, None, lambda row: np.stack([row, row])
        )
        expected = [explore(agent, task, np.random.default_rng(rank), cfg, deltas[rank], trajectory, noise)[0]
                    for noise in cfg.search_noise]  # fmt: skip
        np.testing.assert_array_equal(returns, expected[rank])
        assert not np.array_equal(returns, expected[1 - rank])
