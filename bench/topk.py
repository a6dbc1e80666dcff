"""Row 6: xdrec's top-K scorer against the plain numpy recipe on the same matrix and queries.

``stream.core.scoring.top_k`` adds exclusion masking and deterministic tie-breaking per row; this
row shows what those cost at a 100k-item catalog, the size that bounds one batch's scoring time.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bench.harness import Context, Outcome, RowSpec, alternated_medians
from stream.core import scoring
from stream.core.scoring import DomainIndex, coarse_copy, coarse_dtype, top_k

OURS = "topk_scoring_queries_per_s"
NUMPY = "numpy_argpartition_queries_per_s"
WHOLE_ROW = "topk_scoring_whole_row_selection_queries_per_s"
NEEDS_BROKER = False
K = 10
EXCLUDED_PER_QUERY = 5
DIMENSION = 384
_SAME = "100,000x384 unit-norm float32 matrix, 256 unit queries, k=10, 5 excluded each"
ROWS = (
    RowSpec(
        OURS,
        "queries/s",
        NUMPY,
        "`stream.core.scoring.top_k` as the worker runs it (a bfloat16 or int8 first pass as "
        f"`auto` picks for the CPU, its shortlist picked from the best blocks): {_SAME}",
    ),
    RowSpec(
        WHOLE_ROW,
        "queries/s",
        OURS,
        "the same with the shortlist picked by one `torch.topk` over each whole row, as "
        f"before blocks: {_SAME}",
    ),
    RowSpec(
        NUMPY,
        "queries/s",
        None,
        f"`Q @ M.T`, excluded set to -inf, `np.argpartition` then sort of the k: {_SAME}",
    ),
)


def _unit(rng: np.random.Generator, rows: int) -> np.ndarray:
    matrix = rng.standard_normal((rows, DIMENSION), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


@contextlib.contextmanager
def _whole_row_selection() -> Iterator[None]:
    """``top_k`` with the blocked shortlist selection off, for the row beside it."""
    saved = scoring.BLOCKED_MIN_ITEMS
    scoring.BLOCKED_MIN_ITEMS = sys.maxsize
    try:
        yield
    finally:
        scoring.BLOCKED_MIN_ITEMS = saved


def numpy_top_k(
    matrix: np.ndarray, queries: np.ndarray, excluded: np.ndarray, k: int
) -> np.ndarray:
    """Positions of the k best items per query, best first."""
    scores = queries @ matrix.T
    np.put_along_axis(scores, excluded, -np.inf, axis=1)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1)
    return np.take_along_axis(best, order, axis=1)


def run(ctx: Context) -> dict[str, Outcome]:
    sizes = ctx.sizes
    rng = np.random.default_rng(6)
    matrix = _unit(rng, sizes.topk_items)
    queries = _unit(rng, sizes.topk_queries)
    excluded = rng.integers(0, sizes.topk_items, (sizes.topk_queries, EXCLUDED_PER_QUERY))
    item_ids = [f"movies-{number:07d}" for number in range(sizes.topk_items)]
    index = DomainIndex(
        domain="movies",
        item_ids=item_ids,
        positions={item_id: number for number, item_id in enumerate(item_ids)},
        matrix=matrix,
        active=np.ones(sizes.topk_items, dtype=bool),
        coarse=coarse_copy(matrix, coarse_dtype("auto")),  # as the worker's `auto`
    )
    exclude = [frozenset(item_ids[p] for p in row) for row in excluded]

    def ours() -> list[list[tuple[str, float]]]:
        return top_k(index, queries, exclude, K)

    def whole_row() -> list[list[tuple[str, float]]]:
        with _whole_row_selection():
            return top_k(index, queries, exclude, K)

    def argpartition() -> np.ndarray:
        return numpy_top_k(matrix, queries, excluded, K)

    timed: dict[str, Callable[[], Any]] = {OURS: ours, WHOLE_ROW: whole_row, NUMPY: argpartition}
    seconds, results = alternated_medians(timed, sizes.topk_repeats)
    ranked = results[OURS]
    positions = results[NUMPY]
    agree = sum(
        [item_id for item_id, _ in row] == [item_ids[p] for p in plain]
        for row, plain in zip(ranked, positions, strict=True)
    )
    detail = f"median of {sizes.topk_repeats}; same top-10 for {agree}/{len(ranked)} queries"
    return {name: Outcome(len(queries) / seconds[name], detail=detail) for name in timed}
