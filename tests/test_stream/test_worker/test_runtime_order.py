"""A batch's recommendations are acknowledged before its states' changelog records are even
produced: were both in flight at once, a crash could leave a state durable ahead of its
recommendations, and the restored state would skip those events on replay."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stream.core.emit import EmittedRecommendation, EmittedTrigger
from stream.core.processor import BatchOutput
from stream.core.records import SourceRecord
from stream.core.state import UserState
from stream.kafka.transport import OutgoingMessage
from stream.settings import Settings
from stream.state.store import UserStateStore
from stream.worker.runtime import WorkerRuntime


class Delivered:
    def __init__(self, message: OutgoingMessage, offset: int) -> None:
        self._message, self._offset = message, offset

    def topic(self) -> str:
        return self._message.topic

    def partition(self) -> int:
        return self._message.partition or 0

    def offset(self) -> int:
        return self._offset


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[WorkerRuntime]:
    settings = Settings(domains=["books", "movies"], worker={"state_dir": str(tmp_path)})
    built = WorkerRuntime(settings)
    built.store = UserStateStore(tmp_path / "users")
    built._restored = {0}  # nothing to restore from a changelog here
    yield built
    built.store.close()


def test_recommendations_are_acknowledged_before_the_changelog_is_produced(
    runtime: WorkerRuntime,
) -> None:
    settings = runtime.settings
    trigger = EmittedTrigger("e1", "books", 1.7e9, settings.topics.events("books"), 0, 7)
    recommendation = EmittedRecommendation(
        "r1", "u1", "movies", [("m1", 0.5)], [[]], "v0", ["books"], trigger, 1.7e9
    )
    output = BatchOutput(states={"u1": (0, UserState("u1"))}, recommendations=[recommendation])
    runtime.processor = SimpleNamespace(process=lambda records, get, refresh: output)  # type: ignore[assignment]
    runtime.reader = SimpleNamespace()  # type: ignore[assignment]
    calls: list[list[str]] = []

    def produce(messages: Iterable[OutgoingMessage]) -> list[Any]:
        messages = list(messages)
        calls.append([message.topic for message in messages])  # returns once acknowledged
        return [Delivered(message, 40 + n) for n, message in enumerate(messages)]

    runtime.produce = produce  # type: ignore[method-assign]
    record = SourceRecord(settings.topics.events("books"), 0, 7, b"u1", b"{}", 1.7e9)
    runtime.handle_batch([record])
    assert calls == [
        [settings.topics.recs("movies")],
        [settings.topics.state_changelog(settings.app_id)],
    ]
    assert runtime.store is not None and runtime.store.changelog_offset(0) == 40
