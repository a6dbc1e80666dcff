"""A single offline pass over the event topics through the same processor the workers run.

It is the reference that "nothing lost, nothing applied twice" is checked against: after any
crash, restart or rebalance, the workers' stored states must equal what this pass computes.
"""

from __future__ import annotations

import heapq
import logging
import tempfile
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from stream.catalog.encoder import TextEncoder
from stream.catalog.reader import CatalogReader
from stream.catalog.store import ItemCatalog
from stream.core.processor import BatchProcessor, SourceRecord
from stream.core.scoring import coarse_dtype
from stream.core.state import UserState
from stream.kafka.transport import make_consumer
from stream.settings import Settings

log = logging.getLogger(__name__)


def read_event_records(settings: Settings) -> list[SourceRecord]:
    """Every record of the event topics up to their current end, partitions merged by the
    records' timestamps (each partition keeps its own order)."""
    consumer = make_consumer(settings)
    try:
        per_partition: list[list[tuple[int, SourceRecord]]] = []
        for domain in settings.domains:
            topic = settings.topics.events(domain)
            metadata = consumer.list_topics(topic, timeout=10.0).topics[topic]
            for partition in metadata.partitions:
                tp = TopicPartition(topic, partition, OFFSET_BEGINNING)
                _, high = consumer.get_watermark_offsets(tp, timeout=10.0)
                records: list[tuple[int, SourceRecord]] = []
                if high > 0:
                    consumer.assign([tp])
                    while not records or records[-1][1].offset + 1 < high:
                        for message in consumer.consume(1_000, timeout=1.0):
                            if message.error():
                                continue
                            records.append(
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
                per_partition.append(records)
        merged = heapq.merge(*per_partition, key=lambda pair: pair[0])
        return [record for _, record in merged]
    finally:
        consumer.close()


def replay_topics(settings: Settings, encoder: TextEncoder | None = None) -> dict[str, UserState]:
    """User states after one pass over everything in the event topics."""
    encoder = encoder or TextEncoder(
        settings.encoder.model_path,
        max_length=settings.encoder.max_length,
        batch_size=settings.encoder.batch_size,
        device=settings.encoder.device,
        precision=settings.encoder.precision,
    )
    with tempfile.TemporaryDirectory(prefix="xdrec-offline-") as scratch:
        catalog = ItemCatalog(
            Path(scratch) / "items",
            encoder.fingerprint,
            encoder.dimension,
            coarse_dtype(settings.recommendations.coarse_scoring),
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
