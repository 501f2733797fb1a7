"""Compiled Swimmer-v5 episodes: the whole step loop in machine code, via numba.

One MuJoCo step of the swimmer costs about 50 µs; the Python around it
(features, Beta draws, Gymnasium's step, bookkeeping) cost another 30-40 µs.
Here one numba function runs a whole episode: pick the feature block, compute
the log Beta shapes, draw the action, call MuJoCo's C `mj_step` directly, and
compute observation and reward exactly as Gymnasium's Swimmer-v5 does
(tests/test_swimmer.py checks them bit for bit against Gymnasium).

The Beta draws use the caller's numpy Generator with numpy's own algorithm on
the same bit generator, so the random stream is the one plain numpy would
produce (`beta_draw`, tests/test_swimmer.py). The compiled code is
cached on disk (numba `cache=True`), so only the very first run compiles.

Only the stock Swimmer (Gymnasium's v5 defaults) takes this path; every other
task runs the plain Python loop in `mpiswim.env`.
"""

from __future__ import annotations

import glob
import math
import os

import numpy as np

from mpiswim import normalise
from mpiswim.policy import LOG_SHAPE_LIMIT, Agent, flat_policy


def _load_mj_step():
    """MuJoCo's C mj_step(model, data) as a numba external function, or None if the library cannot be found."""
    import llvmlite.binding
    import mujoco
    import numba

    libraries = sorted(glob.glob(os.path.join(os.path.dirname(mujoco.__file__), "libmujoco.so*")))
    if not libraries:
        return None
    llvmlite.binding.load_library_permanently(libraries[0])
    return numba.types.ExternalFunction("mj_step", numba.types.void(numba.types.voidptr, numba.types.voidptr))


try:
    import numba

    mj_step = _load_mj_step()
except (ImportError, OSError, RuntimeError):  # no numba, or no loadable libmujoco: the Python loop is used
    numba, mj_step = None, None


def available() -> bool:
    """True when compiled Swimmer episodes can run here."""
    return mj_step is not None


def _beta_draw(rng, a, b):
    """One Beta(a, b) draw, numpy's algorithm on numpy's stream.

    numba's own Generator.beta ports numpy's Johnk loop for a, b <= 1 without
    its log-space branch, and loops forever once both shapes are below about
    1e-30 (trained swimmers get there). This is numpy's algorithm for
    a, b <= 1 in full; other shapes go to numba's beta, which matches numpy's
    bit for bit.
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


def _swimmer_episode(
    model_address, data_address, frame_skip, qpos, qvel, ctrl, observation, scale, signed, mean_action,
    policy, low, span, rng, T, forward_weight, ctrl_weight, dt, blocks, phis, observations, xs, rewards,
    shared_intercept, scaler, refit_every, recency,
):  # fmt: skip
    """Run one episode from `observation`; record every step; return (total reward, steps, degenerate).

    qpos, qvel and ctrl are numpy views of MuJoCo's own data, so mj_step
    updates them in place. The expressions follow Gymnasium's Swimmer-v5:
    reward = forward_weight * x velocity - ctrl_weight * |action|^2,
    observation = [qpos[2:], qvel]. The features are [1, observation / scale],
    or with a running scaler (scaler.size > 0, updated in place) [1, scaled
    observation], in the block of the observation's signs (signed coding) or
    in block 0 (linear map). shared_intercept: block 0's intercept serves every block.
    """
    obs_dim, action_dim = observation.shape[0], ctrl.shape[0]
    n_positions = qpos.shape[0] - 2  # the observation leaves out the x, y position
    obs = observation.copy()
    phi = np.empty(obs_dim + 1)
    phi[0] = 1.0
    x = np.empty(action_dim)
    total = 0.0
    for t in range(T):
        if scaler.size > 0:
            normalise.observe(scaler, obs, refit_every, recency)
            normalise.transform(scaler, obs, phi[1:])
        else:
            for i in range(obs_dim):
                phi[1 + i] = obs[i] / scale[i]
        # The signed coding: bit i of the block index is set when s_i > 0.
        block = 0
        if signed:
            for i in range(obs_dim):
                if obs[i] > 0.0:
                    block += 1 << i
        intercept_block = 0 if shared_intercept else block
        # log a_i and log b_i are rows i and action_dim + i of the block; draw x_i ~ Beta(a_i, b_i).
        for i in range(action_dim):
            log_a = policy[intercept_block, i, 0]
            log_b = policy[intercept_block, action_dim + i, 0]
            for f in range(1, obs_dim + 1):
                log_a += policy[block, i, f] * phi[f]
                log_b += policy[block, action_dim + i, f] * phi[f]
            if not (-LOG_SHAPE_LIMIT < log_a < LOG_SHAPE_LIMIT and -LOG_SHAPE_LIMIT < log_b < LOG_SHAPE_LIMIT):
                return total, t, True  # exp() would overflow or underflow (or NaN): degenerate branch
            if mean_action:
                x[i] = 1.0 / (1.0 + math.exp(log_b - log_a))  # a / (a + b), without overflow
            else:
                x[i] = beta_draw(rng, math.exp(log_a), math.exp(log_b))
        control_cost = 0.0
        for i in range(action_dim):
            action = low[i] + x[i] * span[i]
            ctrl[i] = action
            control_cost += action * action
        x_before = qpos[0]
        for _ in range(frame_skip):
            mj_step(model_address, data_address)
        reward = forward_weight * ((qpos[0] - x_before) / dt) - ctrl_weight * control_cost

        blocks[t] = block
        phis[t, :] = phi
        observations[t, :] = obs
        xs[t, :] = x
        rewards[t] = reward
        total += reward
        obs[:n_positions] = qpos[2:]
        obs[n_positions:] = qvel
    return total, T, False


if mj_step is not None:
    beta_draw = numba.njit(cache=True)(_beta_draw)
    swimmer_episode = numba.njit(cache=True)(_swimmer_episode)
else:
    beta_draw = swimmer_episode = None


def run_swimmer_episode(task, agent: Agent, rng: np.random.Generator, T: int, mean_action: bool, trajectory, noise: np.random.Generator) -> tuple[float, bool]:
    """One compiled episode of at most T steps on the task's Swimmer env; the same contract as env.run_episode.

    mean_action: take the Beta mean a/(a+b) instead of a draw; the start state comes from rng, the draws from noise.
    """
    env = task.env
    observation, _ = env.reset(seed=int(rng.integers(2**31)))
    data = env.data
    refit_every, recency = task.normalisation or (1, 1.0)
    total, steps, degenerate = swimmer_episode(
        env.model._address, data._address, env.frame_skip, data.qpos, data.qvel, data.ctrl, observation, task.scale,
        task.sign_weights is not None, mean_action, flat_policy(agent), task.low, task.high - task.low, noise, T,
        env._forward_reward_weight, env._ctrl_cost_weight, env.dt,
        trajectory.blocks, trajectory.phis, trajectory.observations, trajectory.xs, trajectory.rewards,
        task.shared_intercept, agent.policy_scaler, refit_every, recency,
    )  # fmt: skip
    trajectory.length = steps
    return float(total), bool(degenerate)
