"""The trainer service: consumes TrainingRequests, runs one job at a time, coalesces duplicates.

Requests that pile up while a job runs (every worker asks on its own) become one job. Offsets
are committed only after the job decided, so a trainer that dies mid-job runs it again on
restart. It can run on its own GPU node: it needs the broker, the model store and nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter

from confluent_kafka import Message
from pydantic import ValidationError

from schemas import SCHEMA_VERSION, TrainingRequest
from stream.core.state import SECONDS_PER_DAY
from stream.kafka.transport import OutgoingMessage, make_consumer, make_producer, produce_all
from stream.settings import Settings
from training.event_log import Window
from training.job import JobFailed, JobResult, run_job
from training.trainer_metrics import TrainerMetrics

log = logging.getLogger(__name__)


def manual_request(requested_by: str = "cli") -> TrainingRequest:
    return TrainingRequest(
        schema_version=SCHEMA_VERSION,
        request_id=uuid.uuid4().hex,
        reason="manual",
        requested_by=requested_by,
        requested_at=time.time(),
    )


def publish_request(settings: Settings, request: TrainingRequest) -> None:
    """What ``xdrec trainer --request`` does: ask the running trainer for a job."""
    message = OutgoingMessage(
        settings.topics.training_requests(),
        request.request_id.encode(),
        request.model_dump_json().encode(),
    )
    produce_all(make_producer(settings), [message])


def merged_window(settings: Settings, requests: list[TrainingRequest]) -> Window:
    """The widest window any of the requests asks for; a request without bounds gets the
    configured default (the last ``trainer.window_days``, or the whole log)."""
    starts, ends = [], []
    for request in requests:
        end = request.window_end
        start = request.window_start
        if start is None and settings.trainer.window_days is not None:
            start = (end or request.requested_at) - settings.trainer.window_days * SECONDS_PER_DAY
        starts.append(start)
        ends.append(end)
    start = None if any(s is None for s in starts) else min(starts)  # type: ignore[type-var]
    end = None if any(e is None for e in ends) else max(ends)  # type: ignore[type-var]
    return Window(start, end)


class TrainerService:
    """See the module docstring."""

    def __init__(
        self, settings: Settings, metrics: TrainerMetrics | None = None, progress: bool = True
    ) -> None:
        self.settings = settings
        self.metrics = metrics or TrainerMetrics()
        self.progress = progress
        self.metrics_port: int | None = None
        if settings.metrics.enabled:
            token = settings.metrics.token
            self.metrics_port = self.metrics.serve(
                settings.metrics.address,
                settings.trainer.metrics_port,
                token.get_secret_value() if token is not None else None,
            )

    def run(self, stop: threading.Event | None = None, max_jobs: int | None = None) -> int:
        """Serve requests until ``stop`` is set (or ``max_jobs`` ran); returns jobs run."""
        stop = stop or threading.Event()
        topic = self.settings.topics.training_requests()
        consumer = make_consumer(
            self.settings,
            group_id=f"{self.settings.app_id}-trainer",
            **{"enable.auto.commit": False},
        )
        consumer.subscribe([topic])
        log.info("trainer waiting for requests topic=%s", topic)
        jobs = 0
        try:
            while not stop.is_set() and (max_jobs is None or jobs < max_jobs):
                requests = self._parse(consumer.consume(100, timeout=1.0))
                if not requests:
                    continue
                deadline = time.monotonic() + self.settings.trainer.coalesce_seconds
                while (remaining := deadline - time.monotonic()) > 0:
                    requests += self._parse(consumer.consume(100, timeout=remaining))
                self.run_requests(requests)
                consumer.commit(asynchronous=False)
                jobs += 1
        finally:
            consumer.close()
        return jobs

    def _parse(self, messages: list[Message]) -> list[TrainingRequest]:
        requests = []
        for message in messages:
            if message.error():
                log.warning("request read error error=%s", message.error().str())
                continue
            try:
                requests.append(TrainingRequest.model_validate_json(message.value() or b""))
            except ValidationError as exc:
                self.metrics.requests_invalid.inc()
                log.warning(
                    "invalid TrainingRequest skipped offset=%d error=%s",
                    message.offset(),
                    exc.errors()[:1],
                )
        return requests

    def run_requests(
        self, requests: list[TrainingRequest], candidate: bool = False
    ) -> JobResult | None:
        """One job for all of ``requests``; returns its result, or None when it failed."""
        metrics = self.metrics
        reasons = Counter(request.reason for request in requests)
        for reason, count in reasons.items():
            metrics.requests.labels(reason).inc(count)
        metrics.requests_coalesced.inc(max(0, len(requests) - 1))
        window = merged_window(self.settings, requests)
        log.info(
            "training job starting requests=%d reasons=%s window_start=%s window_end=%s",
            len(requests),
            dict(reasons),
            window.start,
            window.end,
        )
        metrics.jobs_started.inc()
        metrics.running.set(1)
        started = time.perf_counter()
        try:
            result = run_job(
                self.settings,
                window,
                reasons=[f"{r.reason}:{r.request_id}" for r in requests],
                progress=self.progress,
                candidate=candidate,
            )
        except JobFailed as exc:
            self._failed(exc.reason, str(exc))
            return None
        except Exception as exc:  # any other error: count it, keep the service up
            log.exception("training job crashed")
            self._failed("error", repr(exc))
            return None
        finally:
            metrics.running.set(0)
            metrics.seconds.observe(time.perf_counter() - started)
        metrics.jobs.labels(result.outcome).inc()
        metrics.last_success.set(time.time())
        metrics.examples.set(result.training.get("examples", 0))
        if "loss_to_chance" in result.training:
            metrics.loss_to_chance.set(result.training["loss_to_chance"])
            if result.training.get("near_chance"):
                metrics.near_chance.inc()
            metrics.epochs.labels("trained").set(result.training.get("epochs", 0))
            metrics.epochs.labels("kept").set(result.training.get("best_epoch", 0))
        for name, value in result.metrics.items():
            who, metric = name.split(".", 1)
            metrics.candidate_metric.labels(who, metric).set(value)
            if result.outcome == "promoted" and who == "candidate":
                metrics.promoted_metric.labels(metric).set(value)
        if result.update is not None:
            metrics.promoted_created.set(result.update.created_at)
        return result

    def _failed(self, reason: str, detail: str) -> None:
        self.metrics.jobs.labels("failed").inc()
        self.metrics.failures.labels(reason).inc()
        log.error("training job failed reason=%s detail=%s", reason, detail)
