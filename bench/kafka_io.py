"""Kafka plumbing of the benchmarks: synthetic events, fast producing, counting arrivals.

Every throughput row is read the same way, by :class:`ArrivalCounter` in the parent process, so
rows measured through different frameworks stay comparable.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import SCHEMA_VERSION, UserEvent
from stream.settings import Settings
from stream.transport import (
    OutgoingMessage,
    make_admin,
    make_consumer,
    make_producer,
    produce_all,
)

EVENT_TYPES = ("view", "click", "purchase")  # all with positive weight: each one yields a rec


def synthetic_events(
    settings: Settings,
    count: int,
    users: int,
    items: dict[str, Sequence[str]],
    seed: int,
    start_ts: float | None = None,
) -> list[OutgoingMessage]:
    """``count`` valid UserEvents over ``items`` (domain -> ids), in event-time order."""
    rng = random.Random(seed)
    domains = sorted(items)
    clock = start_ts if start_ts is not None else time.time() - 30 * 86_400
    out = []
    for number in range(count):
        domain = rng.choice(domains)
        user_id = f"u{rng.randrange(users):06d}"
        event = UserEvent(
            schema_version=SCHEMA_VERSION,
            event_id=f"e{seed}-{number:08d}",
            user_id=user_id,
            domain=domain,
            item_id=rng.choice(items[domain]),
            event_type=rng.choice(EVENT_TYPES),
            timestamp=clock + number * 0.5,
        )
        out.append(
            OutgoingMessage(
                settings.topics.events(domain),
                user_id.encode("utf-8"),
                event.model_dump_json().encode("utf-8"),
            )
        )
    return out


def produce_fast(
    settings: Settings, messages: Sequence[OutgoingMessage], timeout: float = 120.0
) -> None:
    """Produce and wait for every ack, batching hard; raises DeliveryError otherwise."""
    producer = make_producer(settings, **{"linger.ms": 20, "batch.size": 1_000_000})
    produce_all(producer, messages, timeout)


def create_topic(settings: Settings, name: str, partitions: int) -> None:
    """One extra topic (an output of a forwarder), created if missing."""
    admin = make_admin(settings)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=30
    )
    try:
        futures[name].result()
    except KafkaException as exc:
        error = exc.args[0]
        if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise
    wait_for_partitions(admin, name)


def wait_for_partitions(
    client: Consumer | AdminClient, topic: str, timeout: float = 30.0
) -> list[int]:
    """The topic's partitions once every one has a leader: a topic created a moment ago is
    not yet in the metadata, and assigning its (empty) partition list would read nothing."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = client.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is not None and metadata.error is None and metadata.partitions:
            if all(p.leader >= 0 and p.error is None for p in metadata.partitions.values()):
                return sorted(metadata.partitions)
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} has no partitions with leaders after {timeout}s")
        time.sleep(0.2)


@dataclass(frozen=True, slots=True)
class Arrivals:
    """When messages reached the counter: first and last receipt, and how many came first."""

    count: int
    first_at: float | None
    first_count: int
    last_at: float | None

    def steady_rate(self) -> float | None:
        """Messages per second after the first receipt, so start-up time is not counted."""
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return None
        return (self.count - self.first_count) / (self.last_at - self.first_at)

    def rate_since(self, started: float) -> float | None:
        if self.last_at is None or self.last_at <= started:
            return None
        return self.count / (self.last_at - started)


class ArrivalCounter(threading.Thread):
    """Reads every partition of ``topic`` from the start and timestamps each receipt."""

    def __init__(self, settings: Settings, topic: str, expected: int) -> None:
        super().__init__(name=f"count-{topic}", daemon=True)
        self.settings = settings
        self.topic = topic
        self.expected = expected
        self.ready = threading.Event()
        self.done = threading.Event()
        self._stop_requested = threading.Event()
        self.count = 0
        self.first_at: float | None = None
        self.first_count = 0
        self.last_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        consumer = make_consumer(self.settings, **{"fetch.wait.max.ms": 50})
        try:
            partitions = wait_for_partitions(consumer, self.topic)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            # The first call starts the fetchers before anyone produces; it may return a message.
            messages = consumer.consume(1, timeout=0.5)
            self.ready.set()
            while True:
                now = time.perf_counter()
                received = sum(1 for message in messages if not message.error())
                if received:
                    if self.first_at is None:
                        self.first_at = now
                        self.first_count = received
                    self.count += received
                    self.last_at = now
                if self._stop_requested.is_set() or self.count >= self.expected:
                    break
                messages = consumer.consume(10_000, timeout=0.1)
        except BaseException as exc:  # reported by wait(); the thread must not die silently
            self.error = exc
        finally:
            self.ready.set()
            self.done.set()
            consumer.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self.ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"counter on {self.topic} did not start: {self.error}")

    def wait(self, timeout: float, alive: Callable[[], bool] | None = None) -> Arrivals:
        """Until all expected messages arrived, ``timeout`` passed or ``alive()`` is False."""
        deadline = time.monotonic() + timeout
        while not self.done.wait(0.2):
            if time.monotonic() > deadline or (alive is not None and not alive()):
                break
        self._stop_requested.set()
        self.join(5.0)
        if self.error is not None:
            raise RuntimeError(f"counting {self.topic} failed: {self.error}") from self.error
        return Arrivals(self.count, self.first_at, self.first_count, self.last_at)
