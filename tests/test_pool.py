"""The merge rule: argmax of the scores, ties to the lowest rank, NaN and infinities never win."""

from __future__ import annotations

import numpy as np

from mpiswim.pool import winner_rank


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
    from mpiswim.config import parse_config

    text = f"""
[run]
iterations = 2
[env]
id = "Swimmer-v5"
T = 30
[pool]
iterate_episodes = 1
evaluate_episodes = 3
common_evaluation = {str(common).lower()}
[ranks]
alpha = 1e-4
eta = 1e-3
"""
    return parse_config(text, 4, check_env=False)


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
