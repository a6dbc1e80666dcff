"""Events on another partition than their user's: moved to the one that owns the user.

A user's state lives on the partition of murmur2(user id), the Java client's default that
xdrec's producers use too. A producer on librdkafka's default (CRC32: kcat, confluent-kafka
for Python, Go, .NET) puts most users' events elsewhere; applied where they land, one user's
state would split across workers. So the worker that consumes such a record does not apply
it: it produces a copy to the record's topic on the user's partition, with the
:data:`~stream.core.records.ORIGIN_HEADER` naming where the event first landed, among the
batch's outputs (acknowledged before the batch is). The owner applies the copy as the event
at its origin, so a copy produced twice (its batch replayed after a crash) is applied once,
and its recommendation and any dead letter name the origin.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from stream.core.records import SourceRecord, origin_header
from stream.kafka.topics import key_partition
from stream.kafka.transport import OutgoingMessage
from stream.settings import Settings


class Routed(NamedTuple):
    """A batch split by ownership: records to apply here, copies to produce to their owners
    and, per topic, how many records were on the wrong partition."""

    own: list[SourceRecord]
    moved: list[OutgoingMessage]
    misrouted: Counter[str]


class PartitionRouter:
    """Tells a user's records apart from those another partition owns."""

    def __init__(self, settings: Settings) -> None:
        partitions = settings.topics.partitions
        self.topics = {settings.topics.events(d) for d in settings.domains}
        self.topics.add(settings.topics.erasure())
        self.move = settings.worker.reroute_misrouted
        # Users come back, so their keys' partitions are remembered (bounded by the cache).
        self.partition_of = functools.lru_cache(maxsize=65_536)(
            lambda key: key_partition(key, partitions)
        )

    def split(self, records: Sequence[SourceRecord]) -> Routed:
        own: list[SourceRecord] = []
        moved: list[OutgoingMessage] = []
        misrouted: Counter[str] = Counter()
        for record in records:
            if record.key is None or record.topic not in self.topics:
                own.append(record)
                continue
            owner = self.partition_of(record.key)
            if owner == record.partition:
                own.append(record)
                continue
            misrouted[record.topic] += 1
            if not self.move:
                own.append(record)
                continue
            moved.append(
                OutgoingMessage(
                    record.topic,
                    record.key,
                    record.value,
                    owner,
                    [origin_header(record.position)],
                )
            )
        return Routed(own, moved, misrouted)
