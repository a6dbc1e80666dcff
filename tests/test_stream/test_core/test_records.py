"""Dead letters keep what an operator needs to replay a refused record, within the broker's
limits; the event-time merge never reorders a partition."""

from __future__ import annotations

import base64
import pickle

from schemas import Rejection, UserEvent
from stream.core.records import MAX_KEY_BYTES, SourceRecord, dead_letter, in_event_time_order


def test_a_dead_letter_names_the_origin_and_keeps_the_bytes() -> None:
    record = SourceRecord("events.books", 2, 41, b"u1", b'{"a": 1}')
    letter = dead_letter(record, Rejection("invalid_json", "detail"), failed_at=5.0)
    assert (letter.topic, letter.partition, letter.offset) == ("events.books", 2, 41)
    assert letter.reason == "invalid_json" and letter.detail == "detail"
    assert base64.b64decode(letter.original) == b'{"a": 1}' and not letter.truncated
    assert base64.b64decode(letter.key or "") == b"u1"


def test_an_oversized_record_keeps_its_head_and_says_so() -> None:
    record = SourceRecord("events.books", 0, 0, b"k" * 5_000, b"x" * 10_000)
    letter = dead_letter(record, Rejection("oversized", "big"), 0.0, keep_bytes=100)
    assert len(base64.b64decode(letter.original)) == 100
    assert letter.truncated and letter.original_bytes == 10_000
    assert len(base64.b64decode(letter.key or "")) == MAX_KEY_BYTES


def _event(ts: float) -> UserEvent:
    return UserEvent(
        schema_version=1,
        event_id=f"e{ts}",
        user_id="u",
        domain="books",
        item_id="i",
        event_type="view",
        timestamp=ts,
    )


def test_partitions_interleave_by_event_time_and_keep_their_own_order() -> None:
    a = [(SourceRecord("events.a", 0, n, None, None), _event(t)) for n, t in enumerate([1, 5, 3])]
    b = [(SourceRecord("events.b", 0, n, None, None), _event(t)) for n, t in enumerate([2, 4])]
    merged = in_event_time_order(a + b)
    assert [(r.topic, r.offset) for r, _ in merged if r.topic == "events.a"] == [
        ("events.a", 0),
        ("events.a", 1),
        ("events.a", 2),
    ]
    assert [e.timestamp for _, e in merged] == [1, 2, 4, 5, 3]


def test_a_record_crosses_a_process_boundary_as_itself() -> None:
    record = SourceRecord("events.books", 1, 7, b"u", b"v", 3.5, ("events.books", 3, 2))
    assert pickle.loads(pickle.dumps(record)) == record
    assert record == ("events.books", 1, 7, b"u", b"v", 3.5, ("events.books", 3, 2))
    assert record.position == ("events.books", 3, 2)
    assert record._replace(origin=None).position == ("events.books", 1, 7)
