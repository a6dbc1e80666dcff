"""Bounded reads of topics: from a start (the beginning or a timestamp) to the end as it was
when the read began, so a snapshot finishes while producers keep writing."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, Message, TopicPartition
from tqdm import tqdm

from stream.kafka.transport import retry_transient

LEADER_WAIT_SECONDS = 30.0


def topic_ranges(
    consumer: Consumer, topic: str, start_ms: int | None
) -> list[tuple[TopicPartition, int]]:
    """(first offset to read, end offset) for every partition with something to read; the
    end is the high watermark now, so a snapshot is finite while producers keep writing."""
    metadata = consumer.list_topics(topic, timeout=10.0).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise RuntimeError(
            f"topic {topic!r} is not available: create it with `xdrec topics create`"
        )
    ranges = []
    for partition in sorted(metadata.partitions):
        # A topic created a moment ago, or a partition whose leader is moving, answers
        # NOT_LEADER_FOR_PARTITION for a while: wait for its leader instead of failing.
        first, high = retry_transient(
            lambda partition=partition: _first_and_end(consumer, topic, partition, start_ms),
            operation="topic_ranges",
            timeout=LEADER_WAIT_SECONDS,
        )
        if first < high:
            ranges.append((TopicPartition(topic, partition, first), high))
    return ranges


def _first_and_end(
    consumer: Consumer, topic: str, partition: int, start_ms: int | None
) -> tuple[int, int]:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10.0)
    if start_ms is None:
        return low, high
    found = consumer.offsets_for_times([TopicPartition(topic, partition, start_ms)], 10.0)
    return (found[0].offset if found[0].offset >= 0 else high), high


def read_ranges(
    consumer: Consumer,
    ranges: list[tuple[TopicPartition, int]],
    desc: str = "",
    progress: bool = False,
    timeout: float | None = None,
) -> Iterator[Message]:
    """Every message of the given ``[first, end)`` offset ranges (all partitions at once, each
    in its own order); raises TimeoutError when ``timeout`` seconds pass before the ends."""
    if not ranges:
        return
    ends = {(start.topic, start.partition): end for start, end in ranges}
    remaining = set(ends)
    total = sum(end - start.offset for start, end in ranges)
    deadline = None if timeout is None else time.monotonic() + timeout
    consumer.assign([start for start, _ in ranges])
    bar = tqdm(total=total, desc=desc, unit="msg", disable=not progress)
    try:
        while remaining:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(remaining)} partitions not read to their end in {timeout:.0f}s: "
                    "is the broker reachable?"
                )
            for message in consumer.consume(1_000, timeout=0.5):
                if message.error():
                    continue
                key = (message.topic(), message.partition())
                end = ends[key]
                if message.offset() < end:
                    bar.update(1)
                    yield message
                if message.offset() + 1 >= end:
                    remaining.discard(key)
    finally:
        bar.close()
        consumer.unassign()


def read_to_end(
    consumer: Consumer, topics: list[str], timeout: float | None = None
) -> list[Message]:
    """Every message of ``topics`` up to their ends as they are now."""
    ranges = [r for topic in topics for r in topic_ranges(consumer, topic, None)]
    return list(read_ranges(consumer, ranges, timeout=timeout))
