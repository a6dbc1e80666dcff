"""Credentials, end to end: xdrec against a broker listener that demands SASL/SCRAM.

The module runs its own broker (the session broker stays unauthenticated for every other test)
with a second, ``SASL_PLAINTEXT`` listener that accepts one SCRAM-SHA-256 user. xdrec gets the
credentials the way an operator gives them, through ``XDREC_KAFKA__*`` environment variables,
and both of its Kafka clients use them: confluent-kafka (producer, consumer, admin) and
faust/aiokafka (the worker's consumer group). TLS settings are checked for pass-through only.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import write_sample_dataset
from stream.devtools.broker import BrokerInfo, broker_status, start_broker, stop_broker
from stream.kafka.topics import create_topics
from stream.kafka.transport import OutgoingMessage, check_reachable, client_log, make_admin
from stream.settings import Settings
from testkit.deployment import WorkerProcess, produce, read_topic, require_binary, user_event

pytestmark = pytest.mark.integration

USER = "xdrec"
# Fresh per run, so finding it anywhere means it leaked from this run.
PASSWORD = f"scram-{secrets.token_urlsafe(18)}"
T0 = 1_704_067_200.0


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """A broker of its own with a SCRAM-SHA-256 listener beside the open one."""
    data_dir = tmp_path_factory.mktemp("kafka-sasl")
    info = start_broker(data_dir, scram_users={USER: PASSWORD})
    yield info
    stop_broker(data_dir)


@pytest.fixture
def sasl_env(sasl_broker: BrokerInfo, monkeypatch: pytest.MonkeyPatch) -> BrokerInfo:
    """Credentials and the SASL address in the environment, as an operator would set them."""
    assert sasl_broker.sasl_bootstrap_servers
    monkeypatch.delenv("XDREC_CONFIG", raising=False)
    monkeypatch.setenv("XDREC_KAFKA__BOOTSTRAP_SERVERS", sasl_broker.sasl_bootstrap_servers)
    monkeypatch.setenv("XDREC_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("XDREC_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("XDREC_KAFKA__SASL_USERNAME", USER)
    monkeypatch.setenv("XDREC_KAFKA__SASL_PASSWORD", PASSWORD)
    return sasl_broker


def deployment_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings from the environment for the broker section, an isolated deployment otherwise."""
    namespace = f"a{uuid.uuid4().hex[:8]}"
    return Settings(
        app_id=namespace,
        topics={"prefix": f"{namespace}.", "partitions": 2},
        metrics={"port": 0, "refresh_seconds": 1.0},
        worker={"state_dir": str(tmp_path / "state"), "batch_within_seconds": 0.1},
        **overrides,
    )


def refusal(config: dict[str, str], timeout: float = 4.0) -> list[KafkaError]:
    """Asks for metadata with ``config``; returns the client errors once the request fails."""
    errors: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": errors.append, "logger": client_log})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=timeout)
    admin.poll(1.0)  # serves error_cb
    return errors


def test_credentials_come_from_the_environment_and_stay_secret(
    sasl_env: BrokerInfo, tmp_path: Path
) -> None:
    settings = deployment_settings(tmp_path)
    kafka = settings.kafka
    assert kafka.bootstrap_servers == sasl_env.sasl_bootstrap_servers
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")
    assert kafka.sasl_username == USER
    assert kafka.sasl_password is not None and kafka.sasl_password.get_secret_value() == PASSWORD
    assert kafka.client_config()["sasl.password"] == PASSWORD
    for shown in (repr(settings), str(settings), repr(kafka), settings.model_dump_json()):
        assert PASSWORD not in shown
    # broker.json (read by `xdrec broker status`) knows the SASL address.
    assert broker_status(sasl_env.data_dir) == sasl_env


def test_confluent_clients_create_produce_and_consume_over_sasl(
    sasl_env: BrokerInfo, tmp_path: Path
) -> None:
    """stream/kafka/transport.py's admin, producer and consumer, configured only from settings."""
    settings = deployment_settings(tmp_path)
    check_reachable(settings)
    assert set(create_topics(settings).values()) == {"created"}
    topic = settings.topics.events("books")
    assert topic in make_admin(settings).list_topics(timeout=10).topics
    produce(
        settings, [OutgoingMessage(topic, f"k{n}".encode(), b'{"n": %d}' % n) for n in range(5)]
    )
    got = read_topic(settings, topic, lambda messages: len(messages) >= 5, timeout=30)
    assert sorted(message["n"] for message in got) == list(range(5))


def test_worker_processes_events_over_sasl_without_logging_the_password(
    sasl_env: BrokerInfo,
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """The worker's faust/aiokafka consumer group and its confluent-kafka producer, catalog
    reader and changelog all authenticate with the credentials from the environment."""
    settings = deployment_settings(tmp_path)
    create_topics(settings)
    sample = write_sample_dataset(tmp_path / "sample")
    replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
    worker = worker_factory(settings).start()
    assert worker.settings.kafka.bootstrap_servers == sasl_env.sasl_bootstrap_servers

    event_id, message = user_event(settings, "sasl-user", "books-0001", T0)
    produce(settings, [message])
    recs = read_topic(
        settings,
        settings.topics.recs("movies"),
        lambda got: event_id in {rec["trigger"]["event_id"] for rec in got},
        timeout=90,
    )
    assert any(rec["user_id"] == "sasl-user" for rec in recs)
    assert worker.alive()

    log = worker.log_file.read_text(errors="replace")
    assert "worker ready" in log and PASSWORD not in log
    for name in ("broker.log", "server.properties", "broker.json"):
        assert PASSWORD not in (sasl_env.data_dir / name).read_text(errors="replace")
    assert PASSWORD not in Path(f"/proc/{sasl_env.pid}/cmdline").read_bytes().decode()


def test_clients_without_valid_credentials_are_refused(
    sasl_env: BrokerInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = sasl_env.sasl_bootstrap_servers
    assert address is not None

    # No credentials at all: the broker drops a client that does not speak SASL.
    refusal({"bootstrap.servers": address})
    # The right mechanism with a wrong password: an authentication error, no metadata.
    monkeypatch.setenv("XDREC_KAFKA__SASL_PASSWORD", PASSWORD + "-wrong")
    wrong = deployment_settings(tmp_path)
    errors = refusal(wrong.kafka.client_config())
    assert any(error.code() == KafkaError._AUTHENTICATION for error in errors), errors
    with pytest.raises(ConnectionError):
        check_reachable(wrong, timeout=4)
    # An unknown user.
    monkeypatch.setenv("XDREC_KAFKA__SASL_USERNAME", "mallory")
    errors = refusal(deployment_settings(tmp_path).kafka.client_config())
    assert any(error.code() == KafkaError._AUTHENTICATION for error in errors), errors
    # The open listener still answers without credentials (it is the one other tests use).
    open_listener = AdminClient({"bootstrap.servers": sasl_env.bootstrap_servers})
    assert open_listener.list_topics(timeout=10).brokers


# --- TLS settings: pass-through only (no TLS listener) ----------------------------------------


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway self-signed CA certificate."""
    openssl = require_binary("openssl")
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "1", "-subj", "/CN=xdrec-test-ca", "-keyout", str(folder / "ca.key")]
        + ["-out", str(folder / "ca.pem")],
        check=True,
        capture_output=True,
    )
    return folder / "ca.pem"


def _ca_names(context: object) -> list[str]:
    certificates = context.get_ca_certs()  # type: ignore[attr-defined]
    return [value for cert in certificates for rdn in cert["subject"] for _, value in rdn]


def test_tls_settings_reach_both_clients_with_sasl(
    ca_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from stream.worker.app import _broker_credentials

    monkeypatch.setenv("XDREC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("XDREC_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("XDREC_KAFKA__SASL_USERNAME", USER)
    monkeypatch.setenv("XDREC_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("XDREC_KAFKA__SSL_CA_LOCATION", str(ca_file))
    settings = deployment_settings(tmp_path)

    config = settings.kafka.client_config()  # what every confluent-kafka client is built from
    assert config["security.protocol"] == "SASL_SSL"
    assert config["ssl.ca.location"] == str(ca_file)

    credentials = _broker_credentials(settings)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth["sasl_plain_username"] == USER
    assert "xdrec-test-ca" in _ca_names(auth["ssl_context"])
    assert PASSWORD not in repr(credentials)


def test_tls_settings_reach_both_clients_without_sasl(
    ca_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from stream.worker.app import _broker_credentials

    monkeypatch.setenv("XDREC_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("XDREC_KAFKA__SSL_CA_LOCATION", str(ca_file))
    settings = deployment_settings(tmp_path)
    assert settings.kafka.client_config()["ssl.ca.location"] == str(ca_file)

    auth = credentials_to_aiokafka_auth(_broker_credentials(settings))
    assert auth["security_protocol"] == "SSL"
    assert "xdrec-test-ca" in _ca_names(auth["ssl_context"])


def test_credentials_from_a_config_file_work_and_a_wrong_one_fails_fast(
    sasl_broker: BrokerInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TOML layer carries credentials too; an operator's typo fails the reachability
    check within its timeout instead of hanging start-up."""
    for name in ("BOOTSTRAP_SERVERS", "SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME"):
        monkeypatch.delenv(f"XDREC_KAFKA__{name}", raising=False)
    monkeypatch.delenv("XDREC_KAFKA__SASL_PASSWORD", raising=False)

    def config(password: str) -> Path:
        path = tmp_path / f"xdrec-{len(password)}.toml"
        path.write_text(
            "[kafka]\n"
            f'bootstrap_servers = "{sasl_broker.sasl_bootstrap_servers}"\n'
            'security_protocol = "SASL_PLAINTEXT"\n'
            'sasl_mechanism = "SCRAM-SHA-256"\n'
            f'sasl_username = "{USER}"\n'
            f'sasl_password = "{password}"\n'
        )
        return path

    monkeypatch.setenv("XDREC_CONFIG", str(config(PASSWORD)))
    settings = deployment_settings(tmp_path)
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == PASSWORD
    check_reachable(settings)

    monkeypatch.setenv("XDREC_CONFIG", str(config(PASSWORD + "-typo")))
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="not reachable"):
        check_reachable(deployment_settings(tmp_path), timeout=4)
    assert time.monotonic() - started < 20


def test_sasl_listener_is_opt_in(tmp_path: Path) -> None:
    """Without ``sasl_port`` the configuration is the plain one every other test runs on."""
    from stream.devtools.broker import server_properties

    plain = server_properties(tmp_path, 9092, 9093)
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert not any("sasl" in key for key in plain)

    sasl = server_properties(tmp_path, 9092, 9093, sasl_port=9094)
    assert sasl["listeners"] == plain["listeners"] + ",SASL://127.0.0.1:9094"
    assert sasl["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,SASL://127.0.0.1:9094"
    assert sasl["listener.security.protocol.map"].endswith(",SASL:SASL_PLAINTEXT")
    assert sasl["sasl.enabled.mechanisms"] == "SCRAM-SHA-256"
    assert sasl["inter.broker.listener.name"] == "PLAINTEXT"
    assert "ScramLoginModule required" in sasl["listener.name.sasl.scram-sha-256.sasl.jaas.config"]
