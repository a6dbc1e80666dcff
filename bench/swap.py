"""Hot swap under load: how long the worker's event loop stalls while a new model version is
prepared and swapped in, and how soon the first recommendation of that version comes out.

``python -m bench.swap --json OUT.json`` starts a local broker of its
own (or uses ``--bootstrap-servers``), builds a movies catalog of the bundled sample items padded
with synthetic ones (so the new version has a realistic number of items to project), trains a
small model of the sample catalog, starts one real ``xdrec worker`` and streams books and music
events at a steady rate. Half-way through, the trained version is announced with a ModelUpdate.
Meanwhile the worker's /metrics is read every 100 ms and every recommendation is consumed.

Every event is a positive-weight books or music event of a sample item, and the only route is
movies <- books, music with ``every_n_events`` 1: under the zero-shot v0 and under the trained
version alike (all its history items are in the model's item space) each event must yield
exactly one recommendation on ``recs.movies``. The figures written:

- ``events``: events produced (at least ``--events``: the stream goes on until the settle window
  after the first new-version recommendation has passed, so the swap is always under load);
  ``lost``: events without a recommendation; ``duplicated``: recommendation ids consumed more
  than once (``reprocessed``: events with several distinct recommendation ids).
- ``stall_ms_max``: the largest ``xdrec_event_loop_lag_max_seconds`` read from just before the
  ModelUpdate was sent until ``settle_s`` (2 s) after the first new-version recommendation was
  consumed. The gauge is a maximum over the worker's last 10 s, so a value read early in the
  window can still include lag from up to 10 s before the swap: read it next to
  ``baseline_stall_ms_max``, the same gauge read during steady load before the swap, and
  next to ``stall_ms_new_max`` (the largest value the gauge rose to within the window: a lag
  that certainly happened inside it; null if it never rose) and ``stall_ms_bound`` (the upper
  bound of the highest histogram bucket that gained observations in the window: no lag
  inside it was longer). Every ``baseline_`` figure is the same over the steady stream before
  the ModelUpdate.
- ``stall_ms_p99``: the 99th percentile of the loop lag in the same window, from the
  deltas of the ``xdrec_event_loop_lag_seconds`` buckets, interpolated linearly within the
  bucket as Prometheus' ``histogram_quantile`` does (``baseline_stall_ms_p99`` likewise).
- ``rec_latency_ms_max`` and ``rec_latency_ms_p99``: what users feel, which the loop-lag gauge
  does not show because batches run in the worker's runtime process (a version prepared there
  pauses them without delaying faust's loop): from producing an event to this process
  consuming its recommendation, over the events produced within the stall window, in ms.
  ``baseline_rec_latency_ms_max`` / ``_p99``: the same over the events produced from
  ``warmup_s`` (2 s, at most half the steady stream) after the stream's start until the
  ModelUpdate was sent. Unlike the stall baselines they leave the warm-up out: a fresh
  worker's first second or so of batches is slower and would set the baseline's max;
  ``warmup_rec_latency_ms_max`` is the largest latency left out, and ``rec_latency_events``
  counts the events of each window. Both ends are this process's clock: the time the paced
  producer draws an event, right before producing it, and the time the poll that returned its
  recommendation came back (the first copy, if doubled). Not the recommendation's
  ``trigger.event_time``: these events carry synthetic timestamps starting a day before the
  run (10 ms apart), which say nothing of when they were produced.
- ``swap_to_first_new_rec_ms``: from the broker's acknowledgement of the ModelUpdate to this
  process consuming the first recommendation of the new version (what a consumer sees);
  ``swap_to_first_new_rec_generated_ms`` uses that recommendation's ``generated_at`` instead
  (the worker's clock, same host), which leaves out producing and fetching it.
- ``versions_in_order``: within each source partition, in offset order, recommendations carry
  the old version and then only the new one, and none generated before the acknowledgement
  carries the new one.

Benchmarks are measurements, not tests: a slow figure never fails the run; a lost or doubled
event, or a version that never arrives, makes the exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Message
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import FULL, REPO, Context, Outcome, RowSpec
from bench.standalone import add_run_arguments, run_benchmark
from schemas import SCHEMA_VERSION, CatalogItem
from stream.catalog.encoder import TextEncoder
from stream.core.items import item_text
from stream.data.sample import sample_items
from stream.devtools.supervisor import WorkerProcess
from stream.settings import Settings
from testkit.artifacts import space_text, train_sample_artifact
from testkit.guarantees import store_items
from testkit.kafka_io import (
    MetricsPoller,
    PacedProducer,
    Planned,
    TopicFollower,
    event_stream,
    publish_catalog,
)
from training.publisher import model_update_for, publish_update

log = logging.getLogger("bench.swap")

SOURCES = ("books", "music")
TARGET = "movies"
OLD_VERSION = "v0"
NEW_VERSION = "v1"
STALL_TARGET_MS = 50.0
LAG_MAX = "xdrec_event_loop_lag_max_seconds"
LAG_HISTOGRAM = "xdrec_event_loop_lag_seconds"

STALL_ROW = "xdrec_swap_loop_stall_ms_max"
STEADY_ROW = "xdrec_steady_loop_stall_ms_max"
REC_LATENCY_ROW = "xdrec_swap_rec_latency_ms_max"
STEADY_REC_LATENCY_ROW = "xdrec_steady_rec_latency_ms_max"
REC_LATENCY_P99_ROW = "xdrec_swap_rec_latency_ms_p99"
STEADY_REC_LATENCY_P99_ROW = "xdrec_steady_rec_latency_ms_p99"
FIRST_REC_ROW = "xdrec_swap_to_first_new_rec_ms"
NEEDS_BROKER = True
_SETUP = (
    f"one `xdrec worker`, route movies <- books,music, {FULL.swap_events_per_s:.0f} events/s "
    "(about half what it sustains) over sample items, "
    "movies catalog of 10,000 items (sample + synthetic); a model trained on the sample "
    "catalog is announced half-way through the stream; /metrics read every 100 ms"
)
ROWS = (
    RowSpec(
        STEADY_ROW,
        "ms",
        None,
        "largest `xdrec_event_loop_lag_max_seconds` (a 10 s max of how late a 5 ms timer "
        "fires on the event loop of the worker's faust process; the batch work runs in its "
        "runtime process, whose pauses the rec_latency rows show) during steady load before "
        "the swap; " + _SETUP,
    ),
    RowSpec(
        STALL_ROW,
        "ms",
        STEADY_ROW,
        "the same gauge, largest value from just before the ModelUpdate until 2 s after the "
        "first recommendation of the new version; target <= 50 ms. Notes: p99 from the "
        "histogram's bucket deltas, the largest value the gauge rose to inside the window (the "
        "max can stem from up to 10 s before it) and the highest bucket bound reached",
    ),
    RowSpec(
        STEADY_REC_LATENCY_ROW,
        "ms",
        None,
        "largest latency from producing an event to consuming its recommendation (both on "
        "the bench's clock), over the events produced during steady load before the swap "
        "(the stream's first 2 s of warm-up left out): unlike the loop lag, it shows batches "
        "paused in the worker's runtime process",
    ),
    RowSpec(
        REC_LATENCY_ROW,
        "ms",
        STEADY_REC_LATENCY_ROW,
        "the same latency, largest over the events produced from just before the ModelUpdate "
        "until 2 s after the first recommendation of the new version",
    ),
    RowSpec(
        STEADY_REC_LATENCY_P99_ROW,
        "ms",
        None,
        "99th percentile of the same latencies during steady load before the swap",
    ),
    RowSpec(
        REC_LATENCY_P99_ROW,
        "ms",
        STEADY_REC_LATENCY_P99_ROW,
        "99th percentile of the same latencies over the swap window",
    ),
    RowSpec(
        FIRST_REC_ROW,
        "ms",
        None,
        "ModelUpdate acknowledged by the broker to the first recommendation of the new "
        "version consumed from recs.movies (validation, projection of the catalog and the "
        "swap between two batches included)",
    ),
)


@dataclass(frozen=True, slots=True)
class SwapPlan:
    """What one run does; the defaults keep the worker at about half the rate it sustains."""

    events: int = 6_000
    rate: float = 400.0
    catalog_items: int = 10_000  # movies, the target: sample items plus synthetic ones
    users: int = 500
    settle_s: float = 2.0
    warmup_s: float = 2.0  # of the stream, left out of the baseline recommendation latency
    poll_s: float = 0.1
    start_timeout_s: float = 300.0
    seed: int = 7


def settings_overrides(workdir: Path) -> dict[str, Any]:
    """The deployment under test: one route, a recommendation per event, models in workdir."""
    return {
        "domains": [*SOURCES, TARGET],
        "recommendations": {"routes": {TARGET: list(SOURCES)}, "top_k": 10, "every_n_events": 1},
        "models": {"store": str(workdir / "models")},
        "worker": {"state_dir": str(workdir / "state")},
        "metrics": {"port": 0},
    }


def _catalog_items(catalog_items: int) -> list[CatalogItem]:
    """The sample catalog, with the movies padded to ``catalog_items`` synthetic variants."""
    items = [CatalogItem(schema_version=SCHEMA_VERSION, **item) for item in sample_items()]
    movies = [item for item in items if item.domain == TARGET]
    items += [
        CatalogItem(
            schema_version=SCHEMA_VERSION,
            item_id=f"{TARGET}-pad{number:06d}",
            domain=TARGET,
            title=f"{movies[number % len(movies)].title} {number}",
            text=movies[number % len(movies)].text,
        )
        for number in range(max(0, catalog_items - len(movies)))
    ]
    return items


def fill_item_store(
    settings: Settings, encoder: TextEncoder, items: list[CatalogItem], seed: int
) -> dict[tuple[str, str], np.ndarray]:
    """Write ``items`` into the worker's item store, so that the worker encodes nothing.

    Random unit vectors under the real encoder's fingerprint, as for the throughput rows: what
    the new version costs to prepare depends on how many items it projects, not on their
    values. Returns the vector of every item.
    """
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(items), encoder.dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [item_text(item.title, item.text) for item in items]
    store_items(settings, settings.worker.name, encoder, items, texts, vectors)
    return {(item.domain, item.item_id): vectors[n] for n, item in enumerate(items)}


def publish_and_train(
    settings: Settings, items: list[CatalogItem], text: np.ndarray, store: Path
) -> Path:
    """What runs beside the worker's start: the catalog topics and the new version."""
    publish_catalog(settings, items)
    # One epoch: the quality of the model does not change what it costs to swap it in.
    return train_sample_artifact(store, NEW_VERSION, text=text, epochs=1)


def events(settings: Settings, users: int, seed: int) -> Iterator[Planned]:
    """An endless stream of positive-weight books/music events of sample items, keyed by user."""
    items = {d: [i["item_id"] for i in sample_items() if i["domain"] == d] for d in SOURCES}
    return event_stream(
        settings,
        items,
        users,
        seed,
        id_prefix=f"swap{seed}-",
        user_digits=5,
        start_ts=time.time() - 86_400,
        step_s=0.01,
    )


def recorded(
    stream: Iterator[Planned], event_ids: list[str], produced_at: list[float] | None = None
) -> Iterator[Planned]:
    """``stream``, noting each event's id as it is drawn: the paced producer draws a record
    right before producing it, so ``event_ids`` are the events produced, in order, and
    ``produced_at`` (perf_counter at the draw) when each was produced."""
    for planned in stream:
        if produced_at is not None:
            produced_at.append(time.perf_counter())
        event_ids.append(planned.event_id or "")
        yield planned


@dataclass(frozen=True, slots=True)
class LagSample:
    """One read of /metrics: when (parent's perf_counter), the 10 s max gauge, the buckets."""

    at: float
    lag_max: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last


def parse_lag(text: str, at: float) -> LagSample | None:
    """The loop-lag gauge and histogram out of one /metrics page (None if absent)."""
    lag_max: float | None = None
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        if family.name == LAG_MAX:
            lag_max = family.samples[0].value
        elif family.name == LAG_HISTOGRAM:
            buckets = [
                (float(s.labels["le"]), s.value)
                for s in family.samples
                if s.name.endswith("_bucket")
            ]
    if lag_max is None or not buckets:
        return None
    return LagSample(at, lag_max, tuple(sorted(buckets)))


class LagPoller(MetricsPoller):
    """Reads the worker's /metrics every ``interval`` seconds and keeps the loop-lag samples."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(port, interval, name="swap-metrics")
        self.samples: list[LagSample] = []

    def keep(self, text: str, at: float) -> bool:
        sample = parse_lag(text, at)
        if sample is None:
            log.warning("metrics page without %s port=%s", LAG_MAX, self.port)
            return False
        self.samples.append(sample)
        return True


@dataclass(frozen=True, slots=True)
class Received:
    """What this benchmark keeps of one consumed recommendation."""

    at: float  # parent's perf_counter when consumed
    wall: float  # and its wall clock, to compare with generated_at
    recommendation_id: str
    model_version: str
    event_id: str
    source: tuple[str, int]
    offset: int
    generated_at: float


class RecCollector(TopicFollower):
    """Reads every partition of the recommendation topics from the start, timestamping each."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        super().__init__(settings, topics, name="swap-recs")
        self.received: list[Received] = []
        self.first_new_at: float | None = None

    def receive(self, messages: list[Message], at: float, wall: float) -> None:
        for message in messages:
            self._keep(json.loads(message.value()), at, wall)

    def _keep(self, rec: dict[str, Any], now: float, wall: float) -> None:
        trigger = rec["trigger"]
        received = Received(
            at=now,
            wall=wall,
            recommendation_id=rec["recommendation_id"],
            model_version=rec["model_version"],
            event_id=trigger["event_id"],
            source=(trigger["topic"], trigger["partition"]),
            offset=trigger["offset"],
            generated_at=rec["generated_at"],
        )
        if received.model_version != OLD_VERSION and self.first_new_at is None:
            self.first_new_at = now
        self.received.append(received)

    def count(self) -> int:
        return len(self.received)


def histogram_quantile(
    q: float, start: tuple[tuple[float, float], ...], end: tuple[tuple[float, float], ...]
) -> float | None:
    """The ``q`` quantile of the observations between two reads of cumulative buckets, with
    linear interpolation inside the bucket (Prometheus' ``histogram_quantile``)."""
    bounds = [bound for bound, _ in end]
    before = dict(start)
    counts = [count - before.get(bound, 0.0) for bound, count in end]
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower  # the highest finite bound, as Prometheus answers
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, cumulative
    return lower


def _window(samples: list[LagSample], start: float, end: float) -> list[LagSample]:
    """The reads in [start, end], plus the last one before ``start`` as the histogram base."""
    inside = [s for s in samples if start <= s.at <= end]
    before = [s for s in samples if s.at < start]
    return ([before[-1]] if before else []) + inside


def highest_bucket(
    start: tuple[tuple[float, float], ...], end: tuple[tuple[float, float], ...]
) -> float | None:
    """The upper bound of the highest bucket that gained observations: no lag between the two
    reads was longer (the largest finite bound stands for the +Inf bucket)."""
    before = dict(start)
    highest = None
    lower = 0.0
    previous = 0.0
    for bound, count in end:
        gained = count - before.get(bound, 0.0)
        if gained > previous:
            highest = bound if bound != float("inf") else lower
        lower, previous = bound, gained
    return highest


def lag_figures(samples: list[LagSample], start: float, end: float) -> dict[str, Any]:
    """Loop lag between ``start`` and ``end`` (parent's clock), in ms.

    ``max``: the largest gauge value read, which may stem from up to 10 s before ``start``;
    ``new_max``: the largest value the gauge rose to between two reads, so certainly a lag
    inside the window (None when it never rose); ``bound``: no lag inside was longer;
    ``p99``: from the bucket deltas.
    """
    window = _window(samples, start, end)
    inside = [s for s in window if s.at >= start]
    if not inside or len(window) < 2:
        return {"max": None, "new_max": None, "bound": None, "p99": None, "reads": len(inside)}
    first, last = window[0].buckets, window[-1].buckets
    p99 = histogram_quantile(0.99, first, last)
    bound = highest_bucket(first, last)
    rises = [b.lag_max for a, b in pairwise(window) if b.lag_max > a.lag_max]
    return {
        "max": 1000.0 * max(s.lag_max for s in inside),
        "new_max": 1000.0 * max(rises) if rises else None,
        "bound": None if bound is None else 1000.0 * bound,
        "p99": None if p99 is None else 1000.0 * p99,
        "reads": len(inside),
    }


def rec_latency_figures(
    sent: list[str],
    produced_at: list[float],
    received: list[Received],
    start: float,
    end: float,
) -> dict[str, Any]:
    """Latency (ms) from producing an event to consuming its recommendation, over the events
    produced in [start, end) (perf_counter, as ``produced_at`` and ``Received.at``).

    Each event counts once, by its first recommendation consumed; a lost one has no latency
    (``lost`` reports it). ``max``/``p99`` are None when no event of the window has one.
    """
    first: dict[str, float] = {}
    for rec in received:
        if rec.event_id not in first or rec.at < first[rec.event_id]:
            first[rec.event_id] = rec.at
    latencies = [
        1000.0 * (first[event_id] - at)
        for event_id, at in zip(sent, produced_at, strict=True)
        if start <= at < end and event_id in first
    ]
    if not latencies:
        return {"max": None, "p99": None, "events": 0}
    return {
        "max": max(latencies),
        "p99": float(np.percentile(latencies, 99)),
        "events": len(latencies),
    }


def check_versions(received: list[Received], acked_wall: float) -> tuple[bool, str]:
    """Old version then only the new one within each source partition, in offset order; and
    nothing of the new version generated before the update was acknowledged."""
    by_partition: dict[tuple[str, int], list[Received]] = defaultdict(list)
    for rec in {r.recommendation_id: r for r in received}.values():
        by_partition[rec.source].append(rec)
    for source, recs in sorted(by_partition.items()):
        versions = [r.model_version for r in sorted(recs, key=lambda r: r.offset)]
        switched = next((n for n, v in enumerate(versions) if v != OLD_VERSION), len(versions))
        if any(v != NEW_VERSION for v in versions[switched:]):
            after = ",".join(dict.fromkeys(versions[switched:]))
            return False, f"{source[0]}:{source[1]}: versions after the switch: {after}"
    early = [r for r in received if r.model_version != OLD_VERSION and r.generated_at < acked_wall]
    if early:
        return False, f"{len(early)} recommendations of {NEW_VERSION} before the update's ack"
    return True, "ok"


@dataclass
class Timeline:
    """The parent's clock readings of one run (perf_counter, and wall time of the ack)."""

    update_sent: float = 0.0
    update_acked: float = 0.0
    update_acked_wall: float = 0.0
    stream_started: float = 0.0
    stream_started_wall: float = 0.0
    first_new_rec: float | None = None
    notes: list[str] = field(default_factory=list)


def _prepare_seconds(log_text: str) -> float | None:
    found = re.findall(rf"model projected version={NEW_VERSION} .*seconds=([0-9.]+)", log_text)
    return float(found[-1]) if found else None


def figures(
    plan: SwapPlan,
    sent: list[str],
    produced_at: list[float],
    received: list[Received],
    samples: list[LagSample],
    first_new_at: float | None,
    times: Timeline,
    worker_log: str,
) -> dict[str, Any]:
    """The JSON of a run, the product issue's keys first; ``produced_at``: when each event of
    ``sent`` was produced (perf_counter)."""
    ids_per_event: dict[str, set[str]] = defaultdict(set)
    copies: dict[str, int] = defaultdict(int)
    for rec in received:
        ids_per_event[rec.event_id].add(rec.recommendation_id)
        copies[rec.recommendation_id] += 1
    lost = sum(1 for event_id in sent if event_id not in ids_per_event)
    duplicated = sum(count - 1 for count in copies.values())
    unexpected = len(set(ids_per_event) - set(sent))
    baseline = lag_figures(samples, times.stream_started, times.update_sent)
    swap = lag_figures([], 0.0, 0.0)
    steady_from = times.stream_started + min(
        plan.warmup_s, (times.update_sent - times.stream_started) / 2
    )
    warmup_latency = rec_latency_figures(
        sent, produced_at, received, times.stream_started, steady_from
    )
    baseline_latency = rec_latency_figures(
        sent, produced_at, received, steady_from, times.update_sent
    )
    swap_latency = rec_latency_figures([], [], [], 0.0, 0.0)
    to_first: float | None = None
    to_first_generated: float | None = None
    if first_new_at is not None:
        swap = lag_figures(samples, times.update_sent, first_new_at + plan.settle_s)
        swap_latency = rec_latency_figures(
            sent, produced_at, received, times.update_sent, first_new_at + plan.settle_s
        )
        to_first = 1000.0 * (first_new_at - times.update_acked)
        generated = min(r.generated_at for r in received if r.model_version != OLD_VERSION)
        to_first_generated = 1000.0 * (generated - times.update_acked_wall)
    in_order, order_detail = check_versions(received, times.update_acked_wall)
    by_version: dict[str, int] = defaultdict(int)
    for rec in {r.recommendation_id: r for r in received}.values():
        by_version[rec.model_version] += 1
    elapsed = (times.update_acked - times.stream_started) if times.stream_started else None
    delays = [r.wall - r.generated_at for r in received]
    return {
        "events": len(sent),
        "lost": lost,
        "duplicated": duplicated,
        "stall_ms_max": swap["max"],
        "stall_ms_p99": swap["p99"],
        "swap_to_first_new_rec_ms": to_first,
        "swap_to_first_new_rec_generated_ms": to_first_generated,
        "baseline_stall_ms_max": baseline["max"],
        "baseline_stall_ms_p99": baseline["p99"],
        "stall_ms_new_max": swap["new_max"],
        "stall_ms_bound": swap["bound"],
        "baseline_stall_ms_new_max": baseline["new_max"],
        "baseline_stall_ms_bound": baseline["bound"],
        "stall_target_ms": STALL_TARGET_MS,
        "rec_latency_ms_max": swap_latency["max"],
        "rec_latency_ms_p99": swap_latency["p99"],
        "baseline_rec_latency_ms_max": baseline_latency["max"],
        "baseline_rec_latency_ms_p99": baseline_latency["p99"],
        "warmup_rec_latency_ms_max": warmup_latency["max"],
        "rec_latency_events": {
            "warmup": warmup_latency["events"],
            "baseline": baseline_latency["events"],
            "swap": swap_latency["events"],
        },
        "reprocessed": sum(1 for ids in ids_per_event.values() if len(ids) > 1),
        "unexpected_recs": unexpected,
        "version_before": OLD_VERSION,
        "version_after": NEW_VERSION if first_new_at is not None else None,
        "recs_by_version": dict(sorted(by_version.items())),
        "versions_in_order": in_order,
        "versions_detail": order_detail,
        "model_prepare_s": _prepare_seconds(worker_log),
        "rec_delay_ms_p50": 1000.0 * float(np.median(delays)) if delays else None,
        "rate_events_per_s": plan.rate,
        "update_after_s": elapsed,
        "catalog_items": max(plan.catalog_items, len(_sample_movies())),  # movies
        "metrics_reads": {"baseline": baseline["reads"], "swap": swap["reads"]},
        "notes": times.notes,
    }


def _sample_movies() -> list[str]:
    return [i["item_id"] for i in sample_items() if i["domain"] == TARGET]


def _say(message: str) -> None:
    print(f"swap: {message}", flush=True)


def measure(
    settings: Settings,
    plan: SwapPlan,
    scratch: Path,
    encoder: TextEncoder | None = None,
    progress: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Run the swap under load on ``settings`` (topics created, routes and models store as in
    :func:`settings_overrides`) and return the figures; raises if the worker cannot start."""
    started = time.perf_counter()

    def step(message: str) -> None:
        progress(f"[{time.perf_counter() - started:5.1f}s] {message}")

    if encoder is None:
        step("loading the encoder")
        encoder = TextEncoder(max_length=settings.encoder.max_length, device="cpu")
    step(f"catalog: sample items + movies padded to {plan.catalog_items:,}")
    items = _catalog_items(plan.catalog_items)
    vectors = fill_item_store(settings, encoder, items, plan.seed)
    store = Path(settings.models.store)
    store.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(settings, scratch / "worker.log", cwd=REPO)
    step(f"starting the worker (log {worker.log_file}); training {NEW_VERSION} meanwhile")
    # Neither is measured: publishing the catalog and training use the time the worker spends
    # importing, loading its encoder and joining the group.
    times = Timeline()
    poller: LagPoller | None = None
    collector: RecCollector | None = None
    producer: PacedProducer | None = None
    sent: list[str] = []  # ids of the events produced, in order
    produced_at: list[float] = []  # and when each was drawn to be produced (perf_counter)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="swap-train") as pool:
            trained = pool.submit(publish_and_train, settings, items, space_text(vectors), store)
            worker.start(timeout=plan.start_timeout_s)
            update = model_update_for(trained.result())
        poller = LagPoller(worker.metrics_port(), plan.poll_s)
        poller.start()
        collector = RecCollector(settings, [settings.topics.recs(TARGET)])
        collector.start()
        if not collector.ready.wait(30.0) or collector.error is not None:
            raise RuntimeError(f"recommendation reader did not start: {collector.error}")
        rec_reader = collector

        def go_on(produced: int) -> bool:
            # The planned events, then on until the settle window after the first new version.
            first = rec_reader.first_new_at
            return (
                produced < plan.events
                or first is None
                or time.perf_counter() < first + plan.settle_s
            )

        limit = plan.events + int(plan.rate * (60.0 + 2 * plan.settle_s))
        producer = PacedProducer(
            settings,
            recorded(events(settings, plan.users, plan.seed), sent, produced_at),
            plan.rate,
            limit=limit,
            go_on=go_on,
            flush_s=30.0,
            name="swap-producer",
        )
        step(f"streaming {plan.events:,} events at {plan.rate:,.0f}/s")
        producer.start()
        while producer.started_at is None and producer.is_alive():
            time.sleep(0.01)
        times.stream_started = producer.started_at or time.perf_counter()
        times.stream_started_wall = time.time() - (time.perf_counter() - times.stream_started)
        while producer.produced < plan.events // 2 and producer.is_alive():
            time.sleep(0.005)
        step(f"announcing {NEW_VERSION} after {producer.produced:,} events")
        times.update_sent = time.perf_counter()
        publish_update(settings, update)
        times.update_acked = time.perf_counter()
        times.update_acked_wall = time.time()
        log.info(
            "model update acknowledged version=%s seconds=%.3f",
            NEW_VERSION,
            times.update_acked - times.update_sent,
        )
        producer.join()
        if producer.error is not None:
            raise RuntimeError(f"producing events failed: {producer.error}") from producer.error
        if producer.failures:
            times.notes.append(f"{len(producer.failures)} produce failures: {producer.failures[0]}")
        if producer.produced >= limit:
            times.notes.append(f"no {NEW_VERSION} recommendation within the stream's limit")
        step(f"{len(sent):,} events produced; waiting for their recommendations")
        deadline = time.monotonic() + 30.0 + len(sent) / 200.0
        while collector.count() < len(sent) and time.monotonic() < deadline:
            if not worker.alive():
                times.notes.append(f"worker exited with code {worker.process.poll()}")
                break
            if collector.error is not None:
                raise RuntimeError(f"reading recommendations failed: {collector.error}")
            time.sleep(0.1)
        first_new_at = times.first_new_rec = collector.first_new_at
        if first_new_at is not None:
            while time.perf_counter() < first_new_at + plan.settle_s + plan.poll_s:
                time.sleep(0.05)
        time.sleep(0.5)  # late duplicates, if any, have a chance to show
        poller.poll()
        step("stopping the worker")
    finally:
        for thread in (producer, collector, poller):
            if thread is not None:
                thread.stop()
        worker.stop()
    result = figures(
        plan,
        sent,
        produced_at,
        list(collector.received),
        list(poller.samples),
        first_new_at,
        times,
        worker.log_file.read_text(errors="replace"),
    )
    if poller.failures:
        result["notes"].append(f"{poller.failures} failed /metrics reads")
    write_samples(scratch / "lag_samples.json", poller.samples, times)
    result["seconds"] = time.perf_counter() - started
    return result


def write_samples(path: Path, samples: list[LagSample], times: Timeline) -> None:
    """Every /metrics read, seconds from the stream's start, to look at a run afterwards."""
    origin = times.stream_started
    path.write_text(
        json.dumps(
            {
                "stream_started_unix": times.stream_started_wall,
                "update_sent_s": times.update_sent - origin,
                "update_acked_s": times.update_acked - origin,
                "first_new_rec_s": None
                if times.first_new_rec is None
                else times.first_new_rec - origin,
                "reads": [
                    {"s": round(s.at - origin, 3), "lag_max_ms": round(1000 * s.lag_max, 2)}
                    for s in samples
                ],
            }
        )
        + "\n"
    )


def problems(result: dict[str, Any]) -> list[str]:
    """What makes a run wrong (not slow): lost or doubled events, no new version, disorder."""
    found = []
    if result["lost"]:
        found.append(f"{result['lost']} events lost")
    if result["duplicated"]:
        found.append(f"{result['duplicated']} recommendations duplicated")
    if result["version_after"] is None:
        found.append(f"no recommendation of {NEW_VERSION} arrived")
    if not result["versions_in_order"]:
        found.append(f"versions out of order: {result['versions_detail']}")
    return found


def summary(result: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} ms"

    stall = result["stall_ms_max"]
    verdict = "n/a" if stall is None else ("met" if stall <= STALL_TARGET_MS else "missed")
    return (
        f"events={result['events']} lost={result['lost']} duplicated={result['duplicated']} "
        f"stall_max={ms(stall)} (new in window {ms(result['stall_ms_new_max'])}, "
        f"bound {ms(result['stall_ms_bound'])}) stall_p99={ms(result['stall_ms_p99'])} "
        f"steady: max {ms(result['baseline_stall_ms_max'])} "
        f"p99 {ms(result['baseline_stall_ms_p99'])} "
        f"rec_latency: max {ms(result['rec_latency_ms_max'])} "
        f"p99 {ms(result['rec_latency_ms_p99'])} "
        f"(steady: max {ms(result['baseline_rec_latency_ms_max'])} "
        f"p99 {ms(result['baseline_rec_latency_ms_p99'])}) "
        f"swap_to_first_new_rec={ms(result['swap_to_first_new_rec_ms'])} "
        f"versions={result['recs_by_version']} target<={STALL_TARGET_MS:.0f} ms: {verdict}"
    )


def run(ctx: Context) -> dict[str, Outcome]:
    """The suite's rows, on the suite's broker."""
    scratch = ctx.scratch("swap")
    settings = ctx.settings("swap", **settings_overrides(scratch))
    key = f"text_encoder_{settings.encoder.max_length}"
    if key not in ctx.cache:
        ctx.cache[key] = TextEncoder(max_length=settings.encoder.max_length, device="cpu")
    plan = SwapPlan(
        events=ctx.sizes.swap_events,
        rate=ctx.sizes.swap_events_per_s,
        start_timeout_s=ctx.sizes.start_timeout_s,
    )
    result = measure(settings, plan, scratch, ctx.cache[key], progress=lambda m: print(f"   {m}"))
    (scratch / "swap.json").write_text(json.dumps(result, indent=2) + "\n")
    wrong = problems(result)
    if wrong:
        error = "; ".join(wrong) + f" (see {scratch / 'swap.json'})"
        return {spec.name: Outcome.failed(error) for spec in ROWS}
    load = f"{result['events']:,} events at {plan.rate:,.0f}/s, 0 lost, 0 duplicated"
    prepare = result["model_prepare_s"]

    def lag(prefix: str) -> str:
        figures = (
            ("p99", result[f"{prefix}_p99"]),
            ("new in window", result[f"{prefix}_new_max"]),
            ("bucket bound", result[f"{prefix}_bound"]),
        )
        return ", ".join(f"{name} {value:.1f} ms" for name, value in figures if value is not None)

    def counted(window: str) -> str:
        return f"{result['rec_latency_events'][window]:,} events"

    def latency(prefix: str, window: str) -> str:
        p99 = result[f"{prefix}_p99"]
        return (f"p99 {p99:.1f} ms; " if p99 is not None else "") + counted(window)

    warmup = result["warmup_rec_latency_ms_max"]
    left_out = (
        f"; warm-up left out: {counted('warmup')}, max {warmup:.1f} ms"
        if warmup is not None
        else ""
    )

    return {
        STEADY_ROW: Outcome(
            result["baseline_stall_ms_max"], detail=f"{lag('baseline_stall_ms')}; {load}"
        ),
        STALL_ROW: Outcome(
            result["stall_ms_max"],
            detail=f"{lag('stall_ms')}; target <= {STALL_TARGET_MS:.0f} ms",
        ),
        STEADY_REC_LATENCY_ROW: Outcome(
            result["baseline_rec_latency_ms_max"],
            detail=latency("baseline_rec_latency_ms", "baseline") + left_out,
        ),
        REC_LATENCY_ROW: Outcome(
            result["rec_latency_ms_max"], detail=latency("rec_latency_ms", "swap")
        ),
        STEADY_REC_LATENCY_P99_ROW: Outcome(
            result["baseline_rec_latency_ms_p99"],
            detail=f"{counted('baseline')}; before the ModelUpdate",
        ),
        REC_LATENCY_P99_ROW: Outcome(
            result["rec_latency_ms_p99"], detail=f"{counted('swap')}; the swap window"
        ),
        FIRST_REC_ROW: Outcome(
            result["swap_to_first_new_rec_ms"],
            detail=f"{result['swap_to_first_new_rec_generated_ms']:.0f} ms to its generated_at"
            + (f"; model prepared in {prepare:.2f}s" if prepare is not None else ""),
        ),
    }


def _parser() -> argparse.ArgumentParser:
    defaults = SwapPlan()
    parser = argparse.ArgumentParser(
        prog="python -m bench.swap", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--events", type=int, default=defaults.events, help="events to stream")
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="events per second (steady)"
    )
    parser.add_argument(
        "--catalog-items",
        type=int,
        default=defaults.catalog_items,
        help="movies in the catalog: the sample ones padded with synthetic items",
    )
    parser.add_argument("--users", type=int, default=defaults.users, help="distinct users")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.swap``; 0 when the run was correct, 1 when events were lost or doubled
    or the new version never served, 130 when interrupted."""
    args = _parser().parse_args(argv)
    plan = SwapPlan(
        events=args.events, rate=args.rate, catalog_items=args.catalog_items, users=args.users
    )
    return run_benchmark(
        "swap",
        args,
        lambda workdir: {**settings_overrides(workdir), "topics": {"partitions": args.partitions}},
        lambda settings, workdir: measure(settings, plan, workdir),
        summary=summary,
        problems=problems,
        say=_say,
    )


if __name__ == "__main__":
    sys.exit(main())
