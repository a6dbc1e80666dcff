"""Producers that partition by librdkafka's default (CRC32) instead of murmur2: the worker
notices every such event, says so and moves it to its user's partition, on a real broker with
real workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import write_sample_dataset
from stream.devtools.broker import BrokerInfo
from stream.kafka.topics import key_partition
from stream.kafka.transport import OutgoingMessage, make_producer, produce_tracked
from stream.settings import Settings
from testkit import guarantees
from testkit.deployment import REPO, WorkerProcess, isolated_settings, user_event
from testkit.kafka_io import PacedProducer, scrape

pytestmark = pytest.mark.integration

PARTITIONS = 4
T0 = 1_704_067_200.0


def _misplaced(settings: Settings, messages: list[OutgoingMessage], partitioner: str) -> int:
    """Produce with ``partitioner``; returns how many landed off their key's murmur2
    partition."""
    placed = produce_tracked(settings, messages, partitioner=partitioner)
    return sum(
        partition != key_partition(message.key, PARTITIONS)
        for message, (_, partition, _) in zip(messages, placed, strict=True)
    )


def _wait_for(port: int, name: str, value: float, timeout: float = 90.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sums = scrape(port)
        if sums.get(name, 0.0) >= value:
            return sums
        time.sleep(0.5)
    raise AssertionError(f"{name} did not reach {value}: {scrape(port).get(name)}")


def test_events_on_the_wrong_partition_are_counted(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = make_settings(topics={"partitions": PARTITIONS})
    sample = write_sample_dataset(tmp_path_factory.mktemp("sample"))
    replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
    worker = worker_factory(settings).start()
    port = worker.metrics_port()

    def events(prefix: str) -> list[OutgoingMessage]:
        return [user_event(settings, f"{prefix}-{n}", "books-0001", T0 + n)[1] for n in range(40)]

    # xdrec's own producers (murmur2_random) put every key where key_partition says.
    right = events("java")
    assert _misplaced(settings, right, "murmur2_random") == 0
    sums = _wait_for(port, "xdrec_events_consumed_total", len(right))
    assert sums["xdrec_events_misrouted_total"] == 0

    # kcat's and librdkafka's default puts most of them elsewhere; each one is counted.
    crc = events("kcat")
    wrong = _misplaced(settings, crc, "consistent_random")
    assert wrong > len(crc) // 2
    sums = _wait_for(port, "xdrec_events_consumed_total", len(right) + len(crc))
    assert sums["xdrec_events_misrouted_total"] == wrong
    assert "events on the wrong partition" in worker.log_file.read_text()


def test_two_workers_move_misrouted_events_to_their_users_and_lose_nothing(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    """Every event is produced with librdkafka's default partitioner (CRC32), as kcat does, to
    two workers sharing four partitions. Each user's state, on the worker that owns the user's
    murmur2 partition, equals the offline single pass over what the producer sent; every
    event is applied once or dead-lettered under where it landed, and every applied event's
    recommendation is there."""
    encoder = guarantees.MemoEncoder(device="cpu")
    settings = isolated_settings(
        kafka_broker.bootstrap_servers,
        tmp_path / "state",
        **guarantees.deployment(tmp_path / "state", PARTITIONS),
    )
    names = ["worker-a", "worker-b"]
    items = guarantees.sample_catalog()
    guarantees.publish_catalog(settings, items)
    guarantees.prefill_items(settings, encoder, items, names)
    workers = {
        name: WorkerProcess(
            guarantees.worker_settings(settings, name), tmp_path / f"{name}.log", cwd=REPO
        )
        for name in names
    }
    planned = guarantees.workload(settings, 600, 80, seed=11, invalid_every=100)
    collector = guarantees.RecCollector(settings, settings.recommendations.routes or {})
    crc32 = make_producer(settings, partitioner="consistent_random")
    producer = PacedProducer(settings, planned, 150.0, track=True, producer=crc32)
    logs = {name: worker.log_file for name, worker in workers.items()}
    try:
        for worker in workers.values():
            worker.start()
        owners = guarantees.settled_owners(
            settings, logs, 180, alive=lambda: all(w.alive() for w in workers.values())
        )
        collector.start()
        producer.start()
        producer.wait(120)
        guarantees.wait_drained(
            settings,
            producer,
            collector,
            180,
            alive=lambda: all(w.alive() for w in workers.values()),
        )
        misrouted = sum(
            scrape(w.metrics_port()).get("xdrec_events_misrouted_total", 0.0)
            for w in workers.values()
        )
    finally:
        for worker in workers.values():
            worker.stop()
        producer.stop()

    landed_elsewhere = sum(
        s.partition != key_partition(s.user_id.encode(), PARTITIONS) for s in producer.sent
    )
    assert landed_elsewhere > len(producer.sent) // 2
    assert misrouted == landed_elsewhere  # each counted once, by the worker it landed on
    user_partitions = {
        s.user_id: key_partition(s.user_id.encode(), PARTITIONS) for s in producer.sent
    }
    states = guarantees.owners_states(settings, owners, user_partitions)
    result = guarantees.audit_workload(settings, producer, collector, states, encoder)
    assert not result.problems(), result.figures()
    assert result.events == 600
