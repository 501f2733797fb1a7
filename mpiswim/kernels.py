"""One step of the Beta policy, written once as compiled kernels: features, feature block, log shapes, action.

The compiled episode (mpiswim.compiled), the Python episode loop every
other task runs (mpiswim.env.run_episode) and `mpiswim render` all act through
these functions, so the three cannot drift apart. The JAX update
(mpiswim.learn) recomputes the log shapes to differentiate them;
tests/test_learn.py checks its log shapes against `log_shapes` here.

The policy is taken as flat_policy(agent): (blocks, 2A, F), rows log a_1..a_A
then log b_1..b_A. The functions are compiled with numba when it is installed
(as mpiswim.normalise's are); without it they run as the same plain Python.
"""

from __future__ import annotations

import math

from mpiswim import normalise
from mpiswim.jit import njit
from mpiswim.policy import LOG_SHAPE_LIMIT


@njit(cache=True)
def features(obs, scale, scaler, refit_every, recency, phi):
    """phi[1:] = obs / scale; with a scaler (scaler.size > 0) the scaled obs.

    A running scaler first sees obs (in place); a one-row state (pooled statistics,
    mpiswim.normalise.merge_pooled) is only read. phi[0] is the constant 1 and is left as it is.
    """
    if scaler.size > 0:
        if scaler.shape[0] > 1:
            normalise.observe(scaler, obs, refit_every, recency)
        normalise.transform(scaler, obs, phi[1:])
    else:
        for i in range(obs.shape[0]):
            phi[1 + i] = obs[i] / scale[i]


@njit(cache=True)
def feature_block(obs, signed):
    """The block phi lives in: with the signed coding, bit i is set when obs[i] > 0; the linear map has block 0."""
    block = 0
    if signed:
        for i in range(obs.shape[0]):
            if obs[i] > 0.0:
                block += 1 << i
    return block


@njit(cache=True)
def log_shapes(policy, phi, block, shared_intercept, out):
    """out[r] = policy[block, r] . phi for every row r (log a_1..a_A, log b_1..b_A), summed in feature order.

    With a shared intercept, block 0's column 0 serves every block.
    """
    intercept_block = 0 if shared_intercept else block
    for row in range(out.shape[0]):
        total = policy[intercept_block, row, 0]
        for f in range(1, phi.shape[0]):
            total += policy[block, row, f] * phi[f]
        out[row] = total


@njit(cache=True)
def beta_draw(rng, a, b):
    """One Beta(a, b) draw, numpy's algorithm on numpy's stream.

    numba's own Generator.beta ports numpy's Johnk loop for a, b <= 1 without
    its log-space branch, and loops forever once both shapes are below about
    1e-30 (trained swimmers get there). This is numpy's algorithm for
    a, b <= 1 in full; other shapes go to the generator's beta, which matches
    numpy's bit for bit.
    """
    if a > 1.0 or b > 1.0:
        return rng.beta(a, b)
    if a < 3e-103 and b < 3e-103:  # as numpy: Johnk's powers would underflow, the draw is 0 or 1
        return 1.0 if rng.random() < a / (a + b) else 0.0
    while True:
        u = rng.random()
        v = rng.random()
        x = u ** (1.0 / a)
        y = v ** (1.0 / b)
        if x + y <= 1.0 and u + v > 0.0:
            if x + y > 0.0:
                return x / (x + y)
            log_x = math.log(u) / a  # both powers underflowed: compare in logs
            log_y = math.log(v) / b
            log_max = max(log_x, log_y)
            log_x -= log_max
            log_y -= log_max
            return math.exp(log_x - math.log(math.exp(log_x) + math.exp(log_y)))


@njit(cache=True)
def usable(shapes):
    """False when exp() of a log shape would overflow or underflow (beyond +-LOG_SHAPE_LIMIT), or one is NaN."""
    for i in range(shapes.shape[0]):
        if not -LOG_SHAPE_LIMIT < shapes[i] < LOG_SHAPE_LIMIT:
            return False
    return True


@njit(cache=True)
def mean_action(shapes, x):
    """x[i] = a_i / (a_i + b_i), the Beta mean, computed without overflow."""
    half = x.shape[0]
    for i in range(half):
        x[i] = 1.0 / (1.0 + math.exp(shapes[half + i] - shapes[i]))


@njit(cache=True)
def act(shapes, mean, rng, x):
    """x[i] on [0, 1] for each action dimension: the Beta mean, or a Beta draw from rng; False if a shape is unusable
    (then nothing is drawn).

    Compiled code calls this. From Python, passing a numpy Generator into compiled code costs
    about 35 us a call, so mpiswim.env.policy_action draws with the Generator's own beta, which
    beta_draw reproduces bit for bit.
    """
    if not usable(shapes):
        return False
    if mean:
        mean_action(shapes, x)
    else:
        half = x.shape[0]
        for i in range(half):
            x[i] = beta_draw(rng, math.exp(shapes[i]), math.exp(shapes[half + i]))
    return True
