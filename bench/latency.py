"""Event-time-to-output latency at a steady rate, for the worker and for the bare client.

A paced producer writes events whose event time is the moment each one is produced
(``time.time()`` in this process); a reader in this process takes ``time.time()`` when each
output message is handed to it and keeps the difference. Both are this process's wall clock,
so no clock skew enters. The reader waits for one message with ``poll()`` and then drains what
is already queued, so a message is timestamped when it arrives, not when a batch read times
out. The producer first sends warm-up events and waits for their outputs, so neither its own
connection set-up (an idempotent producer's id) nor the consumer's start is in the figures.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Message, Producer

from bench.harness import REPO, Context, Outcome, RowSpec, child_env
from stream.data.sample import sample_items
from stream.devtools.supervisor import ChildProcess
from stream.kafka.transport import (
    OutgoingMessage,
    make_producer,
    produce_all,
)
from stream.settings import Settings, settings_env
from testkit.kafka_io import PacedProducer, Planned, TopicFollower, create_topic, event_stream

XDREC_P50 = "xdrec_latency_p50_ms"
XDREC_P99 = "xdrec_latency_p99_ms"
CEILING_P50 = "ceiling_confluent_latency_p50_ms"
CEILING_P99 = "ceiling_confluent_latency_p99_ms"
TARGET_P99_MS = 100.0
RUN_PREFIX = "lat-"
WARM_PREFIX = "warm-"
_RATE = (
    "at half the events/s the same worker just reached on the 10k-catalog row, for {seconds} "
    "after half as long uncounted at that rate (the broker's JIT settles); "
    "events keyed over the same 2,000 users and source catalogs, event time = the wall-clock "
    "time each is produced (this process), latency = this process's wall clock when the "
    "recommendation reaches its reader minus the trigger's `event_time`"
)
_PEER = (
    "the bare confluent-kafka forwarder of the ceiling row (consume, `json.loads`/`dumps`, "
    "produce with xdrec's producer settings) given xdrec's batching, `consume(500, "
    "timeout=0.2)` (as `worker.batch_size` and `batch_within_seconds`; its throughput setting "
    "of 0.5 s would only add waiting), at the same rate and durations, over books events; "
    "latency = forwarded event read minus its event time, same clock"
)


def row_specs(seconds: str) -> tuple[RowSpec, ...]:
    """The four latency rows; ``seconds`` names the duration of each paced run."""
    rate = _RATE.format(seconds=seconds)
    return (
        RowSpec(
            XDREC_P50,
            "ms",
            CEILING_P50,
            f"median event-time-to-recommendation latency of the 10k-catalog `xdrec worker` {rate}",
        ),
        RowSpec(
            XDREC_P99,
            "ms",
            CEILING_P99,
            f"99th percentile of the same latencies; target <= {TARGET_P99_MS:.0f} ms",
        ),
        RowSpec(CEILING_P50, "ms", None, f"median produce-to-consume latency of {_PEER}"),
        RowSpec(CEILING_P99, "ms", None, "99th percentile of the same latencies"),
    )


def live_events(
    settings: Settings,
    users: int,
    items: dict[str, Sequence[str]],
    prefix: str,
    seed: int,
) -> Iterator[Planned]:
    """Endless valid UserEvents whose event time is the moment each is generated, which the
    paced producer does right before producing it."""
    ordered = {domain: items[domain] for domain in sorted(items)}
    return event_stream(settings, ordered, users, seed, id_prefix=prefix)


def trigger_of_recommendation(document: dict[str, Any]) -> tuple[str, float]:
    trigger = document["trigger"]
    return trigger["event_id"], trigger["event_time"]


def trigger_of_event(document: dict[str, Any]) -> tuple[str, float]:
    return document["event_id"], document["timestamp"]


class LatencyReader(TopicFollower):
    """Reads ``topic`` from its current end; per message: (event id, now - event time)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        trigger: Callable[[dict[str, Any]], tuple[str, float]],
    ) -> None:
        super().__init__(
            settings, [topic], name=f"latency-{topic}", from_end=True, fetch_wait_ms=10
        )
        self.trigger = trigger
        self.samples: list[tuple[str, float]] = []

    def receive(self, messages: list[Message], at: float, wall: float) -> None:
        for message in messages:
            event_id, event_time = self.trigger(json.loads(message.value()))
            self.samples.append((event_id, wall - event_time))

    def received(self, prefix: str) -> int:
        return sum(1 for event_id, _ in list(self.samples) if event_id.startswith(prefix))


@dataclass(frozen=True, slots=True)
class Latencies:
    """The latencies of one paced run, in ms, and how many outputs were expected."""

    values_ms: np.ndarray
    expected: int
    produced_s: float

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.values_ms, q))

    def detail(self, rate: float) -> str:
        return (
            f"{len(self.values_ms):,}/{self.expected:,} events at {rate:,.0f}/s over "
            f"{self.produced_s:.1f}s; max {float(np.max(self.values_ms)):.0f} ms"
        )


def paced_latencies(
    settings: Settings,
    output_topic: str,
    stream: Iterator[Planned],
    warm_up: list[OutgoingMessage],
    trigger: Callable[[dict[str, Any]], tuple[str, float]],
    rate: float,
    seconds: float,
    alive: Callable[[], bool],
    start_timeout: float = 120.0,
    samples_file: Path | None = None,
    settle_seconds: float = 0.0,
) -> Latencies:
    """Produce ``rate * seconds`` events of ``stream`` at ``rate`` and read their outputs.

    ``warm_up`` (ids starting with ``warm-``) goes first through the same producer, and the
    run starts once all their outputs are read. Then ``settle_seconds`` of the stream at the
    same rate go uncounted: a freshly started broker compiles its hot code for the first tens
    of seconds of a new load (its JIT took a third of a core here), and the figure is meant
    for the steady state. ``samples_file`` gets every counted latency in production order, to
    look at a run afterwards."""
    reader = LatencyReader(settings, output_topic, trigger)
    reader.start()
    planned = max(1, int(rate * seconds))
    settled: set[str] = set()  # ids of the settling events
    try:
        if not reader.ready.wait(30.0) or reader.error is not None:
            raise RuntimeError(f"reader of {output_topic} did not start: {reader.error}")
        producer = make_producer(settings)
        produce_all(producer, warm_up)
        deadline = time.monotonic() + start_timeout
        while reader.received(WARM_PREFIX) < len(warm_up):
            if time.monotonic() > deadline or not alive() or reader.error is not None:
                raise RuntimeError(
                    f"{reader.received(WARM_PREFIX)}/{len(warm_up)} warm-up events came "
                    f"through in {start_timeout:.0f}s (alive: {alive()}, error: {reader.error})"
                )
            time.sleep(0.05)
        settling = int(rate * settle_seconds)
        if settling:
            _pace(settings, _recording(stream, settled), rate, settling, producer, settle_seconds)
        pacer = _pace(settings, stream, rate, planned, producer, seconds)
        deadline = time.monotonic() + 30.0
        while reader.received(RUN_PREFIX) < planned + settling and time.monotonic() < deadline:
            if not alive() or reader.error is not None:
                break
            time.sleep(0.05)
    finally:
        reader.stop()
    if reader.error is not None:
        raise RuntimeError(f"reading {output_topic} failed: {reader.error}") from reader.error
    seen: dict[str, float] = {}
    for event_id, latency in reader.samples:
        if event_id.startswith(RUN_PREFIX) and event_id not in settled:
            seen.setdefault(event_id, latency)  # a redelivered output counts once, the first
    if samples_file is not None:
        ordered = sorted(seen.items())
        samples_file.write_text(
            json.dumps({"rate": rate, "ms": [round(1000 * v, 1) for _, v in ordered]}) + "\n"
        )
    if len(seen) < planned:
        raise RuntimeError(f"{len(seen)}/{planned} outputs read within 30s of the last event")
    assert pacer.started_at is not None and pacer.finished_at is not None
    produced = pacer.finished_at - pacer.started_at
    return Latencies(1000.0 * np.fromiter(seen.values(), dtype=float), planned, produced)


def settle_seconds(ctx: Context) -> float:
    """Uncounted seconds at the paced rate before each latency run: half the counted ones."""
    return ctx.sizes.latency_seconds / 2


def _recording(stream: Iterator[Planned], ids: set[str]) -> Iterator[Planned]:
    """``stream``, noting the id of each event taken from it."""
    for planned in stream:
        if planned.event_id is not None:
            ids.add(planned.event_id)
        yield planned


def _pace(
    settings: Settings,
    stream: Iterator[Planned],
    rate: float,
    limit: int,
    producer: Producer,
    seconds: float,
) -> PacedProducer:
    """Produce ``limit`` events of ``stream`` at ``rate``; returns once all are acknowledged."""
    pacer = PacedProducer(
        settings,
        stream,
        rate,
        limit=limit,
        producer=producer,
        tick_s=0.001,
        flush_s=30.0,
        name="latency-pacer",
    )
    pacer.start()
    pacer.join(seconds + 90.0)
    if pacer.error is not None:
        raise RuntimeError(f"producing events failed: {pacer.error}") from pacer.error
    if pacer.failures:
        raise RuntimeError(f"{len(pacer.failures)} events not acknowledged")
    return pacer


def warm_up_events(
    settings: Settings, items: dict[str, Sequence[str]], count: int = 20
) -> list[OutgoingMessage]:
    """Events that prepare the path under test; their outputs are not counted."""
    stream = live_events(settings, 50, items, WARM_PREFIX, seed=4)
    return [next(stream).message for _ in range(count)]


def outcomes(
    latencies: Latencies | Exception, p50: str, p99: str, rate: float, note: str = ""
) -> dict[str, Outcome]:
    """The two percentile rows of one paced run (both failed with its error)."""
    if isinstance(latencies, Exception):
        error = f"{type(latencies).__name__}: {latencies}"
        return {p50: Outcome.failed(error), p99: Outcome.failed(error)}
    detail = latencies.detail(rate) + (f"; {note}" if note else "")
    return {
        p50: Outcome(latencies.percentile(50), detail=detail),
        p99: Outcome(latencies.percentile(99), detail=detail),
    }


def measure_ceiling(ctx: Context, rate: float, seconds: float) -> Latencies:
    """The peer: the bare forwarder at ``rate``, with the worker's batch size and window."""
    settings = ctx.settings("ceiling_latency")
    source = settings.topics.events("books")
    output = f"{settings.topics.prefix}forwarded"
    create_topic(settings, output, ctx.partitions)
    books = [item["item_id"] for item in sample_items() if item["domain"] == "books"]
    child = ChildProcess(
        [
            sys.executable,
            "-m",
            "bench.confluent_forward",
            "--source",
            source,
            "--output",
            output,
            "--group",
            settings.app_id,
            "--batch",
            str(settings.worker.batch_size),
            "--timeout",
            str(settings.worker.batch_within_seconds),
        ],
        ctx.scratch("ceiling_latency") / "child.log",
        child_env(settings_env(settings)),
        cwd=REPO,
    )
    try:
        child.start()
        try:
            return paced_latencies(
                settings,
                output,
                live_events(settings, ctx.sizes.worker_users, {"books": books}, RUN_PREFIX, 5),
                warm_up_events(settings, {"books": books}),
                trigger_of_event,
                rate,
                seconds,
                child.alive,
                ctx.sizes.start_timeout_s,
                ctx.scratch("ceiling_latency") / "latency_samples.json",
                settle_seconds(ctx),
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; log {child.log_file}:\n{child.tail()}") from exc
    finally:
        child.stop()
