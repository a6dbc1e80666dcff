"""Top-K retrieval: exact against brute force, never returns excluded or removed items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream.core.scoring import (
    BLOCK,
    BLOCKED_MIN_ITEMS,
    DomainIndex,
    coarse_copy,
    coarse_dtype,
    top_columns,
    top_k,
)


def _index(rows: int = 200, dim: int = 16) -> DomainIndex:
    matrix = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = [f"m{i}" for i in range(rows)]
    return DomainIndex(
        "movies", ids, {item: i for i, item in enumerate(ids)}, matrix, np.ones(rows, bool)
    )


def test_top_k_matches_brute_force_and_masks_excluded() -> None:
    index = _index()
    queries = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    excluded = [set(), {"m1", "m2"}, {f"m{i}" for i in range(150)}, set(), {"unknown"}]
    results = top_k(index, queries, excluded, k=10)
    for query, exclude, result in zip(queries, excluded, results, strict=True):
        scores = index.matrix @ query
        expected = sorted(
            (i for i in range(index.size) if f"m{i}" not in exclude), key=lambda i: -scores[i]
        )[:10]
        assert [item for item, _ in result] == [f"m{i}" for i in expected]
        assert not {item for item, _ in result} & exclude


def test_removed_items_and_small_catalogs() -> None:
    index = _index(rows=5)
    index.active[2] = False
    [result] = top_k(index, index.matrix[2:3], [{"m0"}], k=10)
    assert [item for item, _ in result] and {"m0", "m2"}.isdisjoint(item for item, _ in result)
    assert len(result) == 3


def test_ties_are_broken_by_item_id_whatever_the_order_in_the_catalog() -> None:
    vector = np.ones((1, 4), dtype=np.float32) / 2.0
    other = np.array([[1.0, 0, 0, 0]], dtype=np.float32)
    ids = ["m9", "m3", "m7", "m1", "m5"]
    matrix = np.concatenate([vector, vector, other, vector, vector])
    index = DomainIndex("movies", ids, {i: n for n, i in enumerate(ids)}, matrix, np.ones(5, bool))
    [result] = top_k(index, vector, [{"m5"}], k=3)
    assert [item for item, _ in result] == ["m1", "m3", "m9"]


@pytest.mark.parametrize("first_pass", ["bfloat16", "int8"])
@pytest.mark.parametrize("rows", [6_000, BLOCKED_MIN_ITEMS + 500])
def test_low_precision_shortlist_returns_the_exact_float32_ranking(
    rows: int, first_pass: str
) -> None:
    """The first pass in bfloat16 or int8 only shortlists: items and order are float32's, and
    so are the scores up to float32 rounding. The larger catalog shortlists from blocks (and
    its int8 copy is packed in several chunks)."""
    dim = 64
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((rows, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = [f"m{i}" for i in range(rows)]
    active = np.ones(rows, bool)
    active[::7] = False
    exact = DomainIndex("movies", ids, {item: i for i, item in enumerate(ids)}, matrix, active)
    copy = coarse_copy(matrix, coarse_dtype(first_pass))
    coarse = DomainIndex("movies", ids, exact.positions, matrix, active, copy)
    assert coarse_dtype("bfloat16") is torch.bfloat16 and coarse_dtype("off") is None
    assert coarse_dtype("int8") is torch.qint8
    queries = rng.standard_normal((64, dim)).astype(np.float32)
    excluded = [{f"m{i}" for i in rng.integers(0, rows, 30)} for _ in range(64)]
    shortlisted = top_k(coarse, queries, excluded, k=10)
    full = top_k(exact, queries, excluded, k=10)
    assert [[item for item, _ in row] for row in shortlisted] == [
        [item for item, _ in row] for row in full
    ]
    # Rescored in float32, though summed in another order than the full product.
    np.testing.assert_allclose(
        [[score for _, score in row] for row in shortlisted],
        [[score for _, score in row] for row in full],
        rtol=1e-6,
    )
    [first] = top_k(coarse, queries[:1], excluded[:1], k=10)
    assert all(active[exact.positions[item]] for item, _ in first)


@pytest.mark.parametrize("columns", [BLOCKED_MIN_ITEMS + 3 * BLOCK, BLOCKED_MIN_ITEMS + 77])
def test_blocked_selection_finds_what_topk_finds(columns: int) -> None:
    """Over long rows the shortlist comes from the blocks with the best maxima (and the columns
    after the last whole block): the same columns as a topk over the whole row."""
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.standard_normal((7, columns)).astype(np.float32))
    scores[:, rng.integers(0, columns, 500)] = -torch.inf  # excluded and removed items
    scores[0, :BLOCK] = 10.0 + torch.arange(BLOCK)  # the best all in one block
    scores[1, -20:] = 20.0  # and in the columns after the last whole block
    scores[2, ::BLOCK] = 30.0  # one in each of many blocks
    values, columns_found = top_columns(scores, 56)
    expected_values, expected = torch.topk(scores, 56, dim=1, sorted=False)
    assert torch.equal(torch.gather(scores, 1, columns_found), values)
    assert torch.equal(values.sort(dim=1).values, expected_values.sort(dim=1).values)
    for row in (0, 1, 3, 4, 5, 6):  # row 2 has more tied values than places: any of them do
        assert set(columns_found[row].tolist()) == set(expected[row].tolist())
