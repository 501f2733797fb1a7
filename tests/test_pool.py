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
