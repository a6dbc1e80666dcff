"""Child process of the ceiling row: a bare confluent-kafka consume → json.loads → produce loop.

Settings come from ``XDREC_*`` variables, as for a worker. It forwards until SIGTERM. The
throughput row reads up to 10,000 events per ``consume()`` waiting at most 0.5 s; the latency
peer passes the worker's batch size and window instead (``--batch``, ``--timeout``), since
``consume()`` waits for a full batch until the timeout.
"""

from __future__ import annotations

import argparse
import json
import signal
from types import FrameType

from stream.kafka.transport import make_consumer, make_producer, produce_queued
from stream.settings import Settings


def forward(
    settings: Settings,
    source: str,
    output: str,
    group: str,
    batch: int = 10_000,
    timeout: float = 0.5,
) -> None:
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = make_consumer(settings, group_id=group)
    producer = make_producer(settings)
    consumer.subscribe([source])
    try:
        while not stopping:
            for message in consumer.consume(batch, timeout=timeout):
                if message.error():
                    continue
                value = json.dumps(json.loads(message.value())).encode("utf-8")
                produce_queued(producer, output, value, message.key())
            producer.poll(0)
    finally:
        producer.flush(10.0)
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--batch", type=int, default=10_000, help="events per consume()")
    parser.add_argument("--timeout", type=float, default=0.5, help="seconds consume() waits")
    args = parser.parse_args()
    forward(Settings(), args.source, args.output, args.group, args.batch, args.timeout)


if __name__ == "__main__":
    main()
