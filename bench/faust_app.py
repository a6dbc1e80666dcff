"""Child process of the faust rows: a no-op faust-streaming agent that forwards every event.

``--mode items`` iterates ``stream.items()``; ``--mode take`` iterates
``stream.take(2000, within=0.2)`` batches, the pattern xdrec's worker is built on. Values are
JSON-decoded and re-encoded by faust's codec, like the ceiling's ``json.loads``. Settings come
from ``XDREC_*`` variables; the app id is the benchmark's, so is its consumer group.
"""

from __future__ import annotations

import argparse
from typing import Any

import faust

from stream.settings import Settings

TAKE_BATCH = 2_000
TAKE_WITHIN_S = 0.2


def create_app(settings: Settings, mode: str, source: str, output: str, datadir: str) -> faust.App:
    brokers = [f"kafka://{address}" for address in settings.kafka.bootstrap_servers.split(",")]
    partitions = settings.topics.partitions
    app = faust.App(
        settings.app_id,
        broker=brokers,
        store="memory://",
        web_enabled=False,
        datadir=datadir,
        topic_partitions=partitions,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
    )
    events = app.topic(source, key_serializer="raw", value_serializer="json", partitions=partitions)
    forwarded = app.topic(
        output, key_serializer="raw", value_serializer="json", partitions=partitions
    )

    if mode == "items":

        @app.agent(events, name="bench.forward-items")
        async def forward_items(stream: Any) -> None:
            async for key, value in stream.items():
                await forwarded.send(key=key, value=value)

    elif mode == "take":

        @app.agent(events, name="bench.forward-take")
        async def forward_take(stream: Any) -> None:
            # take() yields values only, so the batch is forwarded without keys.
            async for batch in stream.take(TAKE_BATCH, within=TAKE_WITHIN_S):
                for value in batch:
                    await forwarded.send(value=value)

    else:
        raise ValueError(f"unknown mode {mode!r}: use items or take")
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["items", "take"], required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--datadir", required=True)
    args = parser.parse_args()
    app = create_app(Settings(), args.mode, args.source, args.output, args.datadir)
    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main()
