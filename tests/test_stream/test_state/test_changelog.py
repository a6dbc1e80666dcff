"""The user-state changelog on a real broker: what one worker publishes, another restores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stream.core.state import UserState
from stream.kafka.transport import make_producer
from stream.settings import Settings
from stream.state.changelog import StateChangelog
from stream.state.store import UserStateStore
from testkit.deployment import produce

pytestmark = pytest.mark.integration


def _state(user_id: str, applied: int) -> bytes:
    state = UserState(user_id)
    state.events_applied = applied
    state.offsets = {"events.books:0": applied}
    return state.to_bytes()


def test_states_follow_their_partition_and_a_fresh_store_restores_them(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    changelog = StateChangelog(settings)
    first = changelog.messages({"u1": (0, _state("u1", 1)), "u2": (1, _state("u2", 5))})
    assert [(m.key, m.partition) for m in first] == [(b"u1", 0), (b"u2", 1)]
    produce(settings, first)

    store = UserStateStore(tmp_path / "restored")
    assert changelog.restore(store, [0, 1]) == 2
    assert store.get("u1").events_applied == 1 and store.get("u2").events_applied == 5
    assert store.changelog_offset(0) == 0 and store.changelog_offset(1) == 0

    # Later writes: a newer u1 and a tombstone for u2. Restoring again reads only what the
    # store has not seen, from the offsets it recorded.
    produce(settings, changelog.messages({"u1": (0, _state("u1", 2)), "u2": (1, None)}))
    assert changelog.restore(store, [0, 1]) == 2
    assert store.get("u1").events_applied == 2 and store.get("u2") is None
    assert changelog.restore(store, [0, 1]) == 0  # up to date: nothing to read
    store.close()

    # A partition not asked for is left alone.
    other = UserStateStore(tmp_path / "only-0")
    assert changelog.restore(other, [0]) == 2
    assert other.get("u1").events_applied == 2 and other.get("u2") is None
    assert other.changelog_offset(1) is None
    other.close()


def test_offsets_keep_the_last_delivered_changelog_offset_per_partition(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    changelog = StateChangelog(settings)
    delivered = []
    producer = make_producer(settings)
    for user, partition in (("a", 0), ("b", 0), ("c", 1)):
        for message in changelog.messages({user: (partition, _state(user, 1))}):
            producer.produce(
                message.topic,
                message.value,
                message.key,
                partition=message.partition,
                on_delivery=lambda _err, msg: delivered.append(msg),
            )
    producer.flush(30)
    assert len(delivered) == 3
    assert changelog.offsets(delivered) == {0: 1, 1: 0}
