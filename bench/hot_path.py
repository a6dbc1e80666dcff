"""The worker's batch work without Kafka or faust, for profiling: ``python -m bench.hot_path``.

Runs :class:`stream.core.processor.BatchProcessor` over synthetic events in batches (500 events
unless ``--batch``) against a movies catalog of random unit vectors (route movies <- books,
music, top_k 10, explanations on unless ``--no-explain``), then serializes states and
recommendations and writes the states to RocksDB (handing the decoded states back to the
store's cache, ``worker.state_cache_users``), as ``WorkerRuntime.handle_batch`` does minus
producing. ``--profile`` prints cProfile tables measured in the batch thread's own CPU time
(torch's and BLAS's threads are not in them).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np

from stream.catalog.store import ItemCatalog
from stream.core.processor import BatchProcessor
from stream.core.records import SourceRecord
from stream.core.scoring import coarse_dtype
from stream.settings import Settings
from stream.state.changelog import StateChangelog
from stream.state.store import UserStateStore
from stream.worker.runtime import recommendation_messages
from testkit.kafka_io import synthetic_events

BATCH = 500
DIMENSION = 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--catalog", type=int, default=10_000, help="movies in the catalog")
    parser.add_argument("--events", type=int, default=6_000)
    parser.add_argument(
        "--coarse-scoring", default="auto", choices=("auto", "bfloat16", "int8", "off")
    )
    parser.add_argument("--batch", type=int, default=BATCH, help="events per batch")
    parser.add_argument("--no-explain", action="store_true", help="recommendations.explain off")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    settings = Settings(
        recommendations={
            "routes": {"movies": ["books", "music"]},
            "top_k": 10,
            "explain": not args.no_explain,
        },
    )
    scratch = Path(tempfile.mkdtemp(prefix="xdrec-hot-path-"))
    catalog = ItemCatalog(scratch / "items", "bench", DIMENSION, coarse_dtype(args.coarse_scoring))
    rng = np.random.default_rng(0)
    items = {
        "movies": [f"m{i}" for i in range(args.catalog)],
        "books": [f"b{i}" for i in range(2_000)],
        "music": [f"s{i}" for i in range(2_000)],
    }
    for domain, ids in items.items():
        vectors = rng.standard_normal((len(ids), DIMENSION)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        catalog.add(domain, ids, [b"\0" * 16] * len(ids), vectors)
    store = UserStateStore(scratch / "users", settings.worker.state_cache_users)
    processor = BatchProcessor(settings, catalog, encoder=None)  # type: ignore[arg-type]
    changelog = StateChangelog(settings)
    sources = {"books": items["books"], "music": items["music"]}
    messages = synthetic_events(settings, args.events, 2_000, sources, seed=1)
    records = [
        SourceRecord(m.topic, n % 4, n, m.key, m.value, time.time()) for n, m in enumerate(messages)
    ]

    def run() -> int:
        recommendations = 0
        for start in range(0, len(records), args.batch):
            output = processor.process(records[start : start + args.batch], store.get)
            states = {u: (p, s.to_bytes()) for u, (p, s) in output.states.items()}
            recommendation_messages(settings, output.recommendations)
            changelog.messages(states)
            decoded = {user: state for user, (_, state) in output.states.items()}
            store.write(((user, value) for user, (_, value) in states.items()), {}, decoded)
            recommendations += len(output.recommendations)
        return recommendations

    gc.collect()
    gc.freeze()  # as the worker does after start-up
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    recommendations = run()
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    print(
        f"hot path: {args.events:,} events, {recommendations:,} recommendations in "
        f"{seconds:.2f}s: {args.events / seconds:,.0f} events/s "
        f"(catalog {args.catalog:,}, batches of {args.batch}, coarse scoring "
        f"{args.coarse_scoring}, explain "
        f"{'off' if args.no_explain else 'on'}"
        f"{', profiled' if profiler else ''})"
    )
    store.close()
    catalog.close()


if __name__ == "__main__":
    main()
