"""Scale-out: two worker processes in one consumer group against the one-worker row.

The same deployment shape, catalog and events as the 10k-catalog worker row; each worker has
its own name (so its own state folder and item store, preloaded the same way) and the two
share the app id, hence the consumer group, the partitions and the changelog. Both are started
together and measured only once the group has settled, every event partition owned by exactly
one of them.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import REPO, Context, Outcome, RowSpec
from bench.worker_throughput import (
    METHOD,
    ROW_10K,
    bench_encoder,
    catalog_sizes,
    deployment,
    fill_item_store,
    publish_items,
    throughput,
    worker_events,
)
from stream.devtools.supervisor import ASSIGNED_LINE, WorkerProcess
from stream.settings import Settings

TWO = "xdrec_two_workers_events_per_s"
NEEDS_BROKER = True
CATALOG_ITEMS = 10_000
TARGET_RATIO = 1.7
SETTLE_S = 3.0
ROWS = (
    RowSpec(
        TWO,
        "events/s",
        ROW_10K,
        "two `xdrec worker` processes in one consumer group (worker names worker-a and "
        "worker-b, each with its own state folder and preloaded item store), otherwise as the "
        "one-worker row: "
        + METHOD.format(n="10,000", events="the same")
        + f"; timed once each event partition has one owner; target >= {TARGET_RATIO} x peer",
    ),
)
_ASSIGNED = re.compile(re.escape(ASSIGNED_LINE) + r" count=\d+ partitions=\[(.*)\]")


def owned_events(log_file: Path, events_topics: set[str]) -> set[str]:
    """The event partitions of the worker's latest assignment, as ``topic:partition``."""
    if not log_file.exists():
        return set()
    found = _ASSIGNED.findall(log_file.read_text(errors="replace"))
    if not found:
        return set()
    names = {name.strip().strip("'") for name in found[-1].split(",") if name.strip()}
    return {name for name in names if name.rpartition(":")[0] in events_topics}


def wait_settled(workers: list[WorkerProcess], settings: Settings, timeout: float) -> str:
    """Until every event partition has exactly one owner and no assignment changed for
    ``SETTLE_S``; returns the split, e.g. ``6+6``."""
    topics = {settings.topics.events(domain) for domain in settings.domains}
    every = {f"{topic}:{p}" for topic in topics for p in range(settings.topics.partitions)}
    deadline = time.monotonic() + timeout
    last: list[set[str]] = []
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        owned = [owned_events(worker.log_file, topics) for worker in workers]
        if owned != last:
            last, stable_since = owned, time.monotonic()
        disjoint = sum(len(o) for o in owned) == len(set().union(*owned))
        if set().union(*owned) == every and disjoint and all(owned):
            if time.monotonic() - stable_since >= SETTLE_S:
                return "+".join(str(len(o)) for o in owned)
        if not all(worker.alive() for worker in workers):
            raise RuntimeError("a worker exited while the group formed")
        time.sleep(0.2)
    split = "+".join(str(len(o)) for o in last)
    raise RuntimeError(f"group did not settle in {timeout:.0f}s: owned {split} of {len(every)}")


def run(ctx: Context) -> dict[str, Outcome]:
    settings = deployment(ctx, "two_workers")
    encoder = bench_encoder(ctx, settings.encoder.max_length)
    sizes = catalog_sizes(ctx, CATALOG_ITEMS)
    workers = []
    for name in ("worker-a", "worker-b"):
        own = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"name": name})}
        )
        items = fill_item_store(own, encoder, sizes, seed=CATALOG_ITEMS)
        workers.append(WorkerProcess(own, ctx.scratch("two_workers") / f"{name}.log", cwd=REPO))
    publish_items(settings, items)
    ids = {domain: [item.item_id for item in found] for domain, found in items.items()}
    events = worker_events(ctx, settings, ids)
    timeout = ctx.sizes.start_timeout_s
    try:
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            for started in [pool.submit(w.start, timeout) for w in workers]:
                started.result()
        split = wait_settled(workers, settings, timeout)
        outcome = throughput(ctx, settings, workers, events, note=f"; event partitions {split}")
    finally:
        for worker in workers:
            worker.stop()
    return {TWO: outcome}
