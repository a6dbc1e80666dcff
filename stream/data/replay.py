"""Publishes a dataset folder to the catalog and event topics, as fast as possible or paced.

Catalog items go first so that events find their items. Events keep the dataset's time order
and get a deterministic event_id, so replaying the same folder twice produces the same events.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import get_args

from confluent_kafka import KafkaError, Message
from tqdm import tqdm

from schemas import SCHEMA_VERSION, CatalogItem, UserEvent
from schemas.contracts import EventType
from stream.data.dataset import Dataset, DatasetInteraction
from stream.kafka.transport import DeliveryError, make_producer, produce_queued
from stream.settings import Settings

log = logging.getLogger(__name__)

KNOWN_EVENT_TYPES = frozenset(get_args(EventType))


@dataclass
class ReplayStats:
    items: int = 0
    events: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def event_id_for(interaction: DatasetInteraction, sequence: int) -> str:
    """Stable across replays of the same folder; unique even for repeated identical rows."""
    material = "\x1f".join(
        (
            interaction.user_id,
            interaction.item_id,
            interaction.domain,
            repr(interaction.ts),
            str(sequence),
        )
    )
    return hashlib.sha1(material.encode("utf-8")).hexdigest()[:24]


def event_type_of(raw: str) -> str:
    """Dataset event types outside the contract are replayed as views."""
    return raw if raw in KNOWN_EVENT_TYPES else "view"


def to_user_event(interaction: DatasetInteraction, sequence: int) -> UserEvent:
    event_type = event_type_of(interaction.event_type)
    return UserEvent(
        schema_version=SCHEMA_VERSION,
        event_id=event_id_for(interaction, sequence),
        user_id=interaction.user_id,
        domain=interaction.domain,
        item_id=interaction.item_id,
        event_type=event_type,
        timestamp=interaction.ts,
        rating=interaction.rating,
    )


class _Pacer:
    """Sleeps so that events leave at ``rate`` per second or at ``speedup`` × event time."""

    def __init__(self, rate: float | None, speedup: float | None) -> None:
        self.rate = rate
        self.speedup = speedup
        self.started = time.perf_counter()
        self.first_ts: float | None = None

    def wait(self, sent: int, ts: float) -> None:
        due = 0.0
        if self.rate:
            due = sent / self.rate
        if self.speedup:
            if self.first_ts is None:
                self.first_ts = ts
            due = max(due, (ts - self.first_ts) / self.speedup)
        delay = due - (time.perf_counter() - self.started)
        if delay > 0:
            time.sleep(delay)


def replay_dataset(
    settings: Settings,
    dataset: Dataset,
    *,
    rate: float | None = None,
    speedup: float | None = None,
    limit: int | None = None,
    include_catalog: bool = True,
    include_events: bool = True,
    users: set[str] | None = None,
    progress: bool = True,
) -> ReplayStats:
    """Produce the dataset (only ``users``' events when given); returns what was sent.
    Raises DeliveryError if the broker refuses."""
    stats = ReplayStats()
    domains = set(settings.domains)
    producer = make_producer(settings, **{"linger.ms": 20, "batch.size": 1_000_000})
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error.str()}")

    def send(topic: str, key: str, value: bytes) -> None:
        produce_queued(producer, topic, value, key.encode("utf-8"), on_delivery=on_delivery)
        producer.poll(0)

    started = time.perf_counter()
    if include_catalog:
        for item in tqdm(dataset.items(), desc="catalog", unit="item", disable=not progress):
            if item.domain not in domains:
                stats.skipped[f"item_domain:{item.domain}"] += 1
                continue
            catalog_item = CatalogItem(
                schema_version=SCHEMA_VERSION,
                item_id=item.item_id,
                domain=item.domain,
                title=item.title[:4096],
                text=item.text[:65_536],
            )
            send(
                settings.topics.catalog(item.domain),
                item.item_id,
                catalog_item.model_dump_json().encode(),
            )
            stats.items += 1
        producer.flush(60.0)
    if include_events:
        pacer = _Pacer(rate, speedup)
        total = limit if limit is not None else dataset.count_interactions()
        bar = tqdm(total=total, desc="events", unit="event", disable=not progress)
        for sequence, interaction in enumerate(dataset.interactions()):
            if limit is not None and sequence >= limit:
                break
            bar.update(1)
            if users is not None and interaction.user_id not in users:
                continue
            if interaction.domain not in domains:
                stats.skipped[f"event_domain:{interaction.domain}"] += 1
                continue
            if interaction.event_type not in KNOWN_EVENT_TYPES:
                stats.skipped[f"event_type_mapped:{interaction.event_type}"] += 1
            pacer.wait(stats.events, interaction.ts)
            event = to_user_event(interaction, sequence)
            send(
                settings.topics.events(event.domain),
                event.user_id,
                event.model_dump_json().encode(),
            )
            stats.events += 1
        bar.close()
    remaining = producer.flush(60.0)
    stats.seconds = time.perf_counter() - started
    if remaining or failures:
        raise DeliveryError(
            f"replay incomplete: {len(failures)} failed, {remaining} undelivered; "
            f"first: {failures[0] if failures else 'timeout'}"
        )
    log.info(
        "replay done items=%d events=%d skipped=%s seconds=%.2f events_per_second=%.0f",
        stats.items,
        stats.events,
        dict(stats.skipped),
        stats.seconds,
        stats.events_per_second,
    )
    return stats
