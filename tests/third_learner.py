"""A trivial third learner, not shipped: a learner is one function (mpiswim.pool.Learner) plus one registry line.

Each rank moves every policy weight by its own alpha, and reports as its training
returns the sum of the ranks' numbers it shared, so a test can see that the exchange
reached every rank.
"""

from __future__ import annotations

import numpy as np


def shift(agent, task, rng, cfg, rank, iteration, trajectory, noise, share):
    everyone = share(np.array([float(rank + 1)]))  # every rank's row, in rank order
    branch = agent._replace(policy=agent.policy + cfg.alpha[rank])
    return branch, np.full(cfg.iterate_episodes, everyone.sum()), False
