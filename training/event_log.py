"""The trainer's data: a time window of the event topics and the catalog, read from Kafka and
written as a dataset folder in the normalized format.

Writing the window in the same format as the shared datasets means the trainer's candidate and
the serving model are judged by the very evaluator used offline (cases, protocols, metrics).
Events are validated exactly as the worker validates them; what the worker would refuse, the
trainer skips. Held-out users are chosen by a stable hash of their id, so a retry of the same
window holds out the same users.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from schemas import CatalogItem, EventValidator, Rejection, UserEvent
from stream.kafka.snapshot import read_ranges, topic_ranges
from stream.kafka.transport import make_consumer
from stream.settings import Settings
from stream.worker.erasure import erased_users

log = logging.getLogger(__name__)

HELD_OUT = "test"
TRAINING = "train"


@dataclass(frozen=True)
class Window:
    """Event-time bounds in Unix seconds; None leaves that side open."""

    start: float | None = None
    end: float | None = None

    def contains(self, timestamp: float) -> bool:
        return (self.start is None or timestamp >= self.start) and (
            self.end is None or timestamp <= self.end
        )


@dataclass
class WindowStats:
    """What a snapshot read and kept; goes into the artifact's manifest."""

    window_start: float | None
    window_end: float | None
    records_read: int = 0
    events: int = 0
    users: int = 0
    held_out_users: int = 0
    items: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    first_event: float | None = None
    last_event: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _held_out(user_id: str, share: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def snapshot_window(
    settings: Settings,
    window: Window,
    folder: Path,
    *,
    holdout_share: float,
    max_holdout_users: int,
    seed: int = 0,
    progress: bool = True,
) -> WindowStats:
    """Read the catalog and the window's events from Kafka into ``folder`` (items.jsonl,
    interactions.jsonl, splits.json); returns what was read."""
    started = time.perf_counter()
    stats = WindowStats(window.start, window.end)
    validator = EventValidator(settings.domains)
    consumer = make_consumer(settings, **{"group.id": f"{settings.app_id}-trainer-reader"})
    skipped: Counter[str] = Counter()
    try:
        items: dict[tuple[str, str], CatalogItem] = {}
        catalog_ranges = [
            r
            for d in settings.domains
            for r in topic_ranges(consumer, settings.topics.catalog(d), None)
        ]
        for message in read_ranges(consumer, catalog_ranges, "reading catalog", progress):
            stats.records_read += 1
            domain = message.topic()[len(settings.topics.catalog("")) :]
            key = (domain, (message.key() or b"").decode("utf-8", "replace"))
            if message.value() is None:
                items.pop(key, None)  # a tombstone: the item was removed
                continue
            result = validator.validate_catalog_item(message.value(), domain)
            if isinstance(result, Rejection):
                skipped[f"catalog_{result.reason}"] += 1
                continue
            items[(result.domain, result.item_id)] = result
        erased = erased_users(settings, consumer, progress)
        start_ms = None if window.start is None else int(window.start * 1000)
        event_ranges = [
            r
            for d in settings.domains
            for r in topic_ranges(consumer, settings.topics.events(d), start_ms)
        ]
        events: dict[str, UserEvent] = {}
        for message in read_ranges(consumer, event_ranges, "reading events", progress):
            stats.records_read += 1
            domain = message.topic()[len(settings.topics.events("")) :]
            result = validator.validate_event(message.value(), domain)
            if isinstance(result, Rejection):
                skipped[result.reason] += 1
                continue
            if result.user_id in erased:  # right to be forgotten: never trained on again
                skipped["erased_user"] += 1
                continue
            if not window.contains(result.timestamp):
                skipped["outside_window"] += 1
                continue
            if (result.domain, result.item_id) not in items and (result.title or result.text):
                items[(result.domain, result.item_id)] = CatalogItem(
                    schema_version=1,
                    item_id=result.item_id,
                    domain=result.domain,
                    title=(result.title or "")[:4096],
                    text=result.text or "",
                )
            if (result.domain, result.item_id) not in items:
                skipped["unknown_item"] += 1
                continue
            if result.event_id in events:  # a producer retry: the same event twice
                skipped["duplicate"] += 1
                continue
            events[result.event_id] = result
    finally:
        consumer.close()
    stats.skipped = dict(skipped)
    _write_dataset(folder, items, events, stats, holdout_share, max_holdout_users, seed)
    stats.seconds = round(time.perf_counter() - started, 2)
    log.info("event window read %s", json.dumps(stats.to_dict(), sort_keys=True))
    return stats


def _write_dataset(
    folder: Path,
    items: dict[tuple[str, str], CatalogItem],
    events: dict[str, UserEvent],
    stats: WindowStats,
    holdout_share: float,
    max_holdout_users: int,
    seed: int,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "items.jsonl").open("w", encoding="utf-8") as out:
        for (domain, item_id), item in sorted(items.items()):
            out.write(
                json.dumps(
                    {"item_id": item_id, "domain": domain, "title": item.title, "text": item.text}
                )
                + "\n"
            )
            stats.items[domain] = stats.items.get(domain, 0) + 1
    ordered = sorted(events.values(), key=lambda e: (e.timestamp, e.event_id))
    counts: dict[str, int] = {}
    with (folder / "interactions.jsonl").open("w", encoding="utf-8") as out:
        for event in ordered:
            counts[event.user_id] = counts.get(event.user_id, 0) + 1
            out.write(
                json.dumps(
                    {
                        "user_id": event.user_id,
                        "item_id": event.item_id,
                        "domain": event.domain,
                        "ts": event.timestamp,
                        "rating": event.rating,
                        "event_type": event.event_type,
                    }
                )
                + "\n"
            )
    eligible = sorted(u for u, n in counts.items() if n >= 2 and _held_out(u, holdout_share, seed))
    held_out = set(eligible[:max_holdout_users])
    splits = {user: HELD_OUT if user in held_out else TRAINING for user in sorted(counts)}
    (folder / "splits.json").write_text(json.dumps(splits), encoding="utf-8")
    stats.events = len(ordered)
    stats.users = len(counts)
    stats.held_out_users = len(held_out)
    if ordered:
        stats.first_event, stats.last_event = ordered[0].timestamp, ordered[-1].timestamp
