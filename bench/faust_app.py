"""Child process of the faust rows: a no-op faust-streaming agent that forwards every event.

``--mode items`` iterates ``stream.items()`` and ``--mode take`` iterates
``stream.take(2000, within=0.2)`` batches, each event sent with faust's own producer.
``--mode take-confluent`` is the floor of xdrec's worker: the same agent shape as
``stream.worker.app`` (events taken without automatic acks into natural batches of up to
``worker.batch_size``, :func:`stream.worker.batching.process_in_batches`, each handed to one worker
thread that produces every event with confluent-kafka and flushes once per batch, the source
offsets acked after that), with nothing of xdrec's work in between. Values are JSON-decoded
and re-encoded, like the ceiling's ``json.loads``. Settings come from ``XDREC_*`` variables;
the app id is the benchmark's, so is its consumer group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust

from stream.kafka.transport import OutgoingMessage, make_producer, produce_all
from stream.settings import Settings
from stream.worker.batching import process_in_batches

TAKE_BATCH = 2_000
TAKE_WITHIN_S = 0.2
MODES = ("items", "take", "take-confluent")


def create_app(settings: Settings, mode: str, source: str, output: str, datadir: str) -> faust.App:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    brokers = [f"kafka://{address}" for address in settings.kafka.bootstrap_servers.split(",")]
    partitions = settings.topics.partitions
    # The confluent floor commits like xdrec's worker does; the other modes keep faust's defaults.
    commits: dict[str, Any] = (
        {"broker_commit_every": settings.worker.batch_size, "broker_commit_interval": 1.0}
        if mode == "take-confluent"
        else {}
    )
    app = faust.App(
        settings.app_id,
        broker=brokers,
        store="memory://",
        web_enabled=False,
        datadir=datadir,
        topic_partitions=partitions,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        **commits,
    )
    if mode == "take-confluent":
        _forward_take_confluent(app, settings, source, output)
        return app
    events = app.topic(source, key_serializer="raw", value_serializer="json", partitions=partitions)
    forwarded = app.topic(
        output, key_serializer="raw", value_serializer="json", partitions=partitions
    )

    if mode == "items":

        @app.agent(events, name="bench.forward-items")
        async def forward_items(stream: Any) -> None:
            async for key, value in stream.items():
                await forwarded.send(key=key, value=value)

    else:

        @app.agent(events, name="bench.forward-take")
        async def forward_take(stream: Any) -> None:
            # take() yields values only, so the batch is forwarded without keys.
            async for batch in stream.take(TAKE_BATCH, within=TAKE_WITHIN_S):
                for value in batch:
                    await forwarded.send(value=value)

    return app


def _forward_take_confluent(app: faust.App, settings: Settings, source: str, output: str) -> None:
    """The agent of ``stream.worker.app.create_app``, the runtime's work reduced to forwarding."""
    events = app.topic(
        source,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topics.partitions,
    )
    producer = make_producer(settings)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-batch")

    def forward(pairs: list[tuple[bytes | None, bytes]]) -> None:
        messages = [
            OutgoingMessage(output, key, json.dumps(json.loads(value)).encode("utf-8"))
            for key, value in pairs
        ]
        produce_all(producer, messages)  # one produce() per event, one flush per batch

    @app.agent(events, name="bench.forward-take-confluent", concurrency=1)
    async def forward_take_confluent(stream: Any) -> None:
        loop = asyncio.get_running_loop()

        async def handle(batch: list[Any]) -> None:
            pairs = [(event.message.key, event.message.value) for event in batch]
            await loop.run_in_executor(executor, forward, pairs)

        worker = settings.worker
        await process_in_batches(stream, handle, worker.batch_size, worker.batch_within_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--datadir", required=True)
    args = parser.parse_args()
    app = create_app(Settings(), args.mode, args.source, args.output, args.datadir)
    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main()
