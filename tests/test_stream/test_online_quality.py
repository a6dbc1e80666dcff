"""Online hit rate (a user's later events checked against what was shown) and the worker's
training triggers: pure logic, no broker."""

from __future__ import annotations

import json

from memory_catalog import MemoryCatalog

from schemas import TrainingRequest
from stream.core.processor import BatchProcessor
from stream.core.records import SourceRecord
from stream.core.state import UserState
from stream.kafka.transport import OutgoingMessage
from stream.settings import Settings
from stream.worker.metrics import WorkerMetrics
from stream.worker.training_trigger import TrainingTrigger

T0 = 1_704_067_200.0


def _settings() -> Settings:
    return Settings(domains=["books", "movies"], recommendations={"top_k": 3})


def _record(settings: Settings, offset: int, domain: str, item: str, ts: float) -> SourceRecord:
    event = {
        "schema_version": 1,
        "event_id": f"e{offset}",
        "user_id": "u1",
        "domain": domain,
        "item_id": item,
        "event_type": "purchase",
        "timestamp": ts,
    }
    return SourceRecord(
        settings.topics.events(domain), 0, offset, b"u1", json.dumps(event).encode()
    )


def _run(batches: list[list[SourceRecord]], settings: Settings, items: MemoryCatalog):
    processor = BatchProcessor(settings, items, encoder=None, clock=lambda: T0 + 10_000)  # type: ignore[arg-type]
    states: dict[str, UserState] = {}
    checks, hits = {}, {}
    for batch in batches:
        output = processor.process(batch, lambda user: states.get(user))
        for user, (_, state) in output.states.items():
            states[user] = UserState.from_bytes(state.to_bytes())
        for key, value in output.online_checks.items():
            checks[key] = checks.get(key, 0) + value
        for key, value in output.online_hits.items():
            hits[key] = hits.get(key, 0) + value
    return states, checks, hits


def test_online_hits_count_later_events_against_the_last_shown_list_whatever_the_batching() -> None:
    settings = _settings()
    items = MemoryCatalog.random(
        {"books": [f"b{i}" for i in range(6)], "movies": [f"m{i}" for i in range(6)]}
    )
    # A book purchase → a movie recommendation; then a movie purchase is checked against it.
    first = _record(settings, 0, "books", "b0", T0)
    states, _, _ = _run([[first]], settings, items)
    shown_version, shown_items, shown_id = states["u1"].shown["movies"]
    assert len(shown_id) == 32
    assert shown_version == "v0" and len(shown_items) == 3
    not_shown = next(i for i in items.items["movies"] if i not in shown_items)
    records = [
        first,
        _record(settings, 1, "movies", shown_items[0], T0 + 1),  # a hit
        _record(settings, 2, "books", "b1", T0 + 2),
        _record(settings, 3, "movies", not_shown, T0 + 3),  # a miss (or a hit of a newer list)
    ]
    one_batch = _run([records], settings, items)
    singles = _run([[r] for r in records], settings, items)
    assert one_batch[1] == singles[1] and one_batch[2] == singles[2]
    assert one_batch[0]["u1"].shown == singles[0]["u1"].shown
    assert one_batch[1][("movies", "v0")] == 2
    assert 1 <= one_batch[2][("movies", "v0")] <= 2
    assert ("books", "v0") in one_batch[1]  # the movie purchase led to a books recommendation


def _trigger(**config: float) -> tuple[TrainingTrigger, list[OutgoingMessage], list[float]]:
    settings = Settings(triggers=config)
    sent: list[OutgoingMessage] = []
    clock = [1000.0]
    trigger = TrainingTrigger(settings, WorkerMetrics(), sent.extend, clock=lambda: clock[0])
    return trigger, sent, clock


def test_event_count_and_schedule_triggers() -> None:
    trigger, sent, clock = _trigger(every_events=100, every_seconds=60)
    assert trigger.observe(60, 0, 0) == []
    assert [r.reason for r in trigger.observe(60, 0, 0)] == ["event_count"]
    clock[0] += 61
    assert [r.reason for r in trigger.observe(1, 0, 0)] == ["schedule"]
    requests = [TrainingRequest.model_validate_json(m.value) for m in sent]
    assert [r.reason for r in requests] == ["event_count", "schedule"]
    assert all(m.topic == Settings().topics.training_requests() for m in sent)


def test_event_count_trigger_asks_once_per_n_events_whatever_the_batch_sizes() -> None:
    trigger, _, _ = _trigger(every_events=100)
    asked = sum(len(trigger.observe(60, 0, 0)) for _ in range(10))
    assert asked == 6  # 600 events: one request per 100, the overshoot of each batch kept
    assert len(trigger.observe(250, 0, 0)) == 1  # a batch crossing several marks asks once


def test_quality_drop_needs_a_full_window_and_respects_the_cooldown() -> None:
    trigger, sent, clock = _trigger(quality_floor=0.2, quality_window=100, cooldown_seconds=300)
    assert trigger.observe(0, 50, 2) == []  # too few checks to judge
    assert [r.reason for r in trigger.observe(0, 60, 3)] == ["quality_drop"]
    assert trigger.hit_rate is not None and trigger.hit_rate < 0.2
    assert trigger.observe(0, 100, 1) == []  # within the cooldown
    clock[0] += 301
    assert [r.reason for r in trigger.observe(0, 100, 1)] == ["quality_drop"]
    healthy, _, _ = _trigger(quality_floor=0.2, quality_window=100)
    assert healthy.observe(0, 200, 80) == []
    assert len(sent) == 2
