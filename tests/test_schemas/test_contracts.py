"""Contracts: JSON Schema files match the models, and the validator names every refusal."""

from __future__ import annotations

import json

import pytest

from schemas import SCHEMA_VERSION, EventLimits, EventValidator, Rejection, UserEvent
from schemas.export import SCHEMA_DIR, schema_documents

NOW = 1_800_000_000.0


def test_schema_files_are_generated_from_the_models() -> None:
    """Run `xdrec schemas export` after changing a contract."""
    for file_name, text in schema_documents().items():
        assert (SCHEMA_DIR / file_name).read_text() == text + "\n", file_name


def test_every_contract_carries_its_schema_version() -> None:
    for text in schema_documents().values():
        schema = json.loads(text)
        assert "schema_version" in schema["required"]
        assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def _event(**changes: object) -> bytes:
    body = {
        "schema_version": 1,
        "event_id": "e1",
        "user_id": "u1",
        "domain": "books",
        "item_id": "b1",
        "event_type": "click",
        "timestamp": NOW - 60,
        **changes,
    }
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.fixture
def validator() -> EventValidator:
    return EventValidator(
        ["books", "movies"], EventLimits(max_event_bytes=2_000), clock=lambda: NOW
    )


def test_valid_event_is_accepted(validator: EventValidator) -> None:
    event = validator.validate_event(_event(rating=4), "books")
    assert isinstance(event, UserEvent)
    assert event.rating == 4.0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "invalid_json"),
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_utf8"),
        (b"[" * 5_000 + b"]" * 5_000, "oversized"),
        (b"[" * 600 + b"]" * 600, "invalid_json"),
        (_event(timestamp="soon"), "schema_violation"),
        (_event(user_id=7), "schema_violation"),
        (_event(item_id=...), "schema_violation"),
        (_event(extra_field=True), "schema_violation"),
        (_event(rating=float("nan")), "schema_violation"),
        (_event(rating=9), "schema_violation"),
        (_event(user_id="a\nb"), "schema_violation"),
        (_event(user_id="u" * 300), "schema_violation"),
        (_event(schema_version=2), "unsupported_schema_version"),
        (_event(schema_version=...), "schema_violation"),
        (_event(event_type="teleport"), "unknown_event_type"),
        (_event(domain="astrology"), "unknown_domain"),
        (_event(domain="movies"), "domain_mismatch"),
        (_event(timestamp=-1), "timestamp_out_of_range"),
        (_event(timestamp=NOW + 10 * 86_400), "timestamp_out_of_range"),
        (_event(text="t" * 1_900), "text_too_long"),
    ],
)
def test_bad_events_are_refused_with_reason(
    validator: EventValidator, raw: bytes | None, reason: str
) -> None:
    if reason == "text_too_long":
        validator = EventValidator(["books"], EventLimits(max_text_chars=100), clock=lambda: NOW)
    result = validator.validate_event(raw, "books")
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail
