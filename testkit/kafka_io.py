"""Kafka plumbing of the benchmarks: synthetic events, fast and paced producing, counting
arrivals, reading a worker's /metrics, and the scaffolding of a command-line benchmark on a
broker of its own (:func:`run_benchmark`).

Every throughput row is read the same way, by :class:`ArrivalCounter` in the parent process, so
rows measured through different frameworks stay comparable. Every benchmark that streams at a
steady rate (latency, hot swap, chaos, soak) draws its events from :func:`event_stream`,
produces them with :class:`PacedProducer` and reads the worker's /metrics with
:class:`MetricsPoller`, so the figures of one benchmark mean the same in another.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from schemas import SCHEMA_VERSION, CatalogItem, UserEvent
from stream.kafka.transport import (
    OutgoingMessage,
    make_admin,
    make_consumer,
    make_producer,
    produce_all,
    produce_queued,
)
from stream.settings import Settings

log = logging.getLogger(__name__)

EVENT_TYPES = ("view", "click", "purchase")  # all with positive weight: each one yields a rec


@dataclass(frozen=True, slots=True)
class Planned:
    """One record to produce; ``event_id`` None marks a record that must be dead-lettered."""

    event_id: str | None
    user_id: str
    domain: str
    message: OutgoingMessage


def event_stream(
    settings: Settings,
    items: Mapping[str, Sequence[str]],
    users: int,
    seed: int,
    *,
    count: int | None = None,
    weights: Sequence[float] | None = None,
    id_prefix: str | None = None,
    user_digits: int = 6,
    start_ts: float | None = None,
    step_s: float = 0.0,
    spoil: Callable[[int, str, str], bytes | None] | None = None,
) -> Iterator[Planned]:
    """The benchmarks' one source of synthetic UserEvents, keyed by user, in event-time order:
    ``count`` of them (endless for None) over ``items`` (domain -> ids; domains drawn in this
    order with ``weights``, uniformly without) of ``users`` users.

    Event ``number`` has the id ``id_prefix`` (default ``e{seed}-``) + ``number`` and the time
    ``start_ts + number * step_s``; with ``start_ts`` None the moment it is drawn, so a
    :class:`PacedProducer`, which draws each record right before producing it, stamps events
    as it produces them. ``spoil(number, user_id, domain)`` may return the value of a record
    the worker must refuse, which takes that event's place. The same ``seed`` and arguments
    give the same records."""
    rng = random.Random(seed)
    domains = list(items)
    prefix = f"e{seed}-" if id_prefix is None else id_prefix
    number = 0
    while count is None or number < count:
        domain = rng.choice(domains) if weights is None else rng.choices(domains, weights)[0]
        user_id = f"u{rng.randrange(users):0{user_digits}d}"
        topic = settings.topics.events(domain)
        key = user_id.encode("utf-8")
        refused = spoil(number, user_id, domain) if spoil is not None else None
        if refused is not None:
            yield Planned(None, user_id, domain, OutgoingMessage(topic, key, refused))
        else:
            event = UserEvent(
                schema_version=SCHEMA_VERSION,
                event_id=f"{prefix}{number:08d}",
                user_id=user_id,
                domain=domain,
                item_id=rng.choice(items[domain]),
                event_type=rng.choice(EVENT_TYPES),
                timestamp=time.time() if start_ts is None else start_ts + number * step_s,
            )
            value = event.model_dump_json().encode("utf-8")
            yield Planned(event.event_id, user_id, domain, OutgoingMessage(topic, key, value))
        number += 1


def synthetic_events(
    settings: Settings,
    count: int,
    users: int,
    items: dict[str, Sequence[str]],
    seed: int,
    start_ts: float | None = None,
) -> list[OutgoingMessage]:
    """``count`` valid UserEvents over ``items`` (domain -> ids), in event-time order."""
    clock = start_ts if start_ts is not None else time.time() - 30 * 86_400
    ordered = {domain: items[domain] for domain in sorted(items)}
    stream = event_stream(settings, ordered, users, seed, count=count, start_ts=clock, step_s=0.5)
    return [planned.message for planned in stream]


def produce_fast(
    settings: Settings, messages: Sequence[OutgoingMessage], timeout: float = 120.0
) -> None:
    """Produce and wait for every ack, batching hard; raises DeliveryError otherwise."""
    producer = make_producer(settings, **{"linger.ms": 20, "batch.size": 1_000_000})
    produce_all(producer, messages, timeout)


def publish_catalog(settings: Settings, items: Sequence[CatalogItem]) -> None:
    """``items`` on their catalog topics, keyed by item id, as a deployment has them."""
    produce_fast(
        settings,
        [
            OutgoingMessage(
                settings.topics.catalog(item.domain),
                item.item_id.encode("utf-8"),
                item.model_dump_json().encode("utf-8"),
            )
            for item in items
        ],
    )


@dataclass(frozen=True, slots=True)
class Sent:
    """A record the broker acknowledged, and where it landed."""

    event_id: str | None
    user_id: str
    domain: str
    topic: str
    partition: int
    offset: int


class PacedProducer(threading.Thread):
    """Produces the records of ``stream`` at ``rate`` per second on its own thread.

    It stops at the stream's end, after ``limit`` records, on :meth:`stop`, or once
    ``go_on(produced)`` is False (checked between ticks), and never goes beyond the budget set
    with :meth:`allow` (all records by default; the pace starts afresh when the budget grows).
    Each record is drawn right before it is produced, so a live :func:`event_stream` stamps
    it then. ``track`` keeps every acknowledged record's coordinates in ``sent`` (off for
    endless streams, which only count). ``producer``: one already connected (default: a new
    one with the deployment's settings)."""

    def __init__(
        self,
        settings: Settings,
        stream: Iterator[Planned],
        rate: float,
        *,
        limit: int | None = None,
        allowed: int | None = None,
        go_on: Callable[[int], bool] | None = None,
        track: bool = False,
        producer: Producer | None = None,
        tick_s: float = 0.005,
        flush_s: float = 120.0,
        name: str = "paced-producer",
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.settings = settings
        self.stream = stream
        self.rate = rate
        self.limit = limit
        self.go_on = go_on
        self.sent: list[Sent] = []  # with track
        self.track = track
        self.tick_s = tick_s
        self.flush_s = flush_s
        self.produced = 0
        self.acked = 0
        self.failures: list[str] = []
        self.started_at: float | None = None  # perf_counter when producing began
        self.finished_at: float | None = None  # and when the last record was handed over
        self.error: BaseException | None = None
        self.exhausted = threading.Event()
        self.finished = threading.Event()
        self._producer = producer
        self._allowed = allowed
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()

    def allow(self, total: int | None) -> None:
        """Produce up to ``total`` records in all (None: no limit)."""
        with self._lock:
            self._allowed = total

    def stop(self) -> None:
        self._stop_requested.set()

    def _budget(self) -> int | None:
        with self._lock:
            return self._allowed

    def _count(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failures.append(f"{message.topic()}: {error.str()}")
        else:
            self.acked += 1

    def _tracker(self, planned: Planned) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, message: Message) -> None:
            self._count(error, message)
            if error is None:
                self.sent.append(
                    Sent(
                        planned.event_id,
                        planned.user_id,
                        planned.domain,
                        message.topic(),
                        message.partition(),
                        message.offset(),
                    )
                )

        return delivered

    def _done(self) -> bool:
        if self._stop_requested.is_set():
            return True
        if self.limit is not None and self.produced >= self.limit:
            return True
        return self.go_on is not None and not self.go_on(self.produced)

    def run(self) -> None:
        try:
            producer = self._producer
            if producer is None:  # not ``or``: a Producer with nothing queued is falsy
                producer = make_producer(self.settings)
            self.started_at = started = time.perf_counter()
            paced_from = 0
            waiting: Planned | None = None  # drawn while the budget was spent, not produced
            while not self._done():
                budget = self._budget()
                if budget is not None and self.produced >= budget:
                    # Drawn ahead only here, so that a stream ending at the budget ends the run.
                    if waiting is None:
                        waiting = next(self.stream, None)
                    if waiting is None:
                        self.exhausted.set()
                        break
                    producer.poll(0.05)
                    started, paced_from = time.perf_counter(), self.produced
                    continue
                due = paced_from + int((time.perf_counter() - started) * self.rate) + 1
                for cap in (budget, self.limit):
                    if cap is not None:
                        due = min(due, cap)
                while self.produced < due:
                    upcoming = waiting if waiting is not None else next(self.stream, None)
                    waiting = None
                    if upcoming is None:
                        self.exhausted.set()
                        break
                    produce_queued(
                        producer,
                        upcoming.message.topic,
                        upcoming.message.value,
                        upcoming.message.key,
                        on_delivery=self._tracker(upcoming) if self.track else self._count,
                    )
                    self.produced += 1
                if self.exhausted.is_set():
                    break
                producer.poll(0)
                time.sleep(self.tick_s)
            self.finished_at = time.perf_counter()
            remaining = producer.flush(self.flush_s)
            if remaining:
                self.failures.append(f"{remaining} records still queued after {self.flush_s:.0f}s")
        except BaseException as exc:  # reported by the caller; the thread must not die silently
            self.error = exc
        finally:
            self.finished.set()

    def wait(self, timeout: float) -> None:
        """Until every planned record is produced and acknowledged; raises on failures."""
        if not self.finished.wait(timeout):
            raise RuntimeError(f"producer not done after {timeout:.0f}s: {self.produced} sent")
        if self.error is not None or self.failures:
            raise RuntimeError(f"producing failed: {self.error or self.failures[:3]}")


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


class TopicFollower(threading.Thread):
    """Reads every partition of ``topics`` in a thread of its own, from the start (or from the
    end as it is when the thread starts), and hands what arrives to :meth:`receive` with the
    moment it was read: the one read loop of the tests' and benchmarks' collectors, counters
    and latency readers.

    A receipt is timed when ``poll`` returns it; what the client has already fetched besides
    is drained without waiting, so no message is timed late by the reader's own waiting. The
    thread never dies silently: an error is kept in ``error`` for the caller."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        *,
        name: str,
        from_end: bool = False,
        fetch_wait_ms: int = 20,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.settings = settings
        self.topics = list(topics)
        self.from_end = from_end
        self.fetch_wait_ms = fetch_wait_ms
        self.ready = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()

    def receive(self, messages: list[Message], at: float, wall: float) -> None:
        """``messages`` read at ``time.perf_counter()`` ``at`` (``time.time()`` ``wall``)."""
        raise NotImplementedError

    def finished(self) -> bool:
        """Whether everything awaited has arrived (the thread then stops by itself)."""
        return False

    def run(self) -> None:
        consumer = make_consumer(self.settings, **{"fetch.wait.max.ms": self.fetch_wait_ms})
        try:
            assignment = []
            for topic in self.topics:
                for partition in wait_for_partitions(consumer, topic):
                    start = OFFSET_BEGINNING
                    if self.from_end:
                        start = consumer.get_watermark_offsets(
                            TopicPartition(topic, partition), timeout=10.0
                        )[1]
                    assignment.append(TopicPartition(topic, partition, start))
            consumer.assign(assignment)
            first = consumer.poll(0.2)  # starts the fetchers; may return a message already
            self.ready.set()
            while True:
                if first is not None:
                    at, wall = time.perf_counter(), time.time()
                    arrived = [first, *consumer.consume(10_000, timeout=0)]
                    messages = [message for message in arrived if not message.error()]
                    if messages:
                        self.receive(messages, at, wall)
                if self._stop_requested.is_set() or self.finished():
                    break
                first = consumer.poll(0.05)
        except BaseException as exc:  # reported to the caller; the thread must not die silently
            self.error = exc
        finally:
            self.ready.set()
            self.done.set()
            consumer.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self.ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"reader of {self.topics} did not start: {self.error}")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_requested.set()
        self.join(timeout)


class ArrivalCounter(TopicFollower):
    """Counts the messages of ``topic`` from its start and when they arrived."""

    def __init__(self, settings: Settings, topic: str, expected: int) -> None:
        super().__init__(settings, [topic], name=f"count-{topic}", fetch_wait_ms=50)
        self.topic = topic
        self.expected = expected
        self.count = 0
        self.first_at: float | None = None
        self.first_count = 0
        self.last_at: float | None = None

    def receive(self, messages: list[Message], at: float, wall: float) -> None:
        if self.first_at is None:
            self.first_at = at
            self.first_count = len(messages)
        self.count += len(messages)
        self.last_at = at

    def finished(self) -> bool:
        return self.count >= self.expected

    def wait(self, timeout: float, alive: Callable[[], bool] | None = None) -> Arrivals:
        """Until all expected messages arrived, ``timeout`` passed or ``alive()`` is False."""
        deadline = time.monotonic() + timeout
        while not self.done.wait(0.2):
            if time.monotonic() > deadline or (alive is not None and not alive()):
                break
        self.stop(5.0)
        if self.error is not None:
            raise RuntimeError(f"counting {self.topic} failed: {self.error}") from self.error
        return Arrivals(self.count, self.first_at, self.first_count, self.last_at)


def read_metrics(port: int, timeout: float = 2.0) -> str:
    """The text of a worker's /metrics page (on this host)."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


def metric_sums(text: str) -> dict[str, float]:
    """Every sample of a /metrics page summed per sample name (labels added up)."""
    sums: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] += sample.value
    return dict(sums)


def scrape(port: int, timeout: float = 2.0) -> dict[str, float]:
    """Every sample of a /metrics page summed per sample name (labels added up)."""
    return metric_sums(read_metrics(port, timeout))


class MetricsPoller(threading.Thread):
    """A worker's /metrics, read on demand (:meth:`poll`) or, once started, every ``interval``
    seconds on its own thread. A read that fails is counted in ``failures`` and logged, never
    raised: a worker being killed or slow must not end a measurement. ``last`` holds the sums
    of the latest page read; subclasses keep more by overriding :meth:`keep`."""

    def __init__(self, port: int, interval: float = 1.0, *, name: str = "metrics-poller") -> None:
        super().__init__(name=name, daemon=True)
        self.port = port
        self.interval = interval
        self.last: dict[str, float] = {}
        self.failures = 0
        self._stop_requested = threading.Event()

    def keep(self, text: str, at: float) -> bool:
        """Keep what matters of a page read at ``at`` (perf_counter); False: it lacked it."""
        self.last = metric_sums(text)
        return True

    def poll(self) -> dict[str, float]:
        """Read the page once; the sums of this read ({} when it failed)."""
        try:
            text = read_metrics(self.port)
        except OSError as exc:
            self.failures += 1
            log.warning("metrics read failed port=%s error=%s", self.port, exc)
            return {}
        if not self.keep(text, time.perf_counter()):
            self.failures += 1
            return {}
        return self.last

    def run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop_requested.is_set():
            self.poll()
            next_at += self.interval
            self._stop_requested.wait(max(0.0, next_at - time.perf_counter()))

    def stop(self) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join(5.0)
