"""User state: event-time decay, idempotence, order independence, lossless serialization."""

from __future__ import annotations

import random

import numpy as np

from stream.core.state import AppliedEvent, UserState, apply_event, interest_query
from stream.settings import InterestSettings

SETTINGS = InterestSettings(half_life_days=1.0)
DAY = 86_400.0


def _vector(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _event(offset: int, timestamp: float, domain: str = "books", item: str = "i") -> AppliedEvent:
    return AppliedEvent(
        event_id=f"e{offset}",
        domain=domain,
        item_id=f"{item}{offset}",
        event_type="click",
        timestamp=timestamp,
        rating=None,
        source=f"events.{domain}:0",
        offset=offset,
    )


def test_redelivered_event_is_not_applied_twice() -> None:
    state = UserState("u")
    assert apply_event(state, _event(5, 0.0), _vector(1), SETTINGS)
    before = state.to_bytes()
    assert not apply_event(state, _event(5, 0.0), _vector(1), SETTINGS)
    assert not apply_event(state, _event(3, 0.0), _vector(1), SETTINGS)
    assert state.to_bytes() == before
    assert state.events_applied == 1


def test_interest_decays_by_event_time_half_life() -> None:
    state = UserState("u")
    apply_event(state, _event(0, 0.0), _vector(1), SETTINGS)
    apply_event(state, _event(1, DAY), np.zeros(8, dtype=np.float32), SETTINGS)
    np.testing.assert_allclose(state.interests["books"].vector, _vector(1) * 0.5, rtol=1e-6)


def test_state_is_independent_of_arrival_order_across_topics() -> None:
    events = [
        _event(i, float(i * 3600), domain=random.Random(i).choice(["books", "music"]))
        for i in range(40)
    ]
    ordered, shuffled = UserState("u"), UserState("u")
    for event in events:
        apply_event(ordered, event, _vector(event.offset), SETTINGS)
    mixed = events[:]
    # Another valid arrival order: every books event first; each source keeps its offsets.
    for event in sorted(mixed, key=lambda e: (e.source != "events.books:0", e.offset)):
        apply_event(shuffled, event, _vector(event.offset), SETTINGS)
    assert ordered.recent == shuffled.recent
    assert ordered.seen == shuffled.seen
    for domain in ordered.interests:
        np.testing.assert_allclose(
            ordered.interests[domain].vector, shuffled.interests[domain].vector, atol=1e-6
        )


def test_serialization_round_trip_is_bit_exact() -> None:
    state = UserState("user-ü")
    for i in range(10):
        apply_event(state, _event(i, i * 100.0), _vector(i), SETTINGS)
    copy = UserState.from_bytes(state.to_bytes())
    assert copy.to_bytes() == state.to_bytes()
    assert copy.interests["books"].vector.tobytes() == state.interests["books"].vector.tobytes()


def test_query_uses_only_routed_domains() -> None:
    state = UserState("u")
    apply_event(state, _event(0, 0.0, "books"), _vector(1), SETTINGS)
    apply_event(state, _event(0, 0.0, "food"), _vector(2), SETTINGS)
    query = interest_query(state, "movies", ["books"], 0.0, SETTINGS)
    assert query is not None
    np.testing.assert_allclose(query, _vector(1), rtol=1e-5)
    assert interest_query(state, "movies", ["music"], 0.0, SETTINGS) is None
