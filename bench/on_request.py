"""Recommendations on request: how long ``GET /recommendations/{domain}/{user_id}`` takes while
the workers consume events, for a user the asked worker owns and for one it forwards.

Two workers share the group, as in the scale-out row (10k-item movies catalog, preloaded item
stores). Every user first gets a state (the one-worker row's events), then events keep coming
at half the rate the one-worker row reached (or 500/s without it) while one client asks
worker-a for users in turn, one request at a time over a new connection each, as a service's
page render would. The peer is the same HTTP server (prometheus_client's WSGI server with the
worker's handler chain) in a process of its own answering a constant recommendation, asked
the same way: what is left above it is the lookup, the scoring and, forwarded, the hop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench import latency
from bench.harness import REPO, Context, Outcome, RowSpec
from bench.scale_out import owned_events, wait_settled
from bench.worker_throughput import (
    LATENCY_RATE,
    SOURCES,
    TARGET,
    bench_encoder,
    catalog_sizes,
    deployment,
    fill_item_store,
    publish_items,
    worker_events,
)
from stream.devtools.broker import free_port
from stream.devtools.supervisor import WorkerProcess
from stream.kafka.topics import key_partition
from stream.settings import Settings
from testkit.kafka_io import ArrivalCounter, PacedProducer, produce_fast

OWNER = "xdrec_request_p99_ms_owner"
FORWARDED = "xdrec_request_p99_ms_forwarded"
CONSTANT = "http_constant_answer_p99_ms"
NEEDS_BROKER = True
CATALOG_ITEMS = 10_000
REQUESTS = 600  # per kind (owner, forwarded, constant)
FALLBACK_RATE = 500.0
ROWS = (
    RowSpec(
        CONSTANT,
        "ms",
        None,
        "p99 of GET /recommendations/movies/{user} answered with a constant recommendation by "
        "the worker's HTTP server (prometheus_client WSGI, same handler chain) in a process of "
        f"its own; {REQUESTS} sequential requests, a new connection each",
    ),
    RowSpec(
        OWNER,
        "ms",
        CONSTANT,
        "p99 of GET /recommendations/movies/{user}?k=10 asked of the worker that owns the "
        "user, two workers in one group (10,000-item movies catalog), while events arrive at "
        f"half the one-worker row's rate; {REQUESTS} sequential requests; target <= 20 ms",
    ),
    RowSpec(
        FORWARDED,
        "ms",
        OWNER,
        "as the owner row, for users the asked worker forwards to the other one",
    ),
)

_CONSTANT_SERVER = """
import json, sys, time
from prometheus_client import CollectorRegistry
from stream.worker.metrics import serve_registry
body = json.dumps({"items": [{"item_id": f"movies-{n}", "score": 0.5, "rank": n + 1}
                             for n in range(10)]}).encode()
serve_registry(CollectorRegistry(), "127.0.0.1", int(sys.argv[1]),
               queries=lambda environ: (200, [], body))
print("ready", flush=True)
time.sleep(3600)
"""


def _timed_gets(port: int, users: list[str], count: int) -> np.ndarray:
    """Milliseconds of ``count`` sequential GETs for ``users`` in turn; raises on a non-200."""
    took = []
    for n in range(count):
        url = f"http://127.0.0.1:{port}/recommendations/{TARGET}/{users[n % len(users)]}?k=10"
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status}")
        took.append(1e3 * (time.perf_counter() - started))
    return np.array(took)


def _outcome(took: np.ndarray, note: str = "") -> Outcome:
    p50, p99 = np.percentile(took, [50, 99])
    rate = 1e3 / took.mean()
    return Outcome(
        float(p99),
        detail=f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, {rate:,.0f} requests/s sequential, "
        f"{len(took)} requests{note}",
    )


def _constant_peer() -> np.ndarray:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _CONSTANT_SERVER, str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        _timed_gets(port, ["warm-up"], 20)
        return _timed_gets(port, [f"user-{n}" for n in range(100)], REQUESTS)
    finally:
        server.kill()
        server.wait()


def _wait_ready(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as answer:
                if json.loads(answer.read()).get("ready"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"worker on port {port} not ready in {timeout:.0f}s")


def run(ctx: Context) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    try:
        results[CONSTANT] = _outcome(_constant_peer())
    except Exception as exc:  # the xdrec rows stand without their peer
        results[CONSTANT] = Outcome.failed(f"{type(exc).__name__}: {exc}")
    settings = deployment(ctx, "requests")
    encoder = bench_encoder(ctx, settings.encoder.max_length)
    sizes = catalog_sizes(ctx, CATALOG_ITEMS)
    ports = {"worker-a": free_port(), "worker-b": free_port()}
    workers = []
    for name, port in ports.items():
        own = settings.model_copy(
            update={
                "worker": settings.worker.model_copy(update={"name": name}),
                "metrics": settings.metrics.model_copy(update={"port": port}),
            }
        )
        items = fill_item_store(own, encoder, sizes, seed=CATALOG_ITEMS)
        workers.append(WorkerProcess(own, ctx.scratch("requests") / f"{name}.log", cwd=REPO))
    publish_items(settings, items)
    ids = {domain: [item.item_id for item in found] for domain, found in items.items()}
    events = worker_events(ctx, settings, ids)
    users = sorted({event.key.decode() for event in events if event.key})
    partitions = settings.topics.partitions
    timeout = ctx.sizes.start_timeout_s
    rate = ctx.cache.get(LATENCY_RATE) or FALLBACK_RATE
    background: PacedProducer | None = None
    try:
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            for started in [pool.submit(w.start, timeout) for w in workers]:
                started.result()
        split = wait_settled(workers, settings, timeout)
        counter = ArrivalCounter(settings, settings.topics.recs(TARGET), len(events))
        counter.start()
        counter.wait_ready()
        produce_fast(settings, events)
        counter.wait(ctx.wait_budget(len(events)), alive=lambda: all(w.alive() for w in workers))
        for port in ports.values():
            _wait_ready(port, timeout)
        owned_by_a = _owned(workers[0], settings)
        mine = [u for u in users if key_partition(u.encode(), partitions) in owned_by_a]
        theirs = [u for u in users if u not in set(mine)]
        sources = {domain: ids[domain] for domain in SOURCES}
        background = PacedProducer(
            settings,
            latency.live_events(settings, len(users), sources, "requests-bg", seed=7),
            rate,
            name="request-bench-events",
        )
        background.start()
        port = ports["worker-a"]
        _timed_gets(port, mine, 20)  # warm-up: connections, first scoring
        note = f"; events at {rate:,.0f}/s meanwhile; event partitions {split}"
        results[OWNER] = _outcome(_timed_gets(port, mine, REQUESTS), note)
        results[FORWARDED] = _outcome(_timed_gets(port, theirs, REQUESTS), note)
    except Exception as exc:
        failed = Outcome.failed(f"{type(exc).__name__}: {exc}")
        results.setdefault(OWNER, failed)
        results.setdefault(FORWARDED, failed)
    finally:
        if background is not None:
            background.stop()
        for worker in workers:
            worker.stop()
    return results


def _owned(worker: WorkerProcess, settings: Settings) -> set[int]:
    """The event partitions of the worker's latest assignment."""
    topics = {settings.topics.events(d) for d in settings.domains}
    return {int(name.rpartition(":")[2]) for name in owned_events(worker.log_file, topics)}
