"""Running observation normalisation: a recency-weighted standardiser refit while the agent acts.

With `[policy] normalisation = "running"` the features hold (s - mean) / std
instead of s / observation_scale, where mean and std follow the observations
the agent has met. This is the scaler of the seed run's library (RLAI's
NonstationaryFeatureScaler):
- every observation first updates a running mean and variance (unweighted,
  Chan's pairwise update: scikit-learn's StandardScaler.partial_fit);
- every `refit_every`-th observation instead refits mean and variance from the
  last `horizon` observations, the newest weighing 1 and each older one
  `recency` times the next newer (a fresh weighted StandardScaler.fit);
- the value is then scaled with the statistics as they now stand; a value
  whose std is about 0 is only centred (std taken as 1).

The scaler's state belongs to the agent (it is promoted, broadcast and
checkpointed with it), so it is one float64 array of shape
(1 + horizon / refit_every, 2 + 2d), with columns [count, weight, d means,
d variances or sums of squares]:
- row 0, `RUNNING`: what `transform` uses (count = observations ever seen, weight, mean, variance);
- row 1, `CHUNK`: the observations since the last refit, recency-weighted
  relative to the newest one (count, weight, mean, sum of squared deviations);
- rows 2.., `STORED`: the chunks of earlier refits, newest first, in the same form;
  count 0 marks an empty row.
Chunk summaries instead of the observations themselves give the refit the same
weighted mean and variance over the last `horizon` observations in a few KB
(the library kept the observations: 100,000 x d floats per scaler).

With `[policy] normalisation = "pooled"` (random search, ARS V2) the state is
row 0 alone: the count, mean and variance of every state the pool's
exploration episodes have visited. Acting only reads it; the random-search
learner merges every rank's statistics into it once per iteration
(`merge_pooled`), the same on every rank.

The functions are compiled with numba when it is installed, so the compiled
episode (mpiswim.compiled) can call them at every step.
"""

from __future__ import annotations

import math

import numpy as np

from mpiswim.jit import njit
from mpiswim.policy import scaler_shape

RUNNING, CHUNK, STORED = 0, 1, 2  # rows of the state
COUNT, WEIGHT, MEAN = 0, 1, 2  # columns; the d means start at MEAN, the d variances (or sums of squares) follow
EPS = float(np.finfo(np.float64).eps)


def new_scaler(obs_dim: int, refit_every: int, horizon: int) -> np.ndarray:
    """The state of a scaler that has seen nothing (it then scales nothing: mean 0, std 1)."""
    return np.zeros(scaler_shape(obs_dim, refit_every, horizon))


def no_scaler() -> np.ndarray:
    """The state when normalisation is off: an empty (0, 0) array."""
    return np.zeros((0, 0))


@njit(cache=True)
def merge(state, row, weight, mean, spread, d):
    """Add (weight, mean, sum of squared deviations) into state[row] (Chan et al.'s pairwise update)."""
    total = state[row, WEIGHT] + weight
    if total <= 0.0:
        return
    share = weight / total
    for i in range(d):
        delta = mean[i] - state[row, MEAN + i]
        state[row, MEAN + i] += delta * share
        state[row, MEAN + d + i] += spread[i] + delta * delta * state[row, WEIGHT] * share
    state[row, WEIGHT] = total


@njit(cache=True)
def refit(state, refit_every, recency, d):
    """The weighted fit over the current chunk and the stored ones; then store the chunk."""
    stored = state.shape[0] - STORED
    fit = np.zeros((1, 2 + 2 * d))
    fit[0, :] = state[CHUNK, :]
    chunk_age = recency**refit_every  # a stored chunk is refit_every observations older than the next newer one
    factor = 1.0
    for k in range(stored):
        if state[STORED + k, COUNT] == 0.0:
            break
        factor *= chunk_age
        fit[0, COUNT] += state[STORED + k, COUNT]
        merge(
            fit,
            0,
            factor * state[STORED + k, WEIGHT],
            state[STORED + k, MEAN : MEAN + d],
            factor * state[STORED + k, MEAN + d :],
            d,
        )
    state[RUNNING, WEIGHT] = fit[0, WEIGHT]
    for i in range(d):
        state[RUNNING, MEAN + i] = fit[0, MEAN + i]
        state[RUNNING, MEAN + d + i] = fit[0, MEAN + d + i] / fit[0, WEIGHT]
    # Keep the newest horizon / refit_every - 1 chunks: the next refit adds its own chunk to reach horizon observations.
    for k in range(stored - 1, 0, -1):
        state[STORED + k, :] = state[STORED + k - 1, :]
    if stored > 0:
        state[STORED, :] = state[CHUNK, :]
    state[CHUNK, :] = 0.0


@njit(cache=True)
def observe(state, obs, refit_every, recency):
    """Let the scaler see one observation (in place): the chunk takes it; then a refit or a running update."""
    d = obs.shape[0]
    # Recency weights: every earlier observation of the chunk weighs `recency` times what it did, the new one 1.
    state[CHUNK, WEIGHT] *= recency
    for i in range(d):
        state[CHUNK, MEAN + d + i] *= recency
    total = state[CHUNK, WEIGHT] + 1.0
    for i in range(d):
        delta = obs[i] - state[CHUNK, MEAN + i]
        state[CHUNK, MEAN + i] += delta / total
        state[CHUNK, MEAN + d + i] += delta * (obs[i] - state[CHUNK, MEAN + i])
    state[CHUNK, WEIGHT] = total
    state[CHUNK, COUNT] += 1.0
    state[RUNNING, COUNT] += 1.0
    if state[CHUNK, COUNT] >= refit_every:
        refit(state, refit_every, recency, d)
        return
    # The running update: one more unweighted observation (variance = sum of squares / weight).
    weight = state[RUNNING, WEIGHT]
    total = weight + 1.0
    for i in range(d):
        delta = obs[i] - state[RUNNING, MEAN + i]
        state[RUNNING, MEAN + i] += delta / total
        state[RUNNING, MEAN + d + i] = (state[RUNNING, MEAN + d + i] * weight + delta * delta * weight / total) / total
    state[RUNNING, WEIGHT] = total


@njit(cache=True)
def transform(state, obs, out):
    """out[i] = (obs[i] - mean_i) / std_i with the running statistics; a constant value is only centred.

    Constant: scikit-learn's test, a variance within rounding error of 0 for
    this weight and mean, or a standard deviation below 10 machine epsilons.
    """
    d = obs.shape[0]
    weight = state[RUNNING, WEIGHT]
    for i in range(d):
        mean, var = state[RUNNING, MEAN + i], state[RUNNING, MEAN + d + i]
        rounding = weight * EPS * var + (weight * mean * EPS) ** 2
        std = math.sqrt(var) if var > rounding else 0.0
        out[i] = (obs[i] - mean) / (std if std >= 10 * EPS else 1.0)


def scaled_rows(state: np.ndarray, observations: np.ndarray) -> np.ndarray:
    """Every row of `observations` scaled with the state as it stands (nothing is refit)."""
    out = np.empty_like(observations, dtype=np.float64)
    for t in range(len(observations)):
        transform(state, observations[t], out[t])
    return out


def observe_rows(state: np.ndarray, observations: np.ndarray, refit_every: int, recency: float) -> np.ndarray:
    """Let the scaler see each row in turn (in place) and return each row as scaled right after seeing it."""
    out = np.empty_like(observations, dtype=np.float64)
    for t in range(len(observations)):
        observe(state, observations[t], refit_every, recency)
        transform(state, observations[t], out[t])
    return out


def state_statistics(observations: np.ndarray) -> np.ndarray:
    """[count, mean_1..d, sum of squared deviations_1..d] of the rows of `observations` (d from its shape)."""
    count = len(observations)
    if count == 0:
        return np.zeros(1 + 2 * observations.shape[1])
    mean = observations.mean(axis=0)
    return np.concatenate([[count], mean, ((observations - mean) ** 2).sum(axis=0)])


def merge_pooled(state: np.ndarray, statistics: np.ndarray) -> np.ndarray:
    """A pooled state (one row: count, weight, means, variances) with each row of `statistics` merged in, in order.

    statistics: rows of state_statistics (one per rank). Chan's pairwise merge, so the result is
    the count, mean and variance of all the states both have seen; the same rows in the same
    order give the same state on every rank.
    """
    d = (statistics.shape[1] - 1) // 2
    count, mean = state[RUNNING, COUNT], state[RUNNING, MEAN : MEAN + d].copy()
    squares = state[RUNNING, MEAN + d : MEAN + 2 * d] * count
    for row in statistics:
        added = row[0]
        if added == 0:
            continue
        total = count + added
        delta = row[1 : 1 + d] - mean
        mean = mean + delta * (added / total)
        squares = squares + row[1 + d :] + delta**2 * (count * added / total)
        count = total
    merged = np.zeros_like(state)
    merged[RUNNING, COUNT] = merged[RUNNING, WEIGHT] = count
    merged[RUNNING, MEAN : MEAN + d] = mean
    merged[RUNNING, MEAN + d : MEAN + 2 * d] = squares / count if count else 0.0
    return merged
