"""Does the MuJoCo version change the swimmer's physics? The same actions on Swimmer-v5 under two MuJoCo versions.

Run it once in each environment, then compare:
    python -m venv /tmp/mj23 && /tmp/mj23/bin/pip install -e . "mujoco==2.3.7"    # (pip warns: mpiswim asks for >= 3.1)
    /tmp/mj23/bin/python analysis/physics_versions.py /tmp/p23.npy
    .venv/bin/python analysis/physics_versions.py /tmp/p40.npy
    .venv/bin/python analysis/physics_versions.py --compare /tmp/p23.npy /tmp/p40.npy
Five 1000-step episodes of a fixed wiggle (a sine gait plus fixed noise) from the start states of seeds 0-4;
prints each episode's return and, with --compare, how far the observations drift apart (docs/results.md).
"""

from __future__ import annotations

import sys

import numpy as np


def record(path: str) -> None:
    import gymnasium as gym
    import mujoco

    env = gym.make("Swimmer-v5", max_episode_steps=1000).unwrapped
    rng = np.random.default_rng(0)
    observations = []
    for episode in range(5):
        env.reset(seed=episode)
        total = 0.0
        for step in range(1000):
            action = 0.9 * np.array([np.sin(step / 6), np.cos(step / 6)]) + rng.uniform(-0.1, 0.1, 2)
            obs, reward, *_ = env.step(action)
            total += reward
            observations.append(obs)
        print(f"MuJoCo {mujoco.__version__}: episode {episode} return {total:.6f}")
    np.save(path, np.array(observations))


def compare(first: str, second: str) -> None:
    difference = np.abs(np.load(first) - np.load(second)).max(axis=1)
    apart = np.flatnonzero(difference > 1e-9)
    print(
        f"largest observation difference {difference.max():.3g}; first step more than 1e-9 apart: "
        f"{apart[0] if apart.size else 'none'} of {difference.size}"
    )


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        record(sys.argv[1])
