"""Scale-out: worker processes in one consumer group.

The same deployment shape, catalog and events as the 10k-catalog worker row; each worker has
its own name (so its own state folder and item store, preloaded the same way) and they share
the app id, hence the consumer group, the partitions and the changelog. Two rows:

- Two workers against one at full speed, started together and measured once the group has
  settled, every event partition owned by exactly one of them.
- Cost per event as the group grows: one group goes from 1 to 2 to 4 workers and back to 3,
  the same paced stream (below one worker's maximum) runs at each size, and the CPU seconds
  of every worker process (faust and runtime) over the stream are divided by its events. On a
  2-core machine more workers cannot add throughput; what this answers is whether they add
  cost. Each change of size is timed from the moment it is made until every event partition
  has one owner and every worker answers ``/ready`` (its partitions' state restored from the
  changelog): a join includes the new process's own start, shown apart in the notes.
"""

from __future__ import annotations

import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import REPO, Context, Outcome, RowSpec
from bench.worker_throughput import (
    METHOD,
    ROW_10K,
    SOURCES,
    TARGET,
    CpuAccount,
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
from testkit.kafka_io import ArrivalCounter, PacedProducer, event_stream

TWO = "xdrec_two_workers_events_per_s"
CPU_ONE = "xdrec_cpu_us_per_event_1_worker"
CPU_TWO = "xdrec_cpu_us_per_event_2_workers"
CPU_FOUR = "xdrec_cpu_us_per_event_4_workers"
JOIN = "xdrec_rebalance_join_s"
LEAVE = "xdrec_rebalance_leave_s"
PACED_RATE = 500.0  # events/s: well below one worker's maximum on 2 cores
PACED_SECONDS = {True: 10.0, False: 20.0}  # quick, full
CPU_TARGET = 1.15
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
_PACED = (
    f"the same paced stream ({PACED_RATE:.0f} events/s, 10 s quick / 20 s full, 2,000 users) "
    "through one consumer group; CPU seconds of all worker processes (faust + runtime) while it "
    "runs and drains, per event"
)
ROWS = (
    *ROWS,
    RowSpec(CPU_ONE, "µs/event", None, f"one worker: {_PACED}"),
    RowSpec(CPU_TWO, "µs/event", CPU_ONE, f"two workers: {_PACED}"),
    RowSpec(
        CPU_FOUR, "µs/event", CPU_ONE, f"four workers: {_PACED}; target <= {CPU_TARGET} x peer"
    ),
    RowSpec(
        JOIN,
        "s",
        None,
        "a second worker joins the one serving: from its launch until every event partition "
        "has one owner and both answer /ready (state moved through the changelog)",
    ),
    RowSpec(
        LEAVE,
        "s",
        None,
        "one of four workers stops (SIGTERM): from the signal until the other three own every "
        "event partition and answer /ready",
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


def _event_partitions(settings: Settings) -> tuple[set[str], set[str]]:
    """The event topics, and every event partition as ``topic:partition``."""
    topics = {settings.topics.events(domain) for domain in settings.domains}
    return topics, {f"{topic}:{p}" for topic in topics for p in range(settings.topics.partitions)}


def _one_owner_each(owned: list[set[str]], every: set[str]) -> bool:
    """Every partition owned by exactly one worker, and every worker owning some."""
    disjoint = sum(len(o) for o in owned) == len(set().union(*owned))
    return set().union(*owned) == every and disjoint and all(owned)


def wait_settled(workers: list[WorkerProcess], settings: Settings, timeout: float) -> str:
    """Until every event partition has exactly one owner and no assignment changed for
    ``SETTLE_S``; returns the split, e.g. ``6+6``."""
    topics, every = _event_partitions(settings)
    deadline = time.monotonic() + timeout
    last: list[set[str]] = []
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        owned = [owned_events(worker.log_file, topics) for worker in workers]
        if owned != last:
            last, stable_since = owned, time.monotonic()
        if _one_owner_each(owned, every):
            if time.monotonic() - stable_since >= SETTLE_S:
                return "+".join(str(len(o)) for o in owned)
        if not all(worker.alive() for worker in workers):
            raise RuntimeError("a worker exited while the group formed")
        time.sleep(0.2)
    split = "+".join(str(len(o)) for o in last)
    raise RuntimeError(f"group did not settle in {timeout:.0f}s: owned {split} of {len(every)}")


def run(ctx: Context) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    try:
        results.update(_two_workers(ctx))
    except Exception as exc:  # the group rows still run
        results[TWO] = Outcome.failed(f"{type(exc).__name__}: {exc}")
    results.update(_growing_group(ctx))
    return results


def _two_workers(ctx: Context) -> dict[str, Outcome]:
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


def _ready(worker: WorkerProcess) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{worker.metrics_port()}/ready", timeout=2
        ) as answer:
            return answer.status == 200
    except (OSError, RuntimeError):
        return False


def _wait_serving(
    workers: list[WorkerProcess], settings: Settings, timeout: float, since: float
) -> float:
    """Seconds from ``since`` until every event partition has exactly one owner and every
    worker answers /ready, a state that must then hold for ``SETTLE_S``."""
    topics, every = _event_partitions(settings)
    deadline = time.monotonic() + timeout
    serving_since: float | None = None
    while time.monotonic() < deadline:
        owned = [owned_events(worker.log_file, topics) for worker in workers]
        serving = _one_owner_each(owned, every) and all(_ready(worker) for worker in workers)
        now = time.monotonic()
        if not serving:
            serving_since = None
        elif serving_since is None:
            serving_since = now
        elif now - serving_since >= SETTLE_S:
            return serving_since - since
        if not all(worker.alive() for worker in workers):
            raise RuntimeError("a worker exited while the group changed")
        time.sleep(0.1)
    raise RuntimeError(f"the group did not serve every partition within {timeout:.0f}s")


class _Group:
    """One consumer group of named workers that grows and shrinks."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = deployment(ctx, "worker_group")
        self.encoder = bench_encoder(ctx, self.settings.encoder.max_length)
        self.sizes = catalog_sizes(ctx, CATALOG_ITEMS)
        self.workers: list[WorkerProcess] = []
        self.items: dict = {}
        self.launched = 0

    def new_worker(self) -> WorkerProcess:
        self.launched += 1
        name = f"worker-{self.launched}"
        own = self.settings.model_copy(
            update={"worker": self.settings.worker.model_copy(update={"name": name})}
        )
        self.items = fill_item_store(own, self.encoder, self.sizes, seed=CATALOG_ITEMS)
        return WorkerProcess(own, self.ctx.scratch("worker_group") / f"{name}.log", cwd=REPO)

    def join(self, count: int) -> tuple[float, float]:
        """Launch ``count`` workers; seconds until the group serves, and until the slowest
        new process logged ready."""
        joining = [self.new_worker() for _ in range(count)]
        self.workers += joining  # stopped with the group even if a start fails
        launched = time.monotonic()
        with ThreadPoolExecutor(max_workers=count) as pool:
            starts = [pool.submit(w.start, self.ctx.sizes.start_timeout_s, False) for w in joining]
            for started in starts:
                started.result()
        own_start = time.monotonic() - launched
        timeout = self.ctx.sizes.start_timeout_s
        return _wait_serving(self.workers, self.settings, timeout, launched), own_start

    def leave(self) -> float:
        """Stop the newest worker; seconds until the others serve every partition."""
        leaving = self.workers.pop()
        assert leaving.process is not None
        stopped = time.monotonic()
        leaving.process.terminate()
        try:
            return _wait_serving(
                self.workers, self.settings, self.ctx.sizes.start_timeout_s, stopped
            )
        finally:
            leaving.stop()  # out of the group's list already: stopped here whatever happened

    def cost_per_event(self, seed: int) -> Outcome:
        """The paced stream through the group: CPU µs per event over all worker processes."""
        settings = self.settings
        count = int(PACED_RATE * PACED_SECONDS[self.ctx.quick])
        sources = {domain: [item.item_id for item in self.items[domain]] for domain in SOURCES}
        counter = ArrivalCounter(settings, settings.topics.recs(TARGET), count)
        counter.start()
        counter.wait_ready()
        cpu = CpuAccount(self.ctx, self.workers)
        stream = event_stream(settings, sources, self.ctx.sizes.worker_users, seed, count=count)
        producer = PacedProducer(settings, stream, PACED_RATE)
        producer.start()
        producer.join()
        arrivals = counter.wait(
            self.ctx.wait_budget(count), alive=lambda: all(w.alive() for w in self.workers)
        )
        if arrivals.count < count:
            return Outcome.failed(f"{arrivals.count}/{count} recommendations in time")
        seconds = cpu.worker_seconds()
        topics, _ = _event_partitions(settings)
        split = "+".join(str(len(owned_events(w.log_file, topics))) for w in self.workers)
        return Outcome(
            1e6 * seconds / count,
            detail=f"{count:,} events at {PACED_RATE:.0f}/s, event partitions {split}; "
            f"{cpu.per_event(count)}",
        )

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def _growing_group(ctx: Context) -> dict[str, Outcome]:
    """The group rows; a step that fails leaves the rows before it measured."""
    group = _Group(ctx)
    results: dict[str, Outcome] = {}
    try:
        _grow(group, results)
    except Exception as exc:
        for row in (CPU_ONE, CPU_TWO, CPU_FOUR, JOIN, LEAVE):
            results.setdefault(row, Outcome.failed(f"{type(exc).__name__}: {exc}"))
    finally:
        group.stop()
    return results


def _grow(group: _Group, results: dict[str, Outcome]) -> None:
    """1 worker, then 2, then 4, then 3: the cost rows at each size and the changes timed."""
    group.join(1)
    results[CPU_ONE] = group.cost_per_event(seed=21)
    serving, own_start = group.join(1)
    detail = f"1 -> 2 workers; the new process took {own_start:.1f} s to start"
    results[JOIN] = Outcome(serving, detail=detail)
    results[CPU_TWO] = group.cost_per_event(seed=22)
    serving, own_start = group.join(2)
    results[JOIN] = Outcome(
        results[JOIN].value, detail=f"{detail}; 2 -> 4 workers: {serving:.1f} s"
    )
    results[CPU_FOUR] = group.cost_per_event(seed=24)
    results[LEAVE] = Outcome(group.leave(), detail="4 -> 3 workers")
