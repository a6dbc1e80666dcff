"""Follows ``models.updates`` and prepares each announced version off the hot path.

A valid artifact becomes a scorer (a :class:`ModelScorer`, or a :class:`PriorScorer` for
version 0 with a popularity prior) handed to the runtime, which swaps it in between two
batches; an invalid one is refused with a log line and a metric, and the serving version
stays. Refusal reasons are bounded labels (see ``stream.model.artifacts``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from pydantic import ValidationError

from schemas import ZERO_SHOT_VERSION, ModelUpdate
from stream.catalog.store import ItemCatalog
from stream.core.scorer import Scorer, ZeroShotScorer
from stream.kafka.topics import CANDIDATE_KEY
from stream.kafka.transport import make_consumer
from stream.model.artifacts import WEIGHTS, ArtifactRefused, LoadedPrior, load_version
from stream.model.prior import PriorScorer
from stream.model.scorer import ModelScorer
from stream.model.store import ModelStore
from stream.settings import Settings
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class ModelWatcher:
    """Reads model updates; calls ``offer(scorer)`` for each version that passes validation."""

    def __init__(
        self,
        settings: Settings,
        catalog: ItemCatalog,
        metrics: WorkerMetrics,
        offer: Callable[[Scorer], None],
        current_version: Callable[[], str],
        offer_candidate: Callable[[Scorer | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.metrics = metrics
        self.offer = offer
        self.offer_candidate = offer_candidate
        self.current_version = current_version
        self.store = ModelStore(settings.models.store)
        self.targets = list(settings.recommendations.routes)
        self._consumer = make_consumer(settings)
        topic = settings.topics.model_updates()
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def catch_up(self) -> None:
        """Apply the latest announced version before the worker starts serving."""
        latest: dict[bytes | None, bytes | None] = {}
        while True:
            messages = self._consumer.consume(100, timeout=1.0)
            if not messages:
                break
            for message in messages:
                if not message.error():
                    latest[message.key()] = message.value()
        for key, value in latest.items():
            self._route(key, value)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="xdrec-models", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(10, timeout=0.5):
                if not message.error():
                    self._route(message.key(), message.value())

    def _route(self, key: bytes | None, raw: bytes | None) -> None:
        """``serving`` replaces the model of every user; ``candidate`` starts (or, with a
        tombstone, ends) an online comparison on a share of users."""
        if key == CANDIDATE_KEY:
            if self.offer_candidate is None:
                return
            if raw is None:
                self.offer_candidate(None)
                return
            scorer = self._prepare(raw, lambda: "")
            if scorer is not None:
                self.offer_candidate(scorer)
            return
        scorer = self._prepare(raw, self.current_version)
        if scorer is not None:
            self.offer(scorer)

    def _prepare(self, raw: bytes | None, current: Callable[[], str]) -> Scorer | None:
        try:
            update = ModelUpdate.model_validate_json(raw or b"")
        except ValidationError as exc:
            self._refuse("manifest_invalid", f"ModelUpdate does not validate: {exc.errors()[:1]}")
            return None
        if update.version == current():
            return None
        if update.version == ZERO_SHOT_VERSION:  # a rollback to the zero-shot model
            return ZeroShotScorer(self.settings, self.catalog)
        try:
            folder = self.store.resolve_uri(update.artifact_uri or "")
            loaded = load_version(folder)
            if loaded.manifest["sha256"][WEIGHTS] != update.sha256:
                raise ArtifactRefused("sha256_mismatch", "ModelUpdate sha256 differs from manifest")
            if loaded.version != update.version:
                raise ArtifactRefused("manifest_invalid", "artifact version differs from update")
            scorer: Scorer
            if isinstance(loaded, LoadedPrior):
                scorer = PriorScorer(self.settings, self.catalog, loaded.prior, loaded.version)
            else:
                scorer = ModelScorer(loaded, self.catalog, self.targets)
        except ArtifactRefused as exc:
            self._refuse(exc.reason, f"version={update.version} {exc.detail}")
            return None
        except Exception as exc:  # anything unexpected: refuse, keep serving
            self._refuse("load_failed", f"version={update.version} {exc!r}")
            return None
        return scorer

    def _refuse(self, reason: str, detail: str) -> None:
        self.metrics.model_refused.labels(reason).inc()
        log.warning(
            "model artifact refused reason=%s %s; the serving model %s stays",
            reason,
            detail,
            self.current_version(),
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._consumer.close()
