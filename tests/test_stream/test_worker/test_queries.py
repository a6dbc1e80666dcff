"""Reading a request for recommendations: what is asked, and a reason for what cannot be."""

from __future__ import annotations

import pytest

from schemas import Trigger
from stream.settings import Settings
from stream.worker.queries import QueryError, RecommendationQuery, parse_query

SETTINGS = Settings(
    domains=["books", "music", "movies"], recommendations={"routes": {"movies": ["books"]}}
)


def test_a_well_formed_request_is_read_with_its_defaults() -> None:
    assert parse_query("/recommendations/movies/ü-1 2", "", SETTINGS) == RecommendationQuery(
        "movies", "ü-1 2", 10, False
    )
    assert parse_query("/recommendations/movies/u", "k=3&explain=TRUE", SETTINGS) == (
        RecommendationQuery("movies", "u", 3, True)
    )


@pytest.mark.parametrize(
    ("path", "query", "status", "reason"),
    [
        ("/recommendations/movies", "", 404, "not_found"),
        ("/recommendations/movies/u/extra", "", 404, "not_found"),
        ("/recommendations//u", "", 404, "not_found"),
        ("/recommendations/books/u", "", 404, "unknown_domain"),  # a domain, not a target
        ("/recommendations/cooking/u", "", 404, "unknown_domain"),
        ("/recommendations/movies/" + "x" * 1025, "", 400, "bad_user_id"),
        ("/recommendations/movies/a\x01b", "", 400, "bad_user_id"),
        ("/recommendations/movies/u", "k=0", 400, "bad_k"),
        ("/recommendations/movies/u", "k=101", 400, "bad_k"),
        ("/recommendations/movies/u", "k=-3", 400, "bad_k"),
        ("/recommendations/movies/u", "k=ten", 400, "bad_k"),
        ("/recommendations/movies/u", "explain=perhaps", 400, "bad_explain"),
        ("/recommendations/movies/u", "user=other", 400, "bad_parameter"),
    ],
)
def test_bad_requests_get_a_status_and_a_reason(
    path: str, query: str, status: int, reason: str
) -> None:
    with pytest.raises(QueryError) as refused:
        parse_query(path, query, SETTINGS)
    assert (refused.value.status, refused.value.reason) == (status, reason)
    code, headers, body = refused.value.answer()
    assert code == status and headers == [] and reason.encode() in body


def test_a_busy_worker_says_when_to_come_back() -> None:
    _, headers, _ = QueryError(503, "rebalancing", "retry", retry_after=True).answer()
    assert headers == [("Retry-After", "2")]


def test_request_triggers_name_no_record_and_event_triggers_must() -> None:
    request = Trigger(kind="request", event_id="r1", domain="movies", event_time=1.0)
    assert request.topic is None and request.partition is None
    with pytest.raises(ValueError, match="names its record"):
        Trigger(event_id="e1", domain="movies", event_time=1.0)
    event = Trigger(
        event_id="e1", domain="movies", event_time=1.0, topic="t", partition=0, offset=3
    )
    assert event.kind == "event"
