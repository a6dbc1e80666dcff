"""Top-K retrieval of target-domain items for a batch of user queries.

One matrix product per batch, then ``argpartition`` per row; excluded (already seen) items are
masked before selection so that they can never appear. Ties are broken by item id so the
ranking is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np


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
    """For each query row, the ``k`` best ``(item_id, score)`` pairs, best first."""
    if index.size == 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))]
    scores = score_items(index, queries)
    results: list[list[tuple[str, float]]] = []
    for row, excluded in zip(scores, exclude, strict=True):
        positions = [index.positions[item] for item in excluded if item in index.positions]
        if positions:
            row[positions] = -np.inf
        candidates = int(np.count_nonzero(np.isfinite(row)))
        take = min(k, candidates)
        if take == 0:
            results.append([])
            continue
        # Take a margin beyond k so that ties at the boundary are resolved by item id.
        margin = min(candidates, take + 8)
        best = (
            np.argpartition(-row, margin - 1)[:margin] if margin < row.size else np.arange(row.size)
        )
        best = [int(position) for position in best if np.isfinite(row[position])]
        best.sort(key=lambda position: (-float(row[position]), index.item_ids[position]))
        results.append([(index.item_ids[p], float(row[p])) for p in best[:take]])
    return results
