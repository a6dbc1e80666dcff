"""faust's Kafka intake with the fetch settings faust does not expose.

faust creates its aiokafka consumer with ``fetch_min_bytes`` left at 1, so every fetch returns
as soon as a single message is there: at a steady few thousand events/s the worker's consumer
thread and the broker spend their time on fetches of one or two messages. :class:`IntakeApp`
is a faust App whose consumer fetches at least ``worker.fetch_min_bytes`` or waits at most
``worker.fetch_max_wait_ms``, the two knobs every Kafka consumer has; nothing else changes.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TransportT

# aiokafka reads these when its consumer starts (to build its fetcher); faust passes neither.
_FETCH_ATTRIBUTES = ("_fetch_min_bytes", "_fetch_max_wait_ms")


def tune_fetch(
    consumer: aiokafka.AIOKafkaConsumer, min_bytes: int, max_wait_ms: int
) -> aiokafka.AIOKafkaConsumer:
    """Set the fetch size and wait of a consumer that has not started yet."""
    missing = [name for name in _FETCH_ATTRIBUTES if not hasattr(consumer, name)]
    if missing:  # an aiokafka upgrade renamed them: fail at start, not silently
        raise RuntimeError(
            f"aiokafka {aiokafka.__version__} has no {missing} on its consumer; "
            "stream/worker/intake.py must be updated for this version"
        )
    consumer._fetch_min_bytes = min_bytes
    consumer._fetch_max_wait_ms = max_wait_ms
    return consumer


class _FetchTunedConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        app: IntakeApp = self.consumer.app  # type: ignore[assignment]
        consumer = super()._create_worker_consumer(transport)
        return tune_fetch(consumer, app.fetch_min_bytes, app.fetch_max_wait_ms)


class _FetchTunedConsumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _FetchTunedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _FetchTunedTransport(Transport):
    Consumer = _FetchTunedConsumer


class IntakeApp(faust.App):
    """A faust App whose worker consumer uses the given fetch size and wait."""

    def __init__(
        self, *args: Any, fetch_min_bytes: int, fetch_max_wait_ms: int, **kwargs: Any
    ) -> None:
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _FetchTunedTransport(self.conf.broker_consumer, self)
