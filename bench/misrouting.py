"""What misrouted events cost: the one-worker row with a quarter of the users' events produced
on another partition than murmur2 of their user id, as a producer on librdkafka's default
partitioner (CRC32) would put them.

The worker moves each such event to its user's partition (``stream.worker.routing``): it is
produced once more, read once more and applied there, so its recommendation comes after a
detour. Read against the one-worker row of the same run (same catalog, events and users), the
ratio is the rate left with that share of traffic misrouted.
"""

from __future__ import annotations

import zlib

from bench.harness import REPO, Context, Outcome, RowSpec
from bench.worker_throughput import (
    METHOD,
    ROW_10K,
    bench_encoder,
    catalog_sizes,
    deployment,
    prepare_catalog,
    throughput,
    worker_events,
)
from stream.devtools.supervisor import WorkerProcess
from stream.kafka.topics import key_partition
from stream.kafka.transport import OutgoingMessage

MISROUTED = "xdrec_worker_events_per_s_25pct_misrouted"
NEEDS_BROKER = True
CATALOG_ITEMS = 10_000
SHARE = 4  # one user in SHARE has every event on a wrong partition
ROWS = (
    RowSpec(
        MISROUTED,
        "events/s",
        ROW_10K,
        "as the one-worker row ("
        + METHOD.format(n="10,000", events="the same")
        + f"), but every event of one user in {SHARE} (chosen by CRC32 of the user id) is "
        "produced to the partition after its murmur2 one, and the worker moves it there",
    ),
)


def misplace(events: list[OutgoingMessage], partitions: int) -> tuple[list[OutgoingMessage], int]:
    """The events with every event of one user in ``SHARE`` on a wrong partition; returns them
    and how many were moved off their partition."""
    placed: list[OutgoingMessage] = []
    moved = 0
    for event in events:
        key = event.key or b""
        if zlib.crc32(key) % SHARE == 0:
            wrong = (key_partition(key, partitions) + 1) % partitions
            placed.append(OutgoingMessage(event.topic, event.key, event.value, wrong))
            moved += 1
        else:
            placed.append(event)
    return placed, moved


def run(ctx: Context) -> dict[str, Outcome]:
    settings = deployment(ctx, "misrouted")
    encoder = bench_encoder(ctx, settings.encoder.max_length)
    ids = prepare_catalog(settings, encoder, catalog_sizes(ctx, CATALOG_ITEMS), seed=CATALOG_ITEMS)
    events, moved = misplace(worker_events(ctx, settings, ids), settings.topics.partitions)
    worker = WorkerProcess(settings, ctx.scratch("misrouted") / "worker.log", cwd=REPO)
    try:
        worker.start(timeout=ctx.sizes.start_timeout_s)
        outcome = throughput(
            ctx,
            settings,
            [worker],
            events,
            note=f"; {moved:,} of {len(events):,} events ({moved / len(events):.0%}) misrouted",
        )
    finally:
        worker.stop()
    return {MISROUTED: outcome}
