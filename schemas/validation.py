"""The one validator for incoming bytes: every consumer of events and catalog items uses it.

It turns raw Kafka values into contract objects or into a :class:`Rejection` with a reason code
from :data:`schemas.contracts.DeadLetterReason`. It never raises on bad input, because a single
hostile message must never stop a worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.contracts import CatalogItem, DeadLetterReason, ErasureRequest, UserEvent


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input was refused; ``detail`` is safe to log (no payload content)."""

    reason: DeadLetterReason
    detail: str


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Deployment-dependent bounds (see ``LimitSettings``)."""

    max_event_bytes: int = 65_536
    max_text_chars: int = 8_192
    max_id_chars: int = 256
    min_timestamp: float = 631_152_000.0
    max_future_skew_seconds: float = 86_400.0


def _summarize(error: ValidationError) -> str:
    """First few errors as ``field: message``; input values are left out on purpose."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:3]:
        # Field names come from the input too: cut them so no payload rides along.
        location = ".".join(str(part)[:64] for part in item["loc"]) or "<root>"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def _classify(error: ValidationError) -> Rejection:
    """The one reason that names what is wrong: ``unknown_event_type`` only for an event whose
    sole fault is an ``event_type`` that is given but not one of the known types; a missing or
    null required field, ``event_type`` included, is a ``schema_violation``."""
    errors = error.errors(include_url=False)  # inputs are read here, never put in the detail
    if any(item["type"] == "json_invalid" for item in errors):
        return Rejection("invalid_json", _summarize(error))
    if any(item["loc"][:1] == ("schema_version",) and item["type"] != "missing" for item in errors):
        return Rejection("unsupported_schema_version", _summarize(error))
    if all(
        item["loc"][:1] == ("event_type",)
        and item["type"] != "missing"
        and item.get("input") is not None
        for item in errors
    ):
        return Rejection("unknown_event_type", _summarize(error))
    return Rejection("schema_violation", _summarize(error))


class EventValidator:
    """Validates ``UserEvent`` and ``CatalogItem`` bytes against contracts and limits."""

    def __init__(
        self,
        domains: Iterable[str],
        limits: EventLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.domains = frozenset(domains)
        self.limits = limits or EventLimits()
        self._clock = clock

    def _decode(self, raw: bytes | None) -> str | Rejection:
        if raw is None:
            return Rejection("invalid_json", "empty message (null value)")
        if len(raw) > self.limits.max_event_bytes:
            return Rejection(
                "oversized",
                f"{len(raw)} bytes exceeds max_event_bytes={self.limits.max_event_bytes}",
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection("invalid_utf8", f"invalid UTF-8 at byte {exc.start}")

    def _check_domain(self, domain: str, topic_domain: str) -> Rejection | None:
        if domain not in self.domains:
            return Rejection("unknown_domain", f"domain {domain!r} is not configured")
        if domain != topic_domain:
            return Rejection(
                "domain_mismatch", f"domain {domain!r} arrived on the {topic_domain!r} topic"
            )
        return None

    def _check_ids(self, *identifiers: str) -> Rejection | None:
        longest = max(map(len, identifiers))
        if longest > self.limits.max_id_chars:
            return Rejection(
                "schema_violation",
                f"an id has {longest} chars, max_id_chars={self.limits.max_id_chars}",
            )
        return None

    def validate_event(self, raw: bytes | None, topic_domain: str) -> UserEvent | Rejection:
        """Decode and check one event from the ``events.<topic_domain>`` topic."""
        text = self._decode(raw)
        if isinstance(text, Rejection):
            return text
        try:
            event = UserEvent.model_validate_json(text)
        except ValidationError as exc:
            return _classify(exc)
        rejection = self._check_domain(event.domain, topic_domain) or self._check_ids(
            event.event_id, event.user_id, event.item_id
        )
        if rejection:
            return rejection
        latest = self._clock() + self.limits.max_future_skew_seconds
        if not (self.limits.min_timestamp <= event.timestamp <= latest) or not math.isfinite(
            event.timestamp
        ):
            return Rejection(
                "timestamp_out_of_range",
                f"timestamp {event.timestamp!r} outside [{self.limits.min_timestamp:.0f}, now+"
                f"{self.limits.max_future_skew_seconds:.0f}s]",
            )
        text_chars = len(event.text or "") + len(event.title or "")
        if text_chars > self.limits.max_text_chars:
            return Rejection(
                "text_too_long",
                f"inline text has {text_chars} chars, max_text_chars={self.limits.max_text_chars}",
            )
        return event

    def validate_erasure(self, raw: bytes | None) -> ErasureRequest | Rejection:
        """Decode and check one request from the ``users.erasure`` topic."""
        text = self._decode(raw)
        if isinstance(text, Rejection):
            return text
        try:
            request = ErasureRequest.model_validate_json(text)
        except ValidationError as exc:
            return _classify(exc)
        return self._check_ids(request.user_id) or request

    def validate_catalog_item(
        self, raw: bytes | None, topic_domain: str
    ) -> CatalogItem | Rejection:
        """Decode and check one item from the ``catalog.<topic_domain>`` topic."""
        text = self._decode(raw)
        if isinstance(text, Rejection):
            return text
        try:
            item = CatalogItem.model_validate_json(text)
        except ValidationError as exc:
            return _classify(exc)
        return (
            self._check_domain(item.domain, topic_domain) or self._check_ids(item.item_id) or item
        )
