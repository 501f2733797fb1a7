"""The compiled Swimmer episode: Gymnasium's numbers for the same actions, the Python loop's for the same policy."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mpiswim import compiled, kernels
from mpiswim.env import Trajectory, make_task, run_episode
from mpiswim.normalise import new_scaler, observe_rows
from mpiswim.policy import copy_agent, initial_agent

T = 300


def trained_looking_agent(seed: int = 0, features: str = "signed"):
    """Varied shapes in every block, as after some training (the zero policy is a special case)."""
    agent = initial_agent(8, 2, features)
    agent.policy[:] = np.random.default_rng(seed).normal(0.0, 0.3, agent.policy.shape)
    return agent


def test_the_stock_swimmer_takes_the_compiled_path():
    assert compiled.available()
    assert make_task("Swimmer-v5", "signed").compiled
    assert not make_task("Swimmer-v5", "signed", fast=False).compiled
    assert make_task("Swimmer-v5", "linear").compiled
    assert not make_task("InvertedPendulum-v5", "linear").compiled  # not one of the compiled bodies


def test_observations_and_rewards_equal_gymnasium_bit_for_bit():
    """Replay the compiled episode's actions through Gymnasium's own Swimmer-v5 step."""
    import gymnasium as gym

    task = make_task("Swimmer-v5", "signed")
    trajectory = Trajectory.empty(T, 8, 2)
    total, degenerate = run_episode(task, trained_looking_agent(), np.random.default_rng(11), T, trajectory)
    assert not degenerate and trajectory.length == T

    reference = gym.make("Swimmer-v5", max_episode_steps=T)
    observation, _ = reference.reset(
        seed=int(np.random.default_rng(11).integers(2**31))
    )  # the episode's own reset seed
    rewards = []
    for t in range(T):
        np.testing.assert_array_equal(trajectory.phis[t, 1:], observation, err_msg=f"step {t}")
        action = task.low + trajectory.xs[t] * (task.high - task.low)
        observation, reward, terminated, _, _ = reference.step(action)
        assert not terminated
        rewards.append(reward)
    np.testing.assert_array_equal(trajectory.rewards[:T], rewards)
    assert total == sum(trajectory.rewards[:T].tolist())


@pytest.mark.parametrize(
    ("features", "scale"), [("signed", 1.0), ("signed", (0.5, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0)), ("linear", 1.0)]
)
def test_compiled_and_python_loops_run_the_same_episode(features, scale):
    """Same policy, same random stream: same blocks and draws; the only difference is the summation order of a 9-term
    dot
    product.
    """
    agent = trained_looking_agent(1, features)
    results = []
    for fast in (True, False):
        task = make_task("Swimmer-v5", features, fast=fast, observation_scale=scale)
        trajectory = Trajectory.empty(T, 8, 2)
        rng = np.random.default_rng(5)
        total, degenerate = run_episode(task, agent, rng, T, trajectory)
        results.append((total, trajectory, rng.integers(2**62)))
    (fast_total, fast, fast_next), (slow_total, slow, slow_next) = results
    np.testing.assert_array_equal(fast.blocks, slow.blocks)
    np.testing.assert_allclose(fast.xs, slow.xs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.rewards, slow.rewards, rtol=0, atol=1e-9)
    assert fast_total == pytest.approx(slow_total, abs=1e-9)
    assert fast_next == slow_next  # both drew exactly as many numbers from the stream


def test_the_seed_faithful_episode_is_the_same_compiled_and_in_python():
    """Shared intercept and a running scaler refit within the episode: the same features, draws and scaler state both
    ways.
    """
    agent = trained_looking_agent(2)
    agent.policy[1:, :, :, 0] = 0.0
    agent = agent._replace(policy_scaler=new_scaler(8, 64, 256))
    results = []
    for fast in (True, False):
        task = make_task("Swimmer-v5", "signed", fast=fast, shared_intercept=True, normalisation=(64, 0.99))
        trajectory, acting = Trajectory.empty(T, 8, 2), copy_agent(agent)
        total, degenerate = run_episode(task, acting, np.random.default_rng(5), T, trajectory)
        assert not degenerate
        results.append((total, trajectory, acting.policy_scaler))
    (fast_total, fast, fast_scaler), (slow_total, slow, slow_scaler) = results
    np.testing.assert_array_equal(fast.blocks, slow.blocks)
    # Summation order differs in the last bits (as above), and the physics carries that on.
    np.testing.assert_allclose(fast.observations, slow.observations, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.phis, slow.phis, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.xs, slow.xs, rtol=0, atol=1e-9)
    assert fast_total == pytest.approx(slow_total, abs=1e-9)
    np.testing.assert_allclose(fast_scaler, slow_scaler, rtol=1e-9, atol=1e-9)
    assert fast_scaler[0, 0] == T  # the scaler saw every observation the policy acted on
    # The features are the observations as scaled when each was seen (refit before scaling, as the seed's library did).
    np.testing.assert_allclose(
        fast.phis[:T, 1:], observe_rows(new_scaler(8, 64, 256), fast.observations[:T], 64, 0.99), atol=1e-12
    )
    np.testing.assert_array_equal(agent.policy_scaler, 0.0)  # the copy acted, not the original


def test_observation_scale_divides_the_features_but_keeps_the_blocks():
    """Features are s / scale; the block follows the signs of s, so scaling never moves a step to another block."""
    scale = np.array([0.5, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0])
    records = []
    for observation_scale in (1.0, tuple(scale)):
        task = make_task("Swimmer-v5", "signed", observation_scale=observation_scale)
        trajectory = Trajectory.empty(T, 8, 2)
        run_episode(
            task, initial_agent(8, 2, "signed"), np.random.default_rng(3), T, trajectory
        )  # uniform actions: the same episode
        records.append(trajectory)
    plain, scaled = records
    np.testing.assert_array_equal(plain.blocks, scaled.blocks)
    np.testing.assert_array_equal(scaled.phis[:, 0], 1.0)
    np.testing.assert_allclose(scaled.phis[:, 1:], plain.phis[:, 1:] / scale, rtol=1e-15)


def test_same_seed_same_episode_and_actions_in_bounds():
    task = make_task("Swimmer-v5", "signed")
    agent = trained_looking_agent(2)
    first, second = Trajectory.empty(T, 8, 2), Trajectory.empty(T, 8, 2)
    run_episode(task, agent, np.random.default_rng(3), T, first)
    run_episode(task, agent, np.random.default_rng(3), T, second)
    for name in ("blocks", "phis", "xs", "rewards"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert np.all((first.xs >= 0) & (first.xs <= 1))


def test_episodes_are_cut_at_T():
    task = make_task("Swimmer-v5", "signed")
    trajectory = Trajectory.empty(1200, 8, 2)
    run_episode(task, initial_agent(8, 2, "signed"), np.random.default_rng(0), 1200, trajectory)
    assert trajectory.length == 1200  # past Gymnasium's own 1000-step limit: T is the only limit
    run_episode(task, initial_agent(8, 2, "signed"), np.random.default_rng(0), 7, trajectory)
    assert trajectory.length == 7


@pytest.mark.parametrize("log_scale", [1.0, 30.0, 300.0])
def test_beta_draws_equal_numpys_even_for_vanishing_shapes(log_scale):
    """numba's own Generator.beta never returns for shapes below ~1e-30; ours must, with numpy's numbers."""
    shapes = np.exp(
        -np.minimum(np.abs(np.random.default_rng(0).normal(0.0, log_scale, size=(300, 2))), 690.0)
    )  # the loop refuses log shapes beyond -700
    shapes[::7] = np.exp(np.random.default_rng(1).normal(0.0, 1.0, size=shapes[::7].shape))  # some above 1 too
    ours, numpys = np.random.default_rng(9), np.random.default_rng(9)
    drawn = [kernels.beta_draw(ours, a, b) for a, b in shapes]
    expected = [numpys.beta(a, b) for a, b in shapes]
    assert drawn == expected
    assert ours.integers(2**62) == numpys.integers(2**62)


def test_episode_with_vanishing_shapes_finishes():
    """Regression: a trained seed-config agent hung the compiled loop (log shapes near -100 on both sides)."""
    task = make_task("Swimmer-v5", "signed")
    agent = initial_agent(8, 2, "signed")
    agent.policy[..., 0] = -100.0  # a = b = e^-100: Beta draws are exactly 0 or 1
    trajectory = Trajectory.empty(50, 8, 2)
    _, degenerate = run_episode(task, agent, np.random.default_rng(0), 50, trajectory)
    assert not degenerate and trajectory.length == 50
    assert set(np.unique(trajectory.xs[:50]).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("features", ["signed", "linear"])
def test_mean_actions_follow_the_policy_mean_in_both_loops(features):
    """evaluation_action = "mean": x = a / (a + b) at every step; the stream gives only the reset seed."""
    agent = trained_looking_agent(2, features)
    episodes = []
    for fast in (True, False):
        task = make_task("Swimmer-v5", features, fast=fast)
        trajectory = Trajectory.empty(T, 8, 2)
        rng = np.random.default_rng(9)
        total, degenerate = run_episode(task, agent, rng, T, trajectory, mean_action=True)
        assert not degenerate
        reference = np.random.default_rng(9)
        reference.integers(2**31)
        assert rng.integers(2**62) == reference.integers(2**62)  # no action draws
        log_shapes = np.einsum(
            "tkf,tf->tk", agent.policy.reshape(len(agent.policy), 4, 9)[trajectory.blocks], trajectory.phis
        )
        np.testing.assert_allclose(
            trajectory.xs, 1.0 / (1.0 + np.exp(log_shapes[:, 2:] - log_shapes[:, :2])), rtol=1e-12
        )
        episodes.append((total, trajectory))
    (fast_total, fast), (slow_total, slow) = episodes
    np.testing.assert_allclose(fast.rewards, slow.rewards, rtol=0, atol=1e-9)
    assert fast_total == pytest.approx(slow_total, abs=1e-9)


# --- the guard: compiled.compiled_body(env), the one gate to the compiled path
# -------------------------------------------------


@pytest.fixture
def fresh_guard(monkeypatch):
    """A process that has neither run the self-check nor warned yet (both are once per process)."""
    monkeypatch.setattr(compiled, "_self_check_results", {})
    monkeypatch.setattr(compiled, "_warned", set())
    monkeypatch.setattr(compiled, "_rank", lambda: 0)


def test_the_guard_passes_here_quietly_and_checks_once_per_process(fresh_guard, monkeypatch, capsys):
    import time

    task = make_task("Swimmer-v5", "signed")
    assert task.compiled and compiled.why_not(task.env)[1] is None
    assert compiled._self_check_results == {("swimmer_v5", "SwimmerEnv"): None}
    calls = []
    real_self_check = compiled._self_check
    monkeypatch.setattr(compiled, "_self_check", lambda env, body: calls.append(env) or real_self_check(env, body))
    assert make_task("Swimmer-v5", "linear").compiled and calls == []  # cached: the second task runs no episode
    assert not make_task("InvertedPendulum-v5", "linear").compiled  # no body: the Python loop, nothing to warn about
    assert capsys.readouterr().err == ""
    start = time.process_time()
    assert real_self_check(task.env, task.body) is None
    assert time.process_time() - start < 0.1  # about 3 ms of CPU: 25 steps twice
    # The self-check's episode leaves nothing behind: the next episode is the one a fresh task runs.
    episodes = []
    for each in (task, make_task("Swimmer-v5", "signed")):
        trajectory = Trajectory.empty(40, 8, 2)
        episodes.append(run_episode(each, trained_looking_agent(), np.random.default_rng(4), 40, trajectory))
    assert episodes[0] == episodes[1]


def _renamed_ctrl_cost_weight(monkeypatch):
    """A Gymnasium release that renames _ctrl_cost_weight (its own step still works)."""
    from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv

    original_init = SwimmerEnv.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._control_weight = self.__dict__.pop("_ctrl_cost_weight")

    monkeypatch.setattr(SwimmerEnv, "__init__", init)
    monkeypatch.setattr(
        SwimmerEnv, "control_cost", lambda self, action: self._control_weight * np.sum(np.square(action))
    )
    return "Swimmer-v5", "env._ctrl_cost_weight is missing"


def _float32_weight(monkeypatch):
    """A release that keeps the forward weight as a numpy float32: present, but not the float the compiled code
    takes.
    """
    from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv

    original_init = SwimmerEnv.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._forward_reward_weight = np.float32(self._forward_reward_weight)

    monkeypatch.setattr(SwimmerEnv, "__init__", init)
    return "Swimmer-v5", "(float32), not a finite float"


def _another_class(monkeypatch):
    """A Swimmer that is not Gymnasium's swimmer_v5.SwimmerEnv: a fork's class of the same name."""
    import gymnasium
    from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv as Gymnasiums

    SwimmerEnv = type("SwimmerEnv", (Gymnasiums,), {"__module__": "fork.swimmer"})
    monkeypatch.setitem(
        gymnasium.envs.registration.registry,
        "SwimmerFork-v5",
        gymnasium.envs.registration.EnvSpec("SwimmerFork-v5", entry_point=SwimmerEnv),
    )
    # mpiswim makes Gymnasium's own MuJoCo tasks only (mpiswim.tasks); here the fork counts as one
    monkeypatch.setattr("mpiswim.tasks.mujoco_ids", lambda: ["Swimmer-v5", "SwimmerFork-v5"])
    return "SwimmerFork-v5", "the env is fork.swimmer.SwimmerEnv, not one of Gymnasium's v5 bodies"


def _another_reward(monkeypatch):
    """A release whose Swimmer-v5 reward changes (the same names, another formula): only the self-check can see it."""
    from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv

    monkeypatch.setattr(
        SwimmerEnv, "control_cost", lambda self, action: 2.0 * self._ctrl_cost_weight * np.sum(np.square(action))
    )
    return "Swimmer-v5", "self-check against Gymnasium's step failed: reward of step 0: compiled"


def _another_observation(monkeypatch):
    """A release whose observation lays the same numbers out in another order (the reset's too: the first step shows
    it).
    """
    from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv

    original = SwimmerEnv._get_obs
    monkeypatch.setattr(SwimmerEnv, "_get_obs", lambda self: original(self)[::-1].copy())
    return (
        "Swimmer-v5",
        "self-check against Gymnasium's step failed: observation 1: compiled and Gymnasium's differ by up to",
    )


def _no_library(monkeypatch):
    """No loadable libmujoco (e.g. a wheel that renames it): numba has no mj_step to call."""
    monkeypatch.setattr(compiled, "mj_step", None)
    monkeypatch.setattr(compiled, "_unavailable", "expected one libmujoco.so* in /somewhere, found 0")
    return "Swimmer-v5", "expected one libmujoco.so* in /somewhere, found 0"


def _small_config():
    from mpiswim.config import parse_config

    text = (
        '[run]\niterations = 2\n[env]\nid = "Swimmer-v5"\nT = 30\n[pool]\niterate_episodes = 2\nevaluate_episodes = '
        '1\ncommon_evaluation = false\nevaluation_action = "sample"\n'
        '[policy]\nfeatures = "signed"\nupdate = "unit-density"\nbaseline = "state"\n[ranks]\nalpha = 1e-4\neta = '
        "1e-3\n"
    )
    return parse_config(text, 1)


@pytest.mark.parametrize(
    "failure",
    [_renamed_ctrl_cost_weight, _float32_weight, _another_class, _another_reward, _another_observation, _no_library],
)
def test_each_guard_failure_warns_once_and_training_runs_the_python_loop(failure, fresh_guard, monkeypatch, capsys):
    from mpiswim.learn import improve_branch
    from mpiswim.pool import evaluate_branch

    env_id, what = failure(monkeypatch)
    task = make_task(env_id, "signed")
    assert not task.compiled
    assert not make_task(env_id, "linear").compiled  # the same failure again: no second line
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"mpiswim: warning: compiled {env_id} episodes are off (") and what in lines[0]
    assert lines[0].endswith("training continues on the slower Python loop.")

    def refuse(*args, **kwargs):
        raise AssertionError("the compiled episode ran")

    monkeypatch.setattr(compiled, "run_compiled_episode", refuse)
    cfg = _small_config()
    agent = initial_agent(8, 2, "signed")
    trajectory = Trajectory.empty(cfg.T, 8, 2)
    branch, returns, degenerate = improve_branch(agent, task, np.random.default_rng(0), cfg, 1e-3, 1e-3, trajectory)
    assert not degenerate and np.all(np.isfinite(returns)) and trajectory.length == cfg.T
    assert not np.array_equal(branch.policy, agent.policy)  # it learned
    scores, degenerate = evaluate_branch(branch, task, np.random.default_rng(1), cfg, trajectory)[:2]
    assert not degenerate and np.all(np.isfinite(scores))
    assert capsys.readouterr().err == ""


def test_only_rank_0_warns(fresh_guard, monkeypatch, capsys):
    _no_library(monkeypatch)
    monkeypatch.setattr(compiled, "_rank", lambda: 3)
    assert not make_task("Swimmer-v5", "signed").compiled
    assert capsys.readouterr().err == ""


def test_the_gl_back_end_falls_back_to_the_environment(monkeypatch):
    """render reads MuJoCo's private record of MUJOCO_GL if it is there, else the variable; the error stays clear either
    way.
    """
    import mujoco

    from mpiswim import render
    from mpiswim.analysis import AnalysisError

    gl_module = getattr(sys.modules.get(mujoco.Renderer.__module__), "gl_context", None) or sys.modules.get(
        "mujoco.rendering.classic.gl_context"
    )
    monkeypatch.setenv("MUJOCO_GL", " EGL ")
    monkeypatch.setattr(gl_module, "_MUJOCO_GL", "osmesa", raising=False)
    assert render.mujoco_gl() == "osmesa"

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(mujoco, "Renderer", broken)
    with pytest.raises(
        AnalysisError,
        match=r"MUJOCO_GL=' EGL ' \(MuJoCo was imported with MUJOCO_GL='osmesa'.*RuntimeError: no display.*Fix: ",
    ):
        render.make_renderer(make_task("Swimmer-v5", "signed", fast=False).env.model, 32, 24)
    for module in (gl_module, sys.modules.get("mujoco.gl_context")):
        if hasattr(module, "_MUJOCO_GL"):
            monkeypatch.delattr(module, "_MUJOCO_GL")
    assert render.mujoco_gl() == "egl"  # a MuJoCo that no longer records it: the variable stands in
    with pytest.raises(AnalysisError, match="cannot start MuJoCo's offscreen renderer") as error:
        render.make_renderer(make_task("Swimmer-v5", "signed", fast=False).env.model, 32, 24)
    assert "imported with" not in str(error.value)
