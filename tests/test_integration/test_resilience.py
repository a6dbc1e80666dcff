"""Nothing lost, nothing applied twice: across a broker restart, and when a worker leaves a group.

Both tests run on a broker of this module's own (it is restarted, so it cannot be the session's),
stream the sample-catalog workload of :mod:`testkit.guarantees` through real workers while the
disruption happens, and finish with the same audit as ``python -m bench.chaos``: every record
applied once or dead-lettered, every user's stored state equal to an offline single pass,
every applied source event's recommendation present under its deterministic id.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stream.devtools.broker import BrokerInfo, restart_broker, start_broker, stop_broker
from stream.settings import Settings
from testkit import guarantees
from testkit.deployment import REPO, WorkerProcess, isolated_settings

pytestmark = pytest.mark.integration

RECORDS = 1_000
RESTORED = re.compile(r"state restored topic=\S+ partitions=\[([^\]]*)\] records=(\d+)")


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    data_dir = tmp_path_factory.mktemp("resilience-kafka")
    info = start_broker(data_dir)
    try:
        yield info
    finally:
        stop_broker(data_dir)


@pytest.fixture(scope="module")
def encoder() -> guarantees.MemoEncoder:
    """One encoder for this module: item stores and offline replays embed the catalog once."""
    return guarantees.MemoEncoder(device="cpu")


def deployment(
    broker: BrokerInfo,
    state_dir: Path,
    encoder: guarantees.MemoEncoder,
    partitions: int,
    names: list[str],
) -> Settings:
    """A deployment with the sample catalog published and the named workers' item stores
    filled, so that starting them encodes nothing."""
    settings = isolated_settings(
        broker.bootstrap_servers, state_dir, **guarantees.deployment(state_dir, partitions)
    )
    items = guarantees.sample_catalog()
    guarantees.publish_catalog(settings, items)
    guarantees.prefill_items(settings, encoder, items, names)
    return settings


def test_broker_restart_mid_stream_loses_nothing(
    own_broker: BrokerInfo, encoder: guarantees.MemoEncoder, tmp_path: Path
) -> None:
    """The broker goes away for several seconds while events keep coming (queued by the
    producer), and more come after it is back; the worker rides it out (same process, never
    restarted) and every event is applied exactly once. The workload's unknown items make the
    worker re-read the catalog around the outage, which must wait for the broker, not fail."""
    settings = deployment(own_broker, tmp_path / "state", encoder, 4, ["worker-0"])
    planned = guarantees.workload(settings, RECORDS, 150, seed=3, invalid_every=100)
    collector = guarantees.RecCollector(settings, settings.recommendations.routes or {})
    # Streaming goes on during the outage up to 60% of the records; the rest follows it.
    producer = guarantees.TrackedProducer(settings, planned, 40.0, allowed=RECORDS * 3 // 5)
    worker = WorkerProcess(settings, tmp_path / "worker.log", cwd=REPO)
    try:
        worker.start()
        pid = worker.pid
        collector.start()
        producer.start()
        while producer.produced < RECORDS // 5:
            assert worker.alive(), worker.log_file
            time.sleep(0.2)
        again = restart_broker(Path(own_broker.data_dir), downtime=2.0)
        assert again.bootstrap_servers == own_broker.bootstrap_servers
        assert again.pid != own_broker.pid
        producer.allow(RECORDS)
        producer.wait(180)
        guarantees.wait_drained(settings, producer, collector, 240, alive=worker.alive)
        assert worker.alive() and worker.pid == pid
        log_text = worker.log_file.read_text(errors="replace")
        assert log_text.count("worker ready") == 1
        worker.stop()
        assert worker.process is not None and worker.process.returncode == 0
    finally:
        worker.stop()
        producer.stop()
    states = guarantees.stored_states(settings)
    result = guarantees.audit_workload(settings, producer, collector, states, encoder)
    assert not result.problems(), result.figures()


def test_worker_leaving_a_group_hands_over_partitions_and_state(
    own_broker: BrokerInfo, encoder: guarantees.MemoEncoder, tmp_path: Path
) -> None:
    """Three workers share six partitions; one is stopped (SIGTERM) mid-stream. Its partitions
    move to the other two, which restore those users' states from the changelog and carry on:
    nothing lost, nothing applied twice."""
    names = ["worker-a", "worker-b", "worker-c"]
    settings = deployment(own_broker, tmp_path / "state", encoder, 6, names)
    workers = {
        name: WorkerProcess(
            guarantees.worker_settings(settings, name), tmp_path / f"{name}.log", cwd=REPO
        )
        for name in names
    }
    leaving = workers["worker-c"]
    planned = guarantees.workload(settings, RECORDS, 150, seed=5, invalid_every=100)
    collector = guarantees.RecCollector(settings, settings.recommendations.routes or {})
    # Half the records until worker-c is gone, the rest after.
    producer = guarantees.TrackedProducer(settings, planned, 60.0, allowed=RECORDS // 2)
    logs = {name: worker.log_file for name, worker in workers.items()}
    try:
        with ThreadPoolExecutor(len(workers)) as pool:
            for started in [pool.submit(worker.start) for worker in workers.values()]:
                started.result()
        before = guarantees.settled_owners(
            settings, logs, 180, alive=lambda: all(w.alive() for w in workers.values())
        )
        collector.start()
        producer.start()
        port = leaving.metrics_port()
        deadline = time.monotonic() + 90
        while (guarantees.scrape(port).get("xdrec_events_applied_total") or 0) < 30:
            assert time.monotonic() < deadline and leaving.alive(), "worker-c applied nothing"
            time.sleep(0.2)
        leaving.stop()
        producer.allow(RECORDS)
        assert leaving.process is not None and leaving.process.returncode == 0
        stayed = {name: log for name, log in logs.items() if name != "worker-c"}
        after = guarantees.settled_owners(
            settings, stayed, 180, alive=lambda: all(workers[n].alive() for n in stayed)
        )
        producer.wait(180)
        guarantees.wait_drained(
            settings,
            producer,
            collector,
            240,
            alive=lambda: all(workers[n].alive() for n in stayed),
        )
    finally:
        for worker in workers.values():
            worker.stop()
        producer.stop()

    # worker-c's partitions now belong to the others, which read their changelog partitions
    # (the audit below proves the restored states complete: worker-c's events are in them).
    moved = before["worker-c"]
    assert set(after) == set(stayed) and moved <= set().union(*after.values())
    restores = [
        ({int(p) for p in partitions.split(",") if p.strip()}, int(records))
        for name in stayed
        for partitions, records in RESTORED.findall(logs[name].read_text(errors="replace"))
    ]
    assert any(partitions & moved and records for partitions, records in restores), restores

    user_partitions = {s.user_id: s.partition for s in producer.sent}
    states = guarantees.owners_states(settings, after, user_partitions)
    result = guarantees.audit_workload(settings, producer, collector, states, encoder)
    assert not result.problems(), result.figures()
    moved_users = {user for user, partition in user_partitions.items() if partition in moved}
    assert moved_users and moved_users <= set(states)
