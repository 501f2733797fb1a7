"""Re-score runs' best agents on plain Gymnasium, outside mpiswim's episode loop.

    python analysis/rescore_gymnasium.py RUN.h5 [RUN.h5 ...] [--episodes 10]

Each agent acts through `mpiswim.load_policy` in an env made by `gymnasium.make` (its own
TimeLimit, its own reset seeds 1000, 1001, ...), so the score depends on neither the compiled
episode nor mpiswim's evaluation code: a check of the numbers `mpiswim evaluate` reports.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import mpiswim


def rescore(path: str, episodes: int) -> list[float]:
    """The best agent of `path` on `episodes` plain Gymnasium episodes (Beta mean actions)."""
    policy = mpiswim.load_policy(path)
    env = gym.make(policy.env_id)
    returns = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=1000 + episode)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(policy.act(observation))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.h5")
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    for path in args.runs:
        returns = rescore(path, args.episodes)
        print(f"{path}: {np.mean(returns):.1f} ± {np.std(returns):.1f} on {args.episodes} plain Gymnasium episodes")


if __name__ == "__main__":
    main()
