"""Policy and features: the signed coding, the Beta draws, packing an agent into one buffer."""

from __future__ import annotations

import numpy as np
import pytest

from mpiswim.kernels import act, feature_block, log_shapes
from mpiswim.policy import (
    LOG_SHAPE_LIMIT,
    active_blocks,
    feature_blocks,
    flat_policy,
    initial_agent,
    pack_agent,
    sign_weights,
    unpack_agent,
)


def active_block(obs: np.ndarray, weights: np.ndarray | None) -> int:
    return feature_block(np.asarray(obs, dtype=np.float64), weights is not None)


def draw_beta(shapes: list[float], rng: np.random.Generator) -> np.ndarray | None:
    x = np.empty(len(shapes) // 2)
    return x if act(np.array(shapes, dtype=np.float64), False, rng, x) else None


def full_signed_features(obs: np.ndarray) -> np.ndarray:
    """The seed run's 2^d (d+1) feature vector (docs/design.md), written out the long way."""
    d = len(obs)
    category = sum(1 << i for i in range(d) if obs[i] > 0)
    phi = np.zeros(2**d * (d + 1))
    phi[category * (d + 1) : (category + 1) * (d + 1)] = np.concatenate([[1.0], obs])
    return phi


def test_signed_coding_has_one_active_block_holding_one_and_the_observation():
    rng = np.random.default_rng(0)
    weights = sign_weights(8)
    assert feature_blocks(8, "signed") == 256 and feature_blocks(8, "linear") == 1
    for _ in range(200):
        obs = rng.normal(size=8)
        block = active_block(obs, weights)
        phi = full_signed_features(obs)
        assert np.count_nonzero(phi) == 9
        np.testing.assert_array_equal(phi.reshape(256, 9)[block], np.concatenate([[1.0], obs]))


def test_every_sign_pattern_gets_its_own_block_and_zero_counts_as_negative():
    weights = sign_weights(3)
    patterns = np.array([[s0, s1, s2] for s0 in (-1, 1) for s1 in (-1, 1) for s2 in (-1, 1)], dtype=float)
    blocks = active_blocks(patterns, weights)
    assert sorted(blocks.tolist()) == list(range(8))
    assert [active_block(p, weights) for p in patterns] == blocks.tolist()
    assert active_block(np.zeros(3), weights) == 0


def test_linear_map_has_a_single_block():
    assert active_block(np.array([1.0, -2.0]), None) == 0
    np.testing.assert_array_equal(active_blocks(np.ones((4, 5)), None), np.zeros(4))


def test_block_dot_product_equals_the_full_feature_dot_product():
    rng = np.random.default_rng(1)
    agent = initial_agent(3, 2, "signed")
    agent.policy[:] = rng.normal(size=agent.policy.shape)
    obs = rng.normal(size=3)
    block = active_block(obs, sign_weights(3))
    phi = np.concatenate([[1.0], obs])
    full = full_signed_features(obs)
    # log a_i = theta_a[i] . phi(s) with theta_a[i] laid out as (blocks * features,)
    shapes = np.empty(4)
    log_shapes(flat_policy(agent), phi, block, False, shapes)
    for shape in (0, 1):
        for i in range(2):
            theta = agent.policy[:, shape, i, :].ravel()
            assert shapes[shape * 2 + i] == pytest.approx(theta @ full)


def test_initial_agent_draws_uniform_actions():
    draws = np.array([draw_beta([0.0, 0.0, 0.0, 0.0], np.random.default_rng(seed)) for seed in range(4000)])
    assert draws.shape == (4000, 2)
    assert np.all((draws >= 0) & (draws <= 1))
    # Beta(1, 1) is uniform: mean 1/2, variance 1/12
    np.testing.assert_allclose(draws.mean(axis=0), 0.5, atol=0.02)
    np.testing.assert_allclose(draws.var(axis=0), 1 / 12, atol=0.01)


def test_beta_draws_follow_the_shapes():
    rng = np.random.default_rng(2)
    a, b = 6.0, 2.0
    draws = np.array([draw_beta([np.log(a), np.log(b)], rng)[0] for _ in range(4000)])
    assert draws.mean() == pytest.approx(a / (a + b), abs=0.01)


@pytest.mark.parametrize("bad", [LOG_SHAPE_LIMIT + 1, -LOG_SHAPE_LIMIT - 1, float("nan"), float("inf")])
def test_unusable_shapes_give_no_draw(bad):
    assert draw_beta([0.0, bad], np.random.default_rng(0)) is None
    assert draw_beta([bad, 0.0], np.random.default_rng(0)) is None
    assert not act(np.array([0.0, bad]), True, np.random.default_rng(0), np.empty(1))  # nor a mean action


def test_the_mean_action_is_a_over_a_plus_b_without_overflow():
    x = np.empty(2)
    assert act(np.log(np.array([6.0, 1.0, 2.0, 3.0])), True, np.random.default_rng(0), x)
    np.testing.assert_allclose(x, [6.0 / 8.0, 1.0 / 4.0])
    assert act(np.array([600.0, -600.0, -600.0, 600.0]), True, np.random.default_rng(0), x)
    np.testing.assert_array_equal(x, [1.0, 0.0])


def test_pack_and_unpack_round_trip_policy_and_baseline():
    rng = np.random.default_rng(3)
    agent = initial_agent(4, 3, "signed")
    agent.policy[:] = rng.normal(size=agent.policy.shape)
    agent.baseline[:] = rng.normal(size=agent.baseline.shape)
    flat = pack_agent(agent)
    assert flat.dtype == np.float64 and flat.size == agent.policy.size + agent.baseline.size
    back = unpack_agent(flat, initial_agent(4, 3, "signed"))
    np.testing.assert_array_equal(back.policy, agent.policy)
    np.testing.assert_array_equal(back.baseline, agent.baseline)
