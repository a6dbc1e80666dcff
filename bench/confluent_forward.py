"""Child process of the ceiling row: a bare confluent-kafka consume → json.loads → produce loop.

Settings come from ``XDREC_*`` variables, as for a worker. It forwards until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
from types import FrameType

from stream.settings import Settings
from stream.transport import make_consumer, make_producer, produce_queued


def forward(settings: Settings, source: str, output: str, group: str) -> None:
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
            for message in consumer.consume(10_000, timeout=0.5):
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
    args = parser.parse_args()
    forward(Settings(), args.source, args.output, args.group)


if __name__ == "__main__":
    main()
