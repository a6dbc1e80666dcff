"""The worker's faust consumer is built with the fetch size and wait from the settings (faust
itself leaves aiokafka's one-byte fetches), and an aiokafka without those knobs is refused."""

from __future__ import annotations

import asyncio

import aiokafka
import pytest

from stream.worker.intake import IntakeApp, tune_fetch


def test_the_worker_consumer_fetches_as_configured() -> None:
    async def build() -> aiokafka.AIOKafkaConsumer:
        app = IntakeApp(
            "intake-test",
            broker="kafka://127.0.0.1:1",
            store="memory://",
            web_enabled=False,
            fetch_min_bytes=12_345,
            fetch_max_wait_ms=7,
        )
        thread = app.consumer._new_consumer_thread()
        return thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(build())
    assert consumer._fetch_min_bytes == 12_345
    assert consumer._fetch_max_wait_ms == 7


def test_an_aiokafka_without_the_fetch_attributes_is_refused() -> None:
    class Renamed:
        pass

    with pytest.raises(RuntimeError, match="stream/worker/intake.py must be updated"):
        tune_fetch(Renamed(), 1, 1)  # type: ignore[arg-type]
