"""The approximate first pass: its recall against exact top-K is measured on a synthetic catalog
whose vectors are clustered as an encoder's are, and the exact guarantees stay exact (seen and
removed items never return, the scores are the float32 ones, a query whose shortlist runs dry
is ranked exactly); the catalog builds the index off the hot path and adds new items to it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from stream.catalog.store import ItemCatalog
from stream.core.ann import ApproximateConfig, ApproximateIndex
from stream.core.scoring import DomainIndex, top_k
from stream.data.synthetic import synthetic_catalog

ROWS = 20_000
DIMENSION = 48


@pytest.fixture(scope="module")
def catalog_vectors() -> tuple[list[str], np.ndarray]:
    catalog = synthetic_catalog(ROWS, seed=3)
    return catalog.item_ids, catalog.vectors(DIMENSION, seed=3)


def _queries(matrix: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = matrix[rng.integers(0, len(matrix), (count, 3))].mean(axis=1)
    return (picked / np.linalg.norm(picked, axis=1, keepdims=True)).astype(np.float32)


def _indexes(
    ids: list[str], matrix: np.ndarray, active: np.ndarray, bias: np.ndarray | None = None
) -> tuple[DomainIndex, DomainIndex]:
    positions = {item: n for n, item in enumerate(ids)}
    exact = DomainIndex("books", ids, positions, matrix, active, bias=bias)
    built = ApproximateIndex.build(matrix, active, ApproximateConfig(1, target_recall=0.97))
    return exact, DomainIndex("books", ids, positions, matrix, active, bias=bias, approximate=built)


def _recall(exact: list[list[tuple[str, float]]], found: list[list[tuple[str, float]]]) -> float:
    return float(
        np.mean(
            [
                len({i for i, _ in a} & {i for i, _ in b}) / len(a)
                for a, b in zip(exact, found, strict=True)
            ]
        )
    )


def test_recall_is_calibrated_and_exact_guarantees_hold(
    catalog_vectors: tuple[list[str], np.ndarray],
) -> None:
    ids, matrix = catalog_vectors
    active = np.ones(ROWS, bool)
    active[::7] = False  # removed items
    exact, approximate = _indexes(ids, matrix, active)
    assert approximate.approximate is not None
    assert approximate.approximate.recall >= 0.97 or (
        approximate.approximate.probes == approximate.approximate.lists
    )
    queries = _queries(matrix, 200, seed=5)
    rng = np.random.default_rng(6)
    # Each query excludes its own top item and a few random ones, as seen items.
    exclusions = [
        {ids[int(n)] for n in rng.integers(0, ROWS, 5)} | {top[0][0]}
        for top in top_k(exact, queries, [set()] * 200, 1)
    ]
    wanted = top_k(exact, queries, exclusions, 10)
    found = top_k(approximate, queries, exclusions, 10)
    assert _recall(wanted, found) >= 0.95
    removed = {ids[n] for n in range(0, ROWS, 7)}
    for query, excluded, items in zip(queries, exclusions, found, strict=True):
        assert len(items) == 10
        assert not {item for item, _ in items} & (excluded | removed)
        for item, score in items:  # the float32 score, not the quantized one
            assert score == pytest.approx(float(matrix[ids.index(item)] @ query), abs=1e-5)
        assert [s for _, s in items] == sorted((s for _, s in items), reverse=True)


def test_a_bias_joins_its_favoured_items_to_the_shortlist(
    catalog_vectors: tuple[list[str], np.ndarray],
) -> None:
    ids, matrix = catalog_vectors
    bias = np.zeros(ROWS, np.float32)
    favoured = np.random.default_rng(8).choice(ROWS, 50, replace=False)
    bias[favoured] = 0.6  # strong enough to lift items the query alone would not shortlist
    exact, approximate = _indexes(ids, matrix, np.ones(ROWS, bool), bias)
    queries = _queries(matrix, 100, seed=9)
    none: list[set[str]] = [set()] * 100
    assert _recall(top_k(exact, queries, none, 10), top_k(approximate, queries, none, 10)) >= 0.95


def test_a_query_whose_shortlist_runs_dry_is_ranked_exactly(
    catalog_vectors: tuple[list[str], np.ndarray],
) -> None:
    ids, matrix = catalog_vectors
    active = np.zeros(ROWS, bool)
    active[-30:] = True  # almost every item removed: the shortlist finds few live ones
    exact, approximate = _indexes(ids, matrix, active)
    queries = _queries(matrix[:1000], 8, seed=11)
    none: list[set[str]] = [set()] * 8
    assert top_k(approximate, queries, none, 10) == top_k(exact, queries, none, 10)


def test_the_catalog_builds_the_index_in_the_background_and_adds_new_items(
    tmp_path: Path, catalog_vectors: tuple[list[str], np.ndarray]
) -> None:
    ids, matrix = catalog_vectors
    store = ItemCatalog(tmp_path / "items", "fp", DIMENSION, approximate=ApproximateConfig(5_000))
    digest = [b"d" * 16]
    store.add("books", ids[:4_000], digest * 4_000, matrix[:4_000])
    assert store.index("books").approximate is None  # below the size: exact
    store.add("books", ids[4_000:6_000], digest * 2_000, matrix[4_000:6_000])
    deadline = time.monotonic() + 60
    while store.index("books").approximate is None:
        assert time.monotonic() < deadline, "the background build never finished"
        time.sleep(0.05)
    index = store.index("books")
    assert index.coarse is None  # the approximate index replaces the low-precision copy
    # A new item and a changed one are found by their own vectors at once.
    rng = np.random.default_rng(12)
    fresh = rng.standard_normal((2, DIMENSION)).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    store.add("books", ["new-item", ids[10]], digest * 2, fresh)
    index = store.index("books")
    assert index.approximate is not None and index.approximate.stale == 1
    found = top_k(index, fresh, [set(), set()], 1)
    assert [items[0][0] for items in found] == ["new-item", ids[10]]
    # A reload builds the index while loading, before anything is scored.
    store.close()
    reloaded = ItemCatalog(
        tmp_path / "items", "fp", DIMENSION, approximate=ApproximateConfig(5_000)
    )
    reloaded.load()
    assert reloaded.index("books").approximate is not None
    assert reloaded.index("books").size == 6_001
    reloaded.close()
