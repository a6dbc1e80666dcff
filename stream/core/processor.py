"""The batch pipeline: a batch of raw records and the current user states in, new states,
recommendations and dead letters out.

It imports no Kafka and no faust, so the worker, the offline replay, the tests and the
benchmarks all run the same code. Each user's state is loaded once and written once per batch.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from schemas import FEEDBACK_ONLY, DeadLetter, ErasureRequest, EventValidator, Rejection, UserEvent
from stream.core.emit import EmittedRecommendation, EmittedTrigger
from stream.core.explain import Contributions, explain_batch
from stream.core.items import Encoder, item_text, text_digest
from stream.core.records import SourceRecord, dead_letter, in_event_time_order
from stream.core.scorer import ItemEmbeddings, Scorer, ZeroShotScorer
from stream.core.scoring import top_k
from stream.core.state import AppliedEvent, UserState, apply_event
from stream.settings import Settings


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
    # (domain, item_id) -> interactions applied (feedback-only events left out): popularity.
    interactions: Counter[tuple[str, str]] = field(default_factory=Counter)


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
            settings.domains, limits=settings.limits.event_limits(), clock=clock
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
            topic, partition, offset = record.position
            applied = apply_event(
                state,
                AppliedEvent(
                    event_id=event.event_id,
                    domain=event.domain,
                    item_id=event.item_id,
                    event_type=event.event_type,
                    timestamp=event.timestamp,
                    rating=event.rating,
                    source=f"{topic}:{partition}",
                    offset=offset,
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
            output.interactions[(event.domain, event.item_id)] += 1
            timeline[event.user_id].append((event.domain, event.item_id))
            scorer = self._served_by(event.user_id, serving, candidate)
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
            topic, partition, offset = record.position
            trigger = EmittedTrigger(
                event.event_id, event.domain, event.timestamp, topic, partition, offset
            )
            request = _pending(scorer, state, target, sources, config.explain, trigger)
            if request is not None:
                due.append(request)
        return due

    def recommend(
        self, state: UserState, target: str, k: int, explain: bool, request_id: str
    ) -> EmittedRecommendation | None:
        """The user's ``target`` recommendations now, as a request asks for them: from the
        state as it is, with the version the user is served (the candidate for a user in an
        online comparison), seen and dismissed items left out. None when the user has no
        history in the domains that feed ``target``. Safe beside :meth:`process` (another
        thread): it changes nothing and reads only ``state``."""
        scorer = self._served_by(state.user_id, self.scorer, self.candidate)
        sources = self.settings.recommendations.routes.get(target, [])
        now = self.clock()
        trigger = EmittedTrigger(request_id, target, now, None, None, None, "request")
        request = _pending(scorer, state, target, sources, explain, trigger)
        if request is None:
            return None
        recommendations, _ = self._score([request], now, k)
        return recommendations[0] if recommendations else None

    def _served_by(self, user_id: str, serving: Scorer, candidate: Scorer | None) -> Scorer:
        """The version ``user_id`` is served: the candidate for a user in its share."""
        if candidate is not None and in_experiment(user_id, self.settings):
            return candidate
        return serving

    def _score(
        self, pending: list[_PendingRecommendation], now: float, k: int | None = None
    ) -> tuple[list[EmittedRecommendation], dict[int, list[tuple[str, float]]]]:
        """Top-K (``k``, else ``recommendations.top_k``) for every pending request, batched per
        target and model version; returns the recommendations and the ranked items by position
        in ``pending``."""
        by_target: dict[tuple[str, int], list[int]] = defaultdict(list)
        scorers: dict[int, Scorer] = {}
        for position, request in enumerate(pending):
            scorers[id(request.scorer)] = request.scorer
            by_target[(request.target, id(request.scorer))].append(position)
        ranked: dict[int, list[tuple[str, float]]] = {}
        k = k or self.settings.recommendations.top_k
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


def _pending(
    scorer: Scorer,
    state: UserState,
    target: str,
    sources: list[str],
    explain: bool,
    trigger: EmittedTrigger,
) -> _PendingRecommendation | None:
    """What a due recommendation needs from the state now (it changes as the batch goes on),
    or None when the user has no history that feeds ``target``."""
    prepared = scorer.prepare(state, target, sources, explain)
    if prepared is None:
        return None
    return _PendingRecommendation(
        user_id=state.user_id,
        target=target,
        sources=sorted(d for d in state.interests if d in sources or d == target),
        prepared=prepared,
        exclude=frozenset(state.seen.get(target, ())) | frozenset(state.dismissed.get(target, ())),
        scorer=scorer,
        trigger=trigger,
    )


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
