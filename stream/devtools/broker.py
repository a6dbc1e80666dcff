"""A local single-node Kafka broker (KRaft mode) for development, tests and the quick start.

No Docker: the broker jars are fetched once from Maven Central with ``deploy/kafka/pom.xml`` into a
cache folder and run with the local ``java``. Everything a broker needs lives in one data folder:

* ``server.properties`` — written on every start (ports may change between starts),
* ``kraft-logs/`` — the metadata and topic logs, formatted once,
* ``broker.log`` — the broker's stdout and stderr (the previous run's log is ``broker.log.1``),
* ``broker.json`` — the running broker (:class:`BrokerInfo`), so that ``status`` and ``stop``
  from another process find it.

Besides the open ``PLAINTEXT`` listener, ``start_broker(..., scram_users=...)`` opens a second,
authenticated ``SASL_PLAINTEXT`` listener (SCRAM-SHA-256) for tests of credentials handling.

The broker runs in its own session, so Ctrl-C in the shell that started it reaches only the caller;
it keeps running until :func:`stop_broker`. :func:`restart_broker` stops it and starts it again on
the same data and ports, so clients see an outage and then the same broker, as in production.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from stream.procfs import command_line, is_zombie, stat_fields
from stream.settings import LocalSettings

log = logging.getLogger(__name__)

# Keep in step with the properties of deploy/kafka/pom.xml (a test checks it). They are also passed
# to Maven, so the cache folder name and the jars inside it always agree.
KAFKA_VERSION = "4.1.0"
SCALA_BINARY_VERSION = "2.13"
SLF4J_VERSION = "1.7.36"

HOST = "127.0.0.1"
INFO_FILE = "broker.json"
LOG_FILE = "broker.log"
PROPERTIES_FILE = "server.properties"
LOG_DIRS = "kraft-logs"
_LOCK_FILE = ".broker.lock"

# The optional authenticated listener: its name in server.properties and its one mechanism.
SASL_LISTENER = "SASL"
SCRAM_MECHANISM = "SCRAM-SHA-256"
_SCRAM_ITERATIONS = 4096  # the minimum Kafka accepts for SCRAM-SHA-256

_REPO_POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
_JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
    # Kafka logs through slf4j; slf4j-simple writes to stderr, which goes to broker.log.
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
    "-Dorg.slf4j.simpleLogger.showShortLogName=false",
)

# Brokers started by this process, so their exit status is collected (no zombies) and
# liveness checks see a dead child as dead.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class BrokerInfo:
    """Where a running local broker answers and where its files are."""

    bootstrap_servers: str
    pid: int
    data_dir: Path
    log_file: Path
    # The SCRAM-authenticated SASL_PLAINTEXT listener, when the broker was started with one.
    sasl_bootstrap_servers: str | None = None


def scram_client_config(username: str, password: str) -> dict[str, str]:
    """librdkafka settings for the SCRAM listener (add ``bootstrap.servers``)."""
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": username,
        "sasl.password": password,
    }


def default_cache_dir() -> Path:
    """``$XDREC_CACHE_DIR/kafka-<version>``, else ``~/.cache/xdrec/kafka-<version>``."""
    return LocalSettings().cache_dir.expanduser() / f"kafka-{KAFKA_VERSION}"


def _pom_path() -> Path:
    """The pom that lists the broker jars; ``XDREC_KAFKA_POM`` points elsewhere if needed."""
    override = LocalSettings().kafka_pom
    pom = override.expanduser() if override else _REPO_POM
    if not pom.is_file():
        raise RuntimeError(
            f"Kafka pom not found at {pom}: run from a source checkout of xdrec "
            "(deploy/kafka/pom.xml) or set XDREC_KAFKA_POM to that file"
        )
    return pom


def _kafka_jar_name() -> str:
    return f"kafka_{SCALA_BINARY_VERSION}-{KAFKA_VERSION}.jar"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def fetch_kafka(cache_dir: Path | None = None) -> Path:
    """Download the broker jars once and return the folder that holds them.

    The jars land in a temporary folder that is renamed into place only when complete, so an
    interrupted download never leaves a half cache behind; the next call simply starts over.
    """
    cache = (cache_dir or default_cache_dir()).expanduser().resolve()
    libs = cache / "libs"
    if (libs / _kafka_jar_name()).is_file():
        log.debug("kafka jars cached libs=%s", libs)
        return libs

    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            f"mvn not found: install Maven 3.8+ and put mvn on PATH (it fetches the Kafka "
            f"{KAFKA_VERSION} jars once), or copy those jars into {libs}"
        )
    pom = _pom_path()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs.tmp-", dir=cache))
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        f"-Dkafka.version={KAFKA_VERSION}",
        f"-Dscala.binary.version={SCALA_BINARY_VERSION}",
        f"-Dslf4j.version={SLF4J_VERSION}",
    ]
    log.info("fetching kafka version=%s into=%s size_mb=~45 (once)", KAFKA_VERSION, libs)
    started = time.monotonic()
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise RuntimeError(f"could not run mvn ({exc}): check the Maven install") from exc
        if proc.returncode != 0:
            raise RuntimeError(
                f"fetching the Kafka jars failed (mvn exit code {proc.returncode}): check that "
                "Maven Central is reachable (or configure a mirror in ~/.m2/settings.xml) and "
                f"retry.\n{_tail(proc.stdout + proc.stderr)}"
            )
        if not (tmp / _kafka_jar_name()).is_file():
            raise RuntimeError(
                f"mvn finished but {_kafka_jar_name()} is missing: check {pom} and retry"
            )
        if libs.exists():  # an incomplete folder from elsewhere; ours is complete
            shutil.rmtree(libs)
        try:
            os.rename(tmp, libs)
        except OSError:
            if not (libs / _kafka_jar_name()).is_file():
                raise
            log.info("kafka jars fetched by another process meanwhile libs=%s", libs)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    jars = len(list(libs.glob("*.jar")))
    log.info("kafka fetched libs=%s jars=%d seconds=%.1f", libs, jars, time.monotonic() - started)
    return libs


# --- process helpers -------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = stat_fields(pid)
    return fields is None or not is_zombie(fields)


def _command_line(pid: int) -> str | None:
    """The process's command line, or None where the platform does not tell."""
    found = command_line(pid)
    if found is not None:
        return found
    try:
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """Alive, and really this data folder's broker (a pid may be reused after a reboot)."""
    if not _pid_alive(pid):
        return False
    cmdline = _command_line(pid)
    if cmdline is None:
        return True
    return "kafka.Kafka" in cmdline and str(data_dir / PROPERTIES_FILE) in cmdline


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM (Kafka shuts down cleanly on it), then SIGKILL once ``timeout`` passes."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        log.warning("broker ignored SIGTERM, killing pid=%s timeout_s=%s", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    _reap(pid)


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialize start and stop on one data folder across processes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / _LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def free_port(exclude: int | None = None) -> int:
    """A loopback port nothing listens on now (a server started next may take it)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port != exclude:
            return port


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port``. SO_REUSEADDR, as the JVM sets it: connections
    of a broker that just stopped linger in TIME_WAIT, and they must not hold its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _wait_ports_free(ports: list[int], timeout: float) -> None:
    """Until every port can be listened on again (a stopped broker's sockets are closing)."""
    deadline = time.monotonic() + timeout
    while True:
        taken = [port for port in ports if not _port_free(port)]
        if not taken:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"ports {taken} on {HOST} are still in use {timeout:.0f}s after the broker "
                "stopped: another process took them; stop it, or start the broker afresh with "
                "port=None"
            )
        time.sleep(0.2)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- broker.json ---------------------------------------------------------------------------


def _info_path(data_dir: Path) -> Path:
    return data_dir / INFO_FILE


def _write_info(info: BrokerInfo, **extra: object) -> None:
    payload: dict[str, object] = {
        key: value if value is None or isinstance(value, int) else str(value)
        for key, value in asdict(info).items()
    }
    payload.update(extra)
    path = _info_path(info.data_dir)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _read_info(data_dir: Path) -> BrokerInfo | None:
    path = _info_path(data_dir)
    try:
        raw = json.loads(path.read_text())
        return BrokerInfo(
            bootstrap_servers=str(raw["bootstrap_servers"]),
            pid=int(raw["pid"]),
            data_dir=Path(raw["data_dir"]),
            log_file=Path(raw["log_file"]),
            sasl_bootstrap_servers=(
                str(raw["sasl_bootstrap_servers"]) if raw.get("sasl_bootstrap_servers") else None
            ),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable broker file, ignoring it path=%s error=%s", path, exc)
        path.unlink(missing_ok=True)
        return None


# --- configuration ---------------------------------------------------------------------------


def server_properties(
    data_dir: Path,
    port: int,
    controller_port: int,
    extra_properties: Mapping[str, str] | None = None,
    sasl_port: int | None = None,
) -> dict[str, str]:
    """The broker's configuration: one combined broker+controller node on loopback.

    ``sasl_port`` adds a ``SASL_PLAINTEXT`` listener that accepts only SCRAM-SHA-256 logins; the
    ``PLAINTEXT`` listener stays open (it also carries inter-broker traffic). Values in
    ``extra_properties`` win and may use the placeholders ``{port}``, ``{controller_port}``,
    ``{sasl_port}`` and ``{data_dir}``, so callers can add listeners (SASL, TLS) on the ports
    chosen here. A static voter (``controller.quorum.voters``) keeps restarts on other ports
    working; setting ``controller.quorum.bootstrap.servers`` switches to a dynamic quorum.
    """
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "log.dirs": str(data_dir / LOG_DIRS),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
    }
    if sasl_port is not None:
        sasl = f"{SASL_LISTENER}://{HOST}:{sasl_port}"
        props["listeners"] += f",{sasl}"
        props["advertised.listeners"] += f",{sasl}"
        props["listener.security.protocol.map"] += f",{SASL_LISTENER}:SASL_PLAINTEXT"
        props["sasl.enabled.mechanisms"] = SCRAM_MECHANISM
        prefix = f"listener.name.{SASL_LISTENER.lower()}.{SCRAM_MECHANISM.lower()}"
        props[f"{prefix}.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    substitutions = {
        "{port}": str(port),
        "{controller_port}": str(controller_port),
        "{data_dir}": str(data_dir),
    }
    if sasl_port is not None:
        substitutions["{sasl_port}"] = str(sasl_port)
    extra = extra_properties or {}
    for key, value in extra.items():
        text = str(value)
        for placeholder, actual in substitutions.items():
            text = text.replace(placeholder, actual)
        props[key] = text
    if "controller.quorum.bootstrap.servers" in extra and "controller.quorum.voters" not in extra:
        del props["controller.quorum.voters"]
    return props


def _render_properties(props: Mapping[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")

    lines = [
        "# Written by stream/devtools/broker.py on every start; edit extra_properties instead."
    ]
    lines += [f"{key}={escape(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka's own generator avoids these, too
            return cluster_id


def _format_storage(
    java: str, libs: Path, props: Mapping[str, str], props_file: Path, log_file: Path
) -> None:
    """Format the KRaft log folder once; later starts reuse the cluster and its topics."""
    first_log_dir = Path(props.get("log.dirs", props.get("log.dir", "")).split(",")[0].strip())
    if (first_log_dir / "meta.properties").is_file():
        return
    cluster_id = _new_cluster_id()
    cmd = [java, "-Xmx256m", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format"]
    if "controller.quorum.voters" not in props:
        cmd.append("--standalone")
    cmd += ["-t", cluster_id, "-c", str(props_file)]
    log.info("formatting kafka storage log_dir=%s cluster_id=%s", first_log_dir, cluster_id)
    with open(log_file, "ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"formatting Kafka storage failed (exit code {proc.returncode}); check "
            f"extra_properties and the log {log_file}, or remove {first_log_dir} to start "
            f"afresh.\n{_log_tail(log_file)}"
        )


def _log_tail(log_file: Path, lines: int = 40) -> str:
    try:
        with open(log_file, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no broker log)"
    return _tail(text, lines)


def _hint(log_file: Path) -> str:
    tail = _log_tail(log_file, 400)
    if "UnsupportedClassVersionError" in tail:
        return " Kafka 4 needs Java 17 or newer: install OpenJDK 17 and put its java on PATH."
    if "Address already in use" in tail:
        return " A port is taken: pass another port, or port=None to pick a free one."
    return ""


# --- readiness -------------------------------------------------------------------------------


def _wait_ready(
    info: BrokerInfo,
    deadline: float,
    timeout: float,
    client_config: Mapping[str, str] | None,
    bootstrap_servers: str | None = None,
) -> None:
    """Block until the broker serves metadata on ``bootstrap_servers`` (its main listener by
    default); fail fast if its process dies."""
    bootstrap = bootstrap_servers or info.bootstrap_servers
    host, _, port = bootstrap.rpartition(":")
    admin: AdminClient | None = None
    while True:
        if not _pid_alive(info.pid):
            child = _CHILDREN.get(info.pid)
            code = child.returncode if child is not None else "unknown"
            raise RuntimeError(
                f"kafka broker exited during start (exit code {code}); see {info.log_file}."
                f"{_hint(info.log_file)}\n{_log_tail(info.log_file)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(
                f"kafka broker did not answer at {bootstrap} within {timeout:.0f}s "
                f"(pid {info.pid}); see {info.log_file}. A slow machine may need a longer "
                "timeout; a secured listener needs client_config with its credentials."
                f"{_hint(info.log_file)}\n{_log_tail(info.log_file)}"
            )
        if _port_open(host, int(port)):
            if admin is None:
                admin = AdminClient(
                    {
                        "bootstrap.servers": bootstrap,
                        **(client_config or {}),
                        "logger": logging.getLogger(f"{__name__}.probe"),
                    }
                )
            try:
                metadata = admin.list_topics(timeout=max(0.5, min(2.0, remaining)))
                if metadata.brokers:
                    return
            except KafkaException:
                pass
        time.sleep(0.25)


def _add_scram_users(
    info: BrokerInfo,
    users: Mapping[str, str],
    deadline: float,
    timeout: float,
    client_config: Mapping[str, str] | None,
) -> None:
    """Create or update the SCRAM users (through the open listener), then wait until the SASL
    listener accepts the first of them. Passwords are never logged, only user names."""
    assert info.sasl_bootstrap_servers is not None
    admin = AdminClient(
        {
            "bootstrap.servers": info.bootstrap_servers,
            **(client_config or {}),
            "logger": logging.getLogger(f"{__name__}.probe"),
        }
    )
    upserts = [
        UserScramCredentialUpsertion(
            name,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, _SCRAM_ITERATIONS),
            password.encode("utf-8"),
        )
        for name, password in users.items()
    ]
    for name, future in admin.alter_user_scram_credentials(upserts).items():
        try:
            future.result(timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:
            raise RuntimeError(
                f"could not create SCRAM user {name!r} on {info.bootstrap_servers}: {exc}"
            ) from exc
    log.info(
        "scram users ready users=%s mechanism=%s listener=%s",
        ",".join(sorted(users)),
        SCRAM_MECHANISM,
        info.sasl_bootstrap_servers,
    )
    name, password = next(iter(users.items()))
    _wait_ready(
        info,
        deadline,
        timeout,
        scram_client_config(name, password),
        bootstrap_servers=info.sasl_bootstrap_servers,
    )


# --- public API ------------------------------------------------------------------------------


def start_broker(
    data_dir: Path,
    port: int | None = None,
    *,
    cache_dir: Path | None = None,
    timeout: float = 60.0,
    extra_properties: dict[str, str] | None = None,
    client_config: dict[str, str] | None = None,
    scram_users: Mapping[str, str] | None = None,
) -> BrokerInfo:
    """Start this data folder's broker, or return it if it already runs and answers.

    ``port`` None picks a free loopback port. ``extra_properties`` are merged into
    ``server.properties`` (see :func:`server_properties`); ``client_config`` holds the librdkafka
    settings the readiness probe needs when those properties secure the listener. ``timeout`` is
    how long to wait for the broker to answer; the one-time download does not count against it.

    ``scram_users`` (name → password) also opens a ``SASL_PLAINTEXT`` listener on another free
    port that accepts only these SCRAM-SHA-256 users (``BrokerInfo.sasl_bootstrap_servers``;
    clients use :func:`scram_client_config`). The users are stored in the cluster metadata, so a
    restart keeps them; passwords stay out of logs, files and command lines.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    started = time.monotonic()
    deadline = started + timeout
    with _locked(data_dir):
        existing = _read_info(data_dir)
        if existing is not None and _is_our_broker(existing.pid, data_dir):
            running_port = int(existing.bootstrap_servers.rpartition(":")[2])
            if port is not None and port != running_port:
                raise RuntimeError(
                    f"a broker for {data_dir} already runs at {existing.bootstrap_servers} "
                    f"(pid {existing.pid}), not on port {port}: stop it first or pass port=None"
                )
            _wait_ready(existing, deadline, timeout, client_config)
            if scram_users:
                if existing.sasl_bootstrap_servers is None:
                    raise RuntimeError(
                        f"the broker for {data_dir} runs without a SASL listener (pid "
                        f"{existing.pid}): stop it first to restart it with scram_users"
                    )
                _add_scram_users(existing, scram_users, deadline, timeout, client_config)
            log.info(
                "broker already running bootstrap=%s pid=%s",
                existing.bootstrap_servers,
                existing.pid,
            )
            return existing
        if existing is not None:
            log.info("removing stale broker file pid=%s data_dir=%s", existing.pid, data_dir)
            _info_path(data_dir).unlink(missing_ok=True)

        java, libs = _kafka_runtime(cache_dir)

        if port is None:
            port = free_port()
        elif not _port_free(port):
            raise RuntimeError(
                f"port {port} on {HOST} is in use: pick another port or pass port=None"
            )
        controller_port = free_port(exclude=port)
        sasl_port = None
        if scram_users:
            sasl_port = free_port(exclude=port)
            while sasl_port == controller_port:
                sasl_port = free_port(exclude=port)
        props = server_properties(data_dir, port, controller_port, extra_properties, sasl_port)
        (data_dir / PROPERTIES_FILE).write_text(_render_properties(props))
        info = _launch(
            java,
            libs,
            data_dir,
            (port, controller_port, sasl_port),
            timeout,
            client_config,
            scram_users,
            new_storage=props,
        )
    log.info(
        "broker started bootstrap=%s sasl_bootstrap=%s pid=%s seconds=%.1f log=%s",
        info.bootstrap_servers,
        info.sasl_bootstrap_servers,
        info.pid,
        time.monotonic() - started,
        info.log_file,
    )
    return info


def _kafka_runtime(cache_dir: Path | None) -> tuple[str, Path]:
    """java and the Kafka jars (downloaded once), both found before any broker is touched, so
    that a machine without them fails a start or restart with the running broker still up."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found: install OpenJDK 17 and put java on PATH")
    return java, fetch_kafka(cache_dir)


def _rotate_log(data_dir: Path) -> None:
    log_file = data_dir / LOG_FILE
    if log_file.exists():
        os.replace(log_file, data_dir / f"{LOG_FILE}.1")


def _launch(
    java: str,
    libs: Path,
    data_dir: Path,
    ports: tuple[int, int, int | None],
    timeout: float,
    client_config: Mapping[str, str] | None,
    scram_users: Mapping[str, str] | None,
    *,
    new_storage: Mapping[str, str] | None = None,
) -> BrokerInfo:
    """What a start and a restart share: a fresh log, the broker run on the data folder's
    ``server.properties``, and ``timeout`` seconds to wait until it answers. ``ports`` are
    (listener, controller, SASL listener or None) as written there; ``new_storage`` (the
    properties of a start) formats the data folder first, outside that wait."""
    port, controller_port, sasl_port = ports
    log_file = data_dir / LOG_FILE
    props_file = data_dir / PROPERTIES_FILE
    _rotate_log(data_dir)
    if new_storage is not None:
        _format_storage(java, libs, new_storage, props_file, log_file)
    deadline = time.monotonic() + timeout
    heap = LocalSettings().kafka_heap_opts.split()
    cmd = [java, *heap, *_JVM_OPTS, "-cp", f"{libs}/*", "kafka.Kafka", str(props_file)]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    info = BrokerInfo(
        bootstrap_servers=f"{HOST}:{port}",
        pid=proc.pid,
        data_dir=data_dir,
        log_file=log_file,
        sasl_bootstrap_servers=f"{HOST}:{sasl_port}" if sasl_port is not None else None,
    )
    _write_info(
        info,
        controller_port=controller_port,
        kafka_version=KAFKA_VERSION,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    log.info(
        "broker starting bootstrap=%s pid=%s data_dir=%s",
        info.bootstrap_servers,
        proc.pid,
        data_dir,
    )
    try:
        _wait_ready(info, deadline, timeout, client_config)
        if scram_users:
            _add_scram_users(info, scram_users, deadline, timeout, client_config)
    except BaseException:
        _terminate(proc.pid, timeout=10)
        _info_path(data_dir).unlink(missing_ok=True)
        raise
    return info


def _end_broker(info: BrokerInfo, data_dir: Path, timeout: float) -> None:
    """SIGTERM, SIGKILL after ``timeout`` seconds; the broker file goes only once the process
    is gone, so a survivor stays findable. Called with the data folder's lock held."""
    _terminate(info.pid, timeout)
    if _pid_alive(info.pid):
        raise RuntimeError(
            f"kafka broker pid {info.pid} survived SIGKILL: check it with ps and end it by hand"
        )
    _info_path(data_dir).unlink(missing_ok=True)


def broker_status(data_dir: Path) -> BrokerInfo | None:
    """The data folder's broker if its process runs, else None (a stale broker.json is removed).

    It does not wait for the broker to answer; :func:`start_broker` on a running broker does.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    info = _read_info(data_dir)
    if info is None:
        return None
    if _is_our_broker(info.pid, data_dir):
        return info
    log.info("removing stale broker file pid=%s data_dir=%s", info.pid, data_dir)
    _reap(info.pid)
    _info_path(data_dir).unlink(missing_ok=True)
    return None


def stop_broker(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the data folder's broker: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Returns True if a broker was running and is now stopped, False if none ran.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if not _info_path(data_dir).exists():
        return False
    with _locked(data_dir):
        info = _read_info(data_dir)
        if info is None:
            return False
        if not _is_our_broker(info.pid, data_dir):
            log.info("removing stale broker file pid=%s data_dir=%s", info.pid, data_dir)
            _reap(info.pid)
            _info_path(data_dir).unlink(missing_ok=True)
            return False
        started = time.monotonic()
        log.info("stopping broker pid=%s bootstrap=%s", info.pid, info.bootstrap_servers)
        _end_broker(info, data_dir, timeout)
    log.info("broker stopped pid=%s seconds=%.1f", info.pid, time.monotonic() - started)
    return True


def restart_broker(
    data_dir: Path,
    *,
    downtime: float = 0.0,
    stop_timeout: float = 30.0,
    timeout: float = 60.0,
    cache_dir: Path | None = None,
    client_config: dict[str, str] | None = None,
) -> BrokerInfo:
    """Stop the data folder's running broker and start the same broker again: same data, same
    ``server.properties``, so the same ports (listener, controller and SASL) and topics.

    What clients see is an outage of ``downtime`` seconds plus the broker's shutdown and start
    (a few seconds each): the way to check that they reconnect by themselves. ``client_config``
    is what the readiness probe needs on a secured listener, as for :func:`start_broker`.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    started = time.monotonic()
    with _locked(data_dir):
        info = _read_info(data_dir)
        if info is None or not _is_our_broker(info.pid, data_dir):
            raise RuntimeError(f"no broker runs for {data_dir}: start it with start_broker first")
        try:
            raw = json.loads(_info_path(data_dir).read_text())
            controller_port = int(raw["controller_port"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(
                f"{_info_path(data_dir)} does not name the controller port ({exc}): stop the "
                "broker and start it again instead"
            ) from exc
        port = int(info.bootstrap_servers.rpartition(":")[2])
        sasl_port = (
            int(info.sasl_bootstrap_servers.rpartition(":")[2])
            if info.sasl_bootstrap_servers
            else None
        )
        java, libs = _kafka_runtime(cache_dir)

        log.info("restarting broker pid=%s bootstrap=%s", info.pid, info.bootstrap_servers)
        _end_broker(info, data_dir, stop_timeout)
        stopped = time.monotonic()
        log.info("broker down pid=%s seconds=%.1f", info.pid, stopped - started)
        time.sleep(max(0.0, downtime))
        ports = [p for p in (port, controller_port, sasl_port) if p is not None]
        _wait_ports_free(ports, timeout)
        restarted = _launch(
            java, libs, data_dir, (port, controller_port, sasl_port), timeout, client_config, None
        )
    log.info(
        "broker restarted bootstrap=%s pid=%s outage_seconds=%.1f",
        restarted.bootstrap_servers,
        restarted.pid,
        time.monotonic() - stopped,
    )
    return restarted
