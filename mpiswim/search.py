"""Random-search branches: the ranks explore parameter space together and each steps along the pooled direction.

With `[pool] learner = "random-search"` a rank does not run REINFORCE. In
iteration k it tries iterate_episodes / 2 random directions delta around the
pool's agent theta, each twice, as theta + noise * delta and
theta - noise * delta, for one episode each with the Beta mean as the action
(the two share their start state). The ranks allgather these returns. Every
rank then regenerates every rank's directions from the shared seed (seed, k),
so only returns cross the network, and computes the same step, the one of
Augmented Random Search (Mania, Guy and Recht 2018, basic random search with
the top directions and the returns' spread, "V1-t"):

    g = 1 / (b * sigma_R) * sum over the b kept directions of (r+ - r-) * delta

where the kept directions are the b whose better side scored highest and
sigma_R is the standard deviation of their 2b returns. Rank r's branch is
theta + alpha_r * g: the ranks' step sizes make a line search along g, and the
pool's evaluation and argmax merge pick the step that works.

A direction moves log a by +delta and log b by -delta (both shapes' rows,
every block), so it moves the mean action a/(a+b) and leaves the Beta's
concentration alone. For actions in [-1, 1] the mean action is
tanh(w . phi), w being half the difference of the two rows: ARS's linear
policy, squashed into the action bounds.

By default the directions leave the intercept (the weight of phi's constant
1) alone, like ARS's linear policy, which has none: on Swimmer-v5, searching
it too left 1 seed in 5 stuck near 50 and slowed the others
(docs/results.md); `[search] intercept = true` searches it.

Two more of ARS's devices (V2-t), both options: `[policy] normalisation =
"pooled"` standardises the observation with the mean and standard deviation
of every state the pool's exploration episodes have visited; the ranks add
their states' statistics to the shared row, so every rank merges the same
numbers into the agent's statistics once per iteration (they travel with
the agent, in the broadcast and the checkpoint, and stay fixed while it
acts). `[search] shift` subtracts a reward per step from the exploration
returns the step sees (the healthy reward of Hopper, Walker2d, Ant: standing
still then earns nothing); the recorded returns and every score stay whole.

Plain numpy, no MPI: mpiswim.pool does the allgather (the learner's `share`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mpiswim import normalise
from mpiswim.config import Config
from mpiswim.env import Task, Trajectory, run_episode
from mpiswim.learn import agent_is_finite
from mpiswim.policy import Agent
from mpiswim.state import DIRECTIONS_STREAM, shared_stream


def directions(cfg: Config, iteration: int, shape: tuple[int, ...]) -> np.ndarray:
    """Every rank's directions of this iteration, (P, iterate_episodes // 2, *shape) standard normals, the same on every
    rank.
    """
    deltas = shared_stream(cfg.seed, iteration, DIRECTIONS_STREAM).standard_normal(
        (cfg.world_size, cfg.iterate_episodes // 2, *shape)
    )
    if not cfg.search_intercept:
        deltas[..., 0] = 0.0  # feature 0 is phi's constant 1: leave the intercept where it is
    return deltas


def direction_shape(agent: Agent) -> tuple[int, ...]:
    """The shape of one direction: one shape row (blocks, action dimensions, features)."""
    return agent.policy[:, 0].shape


def nudge(agent: Agent, delta: np.ndarray, size: float) -> Agent:
    """The agent with log a moved by size * delta and log b by -size * delta (the baseline is shared, not copied)."""
    policy = agent.policy.copy()
    policy[:, 0] += size * delta
    policy[:, 1] -= size * delta
    return agent._replace(policy=policy)


def explore(
    agent: Agent,
    task: Task,
    rng: np.random.Generator,
    cfg: Config,
    deltas: np.ndarray,
    trajectory: Trajectory,
    noise: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This rank's exploration at its own noise: returns [r+ of direction 1, r- of direction 1, r+ of direction 2, ...]
    (NaN where the policy broke), each episode's length, and the statistics of the states they visited
    (normalise.state_statistics).
    """
    returns, lengths = np.full(cfg.iterate_episodes, np.nan), np.zeros(cfg.iterate_episodes)
    visited = np.zeros((1, 2 + 2 * task.obs_dim))  # a pooled state, merged episode by episode
    for index, delta in enumerate(deltas):
        start = int(rng.integers(2**63))  # both sides of a direction meet the same start state
        for side, sign in enumerate((1.0, -1.0)):
            total, degenerate = run_episode(
                task,
                nudge(agent, delta, sign * noise),
                np.random.default_rng(start),
                cfg.T,
                trajectory,
                mean_action=True,
            )
            lengths[2 * index + side] = trajectory.length
            if not degenerate:
                returns[2 * index + side] = total
            if cfg.normalisation == "pooled":
                episode = normalise.state_statistics(trajectory.observations[: trajectory.length])
                visited = normalise.merge_pooled(visited, episode[None])
    return returns, lengths, pooled_row(visited)


def pooled_row(state: np.ndarray) -> np.ndarray:
    """A pooled state's statistics as normalise.state_statistics gives them: [count, means, sums of squares]."""
    d = (state.shape[1] - 2) // 2
    count = state[0, normalise.COUNT]
    means = state[0, normalise.MEAN : normalise.MEAN + d]
    return np.concatenate([[count], means, state[0, normalise.MEAN + d :] * count])


def search_step(returns: np.ndarray, deltas: np.ndarray, top: int) -> np.ndarray:
    """ARS's step g from every rank's returns (P, 2D) and directions (P, D, *shape); zeros if no direction is usable.

    A direction with a broken side (NaN) is left out. `top` keeps the best
    `top` directions by their better side (0: all of them).
    """
    plus, minus = returns[:, 0::2].ravel(), returns[:, 1::2].ravel()
    deltas = deltas.reshape(plus.size, *deltas.shape[2:])
    kept = np.flatnonzero(np.isfinite(plus) & np.isfinite(minus))
    if top:
        kept = kept[np.argsort(-np.maximum(plus, minus)[kept], kind="stable")[:top]]
    spread = np.concatenate([plus[kept], minus[kept]]).std() if kept.size else 0.0
    if spread == 0.0:
        return np.zeros(deltas.shape[1:])  # no usable direction, or every return equal: no information, no step
    return np.tensordot(plus[kept] - minus[kept], deltas[kept], axes=1) / (kept.size * spread)


def random_search_branch(
    agent: Agent,
    task: Task,
    rng: np.random.Generator,
    cfg: Config,
    rank: int,
    iteration: int,
    trajectory: Trajectory,
    noise: np.random.Generator | None,
    share: Callable[[np.ndarray], np.ndarray],
) -> tuple[Agent, np.ndarray, bool]:
    """The random-search learner (mpiswim.pool.Learner): explore this rank's directions around the agent, share the
    returns, and step along the pooled direction by this rank's alpha.
    """
    deltas = directions(cfg, iteration, direction_shape(agent))
    returns, lengths, visited = explore(agent, task, rng, cfg, deltas[rank], trajectory, cfg.search_noise[rank])
    # ARS's shift: the step sees each return less shift per step survived; the recorded returns stay whole
    table = share(np.concatenate([returns - cfg.search_shift * lengths, visited]))
    step = search_step(table[:, : returns.size], deltas, cfg.search_top)
    branch = nudge(agent, step, cfg.alpha[rank])
    if cfg.normalisation == "pooled":  # every rank merges the same rows in rank order: the same statistics
        branch = branch._replace(policy_scaler=normalise.merge_pooled(agent.policy_scaler, table[:, returns.size :]))
    return branch, returns, not agent_is_finite(branch)
