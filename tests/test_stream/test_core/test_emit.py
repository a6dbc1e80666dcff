"""Recommendations encoded by the hot path are the contract's JSON, field for field."""

from __future__ import annotations

import dataclasses
import math

import pytest

from schemas import Recommendation
from stream.core.emit import EmittedRecommendation, EmittedTrigger


def emitted(score: float = 0.5) -> EmittedRecommendation:
    return EmittedRecommendation(
        recommendation_id="r1",
        user_id="user-é",
        target_domain="movies",
        items=[("m1", score), ("m2", 0.25)],
        because=[[("b1", "books", 0.6), ("s1", "music", 0.3)], []],
        model_version="v0",
        source_domains=["books", "music"],
        trigger=EmittedTrigger("e1", "books", 1_700_000_000.5, "events.books", 3, 42),
        generated_at=1_700_000_001.25,
    )


def test_encoding_validates_against_the_contract_and_keeps_every_field() -> None:
    rec = Recommendation.model_validate_json(emitted().to_json())
    assert rec.user_id == "user-é" and rec.target_domain == "movies"
    assert [(i.item_id, i.score, i.rank) for i in rec.items] == [("m1", 0.5, 1), ("m2", 0.25, 2)]
    assert [(c.item_id, c.domain, c.share) for c in rec.items[0].because] == [
        ("b1", "books", 0.6),
        ("s1", "music", 0.3),
    ]
    assert rec.items[1].because == []
    assert rec.trigger.model_dump() == {
        "kind": "event",
        "event_id": "e1",
        "domain": "books",
        "event_time": 1_700_000_000.5,
        "topic": "events.books",
        "partition": 3,
        "offset": 42,
    }
    assert rec.model_version == "v0" and rec.source_domains == ["books", "music"]
    assert rec.generated_at == 1_700_000_001.25 and rec.recommendation_id == "r1"
    assert emitted().contract() == rec
    # Topic messages keep schema v1's trigger as it was: the kind is left out.
    assert b'"kind"' not in emitted().to_json()


def test_a_request_trigger_names_no_record() -> None:
    request = EmittedTrigger("request-1", "movies", 1_700_000_002.0, None, None, None, "request")
    encoded = dataclasses.replace(emitted(), trigger=request).to_json()
    rec = Recommendation.model_validate_json(encoded)
    assert rec.trigger.kind == "request" and rec.trigger.offset is None


@pytest.mark.parametrize("score", [math.nan, math.inf])
def test_a_non_finite_score_is_refused_rather_than_written_as_null(score: float) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        emitted(score).to_json()
