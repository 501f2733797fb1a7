"""The per-episode update: JAX gradients against finite differences, the baseline SGD, the masking of padded steps.

The reference below is written the slow, obvious way (plain numpy, Python loops,
central finite differences of the Beta density) so that it shares no code with
mpiswim/learn.py.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mpiswim.config import DEFAULT_CONFIG, parse_config
from mpiswim.env import Trajectory
from mpiswim.kernels import feature_block, log_shapes
from mpiswim.learn import discounted_returns, episode_update, step_direction
from mpiswim.learn import update_agent as learn_update_agent
from mpiswim.policy import Agent, flat_policy, initial_agent

OBS_DIM, ACTION_DIM = 3, 2
T = 12  # one padded length for every test: the update compiles once per rule


def beta_log_pdf(x: float, a: float, b: float) -> float:
    return (a - 1) * math.log(x) + (b - 1) * math.log(1 - x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)


def reference_direction(
    theta_block: np.ndarray, phi: np.ndarray, x: np.ndarray, rule: str, eps: float = 1e-6
) -> np.ndarray:
    """(2, A, F) direction by central finite differences, one weight at a time."""

    def per_dimension(theta: np.ndarray) -> np.ndarray:
        log_a, log_b = theta[0] @ phi, theta[1] @ phi
        logs = np.array([beta_log_pdf(x[i], math.exp(log_a[i]), math.exp(log_b[i])) for i in range(len(x))])
        return logs if rule == "log-density" else np.exp(logs)

    gradient = np.zeros_like(theta_block)
    for index in np.ndindex(theta_block.shape):
        up, down = theta_block.copy(), theta_block.copy()
        up[index] += eps
        down[index] -= eps
        gradient[index] = (per_dimension(up).sum() - per_dimension(down).sum()) / (2 * eps)
    if rule == "unit-density":  # unit length for theta_a[i] and theta_b[i] separately
        gradient /= np.linalg.norm(gradient, axis=-1, keepdims=True)
    if rule == "tanh-density":  # the seed's published code: tanh of each density-gradient element
        gradient = np.tanh(gradient)
    return gradient


def random_episode(rng: np.random.Generator, length: int) -> Trajectory:
    trajectory = Trajectory.empty(T, OBS_DIM, ACTION_DIM)
    observations = rng.normal(size=(T, OBS_DIM))
    trajectory.phis[:] = np.column_stack([np.ones(T), observations])
    trajectory.blocks[:] = [feature_block(np.asarray(obs, dtype=np.float64), True) for obs in observations]
    trajectory.blocks[:length:2] = trajectory.blocks[0]  # revisit a block, so updates accumulate
    trajectory.phis[:length:2, 1:] = np.where(
        observations[:1] > 0, np.abs(observations[:length:2]), -np.abs(observations[:length:2])
    )
    trajectory.xs[:] = rng.uniform(0.05, 0.95, size=(T, ACTION_DIM))
    trajectory.rewards[:] = rng.normal(size=T)
    trajectory.length = length
    return trajectory


def reference_update(
    agent: Agent, trajectory: Trajectory, alpha: float, eta: float, gamma: float, rule: str, time_feature: bool = False
) -> Agent:
    """The seed run's update as docs/design.md describes it, step by step; time_feature appends (T - t) / T to the
    baseline's inputs.
    """
    n = trajectory.length
    blocks, phis, xs, rewards = trajectory.blocks[:n], trajectory.phis[:n], trajectory.xs[:n], trajectory.rewards[:n]
    if time_feature:
        phis_v = np.column_stack([phis, [(T - t) / T for t in range(n)]])
    else:
        phis_v = phis
    returns = np.zeros(n)
    future = 0.0
    for t in reversed(range(n)):
        future = rewards[t] + gamma * future
        returns[t] = future
    policy, baseline = agent.policy.copy(), agent.baseline.copy()
    for t in range(n):  # every gradient at the pre-episode theta, every value before the baseline update
        target = returns[t] - agent.baseline[blocks[t]] @ phis_v[t]
        policy[blocks[t]] += alpha * target * reference_direction(agent.policy[blocks[t]], phis[t], xs[t], rule)
    for t in reversed(range(n)):  # baseline SGD, one sample at a time, walking backwards
        error = returns[t] - baseline[blocks[t]] @ phis_v[t]
        baseline[blocks[t]] += eta * error * phis_v[t]
    return Agent(policy, baseline)


def random_agent(rng: np.random.Generator, time_feature: bool = False) -> Agent:
    agent = initial_agent(OBS_DIM, ACTION_DIM, "signed", time_feature)
    agent.policy[:] = rng.normal(scale=0.3, size=agent.policy.shape)
    agent.baseline[:] = rng.normal(scale=0.3, size=agent.baseline.shape)
    return agent


BASE_CONFIG = parse_config(DEFAULT_CONFIG, 1)


def update_agent(
    agent: Agent,
    trajectory: Trajectory,
    alpha: float,
    eta: float,
    gamma: float,
    rule: str,
    time_feature: bool = False,
    **options,
) -> Agent:
    """mpiswim's update with the config that holds these settings (options: other Config fields)."""
    cfg = dataclasses.replace(
        BASE_CONFIG, T=T, gamma=gamma, update=rule, baseline="state-time" if time_feature else "state", **options
    )
    return learn_update_agent(agent, trajectory, alpha, eta, cfg)


jitted_direction = jax.jit(step_direction, static_argnames="rule")


@pytest.mark.parametrize("rule", ["unit-density", "log-density", "tanh-density"])
def test_step_direction_matches_finite_differences(rule):
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = rng.normal(scale=0.3, size=(2, ACTION_DIM, OBS_DIM + 1))
        phi = np.concatenate([[1.0], rng.normal(size=OBS_DIM)])
        x = rng.uniform(0.05, 0.95, size=ACTION_DIM)
        direction = np.asarray(jitted_direction(jnp.asarray(theta), jnp.asarray(phi), jnp.asarray(x), rule))
        np.testing.assert_allclose(direction, reference_direction(theta, phi, x, rule), rtol=1e-5, atol=1e-7)


def test_tanh_density_steps_stay_finite_for_huge_shapes():
    """Regression: log shapes near 34 and 50 (improved-12342, iteration 140) gave an infinite density times a
    zero gradient element, NaN, and every branch of the pool broke. That element now takes no step."""
    log_shapes = np.array([[33.64013918163503, 44.034467914233545], [49.64266794789168, 47.940094743819806]])
    x = np.array([1.1225094783957707e-07, 0.01973117777180852])
    direction = np.asarray(
        jitted_direction(jnp.asarray(log_shapes[:, :, None]), jnp.ones(1), jnp.asarray(x), "tanh-density")
    )
    assert np.isfinite(direction).all()
    assert np.all(np.abs(direction) <= 1.0)


def test_unit_density_rows_have_unit_length():
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(2, ACTION_DIM, OBS_DIM + 1))
    phi = np.concatenate([[1.0], rng.normal(size=OBS_DIM)])
    direction = np.asarray(
        jitted_direction(jnp.asarray(theta), jnp.asarray(phi), jnp.asarray([0.3, 0.8]), "unit-density")
    )
    np.testing.assert_allclose(np.linalg.norm(direction, axis=-1), 1.0)


@pytest.mark.parametrize("rule", ["unit-density", "log-density", "tanh-density"])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_episode_update_equals_the_step_by_step_reference(rule, gamma):
    rng = np.random.default_rng(2)
    agent = random_agent(rng)
    trajectory = random_episode(rng, length=T)
    updated = update_agent(agent, trajectory, alpha=1e-2, eta=1e-2, gamma=gamma, rule=rule)
    expected = reference_update(agent, trajectory, alpha=1e-2, eta=1e-2, gamma=gamma, rule=rule)
    np.testing.assert_allclose(updated.policy, expected.policy, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(updated.baseline, expected.baseline, rtol=1e-12, atol=1e-12)
    assert not np.array_equal(updated.policy, agent.policy)


@pytest.mark.parametrize("length", [T, 7])
def test_time_baseline_sees_the_fraction_of_steps_left(length):
    """baseline = "state-time": one more baseline weight, fed (T - t) / T, in the targets and in the SGD."""
    rng = np.random.default_rng(4)
    agent = random_agent(rng, time_feature=True)
    assert agent.baseline.shape == (2**OBS_DIM, OBS_DIM + 2)
    trajectory = random_episode(rng, length=length)
    updated = update_agent(agent, trajectory, alpha=1e-2, eta=1e-2, gamma=1.0, rule="log-density", time_feature=True)
    expected = reference_update(
        agent, trajectory, alpha=1e-2, eta=1e-2, gamma=1.0, rule="log-density", time_feature=True
    )
    np.testing.assert_allclose(updated.policy, expected.policy, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(updated.baseline, expected.baseline, rtol=1e-12, atol=1e-12)
    assert not np.array_equal(updated.baseline[:, -1], agent.baseline[:, -1])  # the time weight learns


def test_padding_beyond_the_episode_length_is_ignored():
    rng = np.random.default_rng(3)
    agent = random_agent(rng)
    short = random_episode(rng, length=7)
    garbage = Trajectory(
        short.blocks.copy(), short.phis.copy(), short.observations.copy(), short.xs.copy(), short.rewards.copy(), 7
    )
    garbage.rewards[7:] = 1e6
    garbage.phis[7:] = 99.0
    a = update_agent(agent, short, 1e-2, 1e-2, 1.0, "unit-density")
    b = update_agent(agent, garbage, 1e-2, 1e-2, 1.0, "unit-density")
    np.testing.assert_array_equal(a.policy, b.policy)
    np.testing.assert_array_equal(a.baseline, b.baseline)
    expected = reference_update(agent, short, 1e-2, 1e-2, 1.0, "unit-density")
    np.testing.assert_allclose(a.policy, expected.policy, rtol=1e-6, atol=1e-9)


def test_baseline_sgd_step_on_a_single_sample():
    """One step of SGD on (G - w.phi)^2 / 2 moves w by eta * error * phi."""
    agent = initial_agent(OBS_DIM, ACTION_DIM, "signed")
    trajectory = Trajectory.empty(T, OBS_DIM, ACTION_DIM)
    trajectory.phis[0] = [1.0, 0.5, -2.0, 1.5]
    trajectory.blocks[0] = 5
    trajectory.rewards[0] = 3.0
    trajectory.length = 1
    updated = update_agent(agent, trajectory, alpha=1e-3, eta=0.1, gamma=1.0, rule="unit-density")
    expected = np.zeros_like(agent.baseline)
    expected[5] = 0.1 * 3.0 * trajectory.phis[0]
    np.testing.assert_allclose(updated.baseline, expected)


def test_discounted_returns():
    rewards = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(discounted_returns(rewards, 1.0), [6.0, 5.0, 3.0])
    np.testing.assert_allclose(discounted_returns(rewards, 0.5), [1 + 0.5 * (2 + 0.5 * 3), 2 + 0.5 * 3, 3.0])


def test_the_update_compiles_once_for_every_episode_length():
    rng = np.random.default_rng(4)
    agent = random_agent(rng)
    update_agent(agent, random_episode(rng, length=T), 1e-3, 1e-3, 1.0, "log-density")
    before = episode_update._cache_size()
    for length in (3, 9, T):
        update_agent(agent, random_episode(rng, length=length), 1e-3, 1e-3, 1.0, "log-density")
    assert episode_update._cache_size() == before


@pytest.mark.parametrize("rule", ["unit-density", "log-density"])
def test_near_deterministic_policies_still_get_finite_steps(rule):
    """Regression: the seed config reached log shapes near -75 by iteration 58; jax.scipy's betaln gives NaN gradients
    there.
    """
    theta = np.zeros((2, ACTION_DIM, OBS_DIM + 1))
    theta[..., 0] = [[-71.06, -74.84], [-76.07, -71.64]]  # bias weights: the log shapes at this phi
    phi = np.array([1.0, 0.5, -0.3, 0.2])
    x = np.array([1.0 - 1e-12, 1e-12])  # Beta draws round to 0 and 1 at such shapes
    direction = np.asarray(jitted_direction(jnp.asarray(theta), jnp.asarray(phi), jnp.asarray(x), rule))
    assert np.isfinite(direction).all()
    if rule == "unit-density":
        np.testing.assert_allclose(np.linalg.norm(direction, axis=-1), 1.0)
        np.testing.assert_allclose(
            direction,
            reference_direction(theta, phi, x, "log-density")
            / np.linalg.norm(reference_direction(theta, phi, x, "log-density"), axis=-1, keepdims=True),
            rtol=1e-5,
        )


# --- the seed-faithful options ([policy] intercept, baseline_target, precision, normalisation, eta_travels) ---


def seed_reference_update(
    agent: Agent, phis: np.ndarray, baseline_phis: np.ndarray, trajectory: Trajectory, alpha: float, eta: float
) -> Agent:
    """The seed library's REINFORCE step written out: one shared intercept (block 0's column 0), walking the episode
    backwards, the baseline's SGD step on (s_t, G_t) first and the target G_t minus the UPDATED estimate; every policy
    gradient at the pre-episode parameters, tanh of the density gradient (gamma = 1)."""
    n = trajectory.length
    blocks, xs, rewards = trajectory.blocks[:n], trajectory.xs[:n], trajectory.rewards[:n]

    def row(params: np.ndarray, block: int) -> np.ndarray:
        effective = params[block].copy()
        effective[..., 0] = params[0][..., 0]
        return effective

    def add(params: np.ndarray, block: int, step: np.ndarray) -> None:
        params[block][..., 1:] += step[..., 1:]
        params[0][..., 0] += step[..., 0]

    policy, baseline = agent.policy.copy(), agent.baseline.copy()
    future = 0.0
    for t in reversed(range(n)):
        future += rewards[t]
        add(baseline, blocks[t], eta * (future - row(baseline, blocks[t]) @ baseline_phis[t]) * baseline_phis[t])
        target = future - row(baseline, blocks[t]) @ baseline_phis[t]
        add(
            policy,
            blocks[t],
            alpha * target * reference_direction(row(agent.policy, blocks[t]), phis[t], xs[t], "tanh-density"),
        )
    return Agent(policy, baseline)


SEED_OPTIONS = {"intercept": "shared", "baseline_target": "after-update"}


@pytest.mark.parametrize("length", [T, 7])
def test_shared_intercept_and_target_after_the_baseline_step_follow_the_seed(length):
    rng = np.random.default_rng(6)
    agent = random_agent(rng)
    agent.policy[1:, ..., 0] = 0.0  # a shared intercept lives in block 0 only
    agent.baseline[1:, 0] = 0.0
    trajectory = random_episode(rng, length=length)
    updated = update_agent(agent, trajectory, 1e-2, 1e-2, 1.0, "tanh-density", **SEED_OPTIONS)
    expected = seed_reference_update(agent, trajectory.phis, trajectory.phis, trajectory, 1e-2, 1e-2)
    np.testing.assert_allclose(updated.policy, expected.policy, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(updated.baseline, expected.baseline, rtol=1e-12, atol=1e-12)
    assert np.all(updated.policy[1:, ..., 0] == 0.0) and np.all(updated.baseline[1:, 0] == 0.0)
    assert not np.array_equal(updated.policy[0, ..., 0], agent.policy[0, ..., 0])


def test_float32_directions_are_the_float64_ones_rounded():
    rng = np.random.default_rng(7)
    agent = random_agent(rng)
    trajectory = random_episode(rng, length=T)
    wide = update_agent(agent, trajectory, 1e-2, 1e-2, 1.0, "tanh-density")
    narrow = update_agent(agent, trajectory, 1e-2, 1e-2, 1.0, "tanh-density", precision="float32")
    assert narrow.policy.dtype == np.float64
    np.testing.assert_allclose(narrow.policy, wide.policy, rtol=1e-4, atol=1e-6)
    assert not np.array_equal(narrow.policy, wide.policy)
    np.testing.assert_array_equal(narrow.baseline, wide.baseline)  # the baseline stays float64


def test_running_normalisation_recomputes_the_policy_features_and_walks_the_baseline_scaler_backwards():
    """The policy's features: the episode's observations scaled by its scaler as it stands at the end (no refit);
    the baseline's: its own scaler seeing the observations from the last to the first, one before each SGD step."""
    from mpiswim.normalise import observe_rows, scaled_rows

    rng = np.random.default_rng(8)
    refit_every, horizon, recency = 4, 8, 0.9
    agent = initial_agent(OBS_DIM, ACTION_DIM, "signed", scaler=(refit_every, horizon))
    agent.policy[0, ..., 0] = rng.normal(scale=0.3, size=(2, ACTION_DIM))
    agent.policy[:, ..., 1:] = rng.normal(scale=0.3, size=agent.policy[:, ..., 1:].shape)
    trajectory = random_episode(rng, length=9)
    trajectory.observations[:] = rng.normal(size=trajectory.observations.shape) * 3 + 1
    observe_rows(
        agent.policy_scaler, rng.normal(size=(6, OBS_DIM)), refit_every, recency
    )  # the scaler as acting left it
    options = dict(SEED_OPTIONS, normalisation="running", refit_every=refit_every, horizon=horizon, recency=recency)
    updated = update_agent(agent, trajectory, 1e-2, 1e-2, 1.0, "tanh-density", **options)

    n = trajectory.length
    phis, baseline_phis = trajectory.phis.copy(), trajectory.phis.copy()
    phis[:n, 1:] = scaled_rows(agent.policy_scaler, trajectory.observations[:n])
    baseline_scaler = agent.baseline_scaler.copy()
    baseline_phis[:n, 1:] = observe_rows(baseline_scaler, trajectory.observations[:n][::-1], refit_every, recency)[::-1]
    expected = seed_reference_update(agent, phis, baseline_phis, trajectory, 1e-2, 1e-2)
    np.testing.assert_allclose(updated.policy, expected.policy, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(updated.baseline, expected.baseline, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(updated.baseline_scaler, baseline_scaler)  # the baseline's scaler saw the episode
    assert updated.policy_scaler is agent.policy_scaler  # the update leaves the policy's scaler as acting left it
    assert np.all(agent.baseline_scaler == 0.0)  # the input agent is untouched


def test_a_travelling_eta_is_the_first_trainers_and_then_stays():
    rng = np.random.default_rng(9)
    agent = initial_agent(OBS_DIM, ACTION_DIM, "signed", eta_travels=True)
    trajectory = random_episode(rng, length=T)
    first = update_agent(agent, trajectory, 1e-2, 0.5, 1.0, "tanh-density", eta_travels=True)
    assert first.baseline_eta.tolist() == [0.5]
    second = update_agent(first, trajectory, 1e-2, 0.001, 1.0, "tanh-density", eta_travels=True)  # another rank's eta
    assert second.baseline_eta.tolist() == [0.5]
    same = update_agent(first, trajectory, 1e-2, 0.5, 1.0, "tanh-density")
    np.testing.assert_array_equal(second.baseline, same.baseline)


@pytest.mark.parametrize("shared_intercept", [False, True])
def test_the_update_differentiates_the_log_shapes_the_episodes_act_on(shared_intercept):
    """learn.block_rows . phi (what the JAX update differentiates) equals mpiswim.kernels.log_shapes (what acts).

    To 1e-12 relative, not bit for bit: JAX's dot product may sum in another order than the kernel's loop.
    """
    from mpiswim.learn import block_rows

    rng = np.random.default_rng(5)
    agent = initial_agent(OBS_DIM, ACTION_DIM, "signed")
    agent.policy[:] = rng.normal(size=agent.policy.shape)
    for _ in range(20):
        obs = rng.normal(size=OBS_DIM)
        phi = np.concatenate([[1.0], obs])
        block = feature_block(obs, True)
        acting = np.empty(2 * ACTION_DIM)
        log_shapes(flat_policy(agent), phi, block, shared_intercept, acting)
        rows = block_rows(jnp.asarray(agent.policy), jnp.asarray([block]), shared_intercept)[0]  # (2, A, F)
        np.testing.assert_allclose(np.asarray(rows @ phi).ravel(), acting, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [3, 12])
def test_an_episode_that_ended_early_is_updated_over_its_own_length(length, monkeypatch):
    """A body that fell after `length` of T steps: the update computes over update_steps(length, T) steps, not T, with
    the same numbers as over all T padded steps (the baseline exactly; the policy's sums may differ in the last bit).
    """
    from mpiswim import learn

    assert (
        learn.update_steps(length, 64) == 16 and learn.update_steps(64, 64) == 64 and learn.update_steps(17, 20) == 20
    )
    rng = np.random.default_rng(5)
    agent = random_agent(rng, time_feature=True)
    trajectory = random_episode(rng, length=length)
    long = Trajectory.empty(64, OBS_DIM, ACTION_DIM)  # the same episode in arrays of T = 64 steps
    for name in ("blocks", "phis", "observations", "xs", "rewards"):
        getattr(long, name)[:T] = getattr(trajectory, name)
    long.length = length
    cfg = dataclasses.replace(BASE_CONFIG, T=64, gamma=1.0, update="tanh-density", baseline="state-time")
    shapes = []
    real_update = learn.episode_update
    monkeypatch.setattr(
        learn, "episode_update", lambda *args, **kw: shapes.append(args[2].shape) or real_update(*args, **kw)
    )
    short_update = learn_update_agent(agent, long, 1e-2, 1e-2, cfg)
    monkeypatch.setattr(learn, "update_steps", lambda length, T: T)
    padded_update = learn_update_agent(agent, long, 1e-2, 1e-2, cfg)
    assert shapes == [(16,), (64,)]
    np.testing.assert_array_equal(short_update.baseline, padded_update.baseline)
    np.testing.assert_allclose(short_update.policy, padded_update.policy, rtol=0, atol=1e-15)
    assert not np.array_equal(short_update.policy, agent.policy)
