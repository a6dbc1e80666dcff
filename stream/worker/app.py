"""The faust wiring, and nothing else: topics in, micro-batches handed to the runtime.

faust drives consumption, group membership and source-offset commits (at-least-once: events
are taken without automatic acks and acknowledged only once their batch is durable). Batches
form by themselves (:mod:`stream.worker.batching`) and go to the worker's runtime, which runs in
a process of its own (:mod:`stream.worker.runtime_process`), while this process's event loop
takes in the next ones. This module imports nothing heavy: torch and the stores live in the
runtime process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from faust.types import EventT

from stream.core.records import SourceRecord, origin_of
from stream.settings import Settings
from stream.worker.batching import process_in_batches
from stream.worker.intake import IntakeApp
from stream.worker.runtime_process import LoopLagWatch, RuntimeProcess

log = logging.getLogger(__name__)


def _broker_credentials(settings: Settings) -> Any:
    """faust's view of the Kafka security settings: SASL (with TLS when the protocol says so),
    TLS alone, or nothing for PLAINTEXT."""
    kafka = settings.kafka
    ssl_context = None
    if kafka.security_protocol.upper().endswith("SSL"):
        import ssl

        ssl_context = ssl.create_default_context(cafile=kafka.ssl_ca_location)
    if not kafka.sasl_mechanism:
        return faust.SSLCredentials(ssl_context) if ssl_context is not None else None
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    return faust.SASLCredentials(
        username=kafka.sasl_username or "",
        password=password,
        mechanism=kafka.sasl_mechanism,
        ssl_context=ssl_context,
    )


LOOP_PROBE_SECONDS = 0.005
LOOP_LAG_REPORT_SECONDS = 0.5


async def watch_loop_lag(runtime: RuntimeProcess) -> None:
    """Measure how late the event loop wakes a short timer and report it to the runtime's
    /metrics twice a second: a stalled loop delays intake, acks and heartbeats."""
    watch = LoopLagWatch()
    loop = asyncio.get_running_loop()
    reported = time.perf_counter()
    while True:
        started = time.perf_counter()
        await asyncio.sleep(LOOP_PROBE_SECONDS)
        now = time.perf_counter()
        watch.observe(max(0.0, now - started - LOOP_PROBE_SECONDS), now)
        if now - reported >= LOOP_LAG_REPORT_SECONDS:
            reported = now
            # A pipe write may block for a moment when the runtime is busy: off the loop.
            await loop.run_in_executor(
                None, runtime.report_loop_lag, watch.drain(), watch.window_max
            )


def create_app(settings: Settings, log_level: str = "info") -> tuple[faust.App, RuntimeProcess]:
    """A faust app whose one agent feeds event batches to the worker's runtime process."""
    state_dir = settings.worker.state_dir / settings.worker.name
    state_dir.mkdir(parents=True, exist_ok=True)
    brokers = [f"kafka://{address}" for address in settings.kafka.bootstrap_servers.split(",")]
    app = IntakeApp(
        settings.app_id,
        fetch_min_bytes=settings.worker.fetch_min_bytes,
        fetch_max_wait_ms=settings.worker.fetch_max_wait_ms,
        broker=brokers,
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        web_enabled=False,
        datadir=str(state_dir / "faust"),
        topic_partitions=settings.topics.partitions,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=settings.worker.batch_size,
        broker_commit_interval=1.0,
        # How soon a crashed worker's partitions move, against false rebalances on stalls;
        # faust refuses a session timeout above its request timeout (90 s by default).
        broker_session_timeout=settings.worker.session_timeout_seconds,
        broker_heartbeat_interval=settings.worker.heartbeat_interval_seconds,
        broker_request_timeout=max(90.0, settings.worker.session_timeout_seconds),
        # Shared in the group's assignment, so that every worker knows where each partition's
        # requests go (stream.worker.queries); a worker nobody can reach gets a placeholder.
        canonical_url=settings.metrics.advertised_url()
        or f"http://{uuid.uuid4().hex}{UNREACHABLE}",
    )
    runtime = RuntimeProcess(settings, log_level)  # starts loading while faust joins
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xdrec-batch")
    events = app.topic(
        *[settings.topics.events(domain) for domain in settings.domains],
        settings.topics.erasure(),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topics.partitions,
    )

    # The partitions of these topics are the users' (faust also assigns its own leader topic).
    inputs = {*(settings.topics.events(d) for d in settings.domains), settings.topics.erasure()}

    @app.agent(events, name="xdrec.events", concurrency=1)
    async def process_events(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, runtime.start)
        except Exception:
            # A worker without its runtime would hold partitions and process nothing.
            log.critical("the runtime did not start; exiting", exc_info=True)
            logging.shutdown()
            os._exit(70)
        # What faust loaded lives as long as the process: out of the collector's sight.
        gc.collect()
        gc.freeze()

        async def handle(batch: list[EventT]) -> None:
            records = [
                SourceRecord(
                    event.message.topic,
                    event.message.partition,
                    event.message.offset,
                    event.message.key,
                    event.message.value,
                    event.message.timestamp,
                    origin_of(event.message.headers),
                )
                for event in batch
            ]
            try:
                await loop.run_in_executor(executor, runtime.handle_batch, records)
            except Exception:
                # Restarting the agent in-process would reopen the stores it still holds. Exit
                # instead: the batch was not acknowledged, so it is redelivered after restart
                # and the per-partition offsets in each user's state skip what was applied.
                log.critical(
                    "batch failed; exiting so that it is redelivered after a restart",
                    exc_info=True,
                )
                logging.shutdown()
                os._exit(70)

        worker = settings.worker
        await process_in_batches(stream, handle, worker.batch_size, worker.batch_within_seconds)

    @app.task
    async def loop_lag() -> None:
        await watch_loop_lag(runtime)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set, **_: Any) -> None:
        log.info(
            "partitions assigned count=%d partitions=%s",
            len(assigned),
            sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )
        # Queued behind the batch in flight and ahead of the next one; not awaited, so the
        # rebalance completes while the runtime restores (a first batch would wait the same).
        future = asyncio.get_running_loop().run_in_executor(
            executor,
            runtime.assign_partitions,
            {tp.partition for tp in assigned if tp.topic in inputs},
            partition_owners(app, inputs),
        )
        future.add_done_callback(_log_failed_restore)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **_: Any) -> None:
        partitions = {tp.partition for tp in revoked if tp.topic in inputs}
        await asyncio.get_running_loop().run_in_executor(
            executor, runtime.forget_partitions, partitions
        )

    @app.on_before_shutdown.connect
    async def on_shutdown(app: faust.App, **_: Any) -> None:
        executor.shutdown(wait=True)  # the batch in flight finishes first
        runtime.close()

    return app, runtime


UNREACHABLE = ".unreachable.invalid"


def partition_owners(app: faust.App, topics: set[str]) -> dict[int, str]:
    """Partition of ``topics`` -> the URL of the worker that owns it, from the assignment
    faust shares with the group (each member's canonical URL); unreachable workers left out."""
    try:
        distribution = app.assignor.external_topics_metadata()  # type: ignore[attr-defined]
    except AttributeError:
        return {}
    return {
        partition: url
        for url, assigned in distribution.items()
        if not url.split("/")[2].endswith(UNREACHABLE)
        for topic, partitions in assigned.items()
        if topic in topics
        for partition in partitions
    }


def _log_failed_restore(future: asyncio.Future) -> None:
    """An early restore that failed is retried by the first batch of each partition."""
    if not future.cancelled() and future.exception() is not None:
        log.warning(
            "restore on assignment failed; the next batch retries it: %s", future.exception()
        )


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker process until SIGINT/SIGTERM."""
    app, _ = create_app(settings, loglevel)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
