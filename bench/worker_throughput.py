"""Row 4: end-to-end events/s of one real xdrec worker, the figure the product is sized by.

Item embeddings are written straight into the worker's item store (random unit vectors under
the real encoder's fingerprint) and the same items are published to the catalog topics, so the
worker encodes nothing and the row measures the streaming path alone: faust, validation, state,
scoring against the movies catalog, producing recommendations and changelog, RocksDB writes.
Read against faust's no-op ``take()`` row, the ratio is the share of faust's own rate that is
left once xdrec's work is added.
"""

from __future__ import annotations

import time

import numpy as np

from bench.faust_noop import TAKE
from bench.harness import REPO, Context, Outcome, RowSpec
from bench.kafka_io import ArrivalCounter, produce_fast, synthetic_events
from schemas import SCHEMA_VERSION, CatalogItem
from stream.catalog import ItemCatalog, text_digest
from stream.encoder import TextEncoder, item_text
from stream.sample import sample_items
from stream.settings import Settings
from stream.supervisor import WorkerProcess
from stream.transport import OutgoingMessage

ROW_10K = "xdrec_worker_events_per_s_catalog_10k"
ROW_100K = "xdrec_worker_events_per_s_catalog_100k"
NEEDS_BROKER = True
_METHOD = (
    "one `xdrec worker` process, route movies <- books,music, top_k 10, every_n_events 1, "
    "movies catalog of {n} items (embeddings preloaded), events over 2,000-item books and "
    "music catalogs; first event produced to last recommendation received on recs.movies"
)
ROWS = (
    RowSpec(ROW_10K, "events/s", TAKE, _METHOD.format(n="10,000")),
    RowSpec(ROW_100K, "events/s", ROW_10K, _METHOD.format(n="100,000"), full_only=True),
)
SOURCES = ("books", "music")
TARGET = "movies"


def _encoder(ctx: Context, max_length: int) -> TextEncoder:
    """The real encoder, only for its fingerprint and dimension; loaded once per run."""
    key = f"text_encoder_{max_length}"
    if key not in ctx.cache:
        ctx.cache[key] = TextEncoder(max_length=max_length, device="cpu")
    return ctx.cache[key]


def _items(domain: str, count: int) -> list[CatalogItem]:
    """``count`` distinct items whose text is built from the sample catalog's texts."""
    base = [item for item in sample_items() if item["domain"] == domain]
    return [
        CatalogItem(
            schema_version=SCHEMA_VERSION,
            item_id=f"{domain}-b{number:06d}",
            domain=domain,
            title=f"{base[number % len(base)]['title']} {number}",
            text=base[number % len(base)]["text"],
        )
        for number in range(count)
    ]


def prepare_catalog(
    settings: Settings, encoder: TextEncoder, sizes: dict[str, int], seed: int
) -> dict[str, list[str]]:
    """Fill the worker's item store and publish the same items; returns domain -> item ids."""
    rng = np.random.default_rng(seed)
    path = settings.worker.state_dir / settings.worker.name / "items"
    catalog = ItemCatalog(path, encoder.fingerprint, encoder.dimension)
    messages = []
    ids: dict[str, list[str]] = {}
    try:
        for domain, count in sizes.items():
            items = _items(domain, count)
            vectors = rng.standard_normal((count, encoder.dimension), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            digests = [text_digest(item_text(item.title, item.text)) for item in items]
            ids[domain] = [item.item_id for item in items]
            catalog.add(domain, ids[domain], digests, vectors)
            messages += [
                OutgoingMessage(
                    settings.topics.catalog(domain),
                    item.item_id.encode("utf-8"),
                    item.model_dump_json().encode("utf-8"),
                )
                for item in items
            ]
    finally:
        catalog.close()
    produce_fast(settings, messages)
    return ids


def measure(ctx: Context, name: str, catalog_items: int) -> Outcome:
    sizes = ctx.sizes
    settings = ctx.settings(
        name,
        domains=[*SOURCES, TARGET],
        recommendations={"routes": {TARGET: list(SOURCES)}, "top_k": 10, "every_n_events": 1},
    )
    encoder = _encoder(ctx, settings.encoder.max_length)
    catalog_sizes = {TARGET: catalog_items, **{d: sizes.source_catalog_items for d in SOURCES}}
    ids = prepare_catalog(settings, encoder, catalog_sizes, seed=catalog_items)
    events = synthetic_events(
        settings, sizes.worker_events, sizes.worker_users, {d: ids[d] for d in SOURCES}, seed=2
    )
    worker = WorkerProcess(settings, ctx.scratch(name) / "worker.log", cwd=REPO)
    try:
        worker.start(timeout=sizes.start_timeout_s)
        counter = ArrivalCounter(settings, settings.topics.recs(TARGET), len(events))
        counter.start()
        counter.wait_ready()
        started = time.perf_counter()
        produce_fast(settings, events)
        produced = time.perf_counter() - started
        arrivals = counter.wait(ctx.wait_budget(len(events)), alive=worker.alive)
        exited = worker.process.poll() if worker.process else None
    finally:
        worker.stop()
    if arrivals.count < len(events):
        why = f"worker exited with code {exited}" if exited is not None else "timed out"
        tail = "\n".join(worker.log_file.read_text(errors="replace").splitlines()[-15:])
        return Outcome.failed(
            f"{arrivals.count}/{len(events)} recommendations ({why}); log {worker.log_file}:\n"
            f"{tail}"
        )
    rate = arrivals.rate_since(started)
    assert rate is not None and arrivals.last_at is not None
    return Outcome(
        rate,
        detail=f"{len(events):,} events, {sizes.worker_users:,} users, "
        f"{arrivals.last_at - started:.2f}s (producing took {produced:.2f}s)",
    )


def run(ctx: Context) -> dict[str, Outcome]:
    results = {}
    plan = [(ROW_10K, "worker_10k", 10_000)]
    if not ctx.quick:
        plan.append((ROW_100K, "worker_100k", 100_000))
    for row, name, items in plan:
        try:
            results[row] = measure(ctx, name, items)
        except Exception as exc:  # the next catalog size still runs
            results[row] = Outcome.failed(f"{type(exc).__name__}: {exc}")
    return results
