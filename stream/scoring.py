"""Top-K retrieval of target-domain items for a batch of user queries.

One matrix product per batch, then ``argpartition`` per row; excluded (already seen) items are
masked before selection so that they can never appear. Ties are broken by item id so the
ranking is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, slots=True)
class DomainIndex:
    """A read-only view of one domain's item embeddings (rows L2-normalized)."""

    domain: str
    item_ids: Sequence[str]
    positions: dict[str, int]
    matrix: np.ndarray  # (rows, dim) float32
    active: np.ndarray  # (rows,) bool: False for removed items

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0])


def score_items(index: DomainIndex, queries: np.ndarray) -> np.ndarray:
    """Scores of every item for each query row (cosine, as rows are normalized); removed
    items score ``-inf``. The worker and the offline evaluator both rank with this."""
    scores = queries.astype(np.float32, copy=False) @ index.matrix.T
    scores[:, ~index.active] = -np.inf
    return scores


def top_k(
    index: DomainIndex,
    queries: np.ndarray,
    exclude: Sequence[Collection[str]],
    k: int,
) -> list[list[tuple[str, float]]]:
    """For each query row, the ``k`` best ``(item_id, score)`` pairs, best first.

    Vectorized over the batch: one masked assignment for excluded items and one ``topk`` over
    all rows; only rows with tied scores fall back to a Python sort.
    """
    if index.size == 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))]
    scores = score_items(index, queries)
    rows: list[int] = []
    columns: list[int] = []
    positions = index.positions
    for row, excluded in enumerate(exclude):
        for item in excluded:
            position = positions.get(item)
            if position is not None:
                rows.append(row)
                columns.append(position)
    if rows:
        scores[rows, columns] = -np.inf
    candidates = np.isfinite(scores).sum(axis=1)
    # A margin beyond k, so that ties at the boundary are resolved by item id. torch.topk is
    # about twice as fast as numpy's argpartition + argsort here and returns the rows sorted.
    margin = min(index.size, k + 8)
    values, picked = torch.topk(torch.from_numpy(scores), margin, dim=1)
    best, best_scores = picked.numpy(), values.numpy()
    tied = ((best_scores[:, 1:] == best_scores[:, :-1]) & np.isfinite(best_scores[:, 1:])).any(
        axis=1
    )
    item_ids = index.item_ids
    results: list[list[tuple[str, float]]] = []
    for row in range(len(queries)):
        take = min(k, int(candidates[row]))
        if take == 0:
            results.append([])
            continue
        picked = best[row].tolist()
        values = best_scores[row].tolist()
        if tied[row]:
            pairs = sorted(
                (
                    (-value, item_ids[position], position)
                    for position, value in zip(picked, values, strict=True)
                    if np.isfinite(value)
                ),
            )
            results.append([(item, -negative) for negative, item, _ in pairs[:take]])
        else:
            results.append(
                [(item_ids[p], v) for p, v in zip(picked[:take], values[:take], strict=True)]
            )
    return results
