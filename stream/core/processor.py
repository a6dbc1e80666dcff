"""The pure processing core: a batch of raw events and the current user states in, new states,
recommendations and dead letters out.

It imports no Kafka and no faust, so the worker, the offline replay, the tests and the
benchmarks all run the same code. Each user's state is loaded once and written once per batch.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from schemas import (
    FEEDBACK_ONLY,
    SCHEMA_VERSION,
    ZERO_SHOT_VERSION,
    DeadLetter,
    ErasureRequest,
    EventLimits,
    EventValidator,
    Rejection,
    UserEvent,
)
from stream.core.emit import EmittedRecommendation, EmittedTrigger
from stream.core.explain import Contributions, Explainer, explain_batch, zero_shot_explainer
from stream.core.items import Encoder, item_text, text_digest
from stream.core.scoring import DomainIndex, top_k
from stream.core.state import (
    AppliedEvent,
    UserState,
    apply_event,
    interest_sum,
    normalize,
    scale_query,
    state_time,
)
from stream.settings import Settings

MAX_KEY_BYTES = 1_024  # of a refused record's key kept in its dead letter


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One consumed Kafka record, as the transport hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # the Kafka record timestamp, Unix seconds


class ItemEmbeddings(Protocol):
    """What the processor needs from the item catalog."""

    def embedding(self, domain: str, item_id: str) -> np.ndarray | None: ...
    def embeddings(self, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[bool]]: ...
    def add(
        self, domain: str, item_ids: list[str], digests: list[bytes], vectors: np.ndarray
    ) -> None: ...
    def index(self, domain: str) -> DomainIndex: ...


class Scorer(Protocol):
    """A model version: how a user's state becomes a query, and the items it is scored on.

    ``prepare`` runs when a recommendation is due and snapshots what the query needs (the
    state changes as the batch goes on); ``finish`` turns the snapshots of one target into
    queries at once (one forward pass for a trained model) and, when asked, explainers.
    """

    version: str

    def prepare(
        self, state: UserState, target: str, sources: list[str], explain: bool
    ) -> object | None: ...
    def finish(self, prepared: Sequence[object]) -> tuple[np.ndarray, list[Explainer | None]]: ...
    def index(self, target: str) -> DomainIndex: ...


class ZeroShotScorer:
    """Model version 0: the decayed interest in the encoder's text space, cosine to items."""

    version = ZERO_SHOT_VERSION

    def __init__(self, settings: Settings, items: ItemEmbeddings) -> None:
        self.settings = settings
        self.items = items

    def query(self, state: UserState, target: str, sources: list[str]) -> np.ndarray | None:
        prepared = self.prepare(state, target, sources, explain=False)
        return None if prepared is None else prepared[0]

    def index(self, target: str) -> DomainIndex:
        return self.items.index(target)

    def prepare(
        self, state: UserState, target: str, sources: list[str], explain: bool
    ) -> tuple[np.ndarray, Explainer | None] | None:
        """The normalized decayed interest (as :func:`stream.core.state.interest_query`) and, when
        asked, its exact decomposition, from one sum."""
        config = self.settings.recommendations
        when = state_time(state)
        total = interest_sum(
            state,
            target,
            sources,
            when,
            self.settings.interest,
            source_weight=config.source_weight,
            target_weight=config.target_weight,
        )
        normalized = normalize(total) if total is not None else None
        if normalized is None:
            return None
        query, norm = normalized
        # A subclass may scale the query (and so its decomposition) per user; x / 1 is x.
        weight = self.weight(state, target)
        explainer = (
            zero_shot_explainer(
                state, target, sources, norm * weight, self.items, self.settings, when
            )
            if explain
            else None
        )
        return scale_query(query, weight), explainer

    def weight(self, state: UserState, target: str) -> float:
        """What the user's cosine query is divided by: 1 here (see ``stream.model.prior``)."""
        return 1.0

    def finish(self, prepared: Sequence[object]) -> tuple[np.ndarray, list[Explainer | None]]:
        pairs: Sequence[tuple[np.ndarray, Explainer | None]] = prepared  # type: ignore[assignment]
        return np.stack([query for query, _ in pairs]), [explainer for _, explainer in pairs]


@dataclass
class BatchOutput:
    """What one batch produced; the runtime persists states and publishes the rest."""

    # user_id -> (source partition, new state): the partition decides the changelog partition.
    states: dict[str, tuple[int, UserState]] = field(default_factory=dict)
    recommendations: list[EmittedRecommendation] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    applied_by_domain: Counter[str] = field(default_factory=Counter)
    duplicates_by_domain: Counter[str] = field(default_factory=Counter)
    # (domain, model_version) -> events checked against / found in the recommendations shown.
    online_checks: Counter[tuple[str, str]] = field(default_factory=Counter)
    online_hits: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (domain, model_version, event_type) -> feedback events naming a recommendation.
    feedback: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # user_id -> partition of the erasure request: state deleted, changelog tombstoned.
    erased: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _PendingRecommendation:
    user_id: str
    target: str
    sources: list[str]
    prepared: object
    exclude: frozenset[str]
    trigger: EmittedTrigger
    scorer: Scorer
    recommendation_id: str = ""  # set once ranked


def dead_letter(
    record: SourceRecord, rejection: Rejection, failed_at: float, keep_bytes: int = 65_536
) -> DeadLetter:
    """Wrap a refused record with its origin and original bytes. An oversized value keeps only
    its first ``keep_bytes``: base64 of the whole could exceed what the broker accepts, and a
    dead letter that cannot be written would stop the worker."""
    value = record.value or b""
    kept = value[:keep_bytes]
    return DeadLetter(
        schema_version=SCHEMA_VERSION,
        reason=rejection.reason,
        detail=rejection.detail,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=base64.b64encode(record.key[:MAX_KEY_BYTES]).decode("ascii")
        if record.key is not None
        else None,
        original=base64.b64encode(kept).decode("ascii"),
        original_bytes=len(value),
        truncated=len(kept) < len(value),
        failed_at=failed_at,
    )


def in_event_time_order(
    accepted: list[tuple[SourceRecord, UserEvent]],
) -> list[tuple[SourceRecord, UserEvent]]:
    """Interleave the batch's partitions by event time, keeping each partition's own order.

    Each domain has its own topic, so a user's events of different domains arrive in whatever
    order the fetches bring them; merging by event time (as Kafka Streams synchronizes
    co-partitioned inputs) restores the user's real sequence within a batch. Order within a
    partition is never changed: offsets must increase for the redelivery check.
    """
    partitions: dict[tuple[str, int], list[tuple[SourceRecord, UserEvent]]] = defaultdict(list)
    for pair in accepted:
        partitions[(pair[0].topic, pair[0].partition)].append(pair)
    if len(partitions) < 2:
        return accepted
    return list(heapq.merge(*partitions.values(), key=lambda pair: pair[1].timestamp))


def recommendation_id(user_id: str, target: str, event_id: str, model_version: str) -> str:
    """Deterministic, so a redelivered event produces the same id and consumers can dedupe."""
    material = "\x1f".join((user_id, target, event_id, model_version)).encode("utf-8")
    return hashlib.sha256(material).hexdigest()[:32]


class BatchProcessor:
    """Validates, applies and scores one micro-batch; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        items: ItemEmbeddings,
        encoder: Encoder,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.items = items
        self.encoder = encoder
        # Swapped by the runtime between batches; a batch uses the one it started with.
        self.scorer: Scorer = ZeroShotScorer(settings, items)
        # A version compared online with the serving one on a share of users, or None.
        self.candidate: Scorer | None = None
        self.clock = clock
        self.validator = EventValidator(
            settings.domains, limits=_event_limits(settings), clock=clock
        )
        self.topic_domains = {settings.topics.events(d): d for d in settings.domains}
        self.erasure_topic = settings.topics.erasure()
        # source domain -> routes it feeds
        self.routes_by_source: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
        for target, sources in settings.recommendations.routes.items():
            for source in sources:
                self.routes_by_source[source].append((target, sources))

    def process(
        self,
        records: Sequence[SourceRecord],
        load_state: Callable[[str], UserState | None],
        refresh_items: Callable[[], None] | None = None,
    ) -> BatchOutput:
        """Process ``records`` in order. ``refresh_items`` lets the caller catch the catalog up
        once before events for still-unknown items are refused."""
        output = BatchOutput()
        serving, candidate = self.scorer, self.candidate
        now = self.clock()
        accepted: list[tuple[SourceRecord, UserEvent]] = []
        erasures: list[tuple[SourceRecord, ErasureRequest]] = []
        for record in records:
            if record.topic == self.erasure_topic:
                request = self._validate_erasure(record)
                if isinstance(request, Rejection):
                    output.dead_letters.append(dead_letter(record, request, now))
                else:
                    erasures.append((record, request))
                continue
            result = self._validate(record)
            if isinstance(result, Rejection):
                output.dead_letters.append(
                    dead_letter(record, result, now, self.settings.limits.max_event_bytes)
                )
            else:
                accepted.append((record, result))

        accepted = in_event_time_order(accepted)
        embeddings = self._resolve_embeddings(accepted, refresh_items)
        pending: list[_PendingRecommendation] = []
        states: dict[str, UserState] = {}
        # Per user, in processing order: an applied event (domain, item) or a recommendation
        # (its position in ``pending``). Walked after scoring so that the online hit check
        # sees the same sequence whatever the batch boundaries.
        timeline: dict[str, list[tuple[str, str] | int]] = defaultdict(list)
        interest = self.settings.interest
        for record, event in accepted:
            embedding = embeddings.get((event.domain, event.item_id))
            if embedding is None:
                rejection = Rejection(
                    "unknown_item",
                    f"item {event.item_id!r} is not in catalog.{event.domain} and the event "
                    "carries no text: publish the catalog item first or add title/text",
                )
                output.dead_letters.append(dead_letter(record, rejection, now))
                continue
            state = states.get(event.user_id)
            if state is None:
                state = load_state(event.user_id) or UserState(user_id=event.user_id)
                states[event.user_id] = state
            applied = apply_event(
                state,
                AppliedEvent(
                    event_id=event.event_id,
                    domain=event.domain,
                    item_id=event.item_id,
                    event_type=event.event_type,
                    timestamp=event.timestamp,
                    rating=event.rating,
                    source=f"{record.topic}:{record.partition}",
                    offset=record.offset,
                ),
                embedding,
                interest,
            )
            if not applied:
                output.duplicates_by_domain[event.domain] += 1
                continue
            output.states[event.user_id] = (record.partition, state)
            output.applied_by_domain[event.domain] += 1
            if event.recommendation_id is not None:
                version = _shown_version(state, event.recommendation_id)
                output.feedback[(event.domain, version, event.event_type)] += 1
            if event.event_type in FEEDBACK_ONLY:
                continue  # an impression or a dismissal: no interaction, no recommendation
            timeline[event.user_id].append((event.domain, event.item_id))
            scorer = (
                candidate
                if candidate is not None and in_experiment(event.user_id, self.settings)
                else serving
            )
            for request in self._due_recommendations(scorer, state, event, record):
                timeline[event.user_id].append(len(pending))
                pending.append(request)

        output.recommendations, ranked = self._score(pending, now)
        for user_id, steps in timeline.items():
            self._check_shown(states[user_id], steps, pending, ranked, output)
        if erasures:
            self._erase(erasures, output)
        return output

    def _validate_erasure(self, record: SourceRecord) -> ErasureRequest | Rejection:
        result = self.validator.validate_erasure(record.value)
        if isinstance(result, ErasureRequest) and record.key != result.user_id.encode("utf-8"):
            return Rejection("key_mismatch", "erasure key differs from user_id: key by user_id")
        return result

    @staticmethod
    def _erase(erasures: list[tuple[SourceRecord, ErasureRequest]], output: BatchOutput) -> None:
        """Forget the users: their state goes (a tombstone follows in the changelog) and so do
        their recommendations of this batch. Their events earlier in the same batch are part of
        what is forgotten."""
        for record, request in erasures:
            output.erased[request.user_id] = record.partition
            output.states.pop(request.user_id, None)
        erased = output.erased
        output.recommendations = [r for r in output.recommendations if r.user_id not in erased]

    @staticmethod
    def _check_shown(
        state: UserState,
        steps: list[tuple[str, str] | int],
        pending: list[_PendingRecommendation],
        ranked: dict[int, list[tuple[str, float]]],
        output: BatchOutput,
    ) -> None:
        """Count the user's events that hit the recommendation last shown for their domain,
        and remember each newly emitted recommendation."""
        for step in steps:
            if isinstance(step, int):
                items = ranked.get(step)
                if items:
                    request = pending[step]
                    state.shown[request.target] = [
                        request.scorer.version,
                        [item for item, _ in items],
                        request.recommendation_id,
                    ]
                continue
            domain, item_id = step
            shown = state.shown.get(domain)
            if shown is None:
                continue
            output.online_checks[(domain, shown[0])] += 1
            if item_id in shown[1]:
                output.online_hits[(domain, shown[0])] += 1

    def _validate(self, record: SourceRecord) -> UserEvent | Rejection:
        domain = self.topic_domains.get(record.topic)
        if domain is None:
            return Rejection("unknown_domain", f"topic {record.topic!r} is not an events topic")
        result = self.validator.validate_event(record.value, domain)
        if isinstance(result, Rejection):
            return result
        # The key decides the partition, and the partition decides where state lives.
        if record.key is not None and record.key != result.user_id.encode("utf-8"):
            return Rejection(
                "key_mismatch", "record key differs from user_id: key events by user_id"
            )
        return result

    def _resolve_embeddings(
        self,
        accepted: list[tuple[SourceRecord, UserEvent]],
        refresh_items: Callable[[], None] | None,
    ) -> dict[tuple[str, str], np.ndarray]:
        """Catalog embeddings for every event's item; inline-text items are encoded once here."""
        found: dict[tuple[str, str], np.ndarray] = {}
        missing: dict[tuple[str, str], UserEvent] = {}
        for _, event in accepted:
            key = (event.domain, event.item_id)
            if key in found or key in missing:
                continue
            vector = self.items.embedding(*key)
            if vector is None:
                missing[key] = event
            else:
                found[key] = vector
        if missing and refresh_items is not None:
            refresh_items()
            for key in list(missing):
                vector = self.items.embedding(*key)
                if vector is not None:
                    found[key] = vector
                    del missing[key]
        inline = {
            key: item_text(event.title, event.text)
            for key, event in missing.items()
            if item_text(event.title, event.text)
        }
        if inline:
            keys = list(inline)
            vectors = self.encoder.encode([inline[key] for key in keys])
            by_domain: dict[str, list[int]] = defaultdict(list)
            for row, (domain, _) in enumerate(keys):
                by_domain[domain].append(row)
            for domain, rows in by_domain.items():
                self.items.add(
                    domain,
                    [keys[row][1] for row in rows],
                    [text_digest(inline[keys[row]]) for row in rows],
                    vectors[rows],
                )
            for row, key in enumerate(keys):
                found[key] = vectors[row]
        return found

    def _due_recommendations(
        self, scorer: Scorer, state: UserState, event: UserEvent, record: SourceRecord
    ) -> list[_PendingRecommendation]:
        config = self.settings.recommendations
        due = []
        for target, sources in self.routes_by_source.get(event.domain, ()):
            count = state.pending.get(target, 0) + 1
            if count < config.every_n_events:
                state.pending[target] = count
                continue
            state.pending[target] = 0
            prepared = scorer.prepare(state, target, sources, config.explain)
            if prepared is None:
                continue
            due.append(
                _PendingRecommendation(
                    user_id=state.user_id,
                    target=target,
                    sources=sorted(d for d in state.interests if d in sources or d == target),
                    prepared=prepared,
                    exclude=frozenset(state.seen.get(target, ()))
                    | frozenset(state.dismissed.get(target, ())),
                    scorer=scorer,
                    trigger=EmittedTrigger(
                        event_id=event.event_id,
                        domain=event.domain,
                        event_time=event.timestamp,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                    ),
                )
            )
        return due

    def _score(
        self, pending: list[_PendingRecommendation], now: float
    ) -> tuple[list[EmittedRecommendation], dict[int, list[tuple[str, float]]]]:
        """Top-K for every pending request, batched per target and model version; returns the
        recommendations and the ranked items by position in ``pending``."""
        by_target: dict[tuple[str, int], list[int]] = defaultdict(list)
        scorers: dict[int, Scorer] = {}
        for position, request in enumerate(pending):
            scorers[id(request.scorer)] = request.scorer
            by_target[(request.target, id(request.scorer))].append(position)
        ranked: dict[int, list[tuple[str, float]]] = {}
        k = self.settings.recommendations.top_k
        top = self.settings.recommendations.explain_top
        because: dict[int, list[Contributions]] = {}
        for (target, scorer_id), positions in by_target.items():
            scorer = scorers[scorer_id]
            index = scorer.index(target)
            queries, explainers = scorer.finish([pending[p].prepared for p in positions])
            results = top_k(index, queries, [pending[p].exclude for p in positions], k)
            ranked.update(zip(positions, results, strict=True))
            if any(explainer is not None for explainer in explainers):
                explained = explain_batch(index, explainers, results, top)
                because.update(zip(positions, explained, strict=True))
        recommendations = []
        for position, request in enumerate(pending):
            items = ranked[position]
            if not items:
                continue
            version = request.scorer.version
            request.recommendation_id = recommendation_id(
                request.user_id, request.target, request.trigger.event_id, version
            )
            recommendations.append(
                EmittedRecommendation(
                    recommendation_id=request.recommendation_id,
                    user_id=request.user_id,
                    target_domain=request.target,
                    items=items,
                    because=because.get(position) or [[] for _ in items],
                    model_version=version,
                    source_domains=request.sources,
                    trigger=request.trigger,
                    generated_at=now,
                )
            )
        return recommendations, ranked


def in_experiment(user_id: str, settings: Settings) -> bool:
    """Whether ``user_id`` is in the candidate's share: a stable hash, so a user always sees
    the same version while an experiment runs, on every worker."""
    digest = hashlib.sha256(f"{settings.experiment.salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < settings.experiment.share


def _shown_version(state: UserState, recommendation_id: str) -> str:
    """The model version of the recommendation that feedback names ("unknown" once the user
    has been shown a newer one for that domain)."""
    for shown in state.shown.values():
        if len(shown) > 2 and shown[2] == recommendation_id:
            return str(shown[0])
    return "unknown"


def _event_limits(settings: Settings) -> EventLimits:
    limits = settings.limits
    return EventLimits(
        max_event_bytes=limits.max_event_bytes,
        max_text_chars=limits.max_text_chars,
        max_id_chars=limits.max_id_chars,
        min_timestamp=limits.min_timestamp,
        max_future_skew_seconds=limits.max_future_skew_seconds,
    )
