"""Everything one worker process holds, and the synchronous handling of one micro-batch.

The runtime process (``stream/worker/runtime_process.py``) calls it for each batch the faust
agent hands over, so faust's event loop stays free for heartbeats and rebalances. Order within a
batch, chosen for at-least-once with
idempotent state: (1) recommendations and dead letters are produced and acknowledged, (2) then
the new states' changelog records, (3) states and changelog offsets are written to RocksDB,
(4) only then does the agent ack the source offsets. A crash anywhere replays the batch; events
already applied are recognized by the per-partition offsets kept in each user's state and
skipped, and a state is never durable before the recommendations of the events it counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from schemas import ZERO_SHOT_VERSION, DeadLetter
from stream.catalog.encoder import TextEncoder
from stream.catalog.reader import CatalogReader
from stream.catalog.store import ItemCatalog
from stream.core.ann import ApproximateConfig
from stream.core.emit import EmittedRecommendation
from stream.core.popularity import POPULARITY_VERSION, PopularityTally, popularity_recommendation
from stream.core.processor import BatchOutput, BatchProcessor, recommendation_id
from stream.core.records import SourceRecord
from stream.core.scorer import Scorer
from stream.core.scoring import coarse_dtype
from stream.kafka.transport import (
    OutgoingMessage,
    is_transient,
    make_consumer,
    make_producer,
    produce_all,
)
from stream.model.watcher import ModelWatcher
from stream.settings import Settings
from stream.state.changelog import StateChangelog
from stream.state.store import UserStateStore
from stream.worker.metrics import WorkerMetrics
from stream.worker.queries import (
    Forward,
    QueryError,
    QueryHandler,
    RecommendationQuery,
    new_request_id,
)
from stream.worker.routing import PartitionRouter
from stream.worker.training_trigger import TrainingTrigger

log = logging.getLogger(__name__)

CATALOG_REFRESH_SECONDS = 1.0
# At most one warning a minute about misrouted events; the metric counts every one.
MISROUTED_WARN_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class BatchStats:
    records: int
    applied: Counter[str]
    duplicates: Counter[str]
    recommendations: int
    dead_letters: int
    seconds: float


def recommendation_messages(
    settings: Settings, recs: Iterable[EmittedRecommendation]
) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            settings.topics.recs(rec.target_domain), rec.user_id.encode("utf-8"), rec.to_json()
        )
        for rec in recs
    ]


def dead_letter_messages(
    settings: Settings, letters: Iterable[DeadLetter]
) -> list[OutgoingMessage]:
    topic = settings.topics.dead_letters()
    return [
        OutgoingMessage(topic, None, letter.model_dump_json().encode("utf-8")) for letter in letters
    ]


class WorkerRuntime:
    """Encoder, item catalog, state store, changelog and producer of one worker process."""

    def __init__(self, settings: Settings, metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        # (topic, partition) -> next offset to process, for the lag gauge.
        self.positions: dict[tuple[str, int], int] = {}
        self.domain_of_topic = {settings.topics.events(d): d for d in settings.domains}
        self.state_dir = settings.worker.state_dir / settings.worker.name
        self.encoder: TextEncoder | None = None
        self.catalog: ItemCatalog | None = None
        self.reader: CatalogReader | None = None
        self.store: UserStateStore | None = None
        self.processor: BatchProcessor | None = None
        # Each batch's outputs are produced together and then waited for, so lingering only
        # delays them: 1 ms gathers one batch's produce() calls into few requests (5 ms, the
        # default, put 5 ms on every batch's latency).
        self.producer = make_producer(settings, **{"linger.ms": 1})
        self.changelog = StateChangelog(settings)
        self.trigger = TrainingTrigger(settings, self.metrics, self.produce)
        self._restored: set[int] = set()
        self._restored_lock = threading.Lock()
        # Readiness (/ready): the group's assignment (None while a rebalance is under way),
        # whether a restore runs, and the start-up steps done.
        self._assigned: set[int] | None = None
        # partition -> URL of the worker that owns it (from the group's assignment), for
        # forwarding requests for users this worker does not own.
        self._owners: dict[int, str] = {}
        self._restoring = False
        self._catalog_ready = False
        self._model_ready = False
        self._closing = threading.Event()
        self.watcher: ModelWatcher | None = None
        self._pending_scorer: Scorer | None = None
        self._pending_candidate: tuple[Scorer | None] | None = None
        self._scorer_lock = threading.Lock()
        self.metrics_port: int | None = None
        self.started = threading.Event()
        self._last_catalog_refresh = float("-inf")
        self.router = PartitionRouter(settings)
        self.popularity = PopularityTally()
        self._misrouted_warned_at = float("-inf")

    def start(self) -> None:
        """Load the encoder, open the stores and catch the catalog up (may take a while)."""
        settings = self.settings
        self.metrics.initialize(
            settings.domains, list(settings.recommendations.routes), ZERO_SHOT_VERSION
        )
        for topic in self.domain_of_topic:
            self.metrics.events_misrouted.labels(topic)
        self.metrics.set_latency_objective(
            settings.metrics.latency_objective_seconds, settings.metrics.latency_objective_ratio
        )
        self.metrics.model.info({"model_version": ZERO_SHOT_VERSION})
        self.metrics.model_created.set(time.time())
        if settings.metrics.enabled:
            token = settings.metrics.token
            self.metrics_port = self.metrics.serve(
                settings.metrics.address,
                settings.metrics.port,
                self.readiness,
                token.get_secret_value() if token is not None else None,
                QueryHandler(settings, self.answer_query),
            )
            threading.Thread(target=self._monitor, name="xdrec-gauges", daemon=True).start()
        self.encoder = TextEncoder.from_settings(settings.encoder)
        self.store = UserStateStore(self.state_dir / "users", settings.worker.state_cache_users)
        self.catalog = ItemCatalog(
            self.state_dir / "items",
            self.encoder.fingerprint,
            self.encoder.dimension,
            coarse_dtype(settings.recommendations.coarse_scoring),
            ApproximateConfig.from_settings(settings.recommendations),
        )
        self.catalog.load()
        self.processor = BatchProcessor(
            settings, self.catalog, self.metrics.instrument(self.encoder, "inline")
        )
        self.reader = CatalogReader(
            settings,
            self.catalog,
            self.metrics.instrument(self.encoder, "catalog"),
            self.processor.validator,
            self.publish_dead_letters,
        )
        self.reader.assign()
        self.reader.catch_up()
        self.reader.start()
        self._catalog_ready = True
        self.watcher = ModelWatcher(
            settings,
            self.catalog,
            self.metrics,
            self.offer_scorer,
            lambda: self.processor.scorer.version if self.processor else ZERO_SHOT_VERSION,
            self.offer_candidate,
        )
        self.watcher.catch_up()
        self.swap_if_pending()
        self.watcher.start()
        self._model_ready = True
        with self._restored_lock:
            assigned = set(self._assigned or ())
        self._ensure_restored(assigned)  # an assignment that came during start-up
        self.started.set()
        log.info("worker ready name=%s state_dir=%s", settings.worker.name, self.state_dir)

    def offer_scorer(self, scorer: Scorer) -> None:
        """A validated model version, ready to serve from the next batch on."""
        with self._scorer_lock:
            self._pending_scorer = scorer

    def offer_candidate(self, scorer: Scorer | None) -> None:
        """A version to compare online on a share of users (None ends the comparison)."""
        with self._scorer_lock:
            self._pending_candidate = (scorer,)

    def swap_if_pending(self) -> None:
        """Serve the version the watcher prepared, if any: called before each batch and when
        the worker idles, so an idle worker's metrics show the new version too."""
        with self._scorer_lock:
            scorer, self._pending_scorer = self._pending_scorer, None
            candidate, self._pending_candidate = self._pending_candidate, None
        if candidate is not None and self.processor is not None:
            (self.processor.candidate,) = candidate
            version = candidate[0].version if candidate[0] is not None else None
            for target in self.settings.recommendations.routes:
                if version is not None:
                    self.metrics.recommendations.labels(target, version)
            log.info(
                "online comparison candidate=%s share=%.3f serving=%s",
                version,
                self.settings.experiment.share,
                self.processor.scorer.version,
            )
        if scorer is None or self.processor is None:
            return
        previous = self.processor.scorer.version
        self.processor.scorer = scorer  # one reference, between batches
        self.metrics.model_swaps.inc()
        self.metrics.model.info({"model_version": scorer.version})
        self.metrics.model_created.set(getattr(scorer, "created_at", time.time()))
        for target in self.settings.recommendations.routes:
            self.metrics.recommendations.labels(target, scorer.version)
        log.info("model swapped from=%s to=%s", previous, scorer.version)

    def _refresh_catalog(self) -> None:
        """Catch the catalog up for a batch with unknown items, at most once per second: a
        stream of events for unknown items must not turn every batch into a catalog read.

        While the broker is away the catch-up waits for it (``kafka.retry_timeout_seconds``)
        rather than going on with the catalog as it is: that could dead-letter an event whose
        item was published just before it but not read yet, and the batch cannot finish
        without the broker anyway (its outputs need acks). An outage longer than that fails
        the batch, which is then replayed after the restart: nothing is lost either way."""
        assert self.reader is not None
        now = time.monotonic()
        if now - self._last_catalog_refresh >= CATALOG_REFRESH_SECONDS:
            self._last_catalog_refresh = now
            self.reader.catch_up()

    def produce(self, messages: Iterable[OutgoingMessage]) -> list[Message]:
        """Produce and wait for the acks, riding out broker outages up to
        ``kafka.produce_timeout_seconds`` (the producer's message.timeout.ms too)."""
        return produce_all(self.producer, messages, self.settings.kafka.produce_timeout_seconds)

    def publish_dead_letters(self, letters: list[DeadLetter]) -> None:
        self.produce(dead_letter_messages(self.settings, letters))

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions were revoked: restore them from the changelog if they come back. Until
        the next assignment the worker is not ready (a rebalance is under way)."""
        partitions = set(partitions)
        with self._restored_lock:
            self._restored.difference_update(partitions)
            self._assigned = None
            self._owners = {}
            if self.store is not None:
                # Another worker may change these users meanwhile: read them back when due.
                self.store.clear_cache()
            for topic, partition in [tp for tp in self.positions if tp[1] in partitions]:
                del self.positions[(topic, partition)]
                self.metrics.consumer_lag.remove(topic, str(partition))

    def assign_partitions(
        self, partitions: Iterable[int], owners: dict[int, str] | None = None
    ) -> None:
        """The group gave this worker ``partitions`` (and ``owners``, every partition's
        worker URL): restore them now rather than on their first batch, so that readiness
        means the state is there (before start-up finishes, :meth:`start` restores them at
        its end)."""
        partitions = set(partitions)
        with self._restored_lock:
            self._assigned = partitions
            self._owners = dict(owners or {})
        if self.started.is_set():
            self._ensure_restored(partitions)

    def readiness(self) -> dict[str, bool]:
        """What /ready reports: ready when the catalog is caught up, a model version is loaded,
        the group's assignment is known and every assigned partition's state is restored."""
        with self._restored_lock:
            assigned = self._assigned
            restored = assigned is not None and not self._restoring and assigned <= self._restored
        state = {
            "catalog_caught_up": self._catalog_ready,
            "model_loaded": self._model_ready,
            "partitions_assigned": assigned is not None,
            "state_restored": restored,
        }
        return {"ready": all(state.values()), **state}

    def answer_query(self, query: RecommendationQuery, forwarded: bool) -> bytes | Forward:
        """A request's answer (``Recommendation`` JSON) from this worker's state, or the worker
        to forward it to; QueryError when neither can be given now (see stream.worker.queries).
        Runs on an HTTP thread beside the batches: it reads the user's state as last written
        and changes nothing."""
        if not self.started.is_set() or self.processor is None or self.store is None:
            raise QueryError(503, "starting", "the worker is starting; retry", retry_after=True)
        partition = self.router.partition_of(query.user_id.encode("utf-8"))
        with self._restored_lock:
            assigned, owner = self._assigned, self._owners.get(partition)
            restoring = self._restoring or partition not in self._restored
        if assigned is None:
            raise QueryError(
                503, "rebalancing", "the group is rebalancing; retry", retry_after=True
            )
        if partition not in assigned:
            if forwarded or owner is None:
                raise QueryError(
                    503,
                    "owner_unknown",
                    "the worker that owns this user is not known here yet (or not reachable: "
                    "set metrics.port and metrics.advertised_address on every worker); retry",
                    retry_after=True,
                )
            return Forward(owner)
        if restoring:
            raise QueryError(
                503, "restoring", "this user's partition is being restored; retry", True
            )
        state = self.store.read(query.user_id)
        request_id = new_request_id()
        recommendation = (
            self.processor.recommend(state, query.domain, query.k, query.explain, request_id)
            if state is not None
            else None
        )
        if recommendation is None:  # no history to rank by: the domain's popularity
            seen = state.seen.get(query.domain, ()) if state is not None else ()
            items = self.popularity.top(query.domain, query.k, seen)
            if not items:
                raise QueryError(
                    404,
                    "unknown_user",
                    "the user has no history in the domains that feed "
                    f"{query.domain}, and this worker has applied no {query.domain} events yet",
                )
            recommendation = popularity_recommendation(
                recommendation_id(query.user_id, query.domain, request_id, POPULARITY_VERSION),
                query.user_id,
                query.domain,
                items,
                request_id,
                time.time(),
            )
        return recommendation.to_json()

    def _ensure_restored(self, partitions: set[int]) -> None:
        with self._restored_lock:
            missing = partitions - self._restored
            self._restoring = bool(missing)
        if not missing:
            return
        assert self.store is not None
        try:
            self.metrics.state_restored.inc(self.changelog.restore(self.store, missing))
            with self._restored_lock:
                self._restored |= missing
        finally:
            with self._restored_lock:
                self._restoring = False

    def handle_batch(self, records: Sequence[SourceRecord]) -> BatchStats:
        """Process one micro-batch to completion; returns only when its outputs are durable."""
        assert self.processor is not None and self.store is not None and self.reader is not None
        self.swap_if_pending()
        started = time.perf_counter()
        routed = self.router.split(records)
        self._ensure_restored({record.partition for record in routed.own})
        output = self.processor.process(routed.own, self.store.get, self._refresh_catalog)
        states: dict[str, tuple[int, bytes | None]] = {
            user_id: (partition, state.to_bytes())
            for user_id, (partition, state) in output.states.items()
        }
        states.update({user_id: (partition, None) for user_id, partition in output.erased.items()})
        self.produce(
            recommendation_messages(self.settings, output.recommendations)
            + dead_letter_messages(self.settings, output.dead_letters)
            + routed.moved
        )
        # The new states only once the outputs are acknowledged: librdkafka sends each
        # partition on its own, so produced together a crash could leave a changelog record
        # durable and its batch's recommendations not. After a restart the restored state
        # would then count the batch's events as applied and skip them: recommendations lost.
        delivered = self.produce(self.changelog.messages(states))
        offsets = self.changelog.offsets(delivered)
        self.store.write(
            ((user, value) for user, (_, value) in states.items()),
            offsets,
            decoded={user: state for user, (_, state) in output.states.items()},
        )
        self.popularity.add(output.interactions)
        stats = BatchStats(
            records=len(records),
            applied=output.applied_by_domain,
            duplicates=output.duplicates_by_domain,
            recommendations=len(output.recommendations),
            dead_letters=len(output.dead_letters),
            seconds=time.perf_counter() - started,
        )
        self._observe(records, output, stats, routed.misrouted)
        self.trigger.observe(
            sum(stats.applied.values()),
            sum(output.online_checks.values()),
            sum(output.online_hits.values()),
        )
        return stats

    def _observe(
        self,
        records: Sequence[SourceRecord],
        output: BatchOutput,
        stats: BatchStats,
        misrouted: Counter[str],
    ) -> None:
        metrics = self.metrics
        now = time.time()
        consumed: Counter[str] = Counter()
        for record in records:
            domain = self.domain_of_topic.get(record.topic)
            if domain is not None:
                consumed[domain] += 1
            if record.timestamp:
                metrics.event_latency.observe(max(0.0, now - record.timestamp))
            key = (record.topic, record.partition)
            self.positions[key] = max(self.positions.get(key, 0), record.offset + 1)
        for domain, count in consumed.items():
            metrics.events_consumed.labels(domain).inc(count)
        for topic, count in misrouted.items():
            metrics.events_misrouted.labels(topic).inc(count)
        if misrouted and time.monotonic() - self._misrouted_warned_at > MISROUTED_WARN_SECONDS:
            self._misrouted_warned_at = time.monotonic()
            log.warning(
                "events on the wrong partition count=%d topics=%s moved=%s: their producer "
                "does not partition by murmur2 of the user id (librdkafka's default is CRC32); "
                "each is produced again to its user's partition, which costs a second write "
                "and read: set partitioner=murmur2_random in the producer (see README, Topics)",
                sum(misrouted.values()),
                sorted(misrouted),
                self.router.move,
            )
        for domain, count in stats.applied.items():
            metrics.events_applied.labels(domain).inc(count)
        for domain, count in stats.duplicates.items():
            metrics.events_duplicate.labels(domain).inc(count)
        for letter in output.dead_letters:
            metrics.dead_letters.labels(letter.reason).inc()
        for (domain, version), count in output.online_checks.items():
            metrics.online_checks.labels(domain, version).inc(count)
        for (domain, version), count in output.online_hits.items():
            metrics.online_hits.labels(domain, version).inc(count)
        for (domain, version, event_type), count in output.feedback.items():
            metrics.feedback.labels(domain, version, event_type).inc(count)
        if output.erased:
            metrics.users_erased.inc(len(output.erased))
            log.info("users erased count=%d", len(output.erased))
        objective = self.settings.metrics.latency_objective_seconds
        for rec in output.recommendations:
            metrics.recommendations.labels(rec.target_domain, rec.model_version).inc()
            delay = max(0.0, now - rec.trigger.event_time)
            metrics.event_time_to_rec.observe(delay)
            if delay > objective:
                metrics.recs_over_objective.inc()
        metrics.batches.inc()
        metrics.batch_size.observe(stats.records)
        metrics.batch_seconds.observe(stats.seconds)
        log.debug(
            "batch done records=%d applied=%d duplicates=%d recs=%d dlq=%d seconds=%.3f",
            stats.records,
            sum(stats.applied.values()),
            sum(stats.duplicates.values()),
            stats.recommendations,
            stats.dead_letters,
            stats.seconds,
        )

    def refresh_gauges(self, watermarks: Consumer) -> None:
        """Lag, state size and catalog size; called every few seconds off the hot path."""
        metrics = self.metrics
        for (topic, partition), position in list(self.positions.items()):
            _, high = watermarks.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=5.0
            )
            metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - position))
        if self.store is not None:
            keys, size = self.store.estimates()
            metrics.state_keys.set(keys)
            metrics.state_bytes.set(size)
        if self.catalog is not None:
            for domain, count in self.catalog.counts().items():
                metrics.catalog_items.labels(domain).set(count)

    def _monitor(self) -> None:
        watermarks = make_consumer(self.settings)
        try:
            while not self._closing.wait(self.settings.metrics.refresh_seconds):
                try:
                    self.refresh_gauges(watermarks)
                except Exception as exc:  # a failed refresh must never take the worker down
                    if is_transient(exc):  # the broker is away: one line, not a traceback
                        log.warning("gauge refresh waiting for the broker error=%s", exc)
                    else:
                        log.exception("gauge refresh failed")
        finally:
            watermarks.close()

    def close(self) -> None:
        self._closing.set()
        if self.watcher is not None:
            self.watcher.close()
        if self.reader is not None:
            self.reader.close()
        self.producer.flush(10.0)
        if self.store is not None:
            self.store.close()
        if self.catalog is not None:
            self.catalog.close()
