"""A consumed record, the dead letter that carries a refused one, and the order a batch's
records are applied in."""

from __future__ import annotations

import base64
import heapq
from collections import defaultdict
from typing import NamedTuple

from schemas import SCHEMA_VERSION, DeadLetter, Rejection, UserEvent

MAX_KEY_BYTES = 1_024  # of a refused record's key kept in its dead letter
# Set on a record that a worker moved to its key's partition: "topic:partition:offset" where
# it first landed (stream.worker.routing).
ORIGIN_HEADER = "xdrec-origin"


class SourceRecord(NamedTuple):
    """One consumed Kafka record, as the transport hands it over. A plain tuple underneath: it
    crosses the pipe from the faust process to the runtime process (stream/worker) cheaply."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # the Kafka record timestamp, Unix seconds
    # (topic, partition, offset) where a re-routed record first landed, from ORIGIN_HEADER.
    origin: tuple[str, int, int] | None = None

    @property
    def position(self) -> tuple[str, int, int]:
        """Where the event first landed: what the redelivery check and the trigger name, so a
        re-routed event is the same event, and a second copy of it a duplicate."""
        return self.origin or (self.topic, self.partition, self.offset)


def origin_of(headers: object) -> tuple[str, int, int] | None:
    """The origin in a record's headers (a list of (name, value) pairs or a mapping, as
    clients give them), or None when absent or malformed (the record then counts as landed
    where it is)."""
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    for pair in pairs:  # type: ignore[union-attr]
        try:
            name, value = pair
            if name != ORIGIN_HEADER:
                continue
            text = value.decode("ascii") if isinstance(value, bytes) else str(value)
            topic, partition, offset = text.rsplit(":", 2)
            if topic and int(partition) >= 0 and int(offset) >= 0:
                return topic, int(partition), int(offset)
        except (TypeError, ValueError, UnicodeDecodeError):
            return None
    return None


def origin_header(position: tuple[str, int, int]) -> tuple[str, bytes]:
    topic, partition, offset = position
    return ORIGIN_HEADER, f"{topic}:{partition}:{offset}".encode("ascii")


def dead_letter(
    record: SourceRecord, rejection: Rejection, failed_at: float, keep_bytes: int = 65_536
) -> DeadLetter:
    """Wrap a refused record with where it first landed and its original bytes. An oversized
    value keeps only its first ``keep_bytes``: base64 of the whole could exceed what the broker
    accepts, and a dead letter that cannot be written would stop the worker."""
    value = record.value or b""
    kept = value[:keep_bytes]
    topic, partition, offset = record.position
    return DeadLetter(
        schema_version=SCHEMA_VERSION,
        reason=rejection.reason,
        detail=rejection.detail,
        topic=topic,
        partition=partition,
        offset=offset,
        key=base64.b64encode(record.key[:MAX_KEY_BYTES]).decode("ascii")
        if record.key is not None
        else None,
        original=base64.b64encode(kept).decode("ascii"),
        original_bytes=len(value),
        truncated=len(kept) < len(value),
        failed_at=failed_at,
    )


def in_event_time_order(
    accepted: list[tuple[SourceRecord, UserEvent]],
) -> list[tuple[SourceRecord, UserEvent]]:
    """Interleave the batch's partitions by event time, keeping each partition's own order.

    Each domain has its own topic, so a user's events of different domains arrive in whatever
    order the fetches bring them; merging by event time (as Kafka Streams synchronizes
    co-partitioned inputs) restores the user's real sequence within a batch. Order within a
    partition is never changed: offsets must increase for the redelivery check.
    """
    partitions: dict[tuple[str, int], list[tuple[SourceRecord, UserEvent]]] = defaultdict(list)
    for pair in accepted:
        partitions[(pair[0].topic, pair[0].partition)].append(pair)
    if len(partitions) < 2:
        return accepted
    return list(heapq.merge(*partitions.values(), key=lambda pair: pair[1].timestamp))
