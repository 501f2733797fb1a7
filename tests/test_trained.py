"""mpiswim.load_policy: a stored agent that a program drives a Gymnasium environment with, acting as `evaluate` does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mpiswim
from mpiswim.checkpoint import save_checkpoint
from mpiswim.config import DEFAULT_CONFIG, apply_overrides, parse_config
from mpiswim.policy import Agent, initial_agent
from mpiswim.report import evaluate_agent
from mpiswim.state import IterationRecord, PoolState
from mpiswim.tasks import make_env

REPO = Path(__file__).resolve().parent.parent


def trained_checkpoint(path: Path, overrides: list[str] = ()) -> Path:
    """A Swimmer-v5 checkpoint whose best agent has random weights (no training): actions that vary with the state."""
    cfg = parse_config(apply_overrides(DEFAULT_CONFIG, ["run.iterations=3", "env.T=200", *overrides]), 2)
    zero = initial_agent(8, 2, cfg.features, cfg.time_feature, cfg.scaler, cfg.eta_travels)
    weights = np.random.default_rng(7).normal(0.0, 0.3, zero.policy.shape)
    best = Agent(weights, *zero[1:])
    record = IterationRecord(
        scores=np.array([12.5, 3.0]),
        winner=0,
        train_returns=np.zeros((2, cfg.iterate_episodes)),
        timings=np.zeros((2, 4)),
        degenerate=np.zeros(2, bool),
        fell_back=False,
        best_score=12.5,
        steps=np.array([100, 100]),
    )
    save_checkpoint(path, cfg, PoolState(1, best, best, 12.5, 0, 0, 0), [record])
    return path


def episodes_with_policy(path: Path, episodes: int, seed: int, mean: bool) -> list[float]:
    """evaluate_agent's episodes, driven step by step through Gymnasium with load_policy."""
    policy = mpiswim.load_policy(path)
    rng = np.random.default_rng(seed)
    policy.rng = rng  # evaluate draws the start states and the actions from one stream
    env = make_env(policy.env_id).unwrapped  # as evaluate: its own T, not Gymnasium's time limit
    returns = []
    for _ in range(episodes):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        total = 0.0
        for _ in range(policy.T):
            obs, reward, terminated, _, _ = env.step(policy.act(obs, mean=mean))
            total += reward
            if terminated:
                break
        returns.append(total)
    return returns


@pytest.mark.parametrize(
    "overrides",
    [[], ['policy.features="signed"', 'policy.baseline="state"'], ['policy.normalisation="running"']],
    ids=["linear", "signed", "running-normalisation"],
)
def test_load_policy_acts_exactly_as_evaluate(tmp_path, overrides):
    path = trained_checkpoint(tmp_path / "run.h5", overrides)
    expected = evaluate_agent(str(path), episodes=3, seed=4, action="mean").returns
    assert np.ptp(expected) > 0  # the episodes differ: the test can tell one from another
    np.testing.assert_allclose(episodes_with_policy(path, 3, 4, mean=True), expected, rtol=1e-9)


def test_load_policy_draws_actions_as_evaluate_does(tmp_path):
    path = trained_checkpoint(tmp_path / "run.h5")
    expected = evaluate_agent(str(path), episodes=2, seed=5, action="sample").returns
    np.testing.assert_allclose(episodes_with_policy(path, 2, 5, mean=False), expected, rtol=1e-9)


def test_the_policy_knows_its_task_bounds_and_refuses_a_wrong_observation(tmp_path):
    policy = mpiswim.load_policy(trained_checkpoint(tmp_path / "run.h5"))
    assert (policy.env_id, policy.T, policy.iteration) == ("Swimmer-v5", 200, 1)
    np.testing.assert_array_equal(policy.low, [-1.0, -1.0])
    np.testing.assert_array_equal(policy.high, [1.0, 1.0])
    action = policy.act(np.ones(8))
    assert action.shape == (2,) and np.all((action > -1) & (action < 1))
    with pytest.raises(ValueError, match=r"shape \(3,\).*takes 8 values.*Fix: pass the observation"):
        policy.act(np.ones(3))


def test_the_five_lines_of_the_usage_page_drive_an_environment(tmp_path, monkeypatch):
    text = (REPO / "docs" / "usage.md").read_text()
    snippet = re.search(r"```python\n(import gymnasium.*?)```", text, re.S)[1]
    assert len(snippet.strip().splitlines()) == 5
    (tmp_path / "runs").mkdir()
    trained_checkpoint(tmp_path / "runs" / "default.h5")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)  # the page's own lines, on a checkpoint at the path they name
    assert scope["policy"].env_id == "Swimmer-v5" and scope["obs"].shape == (8,)


def test_load_policy_needs_neither_mpi_nor_jax(tmp_path):
    path = trained_checkpoint(tmp_path / "run.h5")
    probe = (
        "import sys, numpy as np, mpiswim; "
        f"policy = mpiswim.load_policy({str(path)!r}); policy.act(np.zeros(8)); "
        "print(sorted(m for m in ('jax', 'mpi4py') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
