"""A single offline pass over the event topics through the same processor the workers run.

It is the reference that "nothing lost, nothing applied twice" is checked against: after any
crash, restart or rebalance, the workers' stored states must equal what this pass computes.
"""

from __future__ import annotations

import heapq
import logging
import tempfile
from pathlib import Path

from stream.catalog.encoder import TextEncoder
from stream.catalog.reader import CatalogReader
from stream.catalog.store import ItemCatalog
from stream.core.ann import ApproximateConfig
from stream.core.processor import BatchProcessor
from stream.core.records import SourceRecord, origin_of
from stream.core.scoring import coarse_dtype
from stream.core.state import UserState
from stream.kafka.snapshot import read_ranges, topic_ranges
from stream.kafka.transport import make_consumer
from stream.settings import Settings

log = logging.getLogger(__name__)


def read_event_records(settings: Settings) -> list[SourceRecord]:
    """Every record of the event topics up to their current end, partitions merged by the
    records' timestamps (each partition keeps its own order). Copies that workers made of
    misrouted events (stream.worker.routing) are left out: each event counts where it first
    landed, once."""
    consumer = make_consumer(settings)
    try:
        ranges = [
            r
            for d in settings.domains
            for r in topic_ranges(consumer, settings.topics.events(d), None)
        ]
        per_partition: dict[tuple[str, int], list[tuple[int, SourceRecord]]] = {
            (start.topic, start.partition): [] for start, _ in ranges
        }
        for message in read_ranges(consumer, ranges):
            if origin_of(message.headers()) is not None:
                continue  # a worker's copy of a misrouted event: the original is read too
            per_partition[(message.topic(), message.partition())].append(
                (
                    message.timestamp()[1],
                    SourceRecord(
                        message.topic(),
                        message.partition(),
                        message.offset(),
                        message.key(),
                        message.value(),
                    ),
                )
            )
        merged = heapq.merge(*per_partition.values(), key=lambda pair: pair[0])
        return [record for _, record in merged]
    finally:
        consumer.close()


def replay_topics(settings: Settings, encoder: TextEncoder | None = None) -> dict[str, UserState]:
    """User states after one pass over everything in the event topics."""
    encoder = encoder or TextEncoder.from_settings(settings.encoder)
    with tempfile.TemporaryDirectory(prefix="xdrec-offline-") as scratch:
        catalog = ItemCatalog(
            Path(scratch) / "items",
            encoder.fingerprint,
            encoder.dimension,
            coarse_dtype(settings.recommendations.coarse_scoring),
            ApproximateConfig.from_settings(settings.recommendations),
        )
        processor = BatchProcessor(settings, catalog, encoder)
        reader = CatalogReader(settings, catalog, encoder, processor.validator, lambda _: None)
        try:
            reader.assign()
            reader.catch_up()
            states: dict[str, UserState] = {}
            records = read_event_records(settings)
            batch_size = settings.worker.batch_size
            for start in range(0, len(records), batch_size):
                output = processor.process(records[start : start + batch_size], states.get)
                states.update({user: state for user, (_, state) in output.states.items()})
            log.info("offline replay done records=%d users=%d", len(records), len(states))
            return states
        finally:
            reader.close()
            catalog.close()
