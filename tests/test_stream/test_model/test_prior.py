"""Version 0's popularity prior: the bias it adds, how top-K applies it, how it is served."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stream.core.scorer import ZeroShotScorer
from stream.core.scoring import DomainIndex, score_items, top_k
from stream.core.state import AppliedEvent, UserState, apply_event
from stream.model.prior import PopularityPrior, PriorScorer
from stream.settings import Settings
from tests.memory_catalog import MemoryCatalog


def test_bias_is_log_popularity_relative_to_the_top_item() -> None:
    prior = PopularityPrior({"movies": {"b": 1.0, "c": 9.0}}, 1.0, 1.0)
    bias = prior.bias("movies", ["a", "b", "c"])
    np.testing.assert_allclose(bias, [0.0, math.log(2) / math.log(10), 1.0], rtol=1e-6)
    assert prior.bias("books", ["x"]).tolist() == [0.0]  # a domain never counted


@pytest.mark.parametrize("weight", [0.0, -1.0, float("inf"), float("nan")])
def test_weights_must_be_positive_and_finite(weight: float) -> None:
    with pytest.raises(ValueError, match="cold_weight"):
        PopularityPrior({}, weight, 1.0)


@pytest.mark.parametrize("rows", [300, 6_000])
def test_top_k_adds_the_bias_in_both_passes(rows: int) -> None:
    """Exact and bfloat16-shortlisted top-K rank by query . item + bias, as score_items does."""
    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((rows, 32)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = [f"m{i}" for i in range(rows)]
    bias = rng.uniform(0, 3, rows).astype(np.float32)
    positions = {item: i for i, item in enumerate(ids)}
    exact = DomainIndex("movies", ids, positions, matrix, np.ones(rows, bool), bias=bias)
    coarse = DomainIndex(
        "movies", ids, positions, matrix, exact.active, torch.from_numpy(matrix).bfloat16(), bias
    )
    queries = rng.standard_normal((16, 32)).astype(np.float32)
    scores = score_items(exact, queries)
    np.testing.assert_allclose(scores, queries @ matrix.T + bias, rtol=1e-5, atol=1e-5)
    expected = [[ids[i] for i in np.argsort(-row, kind="stable")[:10]] for row in scores]
    for index in (exact, coarse):
        ranked = top_k(index, queries, [set()] * len(queries), k=10)
        assert [[item for item, _ in row] for row in ranked] == expected
    without = top_k(
        DomainIndex("movies", ids, positions, matrix, exact.active), queries, [set()] * 16, 10
    )
    assert [[item for item, _ in row] for row in without] != expected  # the bias counts


def _state(catalog: MemoryCatalog, events: list[tuple[str, str]]) -> UserState:
    state = UserState("u1")
    settings = Settings()
    for offset, (domain, item) in enumerate(events):
        vector = catalog.embedding(domain, item)
        assert vector is not None
        apply_event(
            state,
            AppliedEvent(str(offset), domain, item, "view", 1_000.0 + offset, None, "t:0", offset),
            vector,
            settings.interest,
        )
    return state


def test_scorer_serves_the_chart_to_new_users_and_similarity_to_others() -> None:
    """A cold user (no movie yet) with a large cold weight gets the most popular movies; a warm
    user with a tiny warm weight gets what zero-shot similarity alone ranks first."""
    catalog = MemoryCatalog.random(
        {"books": ["b1", "b2"], "movies": [f"m{i}" for i in range(30)]}, dim=16, seed=2
    )
    counts = {"movies": {f"m{i}": float(i) for i in range(30)}}
    settings = Settings(domains=["books", "movies"])
    prior = PopularityPrior(counts, cold_weight=100.0, warm_weight=0.01)
    scorer = PriorScorer(settings, catalog, prior, "v0-prior-test")
    plain = ZeroShotScorer(settings, catalog)

    def ranked(scorer: ZeroShotScorer, state: UserState) -> list[str]:
        queries, _ = scorer.finish([scorer.prepare(state, "movies", ["books"], explain=False)])
        [items] = top_k(scorer.index("movies"), queries, [set(state.seen.get("movies", ()))], 5)
        return [item for item, _ in items]

    cold = _state(catalog, [("books", "b1")])
    assert ranked(scorer, cold) == ["m29", "m28", "m27", "m26", "m25"]
    warm = _state(catalog, [("books", "b1"), ("movies", "m3")])
    assert ranked(scorer, warm)[:3] == ranked(plain, warm)[:3]
    assert scorer.version == "v0-prior-test" and plain.version == "v0"


def test_bias_follows_a_growing_catalog() -> None:
    """Items published after the prior was loaded get their counts' bias (0 if never counted)."""
    catalog = MemoryCatalog.random({"movies": ["m1", "m2"]}, dim=8)
    prior = PopularityPrior({"movies": {"m2": 4.0, "m3": 4.0}}, 1.0, 1.0)
    scorer = PriorScorer(Settings(domains=["movies"]), catalog, prior, "v0-p")
    assert scorer.index("movies").bias.tolist() == [0.0, 1.0]
    catalog.vectors[("movies", "m3")] = catalog.vectors[("movies", "m1")]
    catalog.items["movies"].append("m3")
    assert scorer.index("movies").bias.tolist() == [0.0, 1.0, 1.0]
