"""Top-K retrieval of target-domain items for a batch of user queries.

One matrix product per batch, then a vectorized ``topk``; excluded (already seen) items are
masked before selection so that they can never appear. Ties are broken by item id so the
ranking is a pure function of its inputs.

On CPUs that multiply bfloat16 natively (AMX or AVX512-BF16) the product over the whole
catalog runs in bfloat16 against a copy of the matrix kept beside it (about 4x faster than
float32 here); on the others with fbgemm's int8 kernels (AVX2 or VNNI) it runs in int8
against a packed copy (:mod:`stream.core.int8_rows`; about 5x faster than float32 on one
core of an AVX2 EPYC at 10k items). Only a shortlist of ``k + margin`` items per query is
scored again in float32. The returned items and scores are the float32 ones: the shortlist
misses one of the exact top k only when the first pass's error (about 0.004 in cosine in
bfloat16; in int8 at most 0.005 over 200 queries against 10k random unit items) reorders an
item across more than ``margin`` places, and a test compares the paths. Over large catalogs
the shortlist is picked from the blocks of columns with the best maxima (``top_columns``),
not the whole row.

Over catalogs large enough to carry an approximate index (:mod:`stream.core.ann`) the
shortlist comes from that index instead, widened by the number of items a query excludes and,
when the index has a bias, joined by the items with the largest bias; the exact pass is the
same. A query left with fewer than ``k`` candidates after masking is ranked exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stream.core.ann import ApproximateIndex, favoured_rows
from stream.core.int8_rows import Int8Matrix, Int8Rows
from stream.cpu import has_bfloat16_arithmetic, has_int8_kernels

COARSE_MIN_ITEMS = 2_048  # below this the exact product costs about as much as the shortlist
COARSE_MARGIN_FACTOR = 4  # shortlist of k * factor + 16 items per query
_CHUNK_ROWS = 8  # queries per gather of shortlisted vectors: small enough to stay in cache
BLOCK = 128  # columns per block of the blocked shortlist selection
BLOCKED_MIN_ITEMS = 65_536  # below this one topk over the whole row is as fast (bench.topk)


def coarse_dtype(mode: str) -> torch.dtype | None:
    """The dtype of the first-pass copy for ``recommendations.coarse_scoring`` ("auto",
    "bfloat16", "int8" or "off"; ``torch.qint8`` stands for int8), or None to score in
    float32 only. ``auto`` picks bfloat16 where the CPU has native bfloat16 arithmetic
    (elsewhere it is emulated and slower than float32), else int8 where fbgemm has int8
    kernels for it."""
    if mode == "off":
        return None
    if mode == "bfloat16":
        return torch.bfloat16
    if mode == "int8":
        return torch.qint8
    if has_bfloat16_arithmetic():
        return torch.bfloat16
    return torch.qint8 if has_int8_kernels() else None


def coarse_copy(matrix: np.ndarray, dtype: torch.dtype | None) -> torch.Tensor | Int8Matrix | None:
    """The first pass's copy of a whole ``matrix`` for ``dtype`` (from :func:`coarse_dtype`),
    as the catalog keeps it; for benchmarks and tools that build an index at once."""
    if dtype is None:
        return None
    if dtype == torch.qint8:
        return Int8Rows().snapshot(matrix)
    return torch.from_numpy(matrix).to(dtype)


@dataclass(frozen=True, slots=True)
class DomainIndex:
    """A read-only view of one domain's item embeddings (rows L2-normalized)."""

    domain: str
    item_ids: Sequence[str]
    positions: dict[str, int]
    matrix: np.ndarray  # (rows, dim) float32
    active: np.ndarray  # (rows,) bool: False for removed items
    # (rows, dim) low-precision copy for the first pass: bfloat16, or packed int8.
    coarse: torch.Tensor | Int8Matrix | None = None
    # (rows,) float32 added to every query's scores (a popularity prior), or None.
    bias: np.ndarray | None = None
    # An approximate first pass over the rows (large catalogs), or None to scan them all.
    approximate: ApproximateIndex | None = None
    # Rows by decreasing bias (at least the shortlist's width of them), when there is a bias.
    bias_order: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0])


def score_items(index: DomainIndex, queries: np.ndarray) -> np.ndarray:
    """Scores of every item for each query row (cosine, as rows are normalized, plus the
    index's bias if it has one); removed items score ``-inf``. The worker and the offline
    evaluator both rank with this."""
    scores = queries.astype(np.float32, copy=False) @ index.matrix.T
    if index.bias is not None:
        scores += index.bias
    if not index.active.all():
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
    queries = queries.astype(np.float32, copy=False)
    rows: list[int] = []
    columns: list[int] = []
    positions = index.positions
    for row, excluded in enumerate(exclude):
        for item in excluded:
            position = positions.get(item)
            if position is not None:
                rows.append(row)
                columns.append(position)
    if index.approximate is not None:
        return _approximate_top_k(index, queries, exclude, rows, columns, k)
    if index.coarse is not None and index.size >= COARSE_MIN_ITEMS:
        scores, candidates = _shortlist(index, queries, rows, columns, k)
    else:
        scores, candidates = score_items(index, queries), None
        if rows:
            scores[rows, columns] = -np.inf
    return _ranked(scores, candidates, index.item_ids, k)


def _shortlist(
    index: DomainIndex, queries: np.ndarray, rows: list[int], columns: list[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 scores of each query's low-precision shortlist, and the shortlisted positions."""
    assert index.coarse is not None
    if isinstance(index.coarse, Int8Matrix):
        coarse = index.coarse.scores(queries)
    else:
        coarse = torch.from_numpy(queries).to(index.coarse.dtype) @ index.coarse.T
    if index.bias is not None:
        coarse += torch.from_numpy(index.bias).to(coarse.dtype)
    if not index.active.all():
        coarse[:, torch.from_numpy(~index.active)] = -torch.inf
    if rows:
        coarse[rows, columns] = -torch.inf
    width = min(index.size, k * COARSE_MARGIN_FACTOR + 16)
    values, picked = top_columns(coarse, width)
    candidates = picked.numpy()
    exact = _exact_scores(index, queries, candidates)
    exact[~torch.isfinite(values).numpy()] = -np.inf
    return exact, candidates


def _exact_scores(index: DomainIndex, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Float32 scores (bias included) of each query's candidate rows."""
    exact = np.empty(candidates.shape, dtype=np.float32)
    for start in range(0, len(queries), _CHUNK_ROWS):
        end = start + _CHUNK_ROWS
        vectors = index.matrix[candidates[start:end]]  # (chunk, width, dim)
        exact[start:end] = np.matmul(vectors, queries[start:end, :, None])[..., 0]
    if index.bias is not None:
        exact += index.bias[candidates]
    return exact


def _approximate_top_k(
    index: DomainIndex,
    queries: np.ndarray,
    exclude: Sequence[Collection[str]],
    rows: list[int],
    columns: list[int],
    k: int,
) -> list[list[tuple[str, float]]]:
    """Top-K from the approximate index's shortlist, rescored and masked exactly."""
    assert index.approximate is not None
    widest_exclusion = max((len(excluded) for excluded in exclude), default=0)
    width = min(index.size, index.approximate.width(k) + widest_exclusion)
    candidates = index.approximate.search(queries, width)
    if index.bias is not None:
        order = index.bias_order
        if order is None or len(order) < width:
            order = favoured_rows(index.bias, width)
        favoured = np.broadcast_to(order[:width], (len(queries), min(width, len(order))))
        candidates = np.concatenate([candidates, favoured], axis=1)
    # Rows added after this snapshot, padding (-1) and duplicates (an item indexed twice, or
    # both found and favoured) are dropped; then removed and excluded rows are masked.
    candidates.sort(axis=1)
    invalid = (candidates < 0) | (candidates >= index.size)
    invalid[:, 1:] |= candidates[:, 1:] == candidates[:, :-1]
    candidates[invalid] = 0
    exact = _exact_scores(index, queries, candidates)
    invalid |= ~index.active[candidates]
    if rows:
        excluded_keys = np.asarray(rows, dtype=np.int64) * index.size + np.asarray(columns)
        keys = np.arange(len(queries), dtype=np.int64)[:, None] * index.size + candidates
        invalid |= np.isin(keys, excluded_keys)
    exact[invalid] = -np.inf
    ranked = _ranked(exact, candidates, index.item_ids, k)
    short = [row for row, found in enumerate(ranked) if len(found) < k]
    if short:
        # Only rows that could have had more: not every item is excluded or removed.
        available = int(np.count_nonzero(index.active))
        short = [row for row in short if available - len(exclude[row]) > len(ranked[row])]
    if short:
        exhaustive = dataclasses.replace(index, approximate=None)
        for row, found in zip(
            short,
            top_k(exhaustive, queries[short], [exclude[row] for row in short], k),
            strict=True,
        ):
            ranked[row] = found
    return ranked


def top_columns(scores: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``width`` largest values of each row of a contiguous matrix and their columns, in
    no order; as ``torch.topk`` up to which of tied values is returned.

    Over a long row ``torch.topk`` costs more than finding the best blocks first: the best
    ``width`` values lie in the ``width`` blocks of ``BLOCK`` columns with the largest maxima
    (a block holding one of them has fewer than ``width`` better blocks) or in the columns
    after the last whole block, so only those are searched.
    """
    rows, columns = scores.shape
    whole = columns // BLOCK
    if columns < BLOCKED_MIN_ITEMS or whole <= width:
        return torch.topk(scores, width, dim=1, sorted=False)
    blocks = scores.as_strided((rows, whole, BLOCK), (columns, BLOCK, 1))
    _, best_blocks = torch.topk(blocks.amax(dim=2), width, dim=1, sorted=False)
    candidates = torch.gather(blocks, 1, best_blocks[:, :, None].expand(-1, -1, BLOCK))
    candidates = candidates.reshape(rows, width * BLOCK)
    tail_start = whole * BLOCK
    if tail_start < columns:
        candidates = torch.cat([candidates, scores[:, tail_start:]], dim=1)
    values, picked = torch.topk(candidates, width, dim=1, sorted=False)
    in_blocks = picked < width * BLOCK
    block_of = torch.gather(best_blocks, 1, torch.where(in_blocks, picked // BLOCK, 0))
    positions = torch.where(
        in_blocks, block_of * BLOCK + picked % BLOCK, picked - width * BLOCK + tail_start
    )
    return values, positions


def _ranked(
    scores: np.ndarray, candidates: np.ndarray | None, item_ids: Sequence[str], k: int
) -> list[list[tuple[str, float]]]:
    """The best ``k`` finite scores of each row; column ``c`` of row ``r`` is item
    ``candidates[r, c]`` (or item ``c`` when there are no candidates)."""
    # A margin beyond k, so that ties at the boundary are resolved by item id. torch.topk is
    # about twice as fast as numpy's argpartition + argsort here and returns the rows sorted.
    margin = min(scores.shape[1], k + 8)
    values, picked = torch.topk(torch.from_numpy(scores), margin, dim=1)
    best, best_scores = picked.numpy(), values.numpy()
    if candidates is not None:
        best = np.take_along_axis(candidates, best, axis=1)
    finite = np.isfinite(best_scores)
    available = finite.sum(axis=1)  # finite among the margin: enough to know min(k, finite)
    tied = ((best_scores[:, 1:] == best_scores[:, :-1]) & finite[:, 1:]).any(axis=1)
    # Whole arrays to Python once; each untied row is then one zip of ids and scores.
    width = best.shape[1]
    ids_flat = list(map(item_ids.__getitem__, best.ravel().tolist()))
    ids_by_row = [ids_flat[start : start + width] for start in range(0, len(ids_flat), width)]
    results: list[list[tuple[str, float]]] = []
    for take, is_tied, ids, values in zip(
        np.minimum(available, k).tolist(),
        tied.tolist(),
        ids_by_row,
        best_scores.tolist(),
        strict=True,
    ):
        if take == 0:
            results.append([])
        elif is_tied:
            pairs = sorted(
                (-value, item)
                for item, value in zip(ids, values, strict=True)
                if math.isfinite(value)
            )
            results.append([(item, -negative) for negative, item in pairs[:take]])
        else:
            results.append(list(zip(ids[:take], values[:take], strict=True)))
    return results
