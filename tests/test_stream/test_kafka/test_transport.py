"""Riding out a broker outage: the transient-error retry and the wait for producer acks.

Pure unit tests: fake callables, clocks, producers and consumers stand in for the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition

from stream.catalog import reader as catalog_reader
from stream.kafka import transport
from stream.kafka.transport import (
    BrokerUnavailableError,
    DeliveryError,
    OutgoingMessage,
    is_transient,
    produce_all,
    retry_transient,
)
from stream.settings import Settings
from stream.state import changelog


def kafka_exception(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int, code: int = KafkaError._TRANSPORT) -> Callable[[], str]:
    """A call that raises ``code`` ``times`` times, then answers."""
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise kafka_exception(code)
        return f"answered after {calls['n']} calls"

    return call


def retry(call: Callable[[], str], clock: FakeClock, operation: str, timeout: float) -> str:
    """``retry_transient`` on the fake clock, backing off 0.5 s doubling up to 4 s."""
    return retry_transient(
        call,
        operation=operation,
        timeout=timeout,
        initial_delay=0.5,
        max_delay=4.0,
        sleep=clock.sleep,
        clock=clock,
    )


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._DESTROY_BROKER,  # seen in watermark requests across a broker restart
        KafkaError._UNKNOWN_PARTITION,  # likewise, while the broker reloads its metadata
        KafkaError._TIMED_OUT,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.FENCED_LEADER_EPOCH,  # list_offsets right after a broker restart
        KafkaError._NOENT,  # list_offsets before the restarted broker has elected leaders
    ],
)
def test_broker_outage_errors_are_transient(code: int) -> None:
    assert is_transient(kafka_exception(code))


def test_other_errors_are_not_transient() -> None:
    assert not is_transient(kafka_exception(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert not is_transient(kafka_exception(KafkaError.MSG_SIZE_TOO_LARGE))
    assert not is_transient(kafka_exception(KafkaError._DESTROY))  # the client is closing
    assert not is_transient(KafkaException(KafkaError(KafkaError._TRANSPORT, fatal=True)))
    assert not is_transient(ValueError("not kafka"))
    assert is_transient(
        KafkaException(KafkaError(KafkaError.INVALID_REPLICATION_FACTOR, retriable=True))
    )


def test_retry_rides_out_transient_errors_with_capped_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="stream.kafka.transport"):
        result = retry(failing(6), clock, "catalog_catch_up", 300.0)
    assert result == "answered after 7 calls"
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 6
    assert warnings[0] == (
        "waiting for the broker operation=catalog_catch_up attempt=1 error=_TRANSPORT retry_in=0.5"
    )


def test_retry_gives_up_after_the_timeout_with_a_hint() -> None:
    clock = FakeClock()
    with pytest.raises(BrokerUnavailableError, match="retry_timeout_seconds") as raised:
        retry(failing(1_000), clock, "changelog_restore", 10.0)
    # Never sleeps past the deadline: 0.5 + 1 + 2 + 4 + 2.5 (what was left).
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 2.5]
    assert "changelog_restore" in str(raised.value) and "_TRANSPORT" in str(raised.value)
    assert isinstance(raised.value.__cause__, KafkaException)


def test_retry_does_not_retry_other_errors() -> None:
    clock = FakeClock()
    with pytest.raises(KafkaException) as raised:
        retry(failing(1, KafkaError.TOPIC_AUTHORIZATION_FAILED), clock, "catalog_assign", 300.0)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert clock.sleeps == []


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


class FakeProducer:
    """Queues messages; each flush() acknowledges them only once ``down_flushes`` flushes have
    passed (the broker is away until then), or fails them with ``error``."""

    def __init__(self, down_flushes: int = 0, error: KafkaError | None = None) -> None:
        self.down_flushes = down_flushes
        self.error = error
        self.queued: list[tuple[str, Any]] = []
        self.flushes: list[float] = []
        self.offset = 0

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any) -> None:
        self.queued.append((topic, kwargs["on_delivery"]))

    def flush(self, timeout: float) -> int:
        self.flushes.append(timeout)
        if len(self.flushes) <= self.down_flushes:
            return len(self.queued)
        for topic, on_delivery in reversed(self.queued):  # reports need not come in order
            on_delivery(self.error, FakeMessage(topic, 0, self.offset))
            self.offset += 1
        self.queued.clear()
        return 0


MESSAGES = [OutgoingMessage("t", f"k{i}".encode(), b"v") for i in range(3)]


def test_produce_all_waits_while_the_broker_is_away(caplog: pytest.LogCaptureFixture) -> None:
    producer = FakeProducer(down_flushes=2)
    with caplog.at_level(logging.WARNING, logger="stream.kafka.transport"):
        delivered = produce_all(producer, MESSAGES, timeout=60.0)  # type: ignore[arg-type]
    assert [m.offset() for m in delivered] == [0, 1, 2]  # in delivery order
    assert len(producer.flushes) == 3
    assert all(0 < t <= transport.PROGRESS_SECONDS for t in producer.flushes)
    assert [r.getMessage().split(" waited=")[0] for r in caplog.records] == [
        "waiting for broker acks pending=3 messages=3"
    ] * 2


def test_produce_all_fails_when_acks_do_not_come_in_time() -> None:
    producer = FakeProducer(down_flushes=10**9)
    with pytest.raises(DeliveryError, match="3 were not acknowledged"):
        produce_all(producer, MESSAGES, timeout=0.05)  # type: ignore[arg-type]


def test_produce_all_stops_waiting_at_a_failed_delivery() -> None:
    producer = FakeProducer(error=KafkaError(KafkaError._MSG_TIMED_OUT))
    with pytest.raises(DeliveryError, match="3 of 3 messages failed"):
        produce_all(producer, MESSAGES, timeout=60.0)  # type: ignore[arg-type]
    assert len(producer.flushes) == 1


def test_produce_tracked_reports_places_in_input_order(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer()
    monkeypatch.setattr(transport, "make_producer", lambda settings: producer)
    placed = transport.produce_tracked(Settings(), MESSAGES)
    assert placed == [("t", 0, 2), ("t", 0, 1), ("t", 0, 0)]  # acknowledged last to first


def test_producer_message_timeout_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    configs: list[dict[str, Any]] = []
    monkeypatch.setattr(transport, "Producer", configs.append)
    transport.make_producer(Settings(kafka={"produce_timeout_seconds": 42.5}))
    assert configs[0]["message.timeout.ms"] == 42_500


class OutageEndOffsets:
    """End offsets whose broker is away for the first ``down_calls`` requests; every partition
    is empty."""

    def __init__(self, down_calls: int) -> None:
        self.down_calls = down_calls
        self.calls = 0

    def __call__(
        self, admin: object, partitions: list[TopicPartition], timeout: float = 10.0
    ) -> dict[tuple[str, int], int]:
        self.calls += 1
        if self.calls <= self.down_calls:
            raise kafka_exception(KafkaError._TRANSPORT)
        return {(tp.topic, tp.partition): 0 for tp in partitions}


class OutageConsumer:
    """A consumer whose broker is away for the first ``down_calls`` watermark requests; every
    partition is empty."""

    def __init__(self, down_calls: int) -> None:
        self.down_calls = down_calls
        self.calls = 0

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.calls <= self.down_calls:
            raise kafka_exception(KafkaError._TRANSPORT)
        return 0, 0

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, OFFSET_INVALID) for tp in partitions]

    def close(self) -> None:
        pass


def test_catalog_catch_up_waits_for_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    ends = OutageEndOffsets(down_calls=2)
    monkeypatch.setattr(catalog_reader, "make_consumer", lambda settings: OutageConsumer(0))
    monkeypatch.setattr(catalog_reader, "make_admin", lambda settings: None)
    monkeypatch.setattr(catalog_reader, "end_offsets", ends)
    catalog: Any = SimpleNamespace(counts=lambda: {})
    unused: Any = None  # encoder and validator: an empty catalog needs neither
    reader = catalog_reader.CatalogReader(Settings(), catalog, unused, unused, lambda _: None)
    reader._partitions = [TopicPartition("catalog.books", 0)]
    assert reader.catch_up() == 0
    assert ends.calls == 3


def test_changelog_restore_waits_for_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = OutageConsumer(down_calls=1)
    monkeypatch.setattr(changelog, "make_consumer", lambda settings: consumer)
    store: Any = SimpleNamespace(changelog_offset=lambda partition: None)
    assert changelog.StateChangelog(Settings()).restore(store, [0, 1]) == 0
    assert consumer.calls == 3
