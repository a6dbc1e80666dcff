"""When a worker asks the trainer for a new model: every N events, every T seconds, and when
the online hit rate of the recommendations it emitted drops below a floor.

Every worker asks on its own; the trainer coalesces what piles up, so several workers asking
at once cost one training job.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable

from schemas import SCHEMA_VERSION, TrainingRequest
from stream.kafka.transport import OutgoingMessage
from stream.settings import Settings
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class TrainingTrigger:
    """Watches applied events and online hits; hands TrainingRequests to ``send``."""

    def __init__(
        self,
        settings: Settings,
        metrics: WorkerMetrics,
        send: Callable[[list[OutgoingMessage]], object],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = settings.triggers
        self.topic = settings.topics.training_requests()
        self.requested_by = settings.worker.name
        self.metrics = metrics
        self.send = send
        self.clock = clock
        self._events_since = 0
        self._last_scheduled = clock()
        self._last_quality_request = float("-inf")
        # (checks, hits) per batch, trimmed to the configured number of checks.
        self._window: deque[tuple[int, int]] = deque()
        self._checks = 0
        self._hits = 0

    @property
    def hit_rate(self) -> float | None:
        return self._hits / self._checks if self._checks else None

    def observe(self, applied: int, checks: int, hits: int) -> list[TrainingRequest]:
        """Account one batch; returns the requests it published (usually none)."""
        now = self.clock()
        requests: list[TrainingRequest] = []
        config = self.config
        self._events_since += applied
        if config.every_events and self._events_since >= config.every_events:
            # Keep the remainder: a batch that crosses the mark must not push the next one out
            # by its overshoot. A batch crossing several marks asks once; the trainer coalesces.
            self._events_since %= config.every_events
            requests.append(self._request("event_count", now))
        if config.every_seconds and now - self._last_scheduled >= config.every_seconds:
            self._last_scheduled = now
            requests.append(self._request("schedule", now))
        if checks:
            self._window.append((checks, hits))
            self._checks += checks
            self._hits += hits
            while self._window and self._checks - self._window[0][0] >= config.quality_window:
                old_checks, old_hits = self._window.popleft()
                self._checks -= old_checks
                self._hits -= old_hits
            self.metrics.online_hit_rate.set(self._hits / self._checks)
        rate = self.hit_rate
        if (
            config.quality_floor > 0
            and rate is not None
            and self._checks >= config.quality_window
            and rate < config.quality_floor
            and now - self._last_quality_request >= config.cooldown_seconds
        ):
            self._last_quality_request = now
            log.warning(
                "online hit rate below floor rate=%.4f floor=%.4f checks=%d: requesting training",
                rate,
                config.quality_floor,
                self._checks,
            )
            requests.append(self._request("quality_drop", now))
        if requests:
            self.send(
                [
                    OutgoingMessage(
                        self.topic, request.request_id.encode(), request.model_dump_json().encode()
                    )
                    for request in requests
                ]
            )
            for request in requests:
                self.metrics.training_requests.labels(request.reason).inc()
                log.info(
                    "training requested reason=%s request_id=%s",
                    request.reason,
                    request.request_id,
                )
        return requests

    def _request(self, reason: str, now: float) -> TrainingRequest:
        return TrainingRequest(
            schema_version=SCHEMA_VERSION,
            request_id=uuid.uuid4().hex,
            reason=reason,  # type: ignore[arg-type]
            requested_by=self.requested_by,
            requested_at=now,
        )
