"""confluent-kafka clients configured from settings: the one place that knows librdkafka keys.

Producers key by user_id with murmur2 (the Java client's default), so that every producer of
events, in any language, puts a user's events of all domains on the same partition number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from stream.settings import Settings

log = logging.getLogger(__name__)
# librdkafka's own log lines, routed through Python logging instead of raw stderr.
client_log = logging.getLogger("librdkafka")

PARTITIONER = "murmur2_random"


class DeliveryError(RuntimeError):
    """A message was not acknowledged by the broker; the batch must not be considered done."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None


def unreachable_hint(settings: Settings) -> str:
    return (
        f"broker at {settings.kafka.bootstrap_servers} not reachable: run `xdrec broker start` "
        "or set XDREC_KAFKA__BOOTSTRAP_SERVERS"
    )


def _log_client_error(error: KafkaError) -> None:
    log.warning("kafka client error code=%s reason=%s", error.name(), error.str())


def make_producer(settings: Settings, **overrides: str | int | float | bool) -> Producer:
    """An idempotent producer (acks=all), lz4-compressed, lingering briefly to batch."""
    config: dict[str, object] = {
        **settings.kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "partitioner": PARTITIONER,
        "message.max.bytes": 4_000_000,
        "error_cb": _log_client_error,
        "logger": client_log,
    }
    config.update(overrides)
    return Producer(config)


def make_consumer(
    settings: Settings, group_id: str | None = None, **overrides: str | int | float | bool
) -> Consumer:
    """A consumer; without a group id it is meant for ``assign()`` reads (no commits)."""
    config: dict[str, object] = {
        **settings.kafka.client_config(),
        "group.id": group_id or f"{settings.app_id}-reader",
        "enable.auto.commit": group_id is not None,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "error_cb": _log_client_error,
        "logger": client_log,
    }
    config.update(overrides)
    return Consumer(config)


def make_admin(settings: Settings) -> AdminClient:
    return AdminClient({**settings.kafka.client_config(), "logger": client_log})


def produce_queued(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    *,
    partition: int | None = None,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
) -> None:
    """Hand one message to librdkafka; while its local queue is full, serve deliveries and
    retry, so a fast producer slows down instead of failing."""
    kwargs: dict[str, object] = {}
    if partition is not None:
        kwargs["partition"] = partition
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    while True:
        try:
            producer.produce(topic, value=value, key=key, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def produce_all(
    producer: Producer, messages: Iterable[OutgoingMessage], timeout: float = 30.0
) -> list[Message]:
    """Produce and wait until every message is acknowledged; raises DeliveryError otherwise.

    Returns the delivered messages (with their offsets), in delivery order.
    """
    delivered: list[Message] = []
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error.str()}")
        else:
            delivered.append(message)

    count = 0
    for message in messages:
        produce_queued(
            producer,
            message.topic,
            message.value,
            message.key,
            partition=message.partition,
            on_delivery=on_delivery,
        )
        count += 1
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise DeliveryError(
            f"{len(failures)} of {count} messages failed and {remaining} are still queued "
            f"after {timeout}s; first failure: {failures[0] if failures else 'timeout'}"
        )
    return delivered


def check_reachable(settings: Settings, timeout: float = 10.0) -> None:
    """Fail fast with a hint when the broker does not answer."""
    try:
        make_admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConnectionError(unreachable_hint(settings)) from exc
