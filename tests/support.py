"""Helpers for tests that run against the real broker: worker processes, producing, reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from schemas import SCHEMA_VERSION, UserEvent
from stream.settings import Settings, settings_env
from stream.transport import OutgoingMessage, make_consumer, make_producer, produce_all

REPO = Path(__file__).resolve().parent.parent


def require_binary(name: str) -> str:
    """The path of ``name``; in CI a missing binary fails the test instead of skipping it."""
    import shutil

    import pytest

    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: run deploy/install-system-deps.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class WorkerProcess:
    """``xdrec worker`` as a real child process, as production runs it."""

    def __init__(self, settings: Settings, log_file: Path) -> None:
        self.settings = settings
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> WorkerProcess:
        env = {**os.environ, **settings_env(self.settings)}
        env.pop("XDREC_CONFIG", None)
        before = self.log_file.read_text() if self.log_file.exists() else ""
        with self.log_file.open("a") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"],
                env=env,
                cwd=REPO,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_file.read_text(errors="replace")[len(before) :]
            if "worker ready" in text:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"worker did not start:\n{self.log_file.read_text()[-4000:]}")

    def metrics_port(self) -> int:
        """The /metrics port the worker logged at start."""
        import re

        ports = re.findall(r"metrics served address=\S+ port=(\d+)", self.log_file.read_text())
        assert ports, "worker logged no metrics port"
        return int(ports[-1])

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushes — a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def produce(settings: Settings, messages: list[OutgoingMessage]) -> None:
    produce_all(make_producer(settings), messages)


def read_topic(
    settings: Settings,
    topic: str,
    until: Callable[[list[dict]], bool],
    timeout: float = 90.0,
    decode: bool = True,
) -> list:
    """Read ``topic`` from the beginning until ``until(messages)`` holds; fail on timeout."""
    consumer = make_consumer(settings)
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
    messages: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    continue
                messages.append(json.loads(message.value()) if decode else message)
            if until(messages):
                return messages
    finally:
        consumer.close()
    raise AssertionError(f"timed out reading {topic}: got {len(messages)} messages")


def user_event(
    settings: Settings,
    user_id: str,
    item_id: str,
    timestamp: float,
    *,
    domain: str | None = None,
    event_type: str = "purchase",
    rating: float | None = None,
    **inline: str,
) -> tuple[str, OutgoingMessage]:
    """A valid event for ``item_id`` (domain from the sample id prefix); returns its id too."""
    domain = domain or item_id.split("-")[0]
    event = UserEvent(
        schema_version=SCHEMA_VERSION,
        event_id=uuid.uuid4().hex,
        user_id=user_id,
        domain=domain,
        item_id=item_id,
        event_type=event_type,
        timestamp=timestamp,
        rating=rating,
        **inline,
    )
    message = OutgoingMessage(
        settings.topics.events(domain), user_id.encode(), event.model_dump_json().encode()
    )
    return event.event_id, message
