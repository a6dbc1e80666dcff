"""Explaining a batch of recommendations at once gives, share for share, what explaining each
one alone gives, and what the per-recommendation loop it replaced gave."""

from __future__ import annotations

import random

import numpy as np
import pytest
from memory_catalog import MemoryCatalog

from stream.core.explain import (
    Contributions,
    TermExplainer,
    ZeroShotTerms,
    explain_batch,
    round_shares,
)
from stream.core.scoring import DomainIndex

DIM = 24


def reference_explain(
    explainer: TermExplainer, index: DomainIndex, items: list[tuple[str, float]], top: int
) -> list[Contributions]:
    """The per-recommendation loop the batched version replaced, kept as the oracle."""
    vectors = index.matrix[[index.positions[item] for item, _ in items]]
    scores = np.array([score for _, score in items], dtype=np.float64)
    valid = (scores > 0) & np.isfinite(scores)
    shares = (explainer.terms @ vectors.T) / np.where(valid, scores, 1.0)
    order = np.argsort(-shares, axis=0, kind="stable")[:top].T.tolist()
    explained: list[Contributions] = []
    for column, rows in enumerate(order):
        contributions: Contributions = []
        if valid[column]:
            for row in rows:
                share = float(shares[row, column])
                if share <= 0:
                    break
                domain, item_id = explainer.pairs[row]
                contributions.append((item_id, domain, round(share, 4)))
        explained.append(contributions)
    return explained


def reference_merge(pairs: list[tuple[str, str]], terms: np.ndarray) -> TermExplainer:
    """Sorted unique pairs, the terms of a repeated pair summed in history order."""
    unique = sorted(set(pairs))
    row_of = {pair: row for row, pair in enumerate(unique)}
    merged = np.zeros((len(unique), terms.shape[1]), dtype=terms.dtype)
    np.add.at(merged, [row_of[pair] for pair in pairs], terms)
    return TermExplainer(unique, merged)


def test_term_explainer_of_merges_repeats_in_history_order() -> None:
    rng = np.random.default_rng(3)
    pairs = [("movies", "m2"), ("books", "b1"), ("movies", "m2"), ("books", "b0")] * 3
    terms = rng.standard_normal((len(pairs), DIM)).astype(np.float32)
    built, expected = TermExplainer.of(pairs, terms), reference_merge(pairs, terms)
    assert built.pairs == expected.pairs
    assert np.array_equal(built.terms, expected.terms)


def reference_terms(terms: ZeroShotTerms) -> TermExplainer | None:
    """The zero-shot terms as the per-recommendation code built them: gather, weight, merge."""
    vectors, found = terms.items.embeddings(terms.keys)
    pairs = [key for key, known in zip(terms.keys, found, strict=True) if known]
    weights = [w for w, known in zip(terms.weights, found, strict=True) if known]
    if not pairs:
        return None
    return reference_merge(pairs, vectors * np.asarray(weights, dtype=np.float32)[:, None])


@pytest.fixture(scope="module")
def catalog() -> MemoryCatalog:
    items = {
        "books": [f"b{i}" for i in range(30)],
        "music": [f"s{i}" for i in range(30)],
        "movies": [f"m{i}" for i in range(80)],
    }
    return MemoryCatalog.random(items, dim=DIM, seed=7)


def random_recommendations(
    catalog: MemoryCatalog, count: int, seed: int
) -> tuple[list[ZeroShotTerms | None], list[list[tuple[str, float]]]]:
    """Histories with repeats, unknown items and negative weights; rankings with zero,
    negative and missing scores."""
    rng = random.Random(seed)
    index = catalog.index("movies")
    explainers: list[ZeroShotTerms | None] = []
    ranked: list[list[tuple[str, float]]] = []
    for _ in range(count):
        if rng.random() < 0.05:
            explainers.append(None)
        else:
            keys = []
            for _ in range(rng.randint(1, 12)):
                domain = rng.choice(["books", "music"])
                pool = 6 if rng.random() < 0.5 else 30  # small pools repeat items
                keys.append((domain, f"{domain[0]}{rng.randrange(pool)}"))
            if rng.random() < 0.1:
                keys.append(("books", "unknown-item"))
            weights = [rng.uniform(-0.5, 1.5) for _ in keys]
            explainers.append(ZeroShotTerms(keys, weights, catalog))
        picked = rng.sample(list(index.item_ids), rng.choice([0, 3, 10, 10, 10]))
        ranked.append([(item, rng.choice([rng.uniform(-0.2, 1.0), 0.0, 0.5])) for item in picked])
    return explainers, ranked


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_explains_each_recommendation_as_it_would_alone(
    catalog: MemoryCatalog, seed: int
) -> None:
    index = catalog.index("movies")
    explainers, ranked = random_recommendations(catalog, 300, seed)
    batched = explain_batch(index, explainers, ranked, top=3)
    assert len(batched) == len(ranked)
    for explainer, items, together in zip(explainers, ranked, batched, strict=True):
        alone = explainer.explain(index, items, 3) if explainer is not None else [[] for _ in items]
        assert together == alone
        terms = reference_terms(explainer) if explainer is not None else None
        expected = (
            reference_explain(terms, index, items, 3) if terms is not None else [[] for _ in items]
        )
        assert together == expected


def test_term_explainers_of_a_trained_scorer_batch_the_same(catalog: MemoryCatalog) -> None:
    index = catalog.index("movies")
    lazy, ranked = random_recommendations(catalog, 200, seed=11)
    explainers = [reference_terms(terms) if terms is not None else None for terms in lazy]
    batched = explain_batch(index, explainers, ranked, top=5)
    for explainer, items, together in zip(explainers, ranked, batched, strict=True):
        expected = (
            reference_explain(explainer, index, items, 5)
            if explainer is not None
            else [[] for _ in items]
        )
        assert together == expected


def test_shares_round_as_python_rounds() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.uniform(-2, 2, 100_000),
            (np.arange(-20_000, 20_000) + 0.5) / 1e4,  # halves at the fifth decimal
            np.nextafter((np.arange(0, 10_000) + 0.5) / 1e4, 1.0),
            np.array([0.0, -0.0, 1e-9, 12345.67895, 1e12, np.inf, -np.inf]),
        ]
    )
    rounded = round_shares(values)
    assert rounded.tolist() == [round(value, 4) for value in values.tolist()]
    assert np.isnan(round_shares(np.array([np.nan]))).all()
