"""Ranking metrics from the target's rank, and beyond-accuracy metrics of the top lists.

Ties are broken by item id, exactly as the worker's scorer breaks them, so that offline and
streaming evaluation rank identically; item ids carry no signal, so for a method that scores
many items equally (popularity) this is a random tie-break, not a flattering one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (5, 10, 20)


def target_ranks(scores: np.ndarray, targets: np.ndarray, order: np.ndarray) -> np.ndarray:
    """1-based rank of ``targets[i]`` in ``scores[i]``; ``order`` gives each column's position
    in item-id order (the tie-break). A masked (``-inf``) target is never found: its rank is
    the number of columns + 1."""
    rows = np.arange(len(scores))
    target_scores = scores[rows, targets]
    target_order = order[rows, targets] if order.ndim == 2 else order[targets]
    greater = (scores > target_scores[:, None]).sum(axis=1)
    before = (scores == target_scores[:, None]) & (order < target_order[:, None])
    ranks = 1 + greater + before.sum(axis=1)
    return np.where(np.isneginf(target_scores), scores.shape[1] + 1, ranks).astype(np.int64)


def id_order(item_ids: Sequence[str]) -> np.ndarray:
    """Each item's position in item-id order: the tie-break :func:`target_ranks` takes."""
    order = np.empty(len(item_ids), dtype=np.int64)
    order[np.argsort(np.array(item_ids, dtype=object), kind="stable")] = np.arange(len(item_ids))
    return order


def ndcg_gains(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Each case's NDCG@k from its target's 1-based rank (one relevant item per case)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def rank_metrics(ranks: np.ndarray) -> dict[str, float]:
    """hit@K, recall@K, NDCG@K and MRR for one relevant item per case."""
    ranks = np.asarray(ranks, dtype=np.float64)
    metrics: dict[str, float] = {}
    for k in KS:
        inside = ranks <= k
        metrics[f"hit@{k}"] = float(inside.mean()) if len(ranks) else 0.0
        metrics[f"recall@{k}"] = metrics[f"hit@{k}"]  # one target per case
        metrics[f"ndcg@{k}"] = float(ndcg_gains(ranks, k).mean()) if len(ranks) else 0.0
    metrics["mrr"] = float((1.0 / ranks).mean()) if len(ranks) else 0.0
    return metrics


def top_lists(scores: np.ndarray, k: int = 10) -> np.ndarray:
    """Column indices of the ``k`` best scores per row, best first."""
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def diversity(lists: np.ndarray, embeddings: np.ndarray) -> float:
    """Mean over lists of 1 − mean pairwise cosine between the listed items' text embeddings."""
    if lists.shape[1] < 2:
        return 0.0
    vectors = embeddings[lists]  # (n, k, d), rows normalized
    similarity = np.einsum("nkd,njd->nkj", vectors, vectors)
    k = lists.shape[1]
    pairwise = (similarity.sum(axis=(1, 2)) - k) / (k * (k - 1))
    return float((1.0 - pairwise).mean())


def novelty(lists: np.ndarray, popularity: np.ndarray, users: int) -> float:
    """Mean self-information −log2(p) of recommended items, p = share of users with the item."""
    share = (popularity[lists] + 1.0) / (users + 1.0)
    return float((-np.log2(share)).mean())
