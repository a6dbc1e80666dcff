"""Ranking metrics: exact values on hand-made ranks, ties at their midpoint, masked targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.ranking import rank_metrics, target_ranks, top_lists


def test_rank_metrics_on_known_ranks() -> None:
    metrics = rank_metrics(np.array([1, 3, 11, 30]))
    assert metrics["hit@5"] == pytest.approx(0.5)
    assert metrics["hit@10"] == pytest.approx(0.5)
    assert metrics["hit@20"] == pytest.approx(0.75)
    assert metrics["ndcg@10"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 4)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 30) / 4)


def test_ties_break_by_item_order_and_masked_targets_miss() -> None:
    scores = np.array(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],  # all tied: the target's place in item order decides
            [0.9, 0.5, 0.5, 0.1, 0.0],  # target 2 ties with 1, which comes later in item order
            [-np.inf, 0.3, 0.2, 0.1, 0.0],  # target masked: never found
        ]
    )
    order = np.array([4, 3, 0, 1, 2])  # item order: columns 2, 3, 4, 1, 0
    assert target_ranks(scores, np.array([0, 2, 0]), order).tolist() == [5, 2, 6]


def test_top_lists_are_ordered() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    assert top_lists(scores, 3).tolist() == [[1, 3, 2]]
