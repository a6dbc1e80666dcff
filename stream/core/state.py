"""Per-user state kept in the encoder's text-embedding space, and how one event changes it.

State lives in the encoder's space, not a trained model's, so a hot-swapped model never
invalidates it. Updates use event time only (never the wall clock), so replaying the same
events yields the same state. This module is pure: no Kafka, no RocksDB, no faust.
"""

from __future__ import annotations

import base64
import bisect
import math
from dataclasses import dataclass, field

import numpy as np
import orjson

from schemas import FEEDBACK_ONLY
from stream.settings import InterestSettings

STATE_FORMAT = 1
SECONDS_PER_DAY = 86_400.0


@dataclass(slots=True)
class DomainInterest:
    """Decayed sum of weighted item embeddings of one domain, as of ``updated_at``."""

    vector: np.ndarray
    updated_at: float
    events: int = 0

    def decayed_to(self, when: float, half_life_seconds: float) -> np.ndarray:
        """The vector as it stands at event time ``when`` (no decay backwards in time)."""
        if when <= self.updated_at:
            return self.vector
        return self.vector * np.float32(2.0 ** (-(when - self.updated_at) / half_life_seconds))


@dataclass(frozen=True, slots=True, order=True)
class Interaction:
    """One applied event, ordered by event time then id so the bounded list is order-free."""

    timestamp: float
    event_id: str
    item_id: str
    domain: str
    event_type: str
    weight: float = 1.0  # how strongly it moved the interest (event type and rating)


@dataclass(slots=True)
class UserState:
    """Everything the worker keeps about one user."""

    user_id: str
    interests: dict[str, DomainInterest] = field(default_factory=dict)
    recent: list[Interaction] = field(default_factory=list)
    # domain -> item_id -> latest event time: bounded by dropping the oldest, order-free.
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    # "topic:partition" -> last applied offset: a redelivered event is recognized and skipped.
    offsets: dict[str, int] = field(default_factory=dict)
    # target domain -> source-domain events since the last recommendation for it.
    pending: dict[str, int] = field(default_factory=dict)
    # target domain -> [model version, item ids] of the last recommendation emitted for it:
    # the user's later events in that domain are checked against it (online hit rate).
    shown: dict[str, list] = field(default_factory=dict)
    # domain -> item ids the user dismissed: never recommended to them again.
    dismissed: dict[str, list[str]] = field(default_factory=dict)
    events_applied: int = 0

    def to_bytes(self) -> bytes:
        """Deterministic serialization: JSON with sorted keys and float32 vectors as base64
        (never pickle); orjson, because this runs for every user of every batch."""
        document = {
            "format": STATE_FORMAT,
            "user_id": self.user_id,
            "interests": {
                domain: {
                    "vector": base64.b64encode(
                        interest.vector.astype("<f4", copy=False).tobytes()
                    ).decode("ascii"),
                    "updated_at": interest.updated_at,
                    "events": interest.events,
                }
                for domain, interest in self.interests.items()
            },
            "recent": [
                [i.timestamp, i.event_id, i.item_id, i.domain, i.event_type, i.weight]
                for i in self.recent
            ],
            "seen": self.seen,
            "offsets": self.offsets,
            "pending": self.pending,
            "shown": self.shown,
            "dismissed": self.dismissed,
            "events_applied": self.events_applied,
        }
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        document = orjson.loads(data)
        if document.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported user state format {document.get('format')!r}")
        return cls(
            user_id=document["user_id"],
            interests={
                domain: DomainInterest(
                    vector=np.frombuffer(base64.b64decode(value["vector"]), dtype="<f4").copy(),
                    updated_at=value["updated_at"],
                    events=value["events"],
                )
                for domain, value in document["interests"].items()
            },
            recent=[Interaction(*row) for row in document["recent"]],
            seen=document["seen"],
            offsets=document["offsets"],
            pending=document["pending"],
            shown=document.get("shown", {}),
            dismissed=document.get("dismissed", {}),
            events_applied=document["events_applied"],
        )


def event_weight(event_type: str, rating: float | None, settings: InterestSettings) -> float:
    """How strongly an event pulls the interest towards its item (negative pushes away)."""
    weight = settings.event_weights.get(event_type, 1.0)
    if rating is not None:
        weight *= settings.rating_weights.get(str(int(round(rating))), 1.0)
    return weight


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """The parts of a validated event that the state update needs."""

    event_id: str
    domain: str
    item_id: str
    event_type: str
    timestamp: float
    rating: float | None
    source: str  # "topic:partition"
    offset: int


def apply_event(
    state: UserState,
    event: AppliedEvent,
    embedding: np.ndarray,
    settings: InterestSettings,
) -> bool:
    """Fold one event into ``state``; returns False (and changes nothing) for a redelivery."""
    last_offset = state.offsets.get(event.source)
    if last_offset is not None and event.offset <= last_offset:
        return False
    if event.event_type in FEEDBACK_ONLY:  # no interaction with the item: interest unchanged
        if event.event_type == "dismiss":
            dismissed = state.dismissed.setdefault(event.domain, [])
            if event.item_id not in dismissed:
                dismissed.append(event.item_id)
                del dismissed[: max(0, len(dismissed) - settings.max_seen_per_domain)]
        state.offsets[event.source] = event.offset
        return True
    half_life = settings.half_life_days * SECONDS_PER_DAY
    weight = event_weight(event.event_type, event.rating, settings)
    contribution = embedding.astype(np.float32, copy=False) * np.float32(weight)
    interest = state.interests.get(event.domain)
    if interest is None:
        state.interests[event.domain] = DomainInterest(
            vector=contribution.copy(), updated_at=event.timestamp, events=1
        )
    else:
        if event.timestamp >= interest.updated_at:
            interest.vector = interest.decayed_to(event.timestamp, half_life) + contribution
            interest.updated_at = event.timestamp
        else:  # a late event: decay its contribution instead of the stored vector
            age = interest.updated_at - event.timestamp
            interest.vector = interest.vector + contribution * np.float32(2.0 ** (-age / half_life))
        interest.events += 1

    interaction = Interaction(
        event.timestamp, event.event_id, event.item_id, event.domain, event.event_type, weight
    )
    recent = state.recent
    if recent and interaction < recent[-1]:
        bisect.insort(recent, interaction)
    else:  # the usual case, an event newer than all: one comparison instead of a search
        recent.append(interaction)
    del state.recent[: max(0, len(state.recent) - settings.max_recent)]

    seen = state.seen.setdefault(event.domain, {})
    seen[event.item_id] = max(event.timestamp, seen.get(event.item_id, event.timestamp))
    if len(seen) > settings.max_seen_per_domain:
        oldest = min(seen.items(), key=lambda pair: (pair[1], pair[0]))[0]
        del seen[oldest]

    state.offsets[event.source] = event.offset
    state.events_applied += 1
    return True


def state_time(state: UserState) -> float:
    """The latest event time the state has seen: the user's clock, whatever the arrival order."""
    return max((interest.updated_at for interest in state.interests.values()), default=0.0)


def interest_sum(
    state: UserState,
    target: str,
    sources: list[str],
    when: float,
    settings: InterestSettings,
    source_weight: float = 1.0,
    target_weight: float = 1.0,
) -> np.ndarray | None:
    """The weighted sum of the decayed interests that feed ``target``, before normalization
    (None when the user has none); explanations decompose exactly this sum."""
    half_life = settings.half_life_days * SECONDS_PER_DAY
    total: np.ndarray | None = None
    for domain in sorted(state.interests):
        if domain == target:
            weight = target_weight
        elif domain in sources:
            weight = source_weight
        else:
            continue
        part = state.interests[domain].decayed_to(when, half_life)
        if weight != 1.0:  # x * 1 is x: skip an array operation in the usual case
            part = part * np.float32(weight)
        total = part if total is None else total + part
    return total


def interest_query(
    state: UserState,
    target: str,
    sources: list[str],
    when: float,
    settings: InterestSettings,
    source_weight: float = 1.0,
    target_weight: float = 1.0,
) -> np.ndarray | None:
    """The user's decayed interest towards ``target`` at event time ``when``, L2-normalized.

    Returns None when the user has no interest in any of the domains that feed the target.
    """
    total = interest_sum(state, target, sources, when, settings, source_weight, target_weight)
    normalized = normalize(total) if total is not None else None
    return normalized[0] if normalized is not None else None


def normalize(total: np.ndarray) -> tuple[np.ndarray, float] | None:
    """``total`` scaled to unit length, and its length; None when that is zero or not finite."""
    norm = float(np.sqrt(np.dot(total, total)))
    if not math.isfinite(norm) or norm == 0.0:
        return None
    return (total / np.float32(norm)).astype(np.float32, copy=False), norm


def scale_query(query: np.ndarray, weight: float) -> np.ndarray:
    """``query / weight`` in float32: a per-user scale that sets how much an index's bias
    counts against the cosine (``stream.model.prior``); a weight of 1 returns the query itself."""
    if weight == 1.0:
        return query
    return (query / np.float32(weight)).astype(np.float32, copy=False)
