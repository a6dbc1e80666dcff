"""Explanations come from the scoring path and are faithful: a user with two clear interests
gets each recommended item explained by the matching interest, and leaving out the
top-attributed interaction lowers the item's score more than leaving out another one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from memory_catalog import MemoryCatalog

from schemas import Recommendation
from stream.catalog.encoder import TextEncoder
from stream.core.items import item_text
from stream.core.processor import BatchProcessor
from stream.core.records import SourceRecord
from stream.core.scorer import Scorer
from stream.core.state import UserState
from stream.data.sample import item_genre, sample_items
from stream.model.artifacts import load_artifact
from stream.model.scorer import ModelScorer
from stream.settings import Settings
from testkit.artifacts import train_sample_artifact

T0 = 1_704_067_200.0
FIRST, SECOND = "science_fiction", "romance"


@pytest.fixture(scope="module")
def catalog() -> MemoryCatalog:
    items = sample_items()
    vectors = TextEncoder().encode([item_text(i["title"], i["text"]) for i in items])
    return MemoryCatalog(
        {(i["domain"], i["item_id"]): v for i, v in zip(items, vectors, strict=True)}
    )


def history() -> list[tuple[str, str]]:
    """Books of one genre and music of another, interleaved."""
    books = [i["item_id"] for i in sample_items() if i["domain"] == "books"]
    music = [i["item_id"] for i in sample_items() if i["domain"] == "music"]
    first = [b for b in books if item_genre(b) == FIRST][:4]
    second = [m for m in music if item_genre(m) == SECOND][:4]
    return [
        pair
        for two in zip(first, second, strict=True)
        for pair in (("books", two[0]), ("music", two[1]))
    ]


def records(settings: Settings, events: list[tuple[str, str]]) -> Iterator[SourceRecord]:
    for offset, (domain, item) in enumerate(events):
        event = {
            "schema_version": 1,
            "event_id": f"e{offset}",
            "user_id": "u1",
            "domain": domain,
            "item_id": item,
            "event_type": "purchase",
            "timestamp": T0 + offset * 3600,
        }
        yield SourceRecord(
            settings.topics.events(domain), 0, offset, b"u1", json.dumps(event).encode()
        )


def movie_recommendation(
    settings: Settings, catalog: MemoryCatalog, events: list[tuple[str, str]], scorer=None
) -> tuple[Recommendation, UserState, Scorer]:
    processor = BatchProcessor(settings, catalog, encoder=None, clock=lambda: T0 + 10**6)  # type: ignore[arg-type]
    if scorer is not None:
        processor.scorer = scorer
    output = processor.process(list(records(settings, events)), lambda _: None)
    movies = [r for r in output.recommendations if r.target_domain == "movies"]
    return movies[-1].contract(), output.states["u1"][1], processor.scorer


def score_without(
    settings: Settings, catalog: MemoryCatalog, scorer: Scorer, leave_out: int, item: str
) -> float:
    events = [e for n, e in enumerate(history()) if n != leave_out]
    _, state, _ = movie_recommendation(settings, catalog, events, scorer)
    query = scorer.query(state, "movies", ["books", "music"])
    index = scorer.index("movies")
    return float(index.matrix[index.positions[item]] @ query)


def test_zero_shot_items_are_explained_by_the_matching_interest(catalog: MemoryCatalog) -> None:
    settings = Settings(recommendations={"top_k": 12})
    rec, _, _ = movie_recommendation(settings, catalog, history())
    judged = 0
    for item in rec.items:
        genre = item_genre(item.item_id)
        if genre not in (FIRST, SECOND):
            continue
        judged += 1
        assert item.because, item
        top = item.because[0]
        assert item_genre(top.item_id) == genre, (item.item_id, item.because)
        assert top.domain == ("books" if genre == FIRST else "music")
        assert 0 < sum(c.share for c in item.because) <= 1.0 + 1e-6
    assert judged >= 4
    assert {item_genre(i.item_id) for i in rec.items} >= {FIRST, SECOND}


def test_zero_shot_shares_add_up_to_the_score(catalog: MemoryCatalog) -> None:
    """With every interaction listed, the decomposition is exact: the shares sum to 1."""
    settings = Settings(recommendations={"explain_top": 20})
    rec, _, _ = movie_recommendation(settings, catalog, history())
    for item in rec.items:
        assert sum(c.share for c in item.because) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("version", ["v0", "trained"])
def test_leaving_out_the_top_attributed_interaction_hurts_most(
    catalog: MemoryCatalog, version: str, tmp_path: Path
) -> None:
    settings = Settings()
    scorer = None
    if version == "trained":
        artifact = train_sample_artifact(tmp_path, "v1", text=None, epochs=2)
        scorer = ModelScorer(load_artifact(artifact), catalog, list(settings.domains))  # type: ignore[arg-type]
    rec, _, scorer = movie_recommendation(settings, catalog, history(), scorer)
    events = history()
    checked = 0
    for item in rec.items[:5]:
        if not item.because:
            continue
        top = (item.because[0].domain, item.because[0].item_id)
        top_index = events.index(top)
        drops = {
            n: item.score - score_without(settings, catalog, scorer, n, item.item_id)
            for n in range(len(events))
        }
        others = [drop for n, drop in drops.items() if events[n] != top]
        assert drops[top_index] > float(np.median(others)), (item.item_id, drops)
        checked += 1
    assert checked >= 3
