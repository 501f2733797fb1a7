"""Learning update: one REINFORCE-with-baseline update per episode, in JAX.

The whole episode is updated at once, vectorised over its steps and
jit-compiled once per (T, shapes, rule): episodes are padded to T steps and a
`length` masks the padding, so every episode reuses the same compiled code.

The three policy rules (`[policy] update`; the embedded default config uses
tanh-density, which learned faster than unit-density, docs/results.md):
- "unit-density" (the rule as the seed run's written description gives it,
  docs/design.md): step theta along the gradient of the
  Beta *density*, normalised to unit length separately for theta_a and
  theta_b of each action dimension, scaled by alpha * (G_t - v(s_t)).
  Normalising makes every step the same size whatever the shapes are. Since
  grad p = p * grad log p with p > 0, the unit-length density gradient equals
  the unit-length log-density gradient; we compute it that way because the
  density itself underflows to 0 for the near-deterministic policies that
  training reaches, and its gradient with it.
- "log-density": the ordinary score-function rule, alpha * (G_t - v(s_t)) *
  grad log pi(x_t | s_t).
- "tanh-density": what an earlier version of RLAI (the library the seed run
  was made with) did, see docs/results.md: the density gradient squashed element by element with
  tanh, alpha * (G_t - v(s_t)) * tanh(grad p_i). Unlike unit-density, the
  step shrinks where the density is small and its gradient flat, and it is
  bounded by alpha * |target| per parameter rather than per row.
The discount factor gamma^t of the textbook form is left out, as most
implementations do (with the seed run's gamma = 1 it is 1).

The baseline (`[policy] baseline`): "state" is the seed run's v(s) = w . phi(s).
"state-time" adds one weight for the fraction of the T steps still to come,
v(s, t) = w . [phi(s), (T - t) / T]. With gamma = 1 the return G_t grows
with the steps left, which a state-only value cannot see; the policy targets
G_t - v then carry that as noise (docs/results.md).

All three take all gradients at the pre-episode theta and apply their sum at the
end. The baseline is trained by SGD on (G_t - w.phi_t)^2, one sample at a
time walking the episode backwards; the policy targets use v evaluated before
that baseline update.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from mpiswim import normalise
from mpiswim.config import Config
from mpiswim.env import Task, Trajectory, run_episode
from mpiswim.policy import UNTRAINED_ETA, Agent, copy_agent

# Every update is computed in float64. Set on import, not left to the caller:
# without it JAX would silently round the float64 parameters to float32.
jax.config.update("jax_enable_x64", True)


def use_compilation_cache() -> None:
    """Keep compiled updates on disk: ~/.cache/mpiswim/jax, or JAX_COMPILATION_CACHE_DIR if the user set it.

    A rank that finds its update there starts 4 s sooner and never runs XLA's
    compiler, whose working memory would push a rank's peak past 400 MB. The
    commands that train (`mpiswim train`, `mpiswim bench`) call this before
    their first update; without it everything works, only compiled afresh.
    """
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        jax.config.update("jax_compilation_cache_dir", os.path.join(cache_home, "mpiswim", "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _write_cache_entries_whole()


def _write_cache_entries_whole() -> None:
    """Make JAX write each compilation cache entry whole: into a file of its own, then renamed into place.

    JAX's file cache (jax._src.lru_cache.LRUCache.put, without a size limit) writes an
    entry in place with Path.write_bytes. Ranks of one job, on one node or many sharing
    the install's file system, compile the same update at the same moment: a rank could
    read an entry another is still writing, and a rank killed mid-write (a lost node)
    left a truncated entry that every later start found, warned about and compiled
    afresh, for good (put never replaces an existing entry). A rename is atomic on a
    local or NFS/Lustre file system: readers see no entry or a whole one. numba already
    writes its cache this way (numba.core.caching, _open_for_write). Only for the
    unbounded local cache JAX makes by default; left alone if JAX's internals differ.
    """
    try:
        from jax._src import lru_cache
    except ImportError:
        return
    cache_class = getattr(lru_cache, "LRUCache", None)
    suffix = getattr(lru_cache, "_CACHE_SUFFIX", None)
    put = getattr(cache_class, "put", None)
    if put is None or not isinstance(suffix, str) or getattr(put, "whole_entries", False):
        return

    def put_whole(self, key: str, value: bytes) -> None:
        path = getattr(self, "path", None)
        if getattr(self, "eviction_enabled", True) or not key or not isinstance(path, os.PathLike):
            return put(self, key, value)
        final = os.path.join(os.fspath(path), f"{key}{suffix}")
        if "://" in final or os.path.exists(final):
            return put(self, key, value)
        partial_file = f"{final}.tmp.{socket.gethostname()}.{os.getpid()}"
        try:
            with open(partial_file, "wb") as f:
                f.write(value)
            os.replace(partial_file, final)
        finally:
            if os.path.exists(partial_file):
                os.unlink(partial_file)

    put_whole.whole_entries = True  # type: ignore[attr-defined]
    cache_class.put = put_whole


# Beta draws can round to exactly 0 or 1, where the log density is infinite.
X_MARGIN = 1e-12


def beta_log_density(theta_block: jax.Array, phi: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x_i | a_i, b_i) for each action dimension i; theta_block is (2, A, F).

    Written out with gammaln: jax.scipy's Beta logpdf goes through betaln,
    whose gradient is NaN for shapes below about 1e-30, and trained Swimmer
    policies get there (log shapes of -75 within 60 iterations of the seed run).
    """
    log_a, log_b = theta_block @ phi
    a, b = jnp.exp(log_a), jnp.exp(log_b)
    return gammaln(a + b) - gammaln(a) - gammaln(b) + (a - 1.0) * jnp.log(x) + (b - 1.0) * jnp.log1p(-x)


def step_direction(theta_block: jax.Array, phi: jax.Array, x: jax.Array, rule: str) -> jax.Array:
    """The (2, A, F) direction one step contributes to theta_block, before alpha * target."""
    # Each log p_i depends on rows (0, i) and (1, i) only, so the gradient of
    # their sum holds every dimension's own gradient in its rows.
    gradient = jax.grad(lambda th: beta_log_density(th, phi, x).sum())(theta_block)
    if rule == "log-density":
        return gradient
    if rule == "tanh-density":
        # grad p_i = p_i * grad log p_i; rows (0, i) and (1, i) belong to dimension i.
        # When both shapes are huge (log shapes above about 30), gammaln's
        # difference loses every digit: the density can come out as inf while a
        # gradient element comes out as 0, and inf * 0 is NaN. Such an element
        # takes no step (before this, every branch of the pool broke on it).
        density = jnp.exp(beta_log_density(theta_block, phi, x))
        scaled = density[None, :, None] * gradient
        return jnp.tanh(jnp.where(jnp.isnan(scaled), 0.0, scaled))
    # unit-density: grad p_i = p_i * grad log p_i, and p_i > 0 cancels in the normalisation.
    norm = jnp.linalg.norm(gradient, axis=-1, keepdims=True)
    return gradient / jnp.where(norm > 0.0, norm, 1.0)


def discounted_returns(rewards: jax.Array, gamma: float) -> jax.Array:
    """G_t = r_t + gamma * G_{t+1}, computed backwards."""

    def accumulate(future, reward):
        value = reward + gamma * future
        return value, value

    return jax.lax.scan(accumulate, jnp.zeros((), rewards.dtype), rewards, reverse=True)[1]


def baseline_features(phis: jax.Array, time_feature: bool, T: int) -> jax.Array:
    """The baseline's inputs for the steps phis holds: phi, and with time_feature also (T - t) / T."""
    if not time_feature:
        return phis
    steps_left = (T - jnp.arange(phis.shape[0])) / T
    return jnp.concatenate([phis, steps_left[:, None]], axis=1)


def block_rows(params: jax.Array, blocks: jax.Array, shared_intercept: bool) -> jax.Array:
    """params[blocks] (the rows the steps used), with block 0's intercept in column 0 when it is shared."""
    rows = params[blocks]
    if shared_intercept:
        rows = rows.at[..., 0].set(jnp.broadcast_to(params[0][..., 0], rows.shape[:-1]))
    return rows


def add_to_blocks(params: jax.Array, blocks: jax.Array, steps: jax.Array, shared_intercept: bool) -> jax.Array:
    """Add steps[t] to params[blocks[t]]; a shared intercept (block 0's column 0) takes every step's column 0."""
    if not shared_intercept:
        return params.at[blocks].add(steps)
    params = params.at[blocks, ..., 1:].add(steps[..., 1:])
    return params.at[0, ..., 0].add(steps[..., 0].sum(axis=0) if steps.ndim == params.ndim else steps[..., 0])


@partial(jax.jit, static_argnames=("rule", "time_feature", "shared_intercept", "target_after_update", "float32", "T"))
def episode_update(
    policy, baseline, blocks, phis, baseline_phis, xs, rewards, length, alpha, eta, gamma, rule,
    time_feature=False, shared_intercept=False, target_after_update=False, float32=False, T=None,
):  # fmt: skip
    """New (policy, baseline) after one episode; arrays are padded past its length (to T, or to update_steps).

    T is the episode limit the time feature counts down from (default: the arrays' length).

    baseline_phis are the baseline's features (the policy's phis unless it has its own scaler).
    target_after_update: the policy's target is G_t minus the baseline's value just after
    its SGD step on (s_t, G_t) (the seed run's order); otherwise minus the value before the episode's steps.
    float32: the step directions are computed in float32 (as the seed run's JAX did).
    """
    steps = jnp.arange(rewards.shape[0])
    valid = steps < length
    returns = discounted_returns(jnp.where(valid, rewards, 0.0), gamma)

    value_inputs = baseline_features(baseline_phis, time_feature, T or rewards.shape[0])

    def sgd_step(w, t):
        error = returns[t] - block_rows(w, blocks[t], shared_intercept) @ value_inputs[t]
        w = add_to_blocks(w, blocks[t], jnp.where(valid[t], eta * error, 0.0) * value_inputs[t], shared_intercept)
        return w, block_rows(w, blocks[t], shared_intercept) @ value_inputs[t]

    new_baseline, values_after = jax.lax.scan(sgd_step, baseline, steps, reverse=True)
    values = (
        values_after
        if target_after_update
        else jnp.sum(block_rows(baseline, blocks, shared_intercept) * value_inputs, axis=-1)
    )
    targets = jnp.where(valid, returns - values, 0.0)

    xs = jnp.clip(xs, X_MARGIN, 1.0 - X_MARGIN)
    dtype = jnp.float32 if float32 else policy.dtype
    thetas = block_rows(policy, blocks, shared_intercept)
    directions = jax.vmap(step_direction, in_axes=(0, 0, 0, None))(
        thetas.astype(dtype), phis.astype(dtype), xs.astype(dtype), rule
    )
    steps_taken = jnp.where(
        valid[:, None, None, None], alpha * targets[:, None, None, None] * directions.astype(policy.dtype), 0.0
    )
    return add_to_blocks(policy, blocks, steps_taken, shared_intercept), new_baseline


def update_steps(length: int, T: int) -> int:
    """The steps an episode of `length` is updated over: the next power of two (at least 16), at most T.

    The compiled update has one shape per length it is given; padding to powers of two keeps
    that to a few shapes, while an episode that ended early (a body that fell) costs an update of
    its own length, not of T steps. An episode of T steps is updated over exactly T.
    """
    return min(T, max(16, 1 << max(length - 1, 0).bit_length()))


def update_agent(agent: Agent, trajectory, alpha: float, eta: float, cfg: Config) -> Agent:
    """Apply one episode's update; returns new arrays (the inputs are untouched).

    With running normalisation, as the seed run did: the policy's features are
    recomputed from the episode's observations with its scaler as it stands
    at the end of the episode, and the baseline's own scaler sees the
    episode's observations walking backwards, one before each SGD step.
    With `[policy] eta_travels` the baseline trains with the eta it carries
    (once a rank has trained it) and carries the eta it was trained with.
    """
    n = trajectory.length
    phis = baseline_phis = trajectory.phis
    baseline_scaler = agent.baseline_scaler
    if cfg.normalisation == "running":
        phis, baseline_phis = trajectory.phis.copy(), trajectory.phis.copy()
        phis[:n, 1:] = normalise.scaled_rows(agent.policy_scaler, trajectory.observations[:n])
        baseline_scaler = agent.baseline_scaler.copy()
        baseline_phis[:n, 1:] = normalise.observe_rows(
            baseline_scaler, trajectory.observations[:n][::-1], cfg.refit_every, cfg.recency
        )[::-1]
    baseline_eta = agent.baseline_eta
    if cfg.eta_travels:
        eta = eta if agent.baseline_eta[0] == UNTRAINED_ETA else float(agent.baseline_eta[0])
        baseline_eta = np.array([eta])
    steps = update_steps(n, cfg.T)
    policy, baseline = episode_update(
        agent.policy, agent.baseline, trajectory.blocks[:steps], phis[:steps], baseline_phis[:steps],
        trajectory.xs[:steps], trajectory.rewards[:steps], n, alpha, eta, cfg.gamma, cfg.update, cfg.time_feature,
        cfg.intercept == "shared", cfg.baseline_target == "after-update", cfg.precision == "float32", cfg.T,
    )  # fmt: skip
    return Agent(np.array(policy), np.array(baseline), agent.policy_scaler, baseline_scaler, baseline_eta)


def agent_is_finite(agent: Agent) -> bool:
    return all(np.isfinite(part).all() for part in agent)


# --- the REINFORCE learner ([pool] learner = "reinforce") ---------------------------


def improve_branch(
    agent: Agent,
    task: Task,
    rng: np.random.Generator,
    cfg: Config,
    alpha: float,
    eta: float,
    trajectory: Trajectory,
    noise: np.random.Generator | None = None,
) -> tuple[Agent, np.ndarray, bool]:
    """REINFORCE for cfg.iterate_episodes episodes; returns (branch, returns, degenerate). noise: see
    env.run_episode.
    """
    agent = copy_agent(agent)  # the branch is this rank's own: its running scalers change as it acts
    returns = np.full(cfg.iterate_episodes, np.nan)
    for episode in range(cfg.iterate_episodes):
        returns[episode], degenerate = run_episode(task, agent, rng, cfg.T, trajectory, noise=noise)
        if degenerate:
            return agent, returns, True
        agent = update_agent(agent, trajectory, alpha, eta, cfg)
        if not agent_is_finite(agent):
            return agent, returns, True
    return agent, returns, False


def reinforce_branch(
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
    """The REINFORCE learner (mpiswim.pool.Learner): improve_branch with this rank's alpha and eta; shares nothing."""
    return improve_branch(agent, task, rng, cfg, cfg.alpha[rank], cfg.eta[rank], trajectory, noise)
