"""The running observation scaler against the seed library's algorithm written out literally.

The reference keeps every observation (as RLAI's NonstationaryFeatureScaler did) and
refits with numpy's weighted average; mpiswim keeps chunk summaries instead. They
must scale every observation alike.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpiswim.normalise import COUNT, RUNNING, WEIGHT, new_scaler, observe, observe_rows, scaled_rows, transform


class LiteralScaler:
    """RLAI's scaler: a history of rows, a weighted refit every refit_every rows, an unweighted partial fit in
    between.
    """

    def __init__(self, refit_every: int, horizon: int, recency: float):
        self.refit_every, self.horizon, self.recency = refit_every, horizon, recency
        self.history = np.zeros((0, 0))
        self.since_refit = 0
        self.weight, self.mean, self.var = 0.0, None, None

    def scale(self, x: np.ndarray) -> np.ndarray:
        self.history = x[None] if self.history.size == 0 else np.vstack([self.history, x])
        self.since_refit += 1
        if self.since_refit >= self.refit_every:
            rows = self.history[::-1][: self.horizon]  # newest first
            weights = self.recency ** np.arange(len(rows))
            self.mean = np.average(rows, axis=0, weights=weights)
            self.var = np.average((rows - self.mean) ** 2, axis=0, weights=weights)
            self.weight = weights.sum()
            drop = min(max(len(self.history) + self.refit_every - self.horizon, 0), len(self.history))
            self.history = self.history[drop:]
            self.since_refit = 0
        elif self.mean is None:
            self.weight, self.mean, self.var = 1.0, x.copy(), np.zeros_like(x)
        else:  # scikit-learn's partial_fit of one more row
            n = self.weight
            mean = (self.mean * n + x) / (n + 1)
            self.var = (self.var * n + n / (n + 1) * (self.mean - x) ** 2) / (n + 1)
            self.weight, self.mean = n + 1, mean
        eps = np.finfo(float).eps  # scikit-learn's test for a constant feature, then for a tiny scale
        std = np.where(
            self.var > self.weight * eps * self.var + (self.weight * self.mean * eps) ** 2, np.sqrt(self.var), 0.0
        )
        std[std < 10 * eps] = 1.0
        return (x - self.mean) / std


def drifting_observations(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Observations whose mean and spread drift, as a learning agent's do; one value constant."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    rows = rng.normal(size=(n, d)) * (1 + t / 300) + 5 * np.sin(t / 200)
    rows[:, 0] = 2.5
    return rows


@pytest.mark.parametrize(("refit_every", "horizon", "recency"), [(50, 400, 0.99), (7, 7, 0.9), (100, 300, 1.0)])
def test_the_scaler_scales_every_observation_as_the_seeds_library_did(refit_every, horizon, recency):
    observations = drifting_observations(2000, 4)
    literal, state, scaled = (
        LiteralScaler(refit_every, horizon, recency),
        new_scaler(4, refit_every, horizon),
        np.empty(4),
    )
    for t, x in enumerate(observations):
        observe(state, x, refit_every, recency)
        transform(state, x, scaled)
        np.testing.assert_allclose(scaled, literal.scale(x), rtol=1e-9, atol=1e-9, err_msg=f"observation {t}")
    assert state[RUNNING, COUNT] == len(observations)
    assert scaled[0] == 0.0  # a constant value is centred, not divided by 0


def test_the_first_observation_scales_to_zero_and_an_unfitted_scaler_leaves_values_alone():
    state, out = new_scaler(3, 10, 100), np.empty(3)
    x = np.array([1.0, -2.0, 3.0])
    transform(state, x, out)
    np.testing.assert_array_equal(out, x)
    observe(state, x, 10, 0.99)
    transform(state, x, out)
    np.testing.assert_array_equal(out, 0.0)


def test_a_full_horizon_gives_the_refit_its_recency_weighted_total():
    refit_every, horizon, recency = 20, 100, 0.95
    state = new_scaler(2, refit_every, horizon)
    for x in drifting_observations(300, 2):
        observe(state, x, refit_every, recency)
    assert state[RUNNING, WEIGHT] == pytest.approx((1 - recency**horizon) / (1 - recency), rel=1e-12)


def test_observe_rows_and_scaled_rows():
    observations = drifting_observations(120, 3, seed=2)
    state, literal = new_scaler(3, 30, 90), LiteralScaler(30, 90, 0.98)
    seen = observe_rows(state, observations, 30, 0.98)
    np.testing.assert_allclose(seen, [literal.scale(x) for x in observations], rtol=1e-9, atol=1e-9)
    after = scaled_rows(state, observations)  # nothing refit: every row with the final statistics
    np.testing.assert_allclose(after[-1], seen[-1])
    np.testing.assert_array_equal(scaled_rows(state, observations), after)
