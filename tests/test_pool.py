"""The merge rule: argmax of the scores, ties to the lowest rank, NaN and infinities never win."""

from __future__ import annotations

import numpy as np

from mpiswim.state import winner_rank


def test_the_highest_score_wins():
    assert winner_rank(np.array([12.0, 150.0, 3.0, 149.9])) == 1


def test_ties_go_to_the_lowest_rank():
    assert winner_rank(np.array([1.0, 5.0, 5.0, 5.0])) == 1
    assert winner_rank(np.array([7.0, 7.0])) == 0


def test_nan_and_infinite_scores_never_win():
    assert winner_rank(np.array([np.nan, 1.0, np.inf, -5.0])) == 1
    assert winner_rank(np.array([-np.inf, -np.inf, -1e300])) == 2
    assert winner_rank(np.array([np.inf, -2.0])) == 1


def test_no_finite_score_means_no_winner():
    assert winner_rank(np.array([-np.inf, np.nan, np.inf])) is None


def test_negative_scores_are_compared_like_any_other():
    assert winner_rank(np.array([-30.0, -10.0, -20.0])) == 1


def small_config(common: bool):
    """The tiny config of tests/test_mpi.py with T = 30, 1 + 3 episodes, for 4 ranks."""
    from test_mpi import TINY_CONFIG

    from mpiswim.config import apply_overrides, parse_config

    overrides = ["env.T=30", "pool.iterate_episodes=1", "pool.evaluate_episodes=3"]
    text = apply_overrides(
        TINY_CONFIG.format(alpha="1e-4"), [*overrides, f"pool.common_evaluation={str(common).lower()}"]
    )
    return parse_config(text, 4)


def test_common_evaluation_gives_every_rank_the_same_episodes():
    from mpiswim.env import Trajectory, make_task
    from mpiswim.policy import initial_agent
    from mpiswim.pool import evaluate_branch, evaluation_stream

    task = make_task("Swimmer-v5", "signed")
    agent = initial_agent(8, 2, "signed")
    trajectory = Trajectory.empty(30, 8, 2)

    def score(cfg, rank: int, iteration: int = 0) -> float:
        training = np.random.default_rng([cfg.seed, iteration, rank])
        return evaluate_branch(agent, task, evaluation_stream(cfg, iteration, training), cfg, trajectory)[0]

    common = small_config(True)
    assert score(common, 0) == score(common, 3)  # same agent, same start states and noise: same score
    assert score(common, 0) != score(common, 0, iteration=1)  # a new iteration brings new episodes
    separate = small_config(False)
    assert score(separate, 0) != score(separate, 3)  # each rank has its own episodes


def _agent(mark: float):
    from mpiswim.policy import Agent

    return Agent(np.full((1, 2, 2, 3), mark), np.zeros((1, 3)))


def test_advance_keeps_the_best_winner_and_counts_without_mpi():
    from mpiswim.state import advance, initial_state

    state = initial_state(_agent(0.0))
    state, fell_back = advance(state, np.array([1.0, 5.0]), 1, _agent(1.0), patience=0)
    assert (state.iteration, state.best_score, state.best_iteration, fell_back) == (1, 5.0, 0, False)
    assert np.all(state.agent.policy == 1.0) and np.all(state.best_agent.policy == 1.0)
    state, _ = advance(
        state, np.array([4.0, 2.0]), 0, _agent(2.0), patience=0
    )  # a worse winner is promoted, not kept as best
    assert np.all(state.agent.policy == 2.0) and np.all(state.best_agent.policy == 1.0) and state.since_improvement == 1
    state, _ = advance(state, np.array([-np.inf, -np.inf]), None, state.agent, patience=0)
    assert state.degenerate_streak == 1 and state.best_score == 5.0 and np.all(state.agent.policy == 2.0)


def test_advance_falls_back_to_the_best_agent_after_patience():
    from mpiswim.state import advance, initial_state

    state, _ = advance(initial_state(_agent(0.0)), np.array([9.0]), 0, _agent(1.0), patience=2)
    state, fell_back = advance(state, np.array([3.0]), 0, _agent(2.0), patience=2)
    assert not fell_back and np.all(state.agent.policy == 2.0)
    state, fell_back = advance(state, np.array([4.0]), 0, _agent(3.0), patience=2)
    assert fell_back and np.all(state.agent.policy == 1.0) and state.since_improvement == 0


def test_with_fresh_scores_only_a_higher_fresh_mean_makes_a_winner_the_best_agent():
    """best_by = "fresh": the winner's fresh mean decides, not its (flattering) score; NaN (none played) never wins."""
    from mpiswim.state import advance, initial_state

    state, _ = advance(initial_state(_agent(0.0)), np.array([9.0, 1.0]), 0, _agent(1.0), patience=0, fresh=7.0)
    assert (state.best_score, state.best_iteration) == (7.0, 0)  # the best score is the fresh one
    state, _ = advance(state, np.array([12.0, 1.0]), 0, _agent(2.0), patience=0, fresh=6.5)
    assert state.best_score == 7.0 and np.all(state.best_agent.policy == 1.0)  # higher score, lower fresh mean
    assert np.all(state.agent.policy == 2.0) and state.since_improvement == 1  # the pool still goes on from the winner
    state, _ = advance(state, np.array([5.0, 1.0]), 0, _agent(3.0), patience=0, fresh=np.nan)
    assert state.best_score == 7.0 and state.since_improvement == 2
    state, _ = advance(state, np.array([8.0, 1.0]), 0, _agent(4.0), patience=0, fresh=7.5)
    assert (state.best_score, state.best_iteration) == (7.5, 3) and np.all(state.best_agent.policy == 4.0)


class OneRank:
    """The part of an mpi4py communicator pool_iteration uses, for a pool of one rank in this process (no MPI)."""

    class Done:
        def Wait(self) -> None:
            pass

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def Iallgather(self, mine, table):
        np.copyto(table, np.reshape(mine, table.shape))
        return self.Done()

    def Igather(self, mine, table, root: int):
        return self.Iallgather(mine, table)

    def Ibcast(self, buffer, root: int):
        return self.Done()


def test_a_winner_above_the_best_fresh_score_plays_fresh_episodes_and_only_their_mean_may_make_it_the_best():
    """pool_iteration with best_by = "fresh" (one rank, no MPI): a winner scoring above the best agent's fresh score
    plays target_episodes fresh episodes, each from its own stream (the same whichever rank plays it); the record and
    the best score hold their mean, which is evaluate's on exactly those episodes; the steps count them."""
    from mpiswim.config import DEFAULT_CONFIG, apply_overrides, parse_config
    from mpiswim.env import Trajectory, run_episode, task_for
    from mpiswim.policy import copy_agent, initial_agent
    from mpiswim.pool import pool_iteration
    from mpiswim.state import fresh_episode_stream, initial_state

    changes = ['run.best_by="fresh"', "run.target_episodes=3", "env.T=50", "pool.iterate_episodes=2"]
    cfg = parse_config(apply_overrides(DEFAULT_CONFIG, [*changes, "pool.evaluate_episodes=2", "ranks.alpha=1e-3"]), 1)
    task = task_for(cfg)
    state = initial_state(initial_agent(task.obs_dim, task.action_dim, cfg.features, cfg.time_feature))
    trajectory = Trajectory.empty(cfg.T, task.obs_dim, task.action_dim)
    played = []
    for _ in range(4):
        previous_best = state.best_score
        state, record = pool_iteration(OneRank(), cfg, task, state, trajectory)
        if record.scores[0] > previous_best:
            episodes = [
                run_episode(task, copy_agent(state.agent), fresh_episode_stream(cfg.seed, state.iteration - 1, e),
                            cfg.T, trajectory, mean_action=True)[0]
                for e in range(3)
            ]  # fmt: skip
            assert record.fresh_score == np.mean(episodes)
            played.append(record.fresh_score)
            assert record.steps[0] == (2 + 2) * cfg.T + 3 * cfg.T  # the swimmer never falls: every episode is T long
        else:
            assert np.isnan(record.fresh_score) and record.steps[0] == (2 + 2) * cfg.T
        assert record.best_score == state.best_score == max(played, default=-np.inf)
    assert played  # the first winner always beats -inf


def test_an_iterations_record_counts_every_environment_step_its_episodes_ran():
    """/pool/steps is every step of the rank's exploration and evaluation episodes, those a falling hopper ends early
    included: counted here on Gymnasium's own step function (the Python loop), and the same from the task as training
    makes it (a compiled episode where there is one)."""
    from mpiswim.config import DEFAULT_CONFIG, apply_overrides, parse_config
    from mpiswim.env import Trajectory, task_for
    from mpiswim.policy import initial_agent
    from mpiswim.pool import pool_iteration
    from mpiswim.state import initial_state

    changes = ["env.id=Hopper-v5", "env.T=200", 'pool.learner="random-search"', "pool.iterate_episodes=4"]
    cfg = parse_config(apply_overrides(DEFAULT_CONFIG, [*changes, "pool.evaluate_episodes=2", "ranks.alpha=0.05"]), 1)
    python_loop, as_trained = task_for(cfg, fast=False), task_for(cfg)
    ran, step = [], python_loop.step
    python_loop.step = lambda action: (ran.append(1), step(action))[1]
    state = initial_state(initial_agent(python_loop.obs_dim, python_loop.action_dim, cfg.features, cfg.time_feature))
    trajectory = Trajectory.empty(cfg.T, python_loop.obs_dim, python_loop.action_dim)
    for _ in range(2):
        before = len(ran)
        _, record = pool_iteration(OneRank(), cfg, as_trained, state, trajectory)
        state, counted = pool_iteration(OneRank(), cfg, python_loop, state, trajectory)
        assert counted.steps.dtype == np.int64
        assert counted.steps.tolist() == record.steps.tolist() == [len(ran) - before]
        assert 6 <= counted.steps[0] < 6 * cfg.T  # 4 + 2 episodes, and the hopper fell in some
