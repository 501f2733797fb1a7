"""Policy and features: the Beta policy, the feature maps and the agent's parameters.

An agent is two arrays. For a feature map with B blocks of F = d + 1 features:
- `policy`   (B, 2, A, F): log Beta shapes, log a_i = policy[block, 0, i] . phi and
             log b_i = policy[block, 1, i] . phi, for action dimension i;
- `baseline` (B, F): the linear state value v(s) = baseline[block] . phi;
             (B, F + 1) with the time feature (mpiswim.learn.baseline_features).

phi = [1, s_1, ..., s_d] is the only non-zero block of the full feature vector,
so a step touches one block: `policy[block]` is a contiguous (2, A, F) slice.
With a shared intercept (`[policy] intercept = "shared"`, the seed run's map) one
weight serves every block: block 0's column 0 holds it (`policy[0, :, :, 0]`,
`baseline[0, 0]`) and column 0 of the other blocks stays 0.

An agent also carries what travels with it when it is promoted: the running
observation scalers of its policy and baseline (mpiswim.normalise; (0, 0)
arrays when normalisation is off) and, with `[policy] eta_travels`, the
baseline's step size.
The per-step policy (features, block, log shapes, action) is written once, as
compiled kernels, in mpiswim.kernels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NO_SCALER = np.zeros((0, 0))  # size 0: nothing in it can change
NO_ETA = np.zeros(0)
UNTRAINED_ETA = -1.0  # baseline_eta before any rank has trained the baseline: each rank uses its own


def scaler_shape(obs_dim: int, refit_every: int, horizon: int) -> tuple[int, int]:
    """Shape of a running scaler's state (mpiswim.normalise): the running row, the current chunk, the stored chunks."""
    return (1 + horizon // refit_every, 2 + 2 * obs_dim)


class Agent(NamedTuple):
    """Policy and baseline parameters and their state; what the pool broadcasts and checkpoints."""

    policy: np.ndarray
    baseline: np.ndarray
    policy_scaler: np.ndarray = NO_SCALER  # running normalisation state of the policy's features
    baseline_scaler: np.ndarray = NO_SCALER  # the baseline's own scaler (it sees update episodes only)
    baseline_eta: np.ndarray = NO_ETA  # (1,): the step size the baseline was trained with, when it travels


def feature_blocks(obs_dim: int, features: str) -> int:
    """Number of feature blocks: 2^d for the signed coding, 1 for the linear map."""
    return 2**obs_dim if features == "signed" else 1


def initial_agent(
    obs_dim: int,
    action_dim: int,
    features: str,
    time_feature: bool = False,
    scaler: tuple[int, int] | None = None,
    eta_travels: bool = False,
) -> Agent:
    """A_0: zero policy (every action ~ Beta(1, 1), i.e. uniform) and zero baseline.

    scaler: (refit_every, horizon) of running normalisation, None when it is off.
    """
    blocks = feature_blocks(obs_dim, features)
    return Agent(
        policy=np.zeros((blocks, 2, action_dim, obs_dim + 1)),
        baseline=np.zeros((blocks, obs_dim + 1 + time_feature)),
        policy_scaler=NO_SCALER
        if scaler is None
        else np.zeros(scaler_shape(obs_dim, *scaler)),  # zeros: has seen nothing
        baseline_scaler=NO_SCALER if scaler is None else np.zeros(scaler_shape(obs_dim, *scaler)),
        baseline_eta=np.array([UNTRAINED_ETA]) if eta_travels else NO_ETA,
    )


def copy_agent(agent: Agent) -> Agent:
    return Agent(*(part.copy() for part in agent))


def pack_agent(agent: Agent) -> np.ndarray:
    """The agent as one contiguous float64 buffer (its parts in field order), for MPI and hashing."""
    return np.concatenate([part.ravel() for part in agent])


def unpack_agent(flat: np.ndarray, like: Agent) -> Agent:
    """Inverse of pack_agent, shaped like `like`."""
    parts, start = [], 0
    for part in like:
        parts.append(flat[start : start + part.size].reshape(part.shape).copy())
        start += part.size
    return Agent(*parts)


def sign_weights(obs_dim: int) -> np.ndarray:
    """Bit weights that turn the sign pattern of s into a block index."""
    return 1 << np.arange(obs_dim)


def active_blocks(observations: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The feature block of each row of an (n, d) array of observations (mpiswim.kernels.feature_block's, vectorised).

    `weights` is sign_weights(d) for the signed coding, None for the linear map.
    """
    if weights is None:
        return np.zeros(len(observations), dtype=np.int64)
    return (observations > 0.0) @ weights


def flat_policy(agent: Agent) -> np.ndarray:
    """The policy as (B, 2A, F): row block, then log a_1..a_A, log b_1..b_A (a view)."""
    blocks, _, _, features = agent.policy.shape
    return agent.policy.reshape(blocks, -1, features)


# exp() of a log shape beyond +-700 overflows to inf or comes within a few
# powers of ten of underflowing to 0; numpy's Beta sampler then fails or
# returns NaN. Such a branch is degenerate.
LOG_SHAPE_LIMIT = 700.0
