"""confluent-kafka clients configured from settings: the one place that knows librdkafka keys.

Producers key by user_id with murmur2 (the Java client's default), so that every producer of
events, in any language, puts a user's events of all domains on the same partition number.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from stream.settings import Settings

log = logging.getLogger(__name__)
# librdkafka's own log lines, routed through Python logging instead of raw stderr.
client_log = logging.getLogger("librdkafka")

PARTITIONER = "murmur2_random"
# How often a long wait for producer acks says so in the log.
PROGRESS_SECONDS = 5.0
# Errors that say "the broker is not there right now", not "this request is wrong": a broker
# restart, a network blip, a leader moving. librdkafka marks few errors it raises from
# synchronous calls as retriable, hence the explicit list. Seen during broker restarts:
# _DESTROY_BROKER (a request in flight on a connection librdkafka replaced; _DESTROY, the
# client itself closing, is not transient) and unknown partitions while the restarted broker
# reloads its metadata (the Java client too counts UNKNOWN_TOPIC_OR_PARTITION as retriable; a
# topic really deleted still fails, once the retry time is spent).
TRANSIENT_ERRORS = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._FAIL,
        KafkaError._DESTROY_BROKER,
        KafkaError._NODE_UPDATE,
        KafkaError._UNKNOWN_BROKER,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._RESOLVE,
        KafkaError._RETRY,
        KafkaError._WAIT_CACHE,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        # A restarted broker answers requests made with the leader epoch it had before until
        # the client's metadata catches up (seen from list_offsets), or has no offset yet.
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
        # list_offsets while the restarted broker has not elected its partition leaders yet:
        # "Failed to query partition leaders: No leaders found".
        KafkaError._NOENT,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)

T = TypeVar("T")


class DeliveryError(RuntimeError):
    """A message was not acknowledged by the broker; the batch must not be considered done."""


class BrokerUnavailableError(ConnectionError):
    """The broker stayed unreachable for longer than the caller was willing to wait."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


def unreachable_hint(settings: Settings) -> str:
    return (
        f"broker at {settings.kafka.bootstrap_servers} not reachable: run `xdrec broker start` "
        "or set XDREC_KAFKA__BOOTSTRAP_SERVERS"
    )


def _log_client_error(error: KafkaError) -> None:
    log.warning("kafka client error code=%s reason=%s", error.name(), error.str())


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a Kafka error that waiting for the broker can cure."""
    if not isinstance(error, KafkaException) or not error.args:
        return False
    kafka_error = error.args[0]
    if not isinstance(kafka_error, KafkaError) or kafka_error.fatal():
        return False
    return kafka_error.retriable() or kafka_error.code() in TRANSIENT_ERRORS


def retry_transient(
    call: Callable[[], T],
    *,
    operation: str,
    timeout: float,
    initial_delay: float = 0.5,
    max_delay: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()``, retried with capped exponential backoff while it raises a transient Kafka
    error (see :func:`is_transient`), for up to ``timeout`` seconds in all.

    A broker restart then delays the caller instead of failing it; any other error, and a
    transient one that outlasts ``timeout`` (as :class:`BrokerUnavailableError`), propagates.
    ``call`` must be safe to repeat.
    """
    deadline = clock() + timeout
    delay = initial_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except KafkaException as exc:
            if not is_transient(exc):
                raise
            error = exc.args[0]
            left = deadline - clock()
            if left <= 0:
                raise BrokerUnavailableError(
                    f"{operation}: the broker stayed unreachable for {timeout:.0f}s "
                    f"({attempt} attempts, last error {error.name()}: {error.str()}); check "
                    "that the broker is up and reachable, or raise kafka.retry_timeout_seconds"
                ) from exc
            wait = min(delay, left)
            log.warning(
                "waiting for the broker operation=%s attempt=%d error=%s retry_in=%.1f",
                operation,
                attempt,
                error.name(),
                wait,
            )
            sleep(wait)
            delay = min(delay * 2, max_delay)


def make_producer(settings: Settings, **overrides: str | int | float | bool) -> Producer:
    """An idempotent producer (acks=all), lz4-compressed, lingering briefly to batch; librdkafka
    keeps retrying a message for up to ``kafka.produce_timeout_seconds``."""
    config: dict[str, object] = {
        **settings.kafka.client_config(),
        "message.timeout.ms": int(settings.kafka.produce_timeout_seconds * 1000),
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


def end_offsets(
    admin: AdminClient, partitions: Sequence[TopicPartition], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """High watermarks of ``partitions`` in one request, over the admin client's connection.

    A consumer's own ``get_watermark_offsets`` queues behind its fetch on the broker (a fetch
    long-polls for up to fetch.wait.max.ms), so asking a consumer that is being polled costs
    up to that wait per partition: seconds for a few topics.
    """
    if not partitions:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in partitions},
        request_timeout=timeout,
    )
    return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


def produce_queued(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    *,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
) -> None:
    """Hand one message to librdkafka; while its local queue is full, serve deliveries and
    retry, so a fast producer slows down instead of failing."""
    kwargs: dict[str, object] = {}
    if partition is not None:
        kwargs["partition"] = partition
    if headers:
        kwargs["headers"] = headers
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    while True:
        try:
            producer.produce(topic, value=value, key=key, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def _produce_and_wait(
    producer: Producer, messages: Iterable[OutgoingMessage], timeout: float
) -> list[tuple[int, Message]]:
    """Produce ``messages`` and wait for each one's delivery report; the one place that tracks
    deliveries. Returns (input position, delivered message) pairs in delivery order; raises
    DeliveryError when a message failed or was not acknowledged within ``timeout``.

    While the broker is away librdkafka keeps the messages queued and retries on its own (up
    to the producer's message.timeout.ms), so the wait goes on as long as messages are still
    pending and none has failed for good, reporting its progress.
    """
    delivered: list[tuple[int, Message]] = []
    failures: list[str] = []

    def on_delivery(index: int, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(f"message {index} to {message.topic()}: {error.str()}")
        else:
            delivered.append((index, message))

    count = 0
    for index, message in enumerate(messages):
        count += 1
        produce_queued(
            producer,
            message.topic,
            message.value,
            message.key,
            partition=message.partition,
            headers=message.headers,
            on_delivery=functools.partial(on_delivery, index),
        )
    started = time.monotonic()
    waited = 0.0
    # A failed delivery is final (librdkafka has retried already): stop waiting at the first.
    while (pending := count - len(delivered) - len(failures)) and not failures and waited < timeout:
        if waited:
            log.warning(
                "waiting for broker acks pending=%d messages=%d waited=%.0f timeout=%.0f",
                pending,
                count,
                waited,
                timeout,
            )
        # Returns as soon as the producer's queue is empty, else after one progress interval.
        producer.flush(min(PROGRESS_SECONDS, timeout - waited))
        waited = time.monotonic() - started
    if pending or failures:
        raise DeliveryError(
            f"{len(failures)} of {count} messages failed and {pending} were not acknowledged "
            f"after {waited:.0f}s; first failure: {failures[0] if failures else 'timeout'}; "
            "check the broker, or raise kafka.produce_timeout_seconds to ride out longer outages"
        )
    return delivered


def produce_all(
    producer: Producer, messages: Iterable[OutgoingMessage], timeout: float = 30.0
) -> list[Message]:
    """Produce and wait until every message is acknowledged; raises DeliveryError otherwise.

    Returns the delivered messages (with their offsets), in delivery order.
    """
    return [message for _, message in _produce_and_wait(producer, messages, timeout)]


def produce_tracked(
    settings: Settings,
    messages: Sequence[OutgoingMessage],
    timeout: float = 60.0,
    **overrides: str | int | float | bool,
) -> list[tuple[str, int, int]]:
    """Produce ``messages`` with a producer of their own (``overrides`` change its librdkafka
    settings, e.g. another partitioner); returns each one's (topic, partition, offset) in
    input order, so that a tool or test can tell what became of every single record (values
    need not be unique). Raises DeliveryError as :func:`produce_all` does."""
    delivered = _produce_and_wait(make_producer(settings, **overrides), messages, timeout)
    delivered.sort(key=lambda pair: pair[0])
    return [(m.topic(), m.partition(), m.offset()) for _, m in delivered]


def check_reachable(settings: Settings, timeout: float = 10.0) -> None:
    """Fail fast with a hint when the broker does not answer."""
    try:
        make_admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConnectionError(unreachable_hint(settings)) from exc
