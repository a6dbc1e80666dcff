"""The one typed settings object of xdrec.

Layers, lowest first: defaults here → a TOML file (``--config`` or ``XDREC_CONFIG``) →
``XDREC_*`` environment variables (nested with ``__``) → command-line flags. The object is built
once at the edge (the CLI) and passed in; no module reads settings from a global.
"""

from __future__ import annotations

import os
import socket
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas import EventLimits

DOMAIN_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
# The --config file of the settings being built (load_settings), else XDREC_CONFIG.
_CONFIG_FILE: ContextVar[str | None] = ContextVar("xdrec_config_file", default=None)


class KafkaSettings(BaseModel):
    """How to reach the broker; security options pass through to every client."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    # How long a produced message may wait for the broker's ack (librdkafka message.timeout.ms;
    # it retries on its own meanwhile), and how long a worker's batch waits for its acks: a
    # broker outage shorter than this delays batches instead of failing them.
    produce_timeout_seconds: float = Field(default=300.0, ge=1, le=86_400)
    # How long reads that must reach the broker (catalog catch-up, changelog restore) retry
    # transient errors (broker down, timeouts, leader moves) before failing.
    retry_timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)

    def client_config(self) -> dict[str, str]:
        """librdkafka properties shared by the producer, consumer and admin client."""
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config


class TopicSettings(BaseModel):
    """Topic names and sizes. ``prefix`` namespaces a whole deployment (tests use it)."""

    prefix: str = ""
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    dlq: str = "events.dlq"
    # The event log is also the trainer's data: keep it at least as long as a training window
    # (-1 keeps it forever; Kafka's default of 7 days would drop replayed history).
    events_retention_ms: int = Field(default=-1, ge=-1)

    def events(self, domain: str) -> str:
        return f"{self.prefix}events.{domain}"

    def catalog(self, domain: str) -> str:
        return f"{self.prefix}catalog.{domain}"

    def recs(self, domain: str) -> str:
        return f"{self.prefix}recs.{domain}"

    def dead_letters(self) -> str:
        return f"{self.prefix}{self.dlq}"

    def model_updates(self) -> str:
        return f"{self.prefix}models.updates"

    def erasure(self) -> str:
        return f"{self.prefix}users.erasure"

    def training_requests(self) -> str:
        return f"{self.prefix}models.training-requests"

    def state_changelog(self, app_id: str) -> str:
        return f"{self.prefix}{app_id}.user-state.changelog"


class EncoderSettings(BaseModel):
    """The text encoder. ``model_path`` is any local Hugging Face model folder."""

    model_path: Path | None = None
    max_length: int = Field(default=128, ge=8, le=8192)
    # Texts per model call; unset: 32 on the CPU, 512 on a GPU (which wants more rows per kernel).
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    device: str = "auto"
    # "auto": on a GPU float16; on the CPU float32: a text's vector then depends on the text
    # alone, so a worker and an offline evaluation agree exactly. "fastest": on the CPU bfloat16
    # where it has AMX (about 2.5x float32, cosine 0.99995), else int8 on a CPU with VNNI or AVX2
    # when it measures at least 1.2x float32 at a mean cosine of 0.99 on this CPU
    # (stream/catalog/precision.py; measured once, then remembered); both move a vector slightly
    # with its batch (up to 1.4e-3 per component), so streaming and offline results no longer
    # agree exactly. "int8" (CPU with VNNI or AVX2) measured 1.3x-2.9x float32, cosine 0.992.
    # Changing it re-encodes stored items: the encoder's fingerprint names the precision.
    precision: Literal["auto", "fastest", "float32", "bfloat16", "float16", "int8"] = "auto"


class InterestSettings(BaseModel):
    """How events move a user's interest vectors: event-time decay and weights."""

    half_life_days: float = Field(default=30.0, gt=0)
    event_weights: dict[str, float] = {
        "view": 0.5,
        "click": 1.0,
        "add_to_cart": 1.5,
        "purchase": 3.0,
        "review": 2.0,
        "rating": 1.0,
    }
    # Multiplies the event weight when the event carries a rating; negative values push away.
    rating_weights: dict[str, float] = {
        "1": -0.5,
        "2": 0.0,
        "3": 0.5,
        "4": 1.0,
        "5": 1.5,
    }
    max_recent: int = Field(default=50, ge=1, le=10_000)
    max_seen_per_domain: int = Field(default=1_000, ge=1, le=1_000_000)


class RecommendationSettings(BaseModel):
    """What the worker emits: ``routes`` maps a target domain to the domains that feed it
    (by default every domain is a target of all the others)."""

    # None: every configured domain is a target, fed by every other domain.
    routes: dict[str, list[str]] | None = None
    top_k: int = Field(default=10, ge=1, le=1000)
    # Emit one recommendation per route after every N source-domain events of a user.
    every_n_events: int = Field(default=1, ge=1)
    # How much a domain's interest counts towards the target query, besides the target itself.
    source_weight: float = 1.0
    target_weight: float = 1.0
    # Name, for every recommended item, the interactions that contributed most to its score.
    explain: bool = True
    explain_top: int = Field(default=3, ge=1, le=20)
    explain_history: int = Field(default=20, ge=1, le=1_000)
    # First pass of top-K over the whole catalog in bfloat16 or int8, the shortlist rescored
    # in float32 ("auto": bfloat16 where the CPU has native bfloat16 arithmetic, else int8
    # where fbgemm has int8 kernels (AVX2 or VNNI); see stream/core/scoring.py).
    coarse_scoring: Literal["auto", "bfloat16", "int8", "off"] = "auto"
    # A domain with at least this many items gets an approximate nearest-neighbour index for
    # top-K's first pass, whose shortlist is scored exactly (stream/core/ann.py; the size is
    # where it measured faster than the exact pass, bench/ann.py); 0 keeps every domain exact.
    approximate_min_items: int = Field(default=100_000, ge=0)
    # The recall@10 against exact top-K that an approximate index is calibrated to reach.
    approximate_recall: float = Field(default=0.97, gt=0, le=1)


_EVENT_LIMITS = EventLimits()


class LimitSettings(BaseModel):
    """Bounds that separate acceptable events from hostile ones; the defaults are the event
    schema's own (``schemas.EventLimits``), which producers validate against too."""

    max_event_bytes: int = Field(default=_EVENT_LIMITS.max_event_bytes, ge=256)
    max_text_chars: int = Field(default=_EVENT_LIMITS.max_text_chars, ge=16)
    max_id_chars: int = Field(default=_EVENT_LIMITS.max_id_chars, ge=8)
    min_timestamp: float = _EVENT_LIMITS.min_timestamp
    max_future_skew_seconds: float = _EVENT_LIMITS.max_future_skew_seconds

    def event_limits(self) -> EventLimits:
        """These bounds as the event validator takes them."""
        return EventLimits(**self.model_dump())


class WorkerSettings(BaseModel):
    """The stream worker's micro-batching and local state."""

    batch_size: int = Field(default=500, ge=1, le=100_000)
    # An idle worker's first event waits this long for others to join its batch; while a batch
    # is processed the next one gathers by itself (stream/worker/batching.py), up to batch_size.
    batch_within_seconds: float = Field(default=0.005, ge=0)
    # A fetch returns once it holds fetch_min_bytes of stored record batches (2 KiB: about 19
    # events paced at 500/s, as lz4 batches of a few events store 109 bytes per event; more in
    # bursts) or after fetch_max_wait_ms (faust leaves aiokafka's 1 byte: a fetch per message).
    # The size sets the pace at steady rates, so each worker's batches hold about as many events
    # however many workers share the stream, and a busy worker fetches sooner than a fixed wait
    # would let it; the wait bounds a quiet stream's latency. At 500 events/s through 1, 2 and 4
    # workers it used 566-818, 666-768 and 810-926 µs of CPU per event against 64 KiB / 20 ms's
    # 672-810, 1,090-1,164 and 1,538-1,620, and the median latency at half the maximum rate fell
    # from 34-36 to 20-24 ms (docs/architecture.md).
    fetch_max_wait_ms: int = Field(default=200, ge=0, le=10_000)
    fetch_min_bytes: int = Field(default=2_048, ge=1, le=50_000_000)
    state_dir: Path = Path(".xdrec/state")
    # Decoded user states kept in memory between batches (least recently written go first),
    # so active users are not read back from RocksDB and decoded every batch; 0 disables.
    state_cache_users: int = Field(default=10_000, ge=0)
    name: str = "worker-0"
    # Threads of torch and BLAS in the runtime process. One suits the hot path's small matrix
    # products, and leaves the other cores to faust's event loop, the broker and more workers:
    # threads spinning at a barrier on a busy machine cost more than they add.
    compute_threads: int = Field(default=1, ge=1, le=256)
    # Consumer-group liveness (faust broker_session_timeout / broker_heartbeat_interval): a
    # crashed worker's partitions move after the session timeout; shorter recovers sooner but
    # a stall longer than it (GC, CPU starvation) triggers a needless rebalance. The broker
    # accepts 6-1800 s by default (group.min/max.session.timeout.ms).
    session_timeout_seconds: float = Field(default=60.0, ge=6, le=1800)
    heartbeat_interval_seconds: float = Field(default=3.0, gt=0)
    # An event on another partition than murmur2 of its user id (a producer on librdkafka's
    # CRC32 default) is produced again to the user's partition instead of applied where it
    # landed (stream/worker/routing.py); off: applied where it lands (counted either way).
    reroute_misrouted: bool = True

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> WorkerSettings:
        if self.heartbeat_interval_seconds * 3 > self.session_timeout_seconds:
            raise ValueError(
                f"worker.heartbeat_interval_seconds={self.heartbeat_interval_seconds} must be at "
                f"most a third of worker.session_timeout_seconds={self.session_timeout_seconds}, "
                "so that one lost heartbeat does not end the session: lower the interval"
            )
        return self


class ModelSettings(BaseModel):
    """Where trained model artifacts are read from (a path or file:// URI)."""

    store: str = ".xdrec/models"


class ExperimentSettings(BaseModel):
    """Online comparison: while a candidate version is announced, this share of users (chosen
    by a stable hash of user_id) is served by it; everyone else keeps the serving version."""

    share: float = Field(default=0.1, ge=0, le=1)
    salt: str = "xdrec"


class TriggerSettings(BaseModel):
    """When a worker asks the trainer for a new model (0 turns a trigger off)."""

    every_events: int = Field(default=0, ge=0)
    every_seconds: float = Field(default=0.0, ge=0)
    # Online hit rate of emitted recommendations below this asks for retraining ...
    quality_floor: float = Field(default=0.0, ge=0, le=1)
    # ... once at least this many checks back the figure, at most once per cooldown.
    quality_window: int = Field(default=2_000, ge=10)
    cooldown_seconds: float = Field(default=600.0, ge=0)


class TrainerSettings(BaseModel):
    """The trainer service: its data window, training run, promotion gate and output."""

    window_days: float | None = Field(default=None, gt=0)  # None: the whole event log
    holdout_share: float = Field(default=0.1, gt=0, lt=1)
    max_holdout_users: int = Field(default=2_000, ge=10)
    epochs: int = Field(default=4, ge=1)  # the most; early stopping on validation may stop sooner
    patience: int = Field(default=2, ge=1)
    batch_size: int = Field(default=512, ge=2)  # the largest; smaller data trains in smaller
    # batches, halved down to min_batch_size while an epoch has fewer than min_steps_per_epoch
    # steps (training.train.batch_size_for); min_steps_per_epoch = 0 keeps batch_size always.
    min_batch_size: int = Field(default=128, ge=2)
    min_steps_per_epoch: int = Field(default=500, ge=0)
    learning_rate: float = Field(default=2e-3, gt=0)
    device: str = "auto"
    compile: bool = False  # torch.compile on a GPU
    processes: int = Field(default=1, ge=1, le=64)
    seed: int = 0
    # Train an ID-sequence tower (SASRec) beside the text-transfer model and serve their fused
    # scores (stream.model.fusion); off: the transfer model alone, in half the training time.
    sequence_tower: bool = True
    # The candidate must beat the serving model on this metric by this much to be published.
    gate_metric: str = Field(
        default="cold.ndcg@10", pattern=r"^(cold|warm)\.(ndcg|hit|recall)@(5|10|20)$"
    )
    gate_margin: float = Field(default=0.0, ge=0)
    # While no trained model serves, refresh and publish version 0's popularity prior first.
    popularity_prior: bool = True
    coalesce_seconds: float = Field(default=2.0, ge=0)
    metrics_port: int = Field(default=9465, ge=0, le=65535)
    work_dir: Path = Path(".xdrec/trainer")
    cache_dir: Path = Path(".xdrec/cache/item-embeddings")


class MetricsSettings(BaseModel):
    """The worker's HTTP server: /metrics, /healthz, /ready and recommendations on request
    (``GET /recommendations/{domain}/{user_id}``). Port 0 picks a free port (logged at start)."""

    enabled: bool = True
    address: str = "127.0.0.1"  # where it binds: loopback unless set
    port: int = Field(default=9464, ge=0, le=65535)
    refresh_seconds: float = Field(default=5.0, gt=0)
    # Asked of every request but /healthz and /ready, as "Authorization: Bearer <token>"
    # (None: none asked). Set it from a secret (XDREC_METRICS__TOKEN); Prometheus then
    # scrapes with an `authorization` section.
    token: SecretStr | None = None
    # Where the other workers reach this one to forward a request for a user it owns (e.g.
    # the pod's DNS name); None: ``address``, or the host name when bound to all interfaces.
    # A worker on port 0 is not reachable by the others: requests for its users get a 503.
    advertised_address: str | None = None
    # The most items a request may ask for (``k``).
    max_request_k: int = Field(default=100, ge=1, le=1000)

    def advertised_url(self) -> str | None:
        """``http://host:port`` the other workers forward to; None on port 0."""
        if self.port == 0:
            return None
        host = self.advertised_address or self.address
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        return f"http://{host}:{self.port}"

    # The event-to-recommendation latency objective: this share of recommendations published
    # within this many seconds of their event's event time. Exported as gauges beside a count
    # of the slower ones, so the burn-rate alerts (deploy/prometheus) follow this setting.
    latency_objective_seconds: float = Field(default=1.0, gt=0)
    latency_objective_ratio: float = Field(default=0.99, gt=0, lt=1)


class Settings(BaseSettings):
    """Everything xdrec needs to run; see the module docstring for the layering."""

    model_config = SettingsConfigDict(
        env_prefix="XDREC_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    app_id: str = Field(default="xdrec", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    domains: list[str] = ["books", "music", "movies"]
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    encoder: EncoderSettings = EncoderSettings()
    interest: InterestSettings = InterestSettings()
    recommendations: RecommendationSettings = RecommendationSettings()
    limits: LimitSettings = LimitSettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    models: ModelSettings = ModelSettings()
    triggers: TriggerSettings = TriggerSettings()
    experiment: ExperimentSettings = ExperimentSettings()
    trainer: TrainerSettings = TrainerSettings()

    @field_validator("domains")
    @classmethod
    def _domains_are_names(cls, domains: list[str]) -> list[str]:
        import re

        if not domains:
            raise ValueError("configure at least one domain")
        for domain in domains:
            if not re.match(DOMAIN_PATTERN, domain):
                raise ValueError(f"domain {domain!r} must match {DOMAIN_PATTERN}")
        if len(set(domains)) != len(domains):
            raise ValueError("domains must be unique")
        return domains

    @model_validator(mode="after")
    def _routes_name_known_domains(self) -> Settings:
        if self.recommendations.routes is None:
            self.recommendations.routes = {
                target: [d for d in self.domains if d != target] for target in self.domains
            }
        known = set(self.domains)
        for target, sources in self.recommendations.routes.items():
            unknown = ({target} | set(sources)) - known
            if unknown:
                raise ValueError(
                    f"route to {target!r} names unknown domains {sorted(unknown)}; "
                    f"add them to 'domains' ({sorted(known)}) or fix the route"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get() or os.environ.get("XDREC_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


class LocalSettings(BaseSettings):
    """The process's own environment, read where a deployment's settings do not exist yet or
    do not apply: the command line's log level, and the development broker's cache folder,
    pom and JVM heap (``KAFKA_HEAP_OPTS``, the name Kafka's own scripts read)."""

    model_config = SettingsConfigDict(env_prefix="XDREC_", extra="ignore")

    log_level: str = "info"
    cache_dir: Path = Path("~/.cache/xdrec")
    kafka_pom: Path | None = None  # default: deploy/kafka/pom.xml of the checkout
    # A modest heap: the broker idles at ~400 MB RSS with it.
    kafka_heap_opts: str = Field(default="-Xmx512m -Xms256m", validation_alias="KAFKA_HEAP_OPTS")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the layers; ``overrides`` are the command line's values.

    Raises ``ValueError`` with the offending keys when the file or environment is invalid.
    """
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise ValueError(f"config file {config_file} does not exist")
    # For this construction only: the process environment is left as it was.
    token = _CONFIG_FILE.set(str(config_file))
    try:
        return Settings(**overrides)
    finally:
        _CONFIG_FILE.reset(token)


def settings_env(settings: Settings) -> dict[str, str]:
    """``XDREC_*`` variables that rebuild ``settings`` in a child process (secrets included)."""
    import json

    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if name == "kafka" and settings.kafka.sasl_password is not None:
            value["sasl_password"] = settings.kafka.sasl_password.get_secret_value()
        if name == "metrics" and settings.metrics.token is not None:
            value["token"] = settings.metrics.token.get_secret_value()
        env[f"XDREC_{name.upper()}"] = (
            json.dumps(value) if isinstance(value, dict | list) else str(value)
        )
    return env


def merge_sections(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``overrides`` applied: a section given as a dict updates that section's
    keys instead of replacing the whole section."""
    merged = dict(values)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
