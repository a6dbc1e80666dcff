"""The local Kafka broker: configuration (fast) and a full start/use/stop cycle (integration)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream.devtools import broker
from stream.devtools.broker import broker_status, start_broker, stop_broker


def test_pom_versions_match_module() -> None:
    """The cache folder is named after KAFKA_VERSION, so the pom must pin the same jars."""
    pom = ET.parse(Path(broker.__file__).resolve().parents[2] / "deploy/kafka/pom.xml")
    section = pom.find("{http://maven.apache.org/POM/4.0.0}properties")
    assert section is not None
    props = {el.tag.split("}")[1]: el.text for el in section}
    assert props["kafka.version"] == broker.KAFKA_VERSION
    assert props["scala.binary.version"] == broker.SCALA_BINARY_VERSION
    assert props["slf4j.version"] == broker.SLF4J_VERSION


def test_extra_properties_override_and_placeholders(tmp_path: Path) -> None:
    props = broker.server_properties(
        tmp_path,
        9092,
        9093,
        {
            "listeners": "SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "controller.quorum.bootstrap.servers": "127.0.0.1:{controller_port}",
            "log.dirs": "{data_dir}/other",
        },
    )
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in props
    assert props["log.dirs"] == f"{tmp_path}/other"
    assert props["offsets.topic.replication.factor"] == "1"


def test_status_and_stop_without_broker(tmp_path: Path) -> None:
    assert broker_status(tmp_path) is None
    assert stop_broker(tmp_path) is False
    (tmp_path / broker.INFO_FILE).write_text(
        '{"bootstrap_servers": "127.0.0.1:1", "pid": 999999999, '
        f'"data_dir": "{tmp_path}", "log_file": "{tmp_path}/broker.log"}}'
    )
    assert broker_status(tmp_path) is None
    assert not (tmp_path / broker.INFO_FILE).exists()


def _kafka_available() -> bool:
    jar = broker.default_cache_dir() / "libs" / broker._kafka_jar_name()
    return shutil.which("java") is not None and (jar.is_file() or shutil.which("mvn") is not None)


@pytest.mark.integration
@pytest.mark.skipif(not _kafka_available(), reason="needs java, and mvn or cached Kafka jars")
def test_broker_lifecycle(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    info = start_broker(data_dir, timeout=90)
    try:
        assert info.bootstrap_servers.startswith("127.0.0.1:")
        assert info.log_file == data_dir.resolve() / "broker.log"
        assert broker_status(data_dir) == info

        admin = AdminClient({"bootstrap.servers": info.bootstrap_servers})
        topic = f"test-{uuid.uuid4().hex[:8]}"
        for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            future.result(timeout=30)

        producer = Producer({"bootstrap.servers": info.bootstrap_servers})
        producer.produce(topic, key=b"k", value=b"hello")
        assert producer.flush(15) == 0

        consumer = Consumer(
            {
                "bootstrap.servers": info.bootstrap_servers,
                "group.id": f"g-{topic}",
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 30
            message = None
            while message is None and time.monotonic() < deadline:
                polled = consumer.poll(1.0)
                if polled is not None:
                    assert polled.error() is None, polled.error()
                    message = polled
            assert message is not None, "no message consumed within 30 s"
            assert (message.key(), message.value()) == (b"k", b"hello")
        finally:
            consumer.close()

        again = start_broker(data_dir, timeout=30)
        assert again == info
    finally:
        stopped = stop_broker(data_dir)

    assert stopped is True
    assert broker_status(data_dir) is None
    assert not (data_dir / broker.INFO_FILE).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(info.pid, 0)
    assert stop_broker(data_dir) is False
