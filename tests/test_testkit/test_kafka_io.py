"""The shared Kafka I/O of tests and benchmarks, without a broker: the synthetic-event source,
the paced producer (on a stand-in for the Kafka producer) and the /metrics poller (on a local
HTTP server). chaos, soak, swap, latency and the resilience tests all stand on them."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.latency import live_events
from bench.swap import events as swap_events
from stream.settings import Settings
from testkit import guarantees
from testkit.kafka_io import MetricsPoller, PacedProducer, Planned, event_stream, synthetic_events

ITEMS = {"books": ["b1", "b2", "b3"], "music": ["m1", "m2"]}


def _settings() -> Settings:
    return Settings(domains=["books", "music", "movies"])


class FakeMessage:
    """What a delivery callback reads of an acknowledged message."""

    def __init__(self, topic: str, offset: int) -> None:
        self._topic, self._offset = topic, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class FakeProducer:
    """Acknowledges every message on the next poll or flush, like librdkafka's callbacks."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self._pending: list[tuple[Callable[..., None] | None, FakeMessage]] = []
        self._lock = threading.Lock()

    def produce(self, topic: str, value: bytes, key: bytes, **kwargs: Any) -> None:
        with self._lock:
            self._pending.append((kwargs.get("on_delivery"), FakeMessage(topic, len(self.values))))
            self.values.append(value)

    def poll(self, timeout: float = 0.0) -> int:
        with self._lock:
            pending, self._pending = self._pending, []
        for callback, message in pending:
            if callback is not None:
                callback(None, message)
        return len(pending)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0


def _stream(count: int | None) -> Iterator[Planned]:
    return event_stream(_settings(), ITEMS, 10, seed=1, count=count, start_ts=0.0, step_s=1.0)


def test_event_stream_is_deterministic_and_spoils_where_asked() -> None:
    def spoil(number: int, user_id: str, domain: str) -> bytes | None:
        return b"not json" if number % 3 == 2 else None

    first = list(event_stream(_settings(), ITEMS, 10, 5, count=9, start_ts=0.0, spoil=spoil))
    again = list(event_stream(_settings(), ITEMS, 10, 5, count=9, start_ts=0.0, spoil=spoil))
    assert first == again
    assert [p.event_id is None for p in first] == [n % 3 == 2 for n in range(9)]
    valid = [json.loads(p.message.value) for p in first if p.event_id is not None]
    assert [v["event_id"] for v in valid] == [p.event_id for p in first if p.event_id]
    assert all(v["item_id"] in ITEMS[v["domain"]] for v in valid)
    assert all(p.message.key == p.user_id.encode() for p in first)


def test_a_live_stream_stamps_each_event_when_it_is_drawn() -> None:
    stream = event_stream(_settings(), ITEMS, 10, 5, id_prefix="live-")
    before = time.time()
    planned = next(stream)
    assert planned.event_id == "live-00000000"
    assert before <= json.loads(planned.message.value)["timestamp"] <= time.time()


def test_each_benchmark_keeps_its_own_event_ids() -> None:
    settings = _settings()
    assert [p.event_id for p in itertools.islice(swap_events(settings, 5, 7), 2)] == [
        "swap7-00000000",
        "swap7-00000001",
    ]
    assert next(live_events(settings, 5, ITEMS, "lat-", 3)).event_id == "lat-00000000"
    workload = list(guarantees.workload(settings, 10, 5, 3, invalid_every=5))
    assert [p.event_id for p in workload].count(None) == 2
    assert len(synthetic_events(settings, 4, 5, ITEMS, 2)) == 4


def test_paced_producer_keeps_to_its_rate_and_limit() -> None:
    fake = FakeProducer()
    producer = PacedProducer(_settings(), _stream(None), 200.0, limit=40, producer=fake)  # type: ignore[arg-type]
    producer.start()
    producer.wait(10.0)
    assert producer.produced == 40 == len(fake.values) == producer.acked
    assert producer.started_at is not None and producer.finished_at is not None
    assert producer.finished_at - producer.started_at >= 39 / 200.0 - 0.01
    assert not producer.exhausted.is_set()


def test_paced_producer_waits_at_its_budget_and_ends_with_the_stream() -> None:
    fake = FakeProducer()
    producer = PacedProducer(
        _settings(),
        _stream(10),
        1e6,
        allowed=4,
        track=True,
        producer=fake,  # type: ignore[arg-type]
    )
    producer.start()
    time.sleep(0.3)
    assert producer.produced == 4 and producer.is_alive()
    producer.allow(10)  # the whole stream: the producer must notice that it ended there
    producer.wait(10.0)
    assert producer.produced == 10 and producer.exhausted.is_set()
    assert [s.offset for s in sorted(producer.sent, key=lambda s: s.offset)] == list(range(10))
    assert [s.event_id for s in producer.sent] == [p.event_id for p in _stream(10)]


def test_paced_producer_stops_once_go_on_says_so() -> None:
    fake = FakeProducer()
    producer = PacedProducer(
        _settings(),
        _stream(None),
        1e6,
        go_on=lambda produced: produced < 25,
        producer=fake,  # type: ignore[arg-type]
    )
    producer.start()
    producer.wait(10.0)
    assert producer.produced >= 25 and not producer.exhausted.is_set()


def test_paced_producer_reports_what_broke_it() -> None:
    def broken() -> Iterator[Planned]:
        yield from _stream(2)
        raise ValueError("no more")

    producer = PacedProducer(_settings(), broken(), 1e6, producer=FakeProducer())  # type: ignore[arg-type]
    producer.start()
    with pytest.raises(RuntimeError, match="no more"):
        producer.wait(10.0)


PAGE = """# TYPE xdrec_events_consumed_total counter
xdrec_events_consumed_total{topic="a",partition="0"} 3.0
xdrec_events_consumed_total{topic="a",partition="1"} 4.0
# TYPE xdrec_consumer_lag_messages gauge
xdrec_consumer_lag_messages{topic="a",partition="0"} 2.0
"""


@pytest.fixture
def metrics_port() -> Iterator[int]:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_metrics_poller_sums_samples_and_keeps_the_last_good_read(metrics_port: int) -> None:
    poller = MetricsPoller(metrics_port, 0.05)
    assert poller.poll() == {"xdrec_events_consumed_total": 7.0, "xdrec_consumer_lag_messages": 2.0}
    assert guarantees.scrape(metrics_port) == poller.last
    gone = MetricsPoller(1, 0.05)  # nothing listens on port 1
    assert gone.poll() == {} and gone.failures == 1


def test_metrics_poller_reads_on_its_own_thread(metrics_port: int) -> None:
    pages: list[float] = []

    class Counting(MetricsPoller):
        def keep(self, text: str, at: float) -> bool:
            pages.append(at)
            return super().keep(text, at)

    poller = Counting(metrics_port, 0.02)
    poller.start()
    time.sleep(0.3)
    poller.stop()
    assert len(pages) >= 3 and not poller.is_alive()
    assert poller.last["xdrec_events_consumed_total"] == 7.0
