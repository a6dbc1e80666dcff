"""What the local broker's CPU costs per produced message: ``python -m bench.broker_cost``.

The worker rows report the broker's CPU per event beside the worker's own; this tells whether
that cost follows bytes or requests. It starts a local broker, lets it idle (its own baseline,
the peer of every row), warms its produce path, then produces with the worker runtime's
producer settings (idempotent, lz4, acks=all, linger 1 ms) in batches of 50 and 500 messages
of 300 B and 5 KB (an event and a user-state changelog record) to a plain and a compacted
topic, each batch produced and waited for as the runtime does, and prints the broker's CPU
per message and per batch.
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from confluent_kafka.admin import NewTopic

from stream.devtools.broker import start_broker, stop_broker
from stream.kafka.transport import OutgoingMessage, make_admin, make_producer, produce_all
from stream.procfs import cpu_seconds
from stream.settings import Settings

PARTITIONS = 6
TOPICS = {"plain": {}, "compacted": {"cleanup.policy": "compact"}}


def _broker_cpu(pid: int) -> float:
    seconds = cpu_seconds(pid)
    if seconds is None:
        raise RuntimeError(f"the broker (pid {pid}) is gone")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000, help="per configuration")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="xdrec-broker-cost-"))
    broker = start_broker(work / "broker")
    rows: dict[str, dict[str, float]] = {}
    try:
        settings = Settings(kafka={"bootstrap_servers": broker.bootstrap_servers})
        admin = make_admin(settings)
        for topic, config in TOPICS.items():
            admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=config)])[topic].result()
        idle_from = _broker_cpu(broker.pid)
        time.sleep(5.0)
        idle = (_broker_cpu(broker.pid) - idle_from) / 5.0
        print(f"idle broker: {idle:.3f} of a core")
        producer = make_producer(settings, **{"linger.ms": 1})

        def batch_of(topic: str, size: int, count: int) -> list[OutgoingMessage]:
            # base64 of random bytes: as incompressible as the state's float vectors
            return [
                OutgoingMessage(topic, b"user-%d" % n, base64.b64encode(rng.bytes(size * 3 // 4)))
                for n in range(count)
            ]

        warm = batch_of("plain", 1000, 100)
        for _ in range(300):  # the first seconds of a new load are the JIT's
            produce_all(producer, warm)
        for topic in TOPICS:
            for size in (300, 5000):
                for count in (50, 500):
                    batch = batch_of(topic, size, count)
                    batches = max(1, args.messages // count)
                    cpu_from, started = _broker_cpu(broker.pid), time.perf_counter()
                    for _ in range(batches):
                        produce_all(producer, batch)
                    wall = time.perf_counter() - started
                    used = _broker_cpu(broker.pid) - cpu_from - idle * wall
                    name = f"{topic}_{size}B_batch{count}"
                    rows[name] = {
                        "broker_us_per_message": 1e6 * used / (batches * count),
                        "broker_ms_per_batch": 1e3 * used / batches,
                        "wall_ms_per_batch": 1e3 * wall / batches,
                    }
                    print(
                        f"{name:28s} broker {rows[name]['broker_us_per_message']:6.1f} µs/message "
                        f"{rows[name]['broker_ms_per_batch']:6.2f} ms/batch above idle; "
                        f"{rows[name]['wall_ms_per_batch']:6.2f} ms/batch produce-and-wait"
                    )
    finally:
        stop_broker(work / "broker")
    if args.json is not None:
        args.json.write_text(json.dumps({"idle_broker_cores": idle, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
