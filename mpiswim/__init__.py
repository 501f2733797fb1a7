"""mpiswim: pooled branch-and-merge REINFORCE for MuJoCo bodies over MPI.

Importing the package pins the numerical libraries to one thread per process
(unless the user already chose otherwise), because P ranks on P cores must not
fight over threads. This has to happen before numpy or jax are first imported,
which is why it lives here and not in a submodule.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpiswim.trained import Policy

__version__ = "0.2.0"

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
)
# JAX would otherwise look for GPUs/TPUs at import and warn on every rank.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def load_policy(path: str | os.PathLike, agent: str = "best", seed: int | None = None) -> Policy:
    """A run's trained agent as a Policy with `act(observation, mean=True)`, `low`, `high`, `env_id` and `T`
    (mpiswim.trained.load_policy); needs neither MPI nor JAX."""
    from mpiswim.trained import load_policy as load

    return load(path, agent, seed)
