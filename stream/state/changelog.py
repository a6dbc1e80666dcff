"""The user-state changelog: a compacted topic co-partitioned with the event topics.

Publishing: every batch's new states go to the changelog partition of the events they came
from, and are acknowledged before the local store and the source offsets move on. Restoring:
when a worker gets a partition, it replays that changelog partition from the offset its local
store reached (from the start on a new machine), so state follows partitions between workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from stream.kafka.transport import OutgoingMessage, make_consumer, retry_transient
from stream.settings import Settings
from stream.state.store import UserStateStore

log = logging.getLogger(__name__)

_RESTORE_BATCH = 1_000


class StateChangelog:
    """Writes and replays the user-state changelog topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.state_changelog(settings.app_id)

    def messages(self, states: Mapping[str, tuple[int, bytes | None]]) -> list[OutgoingMessage]:
        """``user_id -> (partition, value)`` as changelog messages (None is a tombstone)."""
        return [
            OutgoingMessage(self.topic, user_id.encode("utf-8"), value, partition)
            for user_id, (partition, value) in states.items()
        ]

    def offsets(self, delivered: Iterable[Message]) -> dict[int, int]:
        """The last changelog offset per partition among ``delivered`` messages."""
        offsets: dict[int, int] = {}
        for message in delivered:
            if message.topic() != self.topic:
                continue
            partition, offset = message.partition(), message.offset()
            if offset > offsets.get(partition, -1):
                offsets[partition] = offset
        return offsets

    def restore(self, store: UserStateStore, partitions: Iterable[int]) -> int:
        """Bring ``store`` up to the changelog's end for ``partitions``; returns records applied.

        Finding the ends needs the broker: while it is unreachable (a restart) that is retried
        for up to ``kafka.retry_timeout_seconds``; reading then waits for it by itself.
        """
        partitions = sorted(set(partitions))
        if not partitions:
            return 0
        started = time.perf_counter()
        consumer = make_consumer(self.settings)
        try:
            ends, assignment = retry_transient(
                lambda: self._plan(consumer, store, partitions),
                operation="changelog_restore",
                timeout=self.settings.kafka.retry_timeout_seconds,
            )
            if not assignment:
                return 0
            consumer.assign(assignment)
            applied = 0
            while ends:
                messages = consumer.consume(_RESTORE_BATCH, timeout=1.0)
                if not messages:  # the end may be a gap (e.g. an aborted write): trust position
                    positions = consumer.position(
                        [TopicPartition(self.topic, partition) for partition in ends]
                    )
                    for tp in positions:
                        if tp.offset >= ends[tp.partition]:
                            del ends[tp.partition]
                    continue
                states: dict[str, bytes | None] = {}
                offsets: dict[int, int] = {}
                for message in messages:
                    if message.error():
                        log.warning("changelog read error error=%s", message.error().str())
                        continue
                    key = message.key()
                    if key is not None:
                        states[key.decode("utf-8")] = message.value()
                    offsets[message.partition()] = message.offset()
                if states or offsets:
                    store.write(states.items(), offsets)
                    applied += len(messages)
                for partition, offset in offsets.items():
                    if partition in ends and offset + 1 >= ends[partition]:
                        del ends[partition]
            log.info(
                "state restored topic=%s partitions=%s records=%d seconds=%.2f",
                self.topic,
                partitions,
                applied,
                time.perf_counter() - started,
            )
            return applied
        finally:
            consumer.close()

    def _plan(
        self, consumer: Consumer, store: UserStateStore, partitions: list[int]
    ) -> tuple[dict[int, int], list[TopicPartition]]:
        """The end offset of each partition behind the store, and where to read it from."""
        ends: dict[int, int] = {}
        assignment = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=10.0
            )
            stored = store.changelog_offset(partition)
            start = stored + 1 if stored is not None else OFFSET_BEGINNING
            if high > (stored + 1 if stored is not None else low):
                ends[partition] = high
                assignment.append(TopicPartition(self.topic, partition, start))
        return ends, assignment
