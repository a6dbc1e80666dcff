"""Recommendations as the hot path builds them, and their encoding to the wire contract.

Building :class:`schemas.Recommendation` pydantic models costs about 15 µs per object even
without validation, and a recommendation of 10 items with 3 explanations each is 41 objects:
at a recommendation per event that was the largest single cost of a batch. So the processor
emits plain slotted records and encodes them straight to JSON here. The output is the contract's
JSON (a test round-trips it through ``Recommendation.model_validate_json``), and ``contract()``
gives the pydantic model where code wants one.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from schemas import SCHEMA_VERSION, Recommendation

_NULL_SCORE = b'"score":null'


@dataclass(frozen=True, slots=True)
class EmittedTrigger:
    """The event (or request) that caused a recommendation (the contract's ``Trigger``)."""

    event_id: str
    domain: str
    event_time: float
    topic: str | None
    partition: int | None
    offset: int | None
    kind: str = "event"  # or "request": then no record (topic, partition, offset are None)


@dataclass(frozen=True, slots=True)
class EmittedRecommendation:
    """One recommendation, field names as in :class:`schemas.Recommendation`.

    ``items`` are ``(item_id, score)`` best first; ``because`` holds, per item, its
    ``(item_id, domain, share)`` contributions largest first (empty lists when not explained).
    """

    recommendation_id: str
    user_id: str
    target_domain: str
    items: list[tuple[str, float]]
    because: list[list[tuple[str, str, float]]]
    model_version: str
    source_domains: list[str]
    trigger: EmittedTrigger
    generated_at: float

    def to_json(self) -> bytes:
        """The contract's JSON encoding; raises ValueError on a non-finite score (which JSON
        cannot carry: orjson would write null)."""
        trigger = self.trigger
        encoded = orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "recommendation_id": self.recommendation_id,
                "user_id": self.user_id,
                "target_domain": self.target_domain,
                "items": [
                    {
                        "item_id": item_id,
                        "score": score,
                        "rank": rank,
                        "because": [
                            {"item_id": source, "domain": domain, "share": share}
                            for source, domain, share in because
                        ],
                    }
                    for rank, (item_id, score), because in zip(
                        range(1, len(self.items) + 1), self.items, self.because, strict=True
                    )
                ],
                "model_version": self.model_version,
                "source_domains": self.source_domains,
                "trigger": {
                    # The topics carry event triggers only, without the field (schema v1).
                    **({} if trigger.kind == "event" else {"kind": trigger.kind}),
                    "event_id": trigger.event_id,
                    "domain": trigger.domain,
                    "event_time": trigger.event_time,
                    "topic": trigger.topic,
                    "partition": trigger.partition,
                    "offset": trigger.offset,
                },
                "generated_at": self.generated_at,
            }
        )
        # orjson writes a non-finite float as null. Inside a JSON string every quote is
        # escaped, so these bytes can only be an item's score: one search instead of a check
        # per score.
        if _NULL_SCORE in encoded:
            raise ValueError(f"non-finite score in recommendation {self.recommendation_id}")
        return encoded

    def contract(self) -> Recommendation:
        """The validated pydantic model of this recommendation (tools and tests)."""
        return Recommendation.model_validate_json(self.to_json())
