"""Prometheus metrics of a worker, and the HTTP endpoint that serves them with the health probes.

Names follow Prometheus conventions (``_total``, ``_seconds``, base units). Labels are bounded:
domain, topic, partition, reason, model_version; never user or item ids. docs/metrics.md says
which question each metric answers; a test checks that every metric used by the dashboard and
the alert rules is defined here.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from stream.core.items import Encoder

log = logging.getLogger(__name__)


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class WorkerMetrics:
    """All metrics of one worker process, in their own registry (tests create several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "xdrec_events_consumed_total",
            "Events read from the event topics.",
            ["domain"],
            registry=r,
        )
        self.events_applied = Counter(
            "xdrec_events_applied_total", "Events applied to user state.", ["domain"], registry=r
        )
        self.events_duplicate = Counter(
            "xdrec_events_duplicate_total",
            "Redelivered events recognized and skipped.",
            ["domain"],
            registry=r,
        )
        self.events_misrouted = Counter(
            "xdrec_events_misrouted_total",
            "Events on another partition than murmur2 of their key picks (their producer "
            "partitions differently: librdkafka's default is CRC32); each is moved to its "
            "user's partition.",
            ["topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "xdrec_dead_letters_total",
            "Inputs sent to the dead-letter topic.",
            ["reason"],
            registry=r,
        )
        self.recommendations = Counter(
            "xdrec_recommendations_total",
            "Recommendations published.",
            ["target_domain", "model_version"],
            registry=r,
        )
        self.batches = Counter("xdrec_batches_total", "Micro-batches processed.", registry=r)
        self.batch_size = Histogram(
            "xdrec_batch_size_events",
            "Events per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "xdrec_batch_processing_seconds",
            "Time to process one micro-batch until its outputs are durable.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_latency = Histogram(
            "xdrec_event_processing_seconds",
            "Per event: from its Kafka timestamp to its outputs being durable.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_time_to_rec = Histogram(
            "xdrec_event_time_to_recommendation_seconds",
            "Per recommendation: from the triggering event's event time to publication.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.recs_over_objective = Counter(
            "xdrec_recommendations_over_objective_total",
            "Recommendations published later after their event's event time than the latency "
            "objective (metrics.latency_objective_seconds): the SLO's bad events.",
            registry=r,
        )
        self.latency_objective_seconds = Gauge(
            "xdrec_latency_objective_seconds",
            "The latency objective's bound (metrics.latency_objective_seconds).",
            registry=r,
        )
        self.latency_objective_ratio = Gauge(
            "xdrec_latency_objective_ratio",
            "The share of recommendations that should meet the bound "
            "(metrics.latency_objective_ratio).",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "xdrec_consumer_lag_messages",
            "Messages in the partition after the last one this worker processed.",
            ["topic", "partition"],
            registry=r,
        )
        self.state_keys = Gauge(
            "xdrec_state_keys", "Estimated keys in the local user state store.", registry=r
        )
        self.state_bytes = Gauge(
            "xdrec_state_bytes", "Estimated live bytes of the local user state store.", registry=r
        )
        self.state_restored = Counter(
            "xdrec_state_restored_records_total",
            "Changelog records replayed into the local store.",
            registry=r,
        )
        self.catalog_items = Gauge(
            "xdrec_catalog_items", "Items with an embedding, per domain.", ["domain"], registry=r
        )
        self.encoder_batches = Counter(
            "xdrec_encoder_batches_total", "Encoder calls.", ["source"], registry=r
        )
        self.encoder_batch_size = Histogram(
            "xdrec_encoder_batch_size_items",
            "Texts per encoder call.",
            ["source"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.encoder_seconds = Histogram(
            "xdrec_encoder_seconds",
            "Seconds per encoder call.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.items_encoded = Counter(
            "xdrec_items_encoded_total", "Item texts encoded.", ["source"], registry=r
        )
        self.model = Info("xdrec_model", "The model version in service.", registry=r)
        self.model_swaps = Counter(
            "xdrec_model_swaps_total", "Model versions swapped in.", registry=r
        )
        self.model_refused = Counter(
            "xdrec_model_artifacts_refused_total",
            "Model artifacts refused, per reason.",
            ["reason"],
            registry=r,
        )
        self.model_created = Gauge(
            "xdrec_model_created_timestamp_seconds",
            "When the serving model was trained (Unix seconds); the worker start for v0.",
            registry=r,
        )
        self.loop_lag = Histogram(
            "xdrec_event_loop_lag_seconds",
            "How late the event loop ran a timer: time it was blocked (by a swap, GC, ...).",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_max = Gauge(
            "xdrec_event_loop_lag_max_seconds",
            "The largest event-loop lag of the last 10 seconds.",
            registry=r,
        )
        self.online_checks = Counter(
            "xdrec_online_checks_total",
            "Events of a user in a domain for which that user had been shown recommendations.",
            ["domain", "model_version"],
            registry=r,
        )
        self.online_hits = Counter(
            "xdrec_online_hits_total",
            "Of those events, the ones whose item was among the recommendations shown.",
            ["domain", "model_version"],
            registry=r,
        )
        self.online_hit_rate = Gauge(
            "xdrec_online_hit_rate",
            "Hit rate over this worker's last checks (the quality-drop trigger watches it).",
            registry=r,
        )
        self.feedback = Counter(
            "xdrec_feedback_total",
            "Feedback events naming a recommendation (impression, click, dismiss, ...).",
            ["domain", "model_version", "event_type"],
            registry=r,
        )
        self.users_erased = Counter(
            "xdrec_users_erased_total",
            "Users whose state was deleted on an erasure request.",
            registry=r,
        )
        self.training_requests = Counter(
            "xdrec_training_requests_total",
            "TrainingRequests this worker published, per reason.",
            ["reason"],
            registry=r,
        )

    def set_latency_objective(self, seconds: float, ratio: float) -> None:
        self.latency_objective_seconds.set(seconds)
        self.latency_objective_ratio.set(ratio)

    def initialize(self, domains: list[str], targets: list[str], model_version: str) -> None:
        """Create every known label set at zero, so that rate() sees the first events."""
        from typing import get_args

        from schemas.contracts import DeadLetterReason, TrainingRequest

        for domain in domains:
            self.events_consumed.labels(domain)
            self.events_applied.labels(domain)
            self.events_duplicate.labels(domain)
            self.online_checks.labels(domain, model_version)
            self.online_hits.labels(domain, model_version)
            for event_type in ("impression", "click", "dismiss"):
                self.feedback.labels(domain, model_version, event_type)
        for target in targets:
            self.recommendations.labels(target, model_version)
        for reason in get_args(DeadLetterReason):
            self.dead_letters.labels(reason)
        for reason in get_args(TrainingRequest.model_fields["reason"].annotation):
            self.training_requests.labels(reason)
        for source in ("catalog", "inline"):
            self.encoder_batches.labels(source)
            self.items_encoded.labels(source)

    def instrument(self, encoder: Encoder, source: str) -> InstrumentedEncoder:
        """Wrap ``encoder`` so every call is counted and timed under ``source``."""
        return InstrumentedEncoder(encoder, self, source)

    def serve(
        self,
        address: str,
        port: int,
        readiness: Callable[[], dict[str, bool]] | None = None,
        token: str | None = None,
        queries: Callable[[dict], tuple[int, list[tuple[str, str]], bytes]] | None = None,
    ) -> int:
        """Serve /metrics, /healthz, /ready and, with ``queries``, /recommendations; returns
        the bound port (0 picks a free one)."""
        return serve_registry(self.registry, address, port, readiness, token, queries)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """No line per request: Prometheus and the probes ask every few seconds, and a
        request's path names its user (the recommendations endpoint logs its own lines)."""


_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    503: "503 Service Unavailable",
}


def serve_registry(
    registry: CollectorRegistry,
    address: str,
    port: int,
    readiness: Callable[[], dict[str, bool]] | None = None,
    token: str | None = None,
    queries: Callable[[dict], tuple[int, list[tuple[str, str]], bytes]] | None = None,
) -> int:
    """Serve ``registry`` on /metrics, liveness on /healthz (200 while the process answers),
    readiness on /ready (200 or 503 with the conditions as JSON, from ``readiness``; without
    it, ready as soon as it answers) and ``queries`` under /recommendations/. With ``token``
    every path but /healthz and /ready asks for ``Authorization: Bearer <token>`` (401
    otherwise). Returns the bound port (0 picks a free one)."""
    metrics_app = make_wsgi_app(registry)
    expected = f"Bearer {token}".encode() if token else None

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        headers: list[tuple[str, str]] = []
        if path == "/healthz":
            status, body = 200, json.dumps({"alive": True}).encode()
        elif path == "/ready":
            state = readiness() if readiness is not None else {"ready": True}
            status, body = (200 if state["ready"] else 503), json.dumps(state).encode()
        elif expected is not None and not hmac.compare_digest(
            environ.get("HTTP_AUTHORIZATION", "").encode(), expected
        ):
            status, headers = 401, [("WWW-Authenticate", 'Bearer realm="xdrec"')]
            body = json.dumps(
                {"reason": "unauthorized", "detail": "send Authorization: Bearer <token>"}
            ).encode()
        elif queries is not None and path.startswith("/recommendations/"):
            status, headers, body = queries(environ)
        else:
            return metrics_app(environ, start_response)
        start_response(
            _STATUS.get(status, f"{status} Error"),
            [("Content-Type", "application/json"), *headers],
        )
        return [body]

    try:
        server = make_server(
            address, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise RuntimeError(
            f"cannot serve metrics on {address}:{port}: {exc}. Set XDREC_METRICS__PORT (worker) "
            "or XDREC_TRAINER__METRICS_PORT (trainer) to a free port (0 picks one) or "
            "XDREC_METRICS__ENABLED=false"
        ) from exc
    threading.Thread(target=server.serve_forever, name="xdrec-http", daemon=True).start()
    bound = int(server.server_address[1])
    paths = "/metrics,/healthz,/ready" + (",/recommendations" if queries is not None else "")
    log.info(
        "metrics served address=%s port=%d paths=%s token=%s", address, bound, paths, bool(token)
    )
    return bound


class InstrumentedEncoder:
    """An encoder that reports its calls; ``source`` says who called (catalog or inline)."""

    def __init__(self, encoder: Encoder, metrics: WorkerMetrics, source: str) -> None:
        self._encoder = encoder
        self._batches = metrics.encoder_batches.labels(source)
        self._sizes = metrics.encoder_batch_size.labels(source)
        self._seconds = metrics.encoder_seconds.labels(source)
        self._items = metrics.items_encoded.labels(source)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = self._encoder.encode(texts)
        self._seconds.observe(time.perf_counter() - started)
        self._batches.inc()
        self._sizes.observe(len(texts))
        self._items.inc(len(texts))
        return vectors
