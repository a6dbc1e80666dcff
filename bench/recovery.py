"""State recovery: how long a worker that gets partitions (a new machine, empty state folder)
takes to rebuild their user states from the compacted changelog, per 100k keys.

The changelog is filled directly with N realistic user states (``UserState.to_bytes`` of
states built by ``stream.core.state.apply_event`` from 1-10 events each, with 384-dim interests and
a shown recommendation), spread evenly over the partitions, which is what N users' events
through a worker would leave there, only faster to produce. Then a fresh worker starts; its
restore runs when the first events of its partitions arrive (``WorkerRuntime._ensure_restored``),
so one event per partition is produced and the worker's own ``state restored ... records=
seconds=`` log lines are summed: the real restore path (changelog consumer, watermarks, every
record into RocksDB with its offset), nothing else. The peer is a bare confluent-kafka
consumer reading the same changelog partitions from the start with the same batch size.
"""

from __future__ import annotations

import random
import re
import statistics
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import REPO, Context, Outcome, RowSpec
from bench.worker_throughput import (
    SOURCES,
    TARGET,
    bench_encoder,
    deployment,
    fill_item_store,
    publish_items,
)
from schemas import SCHEMA_VERSION, UserEvent
from stream.core.state import AppliedEvent, UserState, apply_event
from stream.devtools.supervisor import WorkerProcess
from stream.kafka.transport import OutgoingMessage, make_consumer, make_producer, produce_queued
from stream.settings import Settings
from testkit.kafka_io import EVENT_TYPES, produce_fast

ROW = "xdrec_state_recovery_s_per_100k_keys"
PEER = "confluent_changelog_read_s_per_100k_keys"
NEEDS_BROKER = True
PER = 100_000
TEMPLATES = 256  # distinct state shapes; each key gets one with its own user id
READ_BATCH = 1_000  # the restore's consume() batch (stream.state.changelog)
RAW_READS = 3
RESTORED = "xdrec_state_restored_records_total"
_LOGGED = re.compile(
    r"state restored topic=\S+ partitions=\[[^\]]*\] records=(\d+) seconds=([0-9.]+)"
)
_KEYS = "100,000 (quick: 20,000)"
ROWS = (
    RowSpec(
        ROW,
        "s",
        PEER,
        f"{_KEYS} user states (about 5 KB each: 1-10 events applied with "
        "`stream.core.state.apply_event`, 384-dim interests) produced straight to the compacted "
        "changelog, even over 4 partitions; a fresh `xdrec worker` (empty state folder) "
        "restores them when the first event of each partition arrives: the sum of the "
        "`seconds` of its `state restored` log lines (changelog read and RocksDB writes), "
        "scaled to 100,000 keys",
    ),
    RowSpec(
        PEER,
        "s",
        None,
        "a bare confluent-kafka consumer assigned the same changelog partitions from the "
        f"start, `consume({READ_BATCH})` until every high watermark (records counted, nothing "
        "decoded or stored), consumer creation included as in the restore; median of "
        f"{RAW_READS} reads, scaled to 100,000 keys",
    ),
)


def user_id(number: int) -> str:
    return f"u{number:07d}"


def templates(settings: Settings, items: dict[str, list[str]], count: int) -> list[UserState]:
    """``count`` user states as a worker leaves them; template ``t`` belongs to partition
    ``t % partitions``."""
    rng = random.Random(11)
    vectors = np.random.default_rng(11).standard_normal((64, 384), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shown = [rng.choice(items[TARGET]) for _ in range(10)]
    states = []
    clock = time.time() - 30 * 86_400
    for number in range(count):
        partition = number % settings.topics.partitions
        state = UserState(user_id="template")
        for offset in range(rng.randint(1, 10)):
            domain = rng.choice(SOURCES)
            clock += rng.uniform(1.0, 600.0)
            event = AppliedEvent(
                event_id=f"t{number}-{offset}",
                domain=domain,
                item_id=rng.choice(items[domain]),
                event_type=rng.choice(EVENT_TYPES),
                timestamp=clock,
                rating=None,
                source=f"{settings.topics.events(domain)}:{partition}",
                offset=number * 10 + offset,
            )
            apply_event(state, event, vectors[rng.randrange(len(vectors))], settings.interest)
        state.pending[TARGET] = 0
        state.shown[TARGET] = ["v0", list(shown)]
        states.append(state)
    return states


def state_messages(
    settings: Settings, shapes: list[UserState], keys: int
) -> Iterator[OutgoingMessage]:
    """``keys`` changelog records: user ``n`` on partition ``n % partitions``."""
    topic = settings.topics.state_changelog(settings.app_id)
    partitions = settings.topics.partitions
    for number in range(keys):
        state = shapes[number % len(shapes)]
        state.user_id = user_id(number)
        yield OutgoingMessage(
            topic, state.user_id.encode("utf-8"), state.to_bytes(), number % partitions
        )


def produce_states(settings: Settings, messages: Iterator[OutgoingMessage]) -> tuple[int, int]:
    """Produce without keeping delivered messages (hundreds of MB); returns (count, bytes)."""
    producer = make_producer(settings, **{"linger.ms": 20, "batch.size": 1_000_000})
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    count = size = 0
    for message in messages:
        assert message.value is not None
        produce_queued(
            producer,
            message.topic,
            message.value,
            message.key,
            partition=message.partition,
            on_delivery=on_delivery,
        )
        count += 1
        size += len(message.value)
    remaining = producer.flush(600.0)
    if remaining or failures:
        raise RuntimeError(f"{len(failures)} states failed, {remaining} still queued")
    return count, size


def read_raw(settings: Settings, topic: str, partitions: int) -> tuple[int, float]:
    """The peer: records read from the start of every partition, and the seconds it took.

    A loop of its own, not :func:`stream.kafka.snapshot.read_to_end`: the peer is the plainest
    read the client allows, with the restore's batch size (``READ_BATCH``)."""
    started = time.perf_counter()
    consumer = make_consumer(settings)
    try:
        ends = {}
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10.0
            )
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records = 0
        while ends:
            for message in consumer.consume(READ_BATCH, timeout=1.0):
                if message.error():
                    continue
                records += 1
                partition = message.partition()
                if partition in ends and message.offset() + 1 >= ends[partition]:
                    del ends[partition]
        return records, time.perf_counter() - started
    finally:
        consumer.close()


def logged_restores(worker: WorkerProcess) -> tuple[int, float, int]:
    """(records, seconds, log lines) of the worker's ``state restored`` lines so far."""
    text = worker.log_file.read_text(errors="replace") if worker.log_file.exists() else ""
    found = _LOGGED.findall(text)
    return sum(int(r) for r, _ in found), sum(float(s) for _, s in found), len(found)


def restored_metric(worker: WorkerProcess) -> float | None:
    """The worker's ``xdrec_state_restored_records_total``, as a cross-check of the log."""
    try:
        url = f"http://127.0.0.1:{worker.metrics_port()}/metrics"
        with urllib.request.urlopen(url, timeout=5.0) as response:
            text = response.read().decode("utf-8")
    except (OSError, RuntimeError):
        return None
    for family in text_string_to_metric_families(text):
        if family.name == RESTORED.removesuffix("_total"):
            return sum(s.value for s in family.samples if s.name == RESTORED)
    return None


def triggers(settings: Settings, items: dict[str, list[str]]) -> list[OutgoingMessage]:
    """One event per partition, each from a user whose state is in the changelog."""
    out = []
    for partition in range(settings.topics.partitions):
        event = UserEvent(
            schema_version=SCHEMA_VERSION,
            event_id=f"recover-{partition}",
            user_id=user_id(partition),
            domain=SOURCES[0],
            item_id=items[SOURCES[0]][partition],
            event_type="click",
            timestamp=time.time(),
        )
        out.append(
            OutgoingMessage(
                settings.topics.events(SOURCES[0]),
                event.user_id.encode("utf-8"),
                event.model_dump_json().encode("utf-8"),
                partition,
            )
        )
    return out


def run(ctx: Context) -> dict[str, Outcome]:
    keys = ctx.sizes.recovery_keys
    settings = deployment(ctx, "recovery")
    encoder = bench_encoder(ctx, settings.encoder.max_length)
    sizes = {TARGET: 1_000, **{domain: 200 for domain in SOURCES}}
    catalog = fill_item_store(settings, encoder, sizes, seed=5)
    publish_items(settings, catalog)
    items = {domain: [item.item_id for item in found] for domain, found in catalog.items()}
    shapes = templates(settings, items, TEMPLATES)
    produced, size = produce_states(settings, state_messages(settings, shapes, keys))
    topic = settings.topics.state_changelog(settings.app_id)
    reads = [read_raw(settings, topic, settings.topics.partitions) for _ in range(RAW_READS)]
    records = reads[0][0]
    raw_seconds = statistics.median(seconds for _, seconds in reads)
    results = {
        PEER: Outcome(
            raw_seconds * PER / records,
            detail=f"{records:,} records in {raw_seconds:.2f}s, median of {RAW_READS} reads",
        )
    }
    try:
        results[ROW] = restore(ctx, settings, items, produced, size)
    except Exception as exc:  # the peer's figure stands
        results[ROW] = Outcome.failed(f"{type(exc).__name__}: {exc}")
    return results


def restore(
    ctx: Context, settings: Settings, items: dict[str, list[str]], produced: int, size: int
) -> Outcome:
    """A fresh worker, one event per partition, until its log shows every state restored."""
    worker = WorkerProcess(settings, ctx.scratch("recovery") / "worker.log", cwd=REPO)
    try:
        worker.start(timeout=ctx.sizes.start_timeout_s)
        started = time.perf_counter()
        produce_fast(settings, triggers(settings, items))
        deadline = time.monotonic() + ctx.wait_budget(0) + produced / 1_000
        while (restored := logged_restores(worker))[0] < produced:
            if time.monotonic() > deadline or not worker.alive():
                raise RuntimeError(
                    f"{restored[0]:,}/{produced:,} states restored in time "
                    f"(alive: {worker.alive()}); log {worker.log_file}"
                )
            time.sleep(0.05)
        wall = time.perf_counter() - started
        # The counter moves just after the line is logged: give it a moment to catch up.
        settle = time.monotonic() + 10.0
        while (metric := restored_metric(worker)) is not None and metric < restored[0]:
            if time.monotonic() > settle:
                break
            time.sleep(0.1)
    finally:
        worker.stop()
    count, seconds, lines = restored
    checked = "" if metric is None else f", {RESTORED} {metric:,.0f}"
    return Outcome(
        seconds * PER / count,
        detail=f"{count:,} states ({size / count / 1024:.1f} KiB each) in {seconds:.2f}s over "
        f"{lines} restore(s); {wall:.2f}s from the first events produced to the last line"
        f"{checked}",
    )
