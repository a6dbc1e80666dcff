"""The user-state store serves written states from memory, and never anything else: what a
restore or an erasure wrote, and what a failed batch changed, is read back from RocksDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stream.core.state import AppliedEvent, UserState, apply_event
from stream.settings import InterestSettings
from stream.state.store import UserStateStore

SETTINGS = InterestSettings()


def state_after(user_id: str, offsets: range) -> UserState:
    state = UserState(user_id)
    for offset in offsets:
        event = AppliedEvent(
            f"e{offset}",
            "books",
            f"b{offset}",
            "click",
            1.7e9 + offset,
            None,
            "events.books:0",
            offset,
        )
        apply_event(state, event, np.ones(4, dtype=np.float32) / 2, SETTINGS)
    return state


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UserStateStore]:
    opened = UserStateStore(tmp_path / "users", cache_users=3)
    yield opened
    opened.close()


def write(store: UserStateStore, *states: UserState, cache: bool = True) -> None:
    store.write(
        [(state.user_id, state.to_bytes()) for state in states],
        {},
        {state.user_id: state for state in states} if cache else None,
    )


def test_a_written_state_is_served_from_memory_and_equals_the_stored_one(
    store: UserStateStore,
) -> None:
    state = state_after("u1", range(3))
    write(store, state)
    assert store.get("u1") is state
    write(store, state)
    store.clear_cache()
    stored = store.get("u1")
    assert stored is not state and stored.to_bytes() == state.to_bytes()


def test_a_state_changed_by_a_batch_that_never_wrote_is_read_back_from_rocksdb(
    store: UserStateStore,
) -> None:
    write(store, state_after("u1", range(3)))
    taken = store.get("u1")
    assert apply_event(  # the batch changes the state, then fails before writing
        taken,
        AppliedEvent("e9", "books", "b9", "click", 1.8e9, None, "events.books:0", 9),
        np.ones(4, dtype=np.float32),
        SETTINGS,
    )
    again = store.get("u1")
    assert again is not taken
    assert again.offsets == {"events.books:0": 2}  # the redelivered event is applied again


def test_a_restored_or_erased_user_is_dropped_from_memory(store: UserStateStore) -> None:
    write(store, state_after("u1", range(3)), state_after("u2", range(2)))
    restored = state_after("u1", range(5))
    write(store, restored, cache=False)  # as the changelog restore writes
    assert store.get("u1") is not restored
    assert store.get("u1").to_bytes() == restored.to_bytes()
    store.write([("u2", None)], {})
    assert store.get("u2") is None


def test_memory_holds_the_most_recently_written_users_only(store: UserStateStore) -> None:
    states = [state_after(f"u{n}", range(2)) for n in range(5)]
    for state in states:
        write(store, state)
    assert [store.get(f"u{n}") is states[n] for n in range(5)] == [False, False, True, True, True]
    assert all(store.get(f"u{n}").to_bytes() == states[n].to_bytes() for n in range(5))


def test_a_zero_bound_serves_from_rocksdb(tmp_path: Path) -> None:
    state = state_after("u1", range(2))
    uncached = UserStateStore(tmp_path / "other", cache_users=0)
    write(uncached, state)
    assert uncached.get("u1") is not state
    uncached.close()
