"""Row 4: end-to-end events/s of one real xdrec worker, the figure the product is sized by, and
its event-time-to-recommendation latency at half that rate.

Item embeddings are written straight into the worker's item store (the synthetic catalog's
vectors, ``stream.data.synthetic``, under the real encoder's fingerprint, as ``xdrec catalog
import`` writes them) and the same items are published to the catalog topics, so the worker
encodes nothing and the row measures the streaming path alone: faust, validation, state,
scoring against the movies catalog, producing recommendations and changelog, RocksDB writes.
Read against the no-op faust agent built the way the worker is (``take_events`` batches, one
confluent produce per event, one flush per batch), the ratio is the share of that floor's rate
left once xdrec's work is added. Right after, the same worker gets a paced stream at half the
rate it just reached, and the bare confluent forwarder gets the same paced stream next, for the
latency rows (``bench.latency``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from bench import latency
from bench.faust_noop import TAKE_CONFLUENT
from bench.harness import FULL, QUICK, REPO, Context, Outcome, RowSpec, cpu_seconds
from bench.soak import rss_mib
from schemas import SCHEMA_VERSION, CatalogItem
from stream.catalog.encoder import TextEncoder
from stream.catalog.store import ItemCatalog
from stream.core.items import item_text, text_digest
from stream.data.synthetic import SyntheticCatalog, synthetic_catalog
from stream.devtools.supervisor import WorkerProcess
from stream.kafka.transport import OutgoingMessage
from stream.procfs import command_line
from stream.settings import Settings
from testkit.kafka_io import ArrivalCounter, produce_fast, synthetic_events

ROW_10K = "xdrec_worker_events_per_s_catalog_10k"
ROW_100K = "xdrec_worker_events_per_s_catalog_100k"
ROW_1M = "xdrec_worker_events_per_s_catalog_1m"
RSS_1M = "xdrec_worker_rss_mib_catalog_1m"
NEEDS_BROKER = True
METHOD = (
    "one `xdrec worker` (its faust process and its runtime process), route movies <- "
    "books,music, top_k 10, every_n_events 1, "
    "movies catalog of {n} items (embeddings preloaded), {events} events of 2,000 users over "
    "2,000-item books and music catalogs; first event produced to last recommendation "
    "received on recs.movies"
)
_EVENTS = f"{FULL.worker_events:,} (quick: {QUICK.worker_events:,})"
_SECONDS = f"{FULL.latency_seconds:.0f} s (quick: {QUICK.latency_seconds:.0f} s)"
ROWS = (
    RowSpec(
        ROW_10K,
        "events/s",
        TAKE_CONFLUENT,
        METHOD.format(n="10,000", events=_EVENTS) + "; target >= 0.7 of its peer",
    ),
    *latency.row_specs(_SECONDS),
    RowSpec(
        ROW_100K,
        "events/s",
        TAKE_CONFLUENT,
        METHOD.format(n="100,000", events=f"{FULL.worker_events:,}")
        + "; the notes give its ratio to the 10k-catalog row",
        full_only=True,
    ),
    RowSpec(
        ROW_1M,
        "events/s",
        TAKE_CONFLUENT,
        METHOD.format(n="1,000,000", events=f"{FULL.worker_events:,}")
        + "; top-K's first pass from the approximate index (its calibrated recall in the "
        "notes); target >= 1,000 events/s",
        full_only=True,
    ),
    RowSpec(
        RSS_1M,
        "MiB",
        None,
        "resident memory of that worker's processes (faust and runtime) after the run; the "
        "notes give the share of the item vectors and of the approximate index",
        full_only=True,
    ),
)
SOURCES = ("books", "music")
TARGET = "movies"
LATENCY_RATE = "latency_events_per_s"  # ctx.cache key: half the 10k row's rate
VECTOR_SEED = 5  # one part-vector table for every domain: cross-domain similarity is real


def bench_encoder(ctx: Context, max_length: int) -> TextEncoder:
    """The real encoder, only for its fingerprint and dimension; loaded once per run."""
    key = f"text_encoder_{max_length}"
    if key not in ctx.cache:
        ctx.cache[key] = TextEncoder(max_length=max_length, device="cpu")
    return ctx.cache[key]


def _items(domain: str, count: int, seed: int) -> tuple[list[CatalogItem], SyntheticCatalog]:
    """``count`` distinct synthetic items of ``domain`` (``stream.data.synthetic``)."""
    synthetic = synthetic_catalog(count, (domain,), seed=seed)
    items = [
        CatalogItem(
            schema_version=SCHEMA_VERSION, item_id=item_id, domain=domain, title=title, text=text
        )
        for item_id, title, text in zip(
            synthetic.item_ids, synthetic.titles, synthetic.texts, strict=True
        )
    ]
    return items, synthetic


def deployment(ctx: Context, name: str) -> Settings:
    """Settings (and topics) of the worker rows: one route, a recommendation per event."""
    return ctx.settings(
        name,
        domains=[*SOURCES, TARGET],
        recommendations={"routes": {TARGET: list(SOURCES)}, "top_k": 10, "every_n_events": 1},
    )


def fill_item_store(
    settings: Settings, encoder: TextEncoder, sizes: dict[str, int], seed: int
) -> dict[str, list[CatalogItem]]:
    """Fill the item store of ``settings.worker.name`` so that the worker encodes nothing: the
    synthetic catalog's vectors (items sharing words lie close, in every domain alike) under
    the encoder's fingerprint, as ``xdrec catalog import`` writes them; the same for a seed."""
    path = settings.worker.state_dir / settings.worker.name / "items"
    catalog = ItemCatalog(path, encoder.fingerprint, encoder.dimension)
    items: dict[str, list[CatalogItem]] = {}
    try:
        for number, (domain, count) in enumerate(sizes.items()):
            items[domain], synthetic = _items(domain, count, seed * 100 + number)
            vectors = synthetic.vectors(encoder.dimension, seed=VECTOR_SEED)
            digests = [text_digest(item_text(item.title, item.text)) for item in items[domain]]
            catalog.persist(domain, synthetic.item_ids, digests, vectors)
    finally:
        catalog.close()
    return items


def publish_items(settings: Settings, items: dict[str, list[CatalogItem]]) -> None:
    """The same items on the catalog topics, as a deployment has them."""
    produce_fast(
        settings,
        [
            OutgoingMessage(
                settings.topics.catalog(domain),
                item.item_id.encode("utf-8"),
                item.model_dump_json().encode("utf-8"),
            )
            for domain, domain_items in items.items()
            for item in domain_items
        ],
    )


def prepare_catalog(
    settings: Settings, encoder: TextEncoder, sizes: dict[str, int], seed: int
) -> dict[str, list[str]]:
    """Fill the worker's item store and publish the same items; returns domain -> item ids."""
    items = fill_item_store(settings, encoder, sizes, seed)
    publish_items(settings, items)
    return {domain: [item.item_id for item in found] for domain, found in items.items()}


def catalog_sizes(ctx: Context, movies: int) -> dict[str, int]:
    return {TARGET: movies, **{domain: ctx.sizes.source_catalog_items for domain in SOURCES}}


def worker_events(
    ctx: Context, settings: Settings, ids: dict[str, list[str]]
) -> list[OutgoingMessage]:
    """The events of every worker throughput row: the same ones for the same catalog."""
    sizes = ctx.sizes
    sources = {domain: ids[domain] for domain in SOURCES}
    return synthetic_events(settings, sizes.worker_events, sizes.worker_users, sources, seed=2)


def throughput(
    ctx: Context,
    settings: Settings,
    workers: Sequence[WorkerProcess],
    events: list[OutgoingMessage],
    note: str = "",
) -> Outcome:
    """Produce ``events`` to the running ``workers``; first produced to last recommendation."""
    counter = ArrivalCounter(settings, settings.topics.recs(TARGET), len(events))
    counter.start()
    counter.wait_ready()
    cpu = CpuAccount(ctx, workers)
    started = time.perf_counter()
    produce_fast(settings, events)
    produced = time.perf_counter() - started
    arrivals = counter.wait(
        ctx.wait_budget(len(events)), alive=lambda: all(w.alive() for w in workers)
    )
    if arrivals.count < len(events):
        reasons = []
        for worker in workers:
            exited = worker.process.poll() if worker.process else None
            tail = "\n".join(worker.log_file.read_text(errors="replace").splitlines()[-15:])
            state = f"exited with code {exited}" if exited is not None else "still running"
            reasons.append(f"worker {state}; log {worker.log_file}:\n{tail}")
        return Outcome.failed(
            f"{arrivals.count}/{len(events)} recommendations in time; " + "\n".join(reasons)
        )
    rate = arrivals.rate_since(started)
    assert rate is not None and arrivals.last_at is not None
    return Outcome(
        rate,
        detail=f"{len(events):,} events, {ctx.sizes.worker_users:,} users, "
        f"{arrivals.last_at - started:.2f}s (producing took {produced:.2f}s); "
        f"{cpu.per_event(len(events))}" + note,
    )


class CpuAccount:
    """CPU seconds that the workers' faust processes, their runtime processes, the broker and
    this process spend from now on: where a run's cores went, per event."""

    def __init__(self, ctx: Context, workers: Sequence[WorkerProcess]) -> None:
        faust = [w.pid for w in workers if w.pid is not None]
        children = [pid for w in workers for pid in w.process_tree() if pid not in faust]
        runtime = [pid for pid in children if _spawned_by_multiprocessing(pid)]
        self.groups: dict[str, list[int]] = {
            "faust": faust,
            "runtime": runtime,
            # multiprocessing's resource tracker, anything else the worker started
            "helpers": [pid for pid in children if pid not in runtime],
            "broker": [ctx.broker_pid] if ctx.broker_pid is not None else [],
            "bench": [os.getpid()],
        }
        self.before = {name: cpu_seconds(pids) for name, pids in self.groups.items()}

    def worker_seconds(self) -> float:
        """CPU seconds the workers' processes (faust, runtime, helpers) used since creation."""
        return sum(
            cpu_seconds(self.groups[name]) - self.before[name]
            for name in ("faust", "runtime", "helpers")
        )

    def per_event(self, events: int) -> str:
        used = {name: cpu_seconds(pids) - self.before[name] for name, pids in self.groups.items()}
        shares = ", ".join(
            f"{name} {1e6 * seconds / events:.0f}"
            for name, seconds in used.items()
            if self.groups[name]
        )
        return f"CPU µs per event: {shares}"


def _spawned_by_multiprocessing(pid: int) -> bool:
    """A process started by multiprocessing's spawn (the runtime), not its resource tracker."""
    command = command_line(pid) or ""
    return "multiprocessing.spawn" in command and "resource_tracker" not in command


@dataclass
class RunningWorker:
    """A started worker with its deployment, catalog ids and events to send."""

    settings: Settings
    ids: dict[str, list[str]]
    events: list[OutgoingMessage]
    worker: WorkerProcess
    ready_seconds: float


@contextmanager
def running_worker(
    ctx: Context, name: str, catalog_items: int, start_timeout: float
) -> Iterator[RunningWorker]:
    """One worker over a prepared catalog of ``catalog_items`` target items, stopped on exit
    whatever happens."""
    settings = deployment(ctx, name)
    encoder = bench_encoder(ctx, settings.encoder.max_length)
    ids = prepare_catalog(settings, encoder, catalog_sizes(ctx, catalog_items), seed=catalog_items)
    events = worker_events(ctx, settings, ids)
    worker = WorkerProcess(settings, ctx.scratch(name) / "worker.log", cwd=REPO)
    try:
        started = time.perf_counter()
        worker.start(timeout=start_timeout)
        yield RunningWorker(settings, ids, events, worker, time.perf_counter() - started)
    finally:
        worker.stop()


def measure(
    ctx: Context, name: str, row: str, catalog_items: int, with_latency: bool
) -> dict[str, Outcome]:
    """The throughput row of one catalog size; with ``with_latency`` the same worker's latency
    rows follow, at half the rate it reached."""
    results: dict[str, Outcome] = {}
    with running_worker(ctx, name, catalog_items, ctx.sizes.start_timeout_s) as run:
        results[row] = outcome = throughput(ctx, run.settings, [run.worker], run.events)
        if with_latency:
            results.update(_worker_latency(ctx, run.settings, run.worker, run.ids, outcome))
    return results


def measure_million(ctx: Context, items: int = 1_000_000) -> dict[str, Outcome]:
    """The throughput row with a million-item target catalog, and the worker's memory."""
    # Three start timeouts: the worker loads, indexes and reads a million items first.
    with running_worker(ctx, "worker_1m", items, ctx.sizes.start_timeout_s * 3) as run:
        outcome = throughput(ctx, run.settings, [run.worker], run.events)
        rss = rss_mib(run.worker.process_tree())
    built = [
        line.split("msg=", 1)[-1]
        for line in run.worker.log_file.read_text(errors="replace").splitlines()
        if "approximate index built" in line
    ]
    dimension = bench_encoder(ctx, run.settings.encoder.max_length).dimension  # cached
    vectors_mib = items * dimension * 4 / 2**20
    note = f"; ready after {run.ready_seconds:.0f} s; " + (
        "; ".join(built) or "no approximate index built"
    )
    return {
        ROW_1M: Outcome(outcome.value, outcome.error, outcome.detail + note),
        RSS_1M: Outcome(
            rss,
            detail=f"{items:,} movies items: float32 vectors {vectors_mib:,.0f} MiB of it, the "
            "approximate index its index_mib in the throughput row's notes; the rest is the "
            "item ids, the processes and their caches",
        ),
    }


def _worker_latency(
    ctx: Context,
    settings: Settings,
    worker: WorkerProcess,
    ids: dict[str, list[str]],
    throughput_row: Outcome,
) -> dict[str, Outcome]:
    """The worker's latency rows, paced at half its measured rate; the rate is kept for the
    peer's run."""
    rows = (latency.XDREC_P50, latency.XDREC_P99)
    if throughput_row.value is None:
        return latency.outcomes(RuntimeError(f"no rate to pace at: {ROW_10K} failed"), *rows, 0.0)
    rate = throughput_row.value / 2
    ctx.cache[LATENCY_RATE] = rate
    sources = {domain: ids[domain] for domain in SOURCES}
    stream = latency.live_events(
        settings, ctx.sizes.worker_users, sources, latency.RUN_PREFIX, seed=3
    )
    try:
        measured: latency.Latencies | Exception = latency.paced_latencies(
            settings,
            settings.topics.recs(TARGET),
            stream,
            latency.warm_up_events(settings, sources),
            latency.trigger_of_recommendation,
            rate,
            ctx.sizes.latency_seconds,
            worker.alive,
            ctx.sizes.start_timeout_s,
            worker.log_file.parent / "latency_samples.json",
            latency.settle_seconds(ctx),
        )
    except RuntimeError as exc:
        measured = RuntimeError(f"{exc}; log {worker.log_file}")
    window = settings.worker.batch_within_seconds
    note = f"batches close at {settings.worker.batch_size} events or after {window * 1000:.0f} ms"
    return latency.outcomes(measured, *rows, rate, note)


def _ceiling_latency(ctx: Context) -> dict[str, Outcome]:
    """The latency peer, at the rate the worker's latency rows were paced at."""
    rate = ctx.cache.get(LATENCY_RATE)
    if rate is None:
        error = RuntimeError(f"no rate to pace at: {ROW_10K} was not measured")
        return latency.outcomes(error, latency.CEILING_P50, latency.CEILING_P99, 0.0)
    try:
        measured: latency.Latencies | Exception = latency.measure_ceiling(
            ctx, rate, ctx.sizes.latency_seconds
        )
    except Exception as exc:  # the worker's rows stand without their peer
        measured = exc
    return latency.outcomes(measured, latency.CEILING_P50, latency.CEILING_P99, rate)


def run(ctx: Context) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    plan = [(ROW_10K, "worker_10k", 10_000, True)]
    if not ctx.quick:
        plan.append((ROW_100K, "worker_100k", 100_000, False))
    for row, name, items, with_latency in plan:
        try:
            results.update(measure(ctx, name, row, items, with_latency))
        except Exception as exc:  # the next catalog size still runs
            results[row] = Outcome.failed(f"{type(exc).__name__}: {exc}")
        if with_latency:
            results.update(_ceiling_latency(ctx))
    if not ctx.quick:
        try:
            results.update(measure_million(ctx))
        except Exception as exc:
            results[ROW_1M] = Outcome.failed(f"{type(exc).__name__}: {exc}")
    small, large = results.get(ROW_10K), results.get(ROW_100K)
    if small and large and small.value and large.value is not None:
        ratio = f"; {large.value / small.value:.3f} x the 10k-catalog row"
        results[ROW_100K] = Outcome(large.value, detail=large.detail + ratio)
    return results
