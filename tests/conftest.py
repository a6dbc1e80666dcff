"""Shared fixtures: one real Kafka broker per test session, isolated deployments per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.devtools.broker import BrokerInfo, start_broker, stop_broker
from stream.settings import Settings, merge_sections
from testkit.deployment import REPO, WorkerProcess, isolated_settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_settings_leak() -> Iterator[None]:
    """Fail a test that leaves XDREC_* variables behind: later tests would silently build
    their settings from them (another test's config file, credentials, domains)."""
    before = {k: v for k, v in os.environ.items() if k.startswith("XDREC_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("XDREC_")}
    for key in set(after) - set(before):
        del os.environ[key]
    os.environ.update(before)
    assert after == before, f"test changed XDREC_* variables: {sorted(set(after) ^ set(before))}"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """A real single-node KRaft broker on a free loopback port, for the whole session."""
    data_dir = tmp_path_factory.mktemp("kafka")
    info = start_broker(data_dir)
    yield info
    stop_broker(data_dir)


@pytest.fixture(scope="session")
def make_settings(
    kafka_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    """Settings for an isolated deployment (own topic prefix, app id and state folder), with
    /metrics refreshed every second and short batch windows so tests see results quickly."""
    quick = {
        "topics": {"partitions": 2},
        "metrics": {"refresh_seconds": 1.0},
        "worker": {"batch_within_seconds": 0.1},
    }

    def build(**overrides: object) -> Settings:
        state_dir = tmp_path_factory.mktemp("state")
        sections = merge_sections(quick, overrides)
        return isolated_settings(kafka_broker.bootstrap_servers, state_dir, **sections)

    return build


@pytest.fixture(scope="module")
def worker_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[Settings], WorkerProcess]]:
    """Starts workers for a test module and stops whatever is left at its end."""
    workers: list[WorkerProcess] = []
    log_dir = tmp_path_factory.mktemp("workers")

    def build(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, log_dir / f"worker-{len(workers)}.log", cwd=REPO)
        workers.append(worker)
        return worker

    yield build
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def shared_dataset() -> Path:
    """The food-kitchen folder of ../shared/data, read-only research data beside the checkout
    (never part of the repository); tests that need it are skipped, visibly, without it."""
    folder = REPO.parent / "shared" / "data" / "food-kitchen"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available: link ../shared beside the checkout")
    return folder
