"""A trained policy a program can call: `mpiswim.load_policy(RUN.h5).act(observation)`.

It acts through mpiswim.kernels, the step every episode of training, `mpiswim
evaluate` and `mpiswim render` take, so it acts exactly as `evaluate` does. It needs
neither MPI nor JAX: reading the checkpoint takes h5py, the task's action bounds
take Gymnasium (MuJoCo), the step numba if installed (else the same plain Python).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpiswim.env import policy_step
from mpiswim.policy import Agent, copy_agent, flat_policy


class PolicyError(ValueError):
    """The policy cannot act on this observation: one message naming what is wrong and the fix."""


@dataclass
class Policy:
    """A stored agent of a run, ready to act on a Gymnasium observation.

    `act(observation)` returns the action in the task's bounds [low, high]. With `[policy]
    normalisation = "running"` each call first updates the agent's running observation scaler in
    place, as an evaluation episode does (so a sequence of calls matches `mpiswim evaluate`'s episodes
    in order); with "pooled" statistics the scaler is only read.
    """

    env_id: str  # the Gymnasium task the run trained on
    T: int  # the run's episode length (steps); Gymnasium's own limit may be longer
    low: np.ndarray  # (A,) action bounds
    high: np.ndarray
    agent: Agent  # the stored agent (log Beta shapes in .policy); its scaler changes with running normalisation
    evaluation_action: str  # "mean" or "sample": how the run scored its branches (what `evaluate` does by default)
    iteration: int  # the iteration (counted from 1) that produced this agent; 0: the initial agent
    signed: bool = False
    shared_intercept: bool = False
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    refit_every: int = 1
    recency: float = 1.0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __post_init__(self) -> None:
        self._flat = flat_policy(self.agent)
        self._phi = np.ones(self.obs_dim + 1)
        self._shapes = np.empty(2 * self.action_dim)

    @property
    def obs_dim(self) -> int:
        return self.agent.policy.shape[3] - 1

    @property
    def action_dim(self) -> int:
        return self.agent.policy.shape[2]

    def act(self, observation: np.ndarray, mean: bool = True) -> np.ndarray:
        """The action for `observation`: the Beta mean a/(a+b) (mean=True), or a Beta draw from `self.rng`.

        Raises PolicyError for an observation of the wrong size or when a Beta shape of the policy
        overflows at it (what `evaluate` counts as a degenerate episode).
        """
        obs = np.ascontiguousarray(observation, dtype=np.float64).reshape(-1)
        if obs.shape != (self.obs_dim,):
            raise PolicyError(
                f"observation of shape {np.shape(observation)}, but the policy of {self.env_id} takes "
                f"{self.obs_dim} values. Fix: pass the observation of an environment made with "
                f"gymnasium.make({self.env_id!r})."
            )
        x = np.empty(self.action_dim)
        _, usable = policy_step(
            self._flat, obs, self._phi, x, self._shapes, mean, self.rng, self.scale, self.agent.policy_scaler,
            (self.refit_every, self.recency), self.signed, self.shared_intercept,
        )  # fmt: skip
        if not usable:
            raise PolicyError(
                "the policy's Beta shapes overflowed at this observation (a degenerate step). Fix: act with another "
                "agent of the run (load_policy(path, agent='current')) or train with smaller step sizes."
            )
        return self.low + x * (self.high - self.low)


def load_policy(path: str | Path, agent: str = "best", seed: int | None = None) -> Policy:
    """The run's best agent (the initial, untrained one if no branch has won yet), or agent="current" (the one the
    next iteration starts from), as a Policy; `seed` seeds the draws of act(mean=False).

    A checkpoint that cannot be read, or whose task cannot be made here, raises
    mpiswim.checkpoint.CheckpointError naming the file and the fix.
    """
    from mpiswim.checkpoint import load_checkpoint
    from mpiswim.tasks import make_env

    if agent not in ("best", "current"):
        raise ValueError(f"agent={agent!r}: not a stored agent. Fix: use 'best' or 'current'.")
    checkpoint = load_checkpoint(path)
    cfg, state = checkpoint.config, checkpoint.state
    chosen = state.best_agent if agent == "best" else state.agent
    iteration = (state.best_iteration + 1 if state.best_iteration >= 0 else 0) if agent == "best" else state.iteration
    env = make_env(cfg.env_id)
    try:
        low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    finally:
        env.close()
    obs_dim = chosen.policy.shape[3] - 1
    return Policy(
        env_id=cfg.env_id,
        T=cfg.T,
        low=low,
        high=high,
        agent=copy_agent(chosen),
        evaluation_action=cfg.evaluation_action,
        iteration=iteration,
        signed=cfg.features == "signed",
        shared_intercept=cfg.intercept == "shared",
        scale=np.broadcast_to(np.asarray(cfg.observation_scale, dtype=np.float64), (obs_dim,)).copy(),
        refit_every=cfg.refit_every if cfg.normalisation == "running" else 1,
        recency=cfg.recency if cfg.normalisation == "running" else 1.0,
        rng=np.random.default_rng(seed),
    )
