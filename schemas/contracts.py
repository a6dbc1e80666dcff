"""The wire contracts of xdrec, as pydantic models.

These models are the single source of truth: the JSON Schema files in ``schemas/json/`` are
generated from them (``xdrec schemas export``) and a test fails when the two drift apart.
Every message carries ``schema_version`` so that consumers can refuse what they do not know.
Bounds that depend on deployment settings (known domains, text length, time range) are checked
by :mod:`schemas.validation`, not here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

SCHEMA_VERSION = 1
# The zero-shot model every worker starts with; it has no artifact.
ZERO_SHOT_VERSION = "v0"

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f\x7f]+$")
]
DomainName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
EventType = Literal[
    "view", "click", "add_to_cart", "purchase", "review", "rating", "impression", "dismiss"
]
# Feedback on a recommendation that is not an interaction with the item.
FEEDBACK_ONLY: frozenset[str] = frozenset({"impression", "dismiss"})


# Strict: JSON ``true``, ``1.0`` and ``1e0`` are not version 1.
SchemaVersion = Annotated[
    StrictInt,
    Field(ge=SCHEMA_VERSION, le=SCHEMA_VERSION, json_schema_extra={"const": SCHEMA_VERSION}),
]


class Contract(BaseModel):
    """Shared strictness: unknown fields, NaN and infinities are errors, not surprises."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        frozen=True,
    )


class UserEvent(Contract):
    """One user interaction in one domain, published to ``events.<domain>`` keyed by user_id."""

    schema_version: SchemaVersion
    event_id: Identifier = Field(description="Producer-assigned id, unique per event.")
    user_id: Identifier
    domain: DomainName
    item_id: Identifier
    event_type: EventType
    timestamp: float = Field(description="Event time, Unix seconds (UTC).")
    rating: float | None = Field(default=None, ge=0.0, le=5.0)
    title: str | None = Field(default=None, description="Inline item title for unknown items.")
    text: str | None = Field(default=None, description="Inline item text for unknown items.")
    recommendation_id: str | None = Field(
        default=None,
        max_length=64,
        description="For feedback (impression, click, dismiss): the recommendation it answers.",
    )


class CatalogItem(Contract):
    """An item's text, published to the compacted ``catalog.<domain>`` keyed by item_id."""

    schema_version: SchemaVersion
    item_id: Identifier
    domain: DomainName
    title: str = Field(max_length=4096)
    text: str = Field(default="", max_length=65_536)


class Contribution(Contract):
    """One of the user's interactions and the share of a recommended item's score it explains."""

    item_id: Identifier
    domain: DomainName
    share: float = Field(description="Share of the item's score due to this interaction.")


class RecommendedItem(Contract):
    item_id: Identifier
    score: float
    rank: int = Field(ge=1)
    because: list[Contribution] = Field(
        default_factory=list,
        description="The interactions that contributed most to this item's score, largest first.",
    )


class Trigger(Contract):
    """What caused a recommendation, so consumers can trace and deduplicate: an event
    (``kind`` "event", the default and the only kind on the ``recs.<target>`` topics, which
    omit the field; ``topic``, ``partition`` and ``offset`` name the record that carried it) or
    a request for the user's recommendations (``kind`` "request", the answer of a worker's
    ``GET /recommendations/{domain}/{user_id}``: ``event_id`` is the request's id,
    ``event_time`` when it was answered, and there is no record)."""

    kind: Literal["event", "request"] = "event"
    event_id: Identifier
    domain: DomainName
    event_time: float
    topic: str | None = None
    partition: int | None = Field(default=None, ge=0)
    offset: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _events_name_their_record(self) -> Trigger:
        if self.kind == "event" and None in (self.topic, self.partition, self.offset):
            raise ValueError("an event trigger names its record: topic, partition and offset")
        return self


class Recommendation(Contract):
    """Ranked target-domain items for one user, published to ``recs.<target>`` keyed by user_id.

    ``recommendation_id`` is a deterministic function of the user, target, trigger and model
    version: a redelivered event yields the same id, so consumers drop repeats by it.
    """

    schema_version: SchemaVersion
    recommendation_id: str
    user_id: Identifier
    target_domain: DomainName
    items: list[RecommendedItem]
    model_version: str
    source_domains: list[DomainName]
    trigger: Trigger
    generated_at: float = Field(description="Wall-clock time of emission, Unix seconds.")


# Why a record was refused; each reason names exactly one case:
#   oversized: more bytes than limits.max_event_bytes; invalid_utf8, invalid_json: not UTF-8
#   or not JSON (a null value too); schema_violation: a JSON value that breaks the contract
#   (a missing or null required field, a wrong type, an unknown field, an over-long id);
#   unsupported_schema_version: a schema_version this worker does not read; unknown_domain:
#   a domain the deployment does not configure; domain_mismatch: a configured domain on
#   another domain's topic; key_mismatch: a record key other than the user id;
#   timestamp_out_of_range: before limits.min_timestamp or too far in the future;
#   text_too_long: inline title and text over limits.max_text_chars; unknown_item: an item
#   neither in the catalog nor carrying text; unknown_event_type: an event_type given but not
#   one of the known types (the event's only fault).
DeadLetterReason = Literal[
    "oversized",
    "invalid_utf8",
    "invalid_json",
    "schema_violation",
    "unsupported_schema_version",
    "unknown_domain",
    "domain_mismatch",
    "key_mismatch",
    "timestamp_out_of_range",
    "text_too_long",
    "unknown_item",
    "unknown_event_type",
]


class DeadLetter(Contract):
    """A refused input, with where it came from and its original bytes (base64)."""

    schema_version: SchemaVersion
    reason: DeadLetterReason
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None = Field(description="Original key, base64, or null.")
    original: str = Field(
        description="Original value bytes, base64; the first max_event_bytes of an oversized one."
    )
    original_bytes: int = Field(default=0, ge=0, description="Size of the original value.")
    truncated: bool = Field(default=False, description="True when original holds a prefix.")
    failed_at: float


class ErasureRequest(Contract):
    """Forget a user (right to be forgotten): keyed by user_id on the compacted erasure topic."""

    schema_version: SchemaVersion
    user_id: Identifier
    requested_at: float
    requested_by: str = Field(max_length=256)


class TrainingRequest(Contract):
    """Asks the trainer for a new model; the trainer coalesces duplicates."""

    schema_version: SchemaVersion
    request_id: str
    reason: Literal["schedule", "event_count", "quality_drop", "manual"]
    requested_by: str
    requested_at: float
    window_start: float | None = None
    window_end: float | None = None


class ModelUpdate(Contract):
    """Announces a promoted model artifact on the compacted ``models.updates`` topic."""

    schema_version: SchemaVersion
    version: str
    parent_version: str | None
    artifact_uri: str | None = Field(
        description="file:// URI of the artifact folder; null only for v0 (zero-shot, no file)."
    )
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    metrics: dict[str, float]
    created_at: float

    @model_validator(mode="after")
    def _artifact_unless_zero_shot(self) -> ModelUpdate:
        if self.version != ZERO_SHOT_VERSION and (self.artifact_uri is None or self.sha256 is None):
            raise ValueError(f"version {self.version!r} needs artifact_uri and sha256")
        return self


CONTRACTS: dict[str, type[Contract]] = {
    "user_event": UserEvent,
    "catalog_item": CatalogItem,
    "recommendation": Recommendation,
    "dead_letter": DeadLetter,
    "training_request": TrainingRequest,
    "model_update": ModelUpdate,
    "erasure_request": ErasureRequest,
}
