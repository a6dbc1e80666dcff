"""Prometheus metrics of the trainer service (its own registry and /metrics endpoint).

Labels stay bounded: outcome, reason (a fixed set), metric (the gate's metric names).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.worker.metrics import serve_registry

TRAINING_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
OUTCOMES = ("promoted", "rejected", "failed", "candidate")
FAILURE_REASONS = ("no_data", "no_holdout", "serving_unreadable", "error")


class TrainerMetrics:
    """What the on-call needs to know about retraining."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "xdrec_trainer_requests_total",
            "TrainingRequests consumed, per reason.",
            ["reason"],
            registry=r,
        )
        self.requests_coalesced = Counter(
            "xdrec_trainer_requests_coalesced_total",
            "Requests folded into a job that another request had already asked for.",
            registry=r,
        )
        self.requests_invalid = Counter(
            "xdrec_trainer_requests_invalid_total",
            "Messages on the requests topic that are not valid TrainingRequests.",
            registry=r,
        )
        self.jobs_started = Counter(
            "xdrec_training_jobs_started_total", "Training jobs started.", registry=r
        )
        self.jobs = Counter(
            "xdrec_training_jobs_total",
            "Training jobs finished, per outcome: promoted, rejected by the gate, failed, or "
            "stored as an online-comparison candidate.",
            ["outcome"],
            registry=r,
        )
        self.failures = Counter(
            "xdrec_training_failures_total",
            "Failed training jobs, per reason.",
            ["reason"],
            registry=r,
        )
        self.seconds = Histogram(
            "xdrec_training_seconds",
            "Wall time of a training job, from reading the window to the decision.",
            buckets=TRAINING_BUCKETS,
            registry=r,
        )
        self.running = Gauge(
            "xdrec_training_job_running", "1 while a training job runs.", registry=r
        )
        self.examples = Gauge(
            "xdrec_training_examples", "Training examples of the last job.", registry=r
        )
        self.loss_to_chance = Gauge(
            "xdrec_training_loss_to_chance_ratio",
            "Final training loss of the last job over its chance level (1 = learned nothing).",
            registry=r,
        )
        self.near_chance = Counter(
            "xdrec_training_near_chance_total",
            "Jobs whose training ended near chance (loss above 0.95 of chance): look at the "
            "job's log; such a candidate is never better than what serves.",
            registry=r,
        )
        self.epochs = Gauge(
            "xdrec_training_epochs",
            "Epochs the last job trained, and the one it kept (early stopping on validation).",
            ["kind"],
            registry=r,
        )
        self.last_success = Gauge(
            "xdrec_training_last_success_timestamp_seconds",
            "When the last job reached a decision (promoted or rejected), Unix seconds.",
            registry=r,
        )
        self.promoted_metric = Gauge(
            "xdrec_promoted_model_metric",
            "Held-out evaluation of the last promoted model (full protocol), per metric.",
            ["metric"],
            registry=r,
        )
        self.candidate_metric = Gauge(
            "xdrec_training_candidate_metric",
            "Held-out evaluation of the last job's candidate and the serving model.",
            ["model", "metric"],
            registry=r,
        )
        self.promoted_created = Gauge(
            "xdrec_promoted_model_created_timestamp_seconds",
            "When the last promoted model was created, Unix seconds.",
            registry=r,
        )
        for outcome in OUTCOMES:
            self.jobs.labels(outcome)
        for reason in FAILURE_REASONS:
            self.failures.labels(reason)

    def serve(self, address: str, port: int, token: str | None = None) -> int:
        """/metrics (behind ``token`` when set, as the workers'), /healthz and /ready."""
        return serve_registry(self.registry, address, port, token=token)
