"""Producers that partition by librdkafka's default (CRC32) instead of murmur2: the worker
notices every such event and says so, on a real broker with a real worker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import write_sample_dataset
from stream.kafka.topics import key_partition
from stream.kafka.transport import OutgoingMessage, produce_tracked
from stream.settings import Settings
from testkit.deployment import WorkerProcess, user_event
from testkit.kafka_io import scrape

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
