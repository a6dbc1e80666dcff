"""What "nothing lost, nothing applied twice" means, and the one audit that checks it.

The SIGKILL test of ``tests/test_integration/test_pipeline.py``, the resilience tests (broker
restart, scale-out) and the chaos and soak benchmarks (``bench.chaos``, ``bench.soak``) share
this module: the workload, a producer that keeps where every record landed, the readers of
recommendations, dead letters and stored states, and the audit.

Every record the producer got acknowledged is identified by its ``(topic, partition, offset)``;
a valid event also by its ``event_id``. After the stream has ended and the workers are stopped,
the audit reads the authoritative state of each user (the RocksDB store of the worker that owns
the user's partition at the end), the dead-letter topic, the recommendation topics and an
offline single pass over the event topics (:func:`stream.data.offline.replay_topics`, the same
processor over the same records, once each). Definitions, per acknowledged record:

- **applied**: the record's ``event_id`` is in its user's stored ``recent`` interactions. The
  workload keeps each user's events below ``interest.max_recent`` (the audit refuses to run
  otherwise), so ``recent`` lists every event ever applied to the state, with repeats if any.
- **dead-lettered**: a dead letter names the record's topic, partition and offset.
- **lost**: neither applied nor dead-lettered: the event never changed state nor reached the
  DLQ.
- **duplicated**: applied more than once (its ``event_id`` appears twice or more in
  ``recent``): the same event folded into the state twice. A record dead-lettered once and
  also applied counts here too.
- **state mismatch**: a user whose stored state differs from the offline pass: missing or extra
  user, ``events_applied``, per-partition offsets, ``recent``, ``seen``, ``pending``, or per
  domain the interest's event count, time and vector (max absolute difference above
  ``tolerance``, 1e-5: the vector is a float32 sum whose rounding depends on how events of
  different topics interleave, see docs/architecture.md). ``shown`` is not compared: it is the
  last recommendation's item list, which near-ties in float32 scores may reorder.
- **recommendations**: with ``every_n_events`` 1, every applied event of a source domain of a
  route must yield one recommendation for that route's target, whose id is
  ``recommendation_id(user, target, event_id, model_version)``. ``recs_missing``: such
  (event, target) pairs without any; ``recs_unexpected``: recommendations for any other pair;
  ``recs_conflicting``: pairs with more than one distinct id, or an id that is not the
  deterministic one. ``recs_redelivered``: copies of an id beyond its first: at-least-once
  delivery after a crash repeats outputs of the unacknowledged batch, consumers drop them by
  id; they are counted, not failed. ``dead_letters_redelivered`` likewise for dead letters.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    Message,
    TopicPartition,
)

from schemas import SCHEMA_VERSION, CatalogItem, UserEvent
from stream.catalog.encoder import TextEncoder
from stream.catalog.store import ItemCatalog
from stream.core.items import item_text, text_digest
from stream.core.processor import recommendation_id
from stream.core.state import UserState
from stream.data.offline import replay_topics
from stream.data.sample import sample_items
from stream.devtools.supervisor import ASSIGNED_LINE
from stream.kafka import snapshot
from stream.kafka.transport import (
    make_admin,
    make_consumer,
)
from stream.settings import Settings
from stream.state.store import UserStateStore
from testkit.kafka_io import PacedProducer, Planned, Sent, TopicFollower, event_stream
from testkit.kafka_io import publish_catalog as publish_catalog  # re-exported for the audited runs
from testkit.kafka_io import scrape as scrape  # re-exported: the tests read /metrics through here

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
SOURCES = ("books", "music")
TARGET = "movies"
INVALID_KINDS = ("unknown_item", "json")
# Audit counts that break the guarantee; the redelivery counts are expected after crashes.
FAILURES = (
    "lost",
    "duplicated",
    "state_mismatches",
    "recs_missing",
    "recs_unexpected",
    "recs_conflicting",
)
_ASSIGNED = re.compile(re.escape(ASSIGNED_LINE) + r" count=\d+ partitions=(\[.*\])")


# --- deployment and catalog ---------------------------------------------------------------------


def deployment(state_dir: Path, partitions: int = 4) -> dict[str, Any]:
    """Settings overrides of the audited deployment: the sample domains, one route (movies from
    books and music, a recommendation per event), ``recent`` long enough to list every applied
    event, /metrics on a free port refreshed every second."""
    return {
        "domains": [*SOURCES, TARGET],
        "topics": {"partitions": partitions},
        "recommendations": {"routes": {TARGET: list(SOURCES)}, "every_n_events": 1, "top_k": 10},
        "interest": {"max_recent": 10_000},
        "worker": {"state_dir": str(state_dir), "batch_within_seconds": 0.1},
        "metrics": {"port": 0, "refresh_seconds": 1.0},
    }


def worker_settings(settings: Settings, name: str) -> Settings:
    """The same deployment (app id, consumer group, topics) as worker ``name``: own state."""
    return settings.model_copy(update={"worker": settings.worker.model_copy(update={"name": name})})


def sample_catalog() -> list[CatalogItem]:
    """The bundled sample catalog (144 items over three domains) as catalog records."""
    return [CatalogItem(schema_version=SCHEMA_VERSION, **item) for item in sample_items()]


class MemoEncoder(TextEncoder):
    """The text encoder, remembering each text's vector: the item stores filled before workers
    start and the offline reference then embed the catalog once, with identical vectors."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in self._memo]
        if missing:
            self._memo.update(zip(missing, super().encode(missing), strict=True))
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._memo[text] for text in texts])


def prefill_items(
    settings: Settings, encoder: TextEncoder, items: Sequence[CatalogItem], names: Iterable[str]
) -> None:
    """Encode ``items`` once here and store them in each named worker's item store, so that
    workers started (and restarted) beside each other on a small machine encode nothing. The
    vectors are the real encoder's, as the worker would compute them."""
    texts = [item_text(item.title, item.text) for item in items]
    vectors = encoder.encode(texts)
    for name in names:
        store_items(settings, name, encoder, items, texts, vectors)


def store_items(
    settings: Settings,
    name: str,
    encoder: TextEncoder,
    items: Sequence[CatalogItem],
    texts: Sequence[str],
    vectors: np.ndarray,
) -> None:
    """Write ``items`` (their ``texts`` and ``vectors`` row by row) into worker ``name``'s item
    store under ``encoder``'s fingerprint, which the worker then trusts instead of encoding."""
    path = settings.worker.state_dir / name / "items"
    catalog = ItemCatalog(path, encoder.fingerprint, encoder.dimension)
    try:
        add_items(catalog, items, texts, vectors)
    finally:
        catalog.close()


def add_items(
    catalog: ItemCatalog,
    items: Sequence[CatalogItem],
    texts: Sequence[str],
    vectors: np.ndarray,
) -> None:
    """Add ``items`` (their ``texts`` and ``vectors`` row by row) to ``catalog``, per domain."""
    for domain in sorted({item.domain for item in items}):
        rows = [n for n, item in enumerate(items) if item.domain == domain]
        catalog.add(
            domain,
            [items[n].item_id for n in rows],
            [text_digest(texts[n]) for n in rows],
            vectors[rows],
        )


# --- workload -----------------------------------------------------------------------------------


def workload(
    settings: Settings,
    count: int | None,
    users: int,
    seed: int,
    *,
    invalid_every: int = 0,
    invalid_kinds: Sequence[str] = INVALID_KINDS,
    start_ts: float | None = None,
    step_s: float = 0.05,
) -> Iterator[Planned]:
    """``count`` records (endless for None) over the sample items: 45% books, 45% music, 10%
    movies events of ``users`` users in event-time order. Every ``invalid_every``-th record is
    one the worker must dead-letter, of ``invalid_kinds`` in turn: ``json`` (not JSON) or
    ``unknown_item`` (an item in no catalog and without text: the worker reads the catalog
    topics once more before refusing it)."""
    items: dict[str, list[str]] = defaultdict(list)
    for item in sample_items():
        if item["domain"] in settings.domains:
            items[item["domain"]].append(item["item_id"])
    ordered = {d: items[d] for d in (*SOURCES, TARGET) if d in items}
    clock = start_ts if start_ts is not None else time.time() - 20 * 86_400

    def spoil(number: int, user_id: str, domain: str) -> bytes | None:
        if not invalid_every or number % invalid_every != invalid_every - 1:
            return None
        if invalid_kinds[(number // invalid_every) % len(invalid_kinds)] == "json":
            return b'{"schema_version": 1, "event_id": "broken'
        return _event(
            f"x{seed}-{number:08d}",
            user_id,
            domain,
            f"{domain}-gone-{number}",
            "click",
            clock + number * step_s,
        )

    return event_stream(
        settings,
        ordered,
        users,
        seed,
        count=count,
        weights=[0.45 if d in SOURCES else 0.1 for d in ordered],
        user_digits=5,
        start_ts=clock,
        step_s=step_s,
        spoil=spoil,
    )


def _event(
    event_id: str, user_id: str, domain: str, item_id: str, event_type: str, timestamp: float
) -> bytes:
    return (
        UserEvent(
            schema_version=SCHEMA_VERSION,
            event_id=event_id,
            user_id=user_id,
            domain=domain,
            item_id=item_id,
            event_type=event_type,
            timestamp=timestamp,
        )
        .model_dump_json()
        .encode("utf-8")
    )


class TrackedProducer(PacedProducer):
    """The paced producer of the audited runs: ``planned`` records at ``rate`` per second,
    keeping every acknowledged record's coordinates for the audit (``track``; off for endless
    soak streams, which only count)."""

    def __init__(
        self,
        settings: Settings,
        planned: Iterator[Planned],
        rate: float,
        *,
        track: bool = True,
        allowed: int | None = None,
    ) -> None:
        super().__init__(
            settings, planned, rate, track=track, allowed=allowed, name="tracked-producer"
        )


# --- reading what came out ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecSeen:
    """What the audit needs of one consumed recommendation."""

    recommendation_id: str
    user_id: str
    target: str
    event_id: str
    model_version: str

    @classmethod
    def of(cls, rec: Mapping[str, Any]) -> RecSeen:
        """From a decoded recommendation message."""
        return cls(
            rec["recommendation_id"],
            rec["user_id"],
            rec["target_domain"],
            rec["trigger"]["event_id"],
            rec["model_version"],
        )


class RecCollector(TopicFollower):
    """Reads the recommendation topics from the start for as long as it runs."""

    def __init__(self, settings: Settings, targets: Iterable[str]) -> None:
        topics = [settings.topics.recs(target) for target in targets]
        super().__init__(settings, topics, name="rec-collector", fetch_wait_ms=50)
        self.recs: list[RecSeen] = []
        self.triggers: set[str] = set()

    def receive(self, messages: list[Message], at: float, wall: float) -> None:
        for message in messages:
            rec = RecSeen.of(json.loads(message.value()))
            self.recs.append(rec)
            self.triggers.add(rec.event_id)

    def stop(self, timeout: float = 10.0) -> list[RecSeen]:  # type: ignore[override]
        super().stop(timeout)
        if self.error is not None:
            raise RuntimeError(f"reading recommendations failed: {self.error}") from self.error
        return list(self.recs)


def read_to_end(settings: Settings, topic: str, timeout: float = 120.0) -> list[Message]:
    """Every record of ``topic`` up to its current end."""
    consumer = make_consumer(settings)
    try:
        return snapshot.read_to_end(consumer, [topic], timeout)
    finally:
        consumer.close()


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in read_to_end(settings, settings.topics.dead_letters())]


def committed_lag(settings: Settings) -> int:
    """Records of the event topics past the worker group's committed offsets: what a restart
    would have to (re)process. 0 once everything produced is processed and committed."""
    consumer = make_consumer(settings)
    try:
        partitions = []
        high: dict[tuple[str, int], int] = {}
        for domain in settings.domains:
            topic = settings.topics.events(domain)
            for partition in consumer.list_topics(topic, timeout=10.0).topics[topic].partitions:
                tp = TopicPartition(topic, partition)
                partitions.append(tp)
                high[(topic, partition)] = consumer.get_watermark_offsets(tp, 10.0)[1]
    finally:
        consumer.close()
    request = [ConsumerGroupTopicPartitions(settings.app_id, partitions)]
    admin = make_admin(settings)  # must outlive its future, which otherwise never resolves
    futures = admin.list_consumer_group_offsets(request, request_timeout=10.0)
    result = futures[settings.app_id].result(timeout=30.0)
    committed = {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}
    return sum(max(0, end - max(0, committed.get(key, 0))) for key, end in high.items())


def owned_partitions(log_file: Path, settings: Settings) -> set[int]:
    """Event partitions of a worker's latest assignment, from its ``partitions assigned`` line."""
    if not log_file.exists():
        return set()
    found = _ASSIGNED.findall(log_file.read_text(errors="replace"))
    if not found:
        return set()
    events = {settings.topics.events(domain) for domain in settings.domains}
    owned = set()
    for name in ast.literal_eval(found[-1]):
        topic, _, partition = name.rpartition(":")
        if topic in events:
            owned.add(int(partition))
    return owned


def settled_owners(
    settings: Settings,
    workers: Mapping[str, Path],
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    settle_s: float = 3.0,
) -> dict[str, set[int]]:
    """Until every event partition has exactly one owner among ``workers`` (name -> log file),
    each owns at least one, and nothing changed for ``settle_s``; returns name -> partitions."""
    every = set(range(settings.topics.partitions))
    deadline = time.monotonic() + timeout
    last: dict[str, set[int]] = {}
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        owned = {name: owned_partitions(log_file, settings) for name, log_file in workers.items()}
        if owned != last:
            last, stable_since = owned, time.monotonic()
        counts = Counter(p for partitions in owned.values() for p in partitions)
        if set(counts) == every and max(counts.values()) == 1 and all(owned.values()):
            if time.monotonic() - stable_since >= settle_s:
                return owned
        if not alive():
            raise RuntimeError("a worker exited while the group formed")
        time.sleep(0.2)
    raise RuntimeError(f"group did not settle in {timeout:.0f}s: owners {last}")


def stored_states(settings: Settings, name: str | None = None) -> dict[str, UserState]:
    """Every user state in a (stopped) worker's RocksDB store."""
    path = settings.worker.state_dir / (name or settings.worker.name) / "users"
    store = UserStateStore(path)
    try:
        return {state.user_id: state for state in store.users()}
    finally:
        store.close()


def owners_states(
    settings: Settings, owners: Mapping[str, set[int]], user_partitions: Mapping[str, int]
) -> dict[str, UserState]:
    """Each user's state from the store of the worker that owns its partition (``owners``: worker
    name -> event partitions at the end); other workers may keep stale copies of moved users."""
    owner_of = {p: name for name, partitions in owners.items() for p in partitions}
    states: dict[str, UserState] = {}
    for name in owners:
        for user_id, state in stored_states(settings, name).items():
            partition = user_partitions.get(user_id)
            if partition is not None and owner_of.get(partition) == name:
                states[user_id] = state
    return states


def wait_drained(
    settings: Settings,
    producer: TrackedProducer,
    collector: RecCollector,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    progress: Callable[[str], None] | None = None,
) -> float:
    """Until every acknowledged event is processed and committed and every valid source-domain
    event has a recommendation; returns the seconds it took."""
    started = time.monotonic()
    last_report = started
    sources = {d for sources in settings.recommendations.routes.values() for d in sources}
    while True:
        expected = {s.event_id for s in producer.sent if s.event_id and s.domain in sources}
        missing = len(expected - collector.triggers)
        lag = committed_lag(settings) if not missing else None
        if lag == 0:
            return time.monotonic() - started
        now = time.monotonic()
        pending = f"{missing} events without a recommendation" if missing else f"lag {lag}"
        if now - started > timeout or not alive():
            raise RuntimeError(
                f"not drained after {now - started:.0f}s (alive: {alive()}): {pending}"
            )
        if progress is not None and now - last_report >= 10.0:
            last_report = now
            progress(f"draining: {pending}")
        time.sleep(0.5)


# --- the audit ----------------------------------------------------------------------------------


def compare_states(
    actual: Mapping[str, UserState],
    expected: Mapping[str, UserState],
    tolerance: float = TOLERANCE,
) -> dict[str, str]:
    """user_id -> what differs between the stored and the reference state (empty: equal)."""
    problems: dict[str, str] = {}
    for user_id in sorted(set(actual) | set(expected)):
        state, reference = actual.get(user_id), expected.get(user_id)
        if state is None or reference is None:
            problems[user_id] = "missing" if state is None else "not in the reference"
            continue
        differs = [
            part
            for part in ("events_applied", "offsets", "recent", "seen", "pending")
            if getattr(state, part) != getattr(reference, part)
        ]
        if set(state.interests) != set(reference.interests):
            differs.append(f"interest domains {sorted(state.interests)}")
        for domain in sorted(set(state.interests) & set(reference.interests)):
            mine, theirs = state.interests[domain], reference.interests[domain]
            if (mine.events, mine.updated_at) != (theirs.events, theirs.updated_at):
                differs.append(f"{domain} interest events/time")
            gap = float(np.abs(mine.vector - theirs.vector).max()) if mine.vector.size else 0.0
            if mine.vector.shape != theirs.vector.shape or not gap <= tolerance:
                differs.append(f"{domain} vector off by {gap:.2e}")
        if differs:
            problems[user_id] = ", ".join(differs)
    return problems


def rec_groups(recs: Iterable[RecSeen]) -> dict[tuple[str, str], set[str]]:
    """(trigger event id, target domain) -> distinct recommendation ids."""
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rec in recs:
        groups[(rec.event_id, rec.target)].add(rec.recommendation_id)
    return groups


@dataclass
class Audit:
    """The counts of the module docstring; ``examples`` names a few of each, for diagnosis."""

    events: int = 0
    records_invalid: int = 0
    users: int = 0
    applied: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    state_mismatches: int = 0
    recs_expected: int = 0
    recs_received: int = 0
    recs_missing: int = 0
    recs_unexpected: int = 0
    recs_conflicting: int = 0
    recs_redelivered: int = 0
    dead_letters_redelivered: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """What broke the guarantee (empty when nothing did)."""
        return [
            f"{name}={getattr(self, name)} e.g. {self.examples.get(name, [])[:3]}"
            for name in FAILURES
            if getattr(self, name)
        ]

    def figures(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in self.__dict__.items()
            if key != "examples" or any(value.values())
        }


def audit(
    settings: Settings,
    sent: Sequence[Sent],
    states: Mapping[str, UserState],
    reference: Mapping[str, UserState],
    recs: Sequence[RecSeen],
    letters: Sequence[Mapping[str, Any]],
    tolerance: float = TOLERANCE,
) -> Audit:
    """Check ``sent`` against what the workers stored and emitted; see the module docstring."""
    per_user = Counter(s.user_id for s in sent)
    if per_user and max(per_user.values()) > settings.interest.max_recent:
        raise ValueError(
            f"a user has {max(per_user.values())} events but interest.max_recent is "
            f"{settings.interest.max_recent}: per-event attribution needs every applied event "
            "in the state's recent list"
        )
    result = Audit(events=len(sent), users=len(per_user))
    examples: dict[str, list[str]] = defaultdict(list)

    def note(kind: str, what: str) -> None:
        if len(examples[kind]) < 10:
            examples[kind].append(what)

    applied_times: dict[str, Counter[str]] = {
        user_id: Counter(i.event_id for i in state.recent) for user_id, state in states.items()
    }
    lettered = Counter(
        (letter["topic"], letter["partition"], letter["offset"]) for letter in letters
    )
    result.dead_letters_redelivered = sum(n - 1 for n in lettered.values())
    for record in sent:
        times = 0
        if record.event_id is not None:
            times = applied_times.get(record.user_id, Counter())[record.event_id]
        else:
            result.records_invalid += 1
        dead = lettered[(record.topic, record.partition, record.offset)] > 0
        where = f"{record.topic}:{record.partition}@{record.offset} {record.event_id}"
        result.applied += times > 0
        result.dead_lettered += dead
        if times == 0 and not dead:
            result.lost += 1
            note("lost", where)
        elif times + dead > 1:
            result.duplicated += 1
            note("duplicated", f"{where} applied {times}x, dead-lettered {dead}")

    mismatches = compare_states(states, reference, tolerance)
    result.state_mismatches = len(mismatches)
    for user_id, what in list(mismatches.items())[:10]:
        note("state_mismatches", f"{user_id}: {what}")

    feeds: dict[str, list[str]] = defaultdict(list)
    for target, sources in (settings.recommendations.routes or {}).items():
        for source in sources:
            feeds[source].append(target)
    reference_applied = {
        (user_id, i.event_id, i.domain)
        for user_id, state in reference.items()
        for i in state.recent
    }
    expected = {
        (event_id, target): user_id
        for user_id, event_id, domain in reference_applied
        for target in feeds.get(domain, ())
    }
    result.recs_expected = len(expected)
    result.recs_received = len(recs)
    groups = rec_groups(recs)
    versions = {}
    for rec in recs:
        versions[rec.recommendation_id] = rec
    copies = Counter(rec.recommendation_id for rec in recs)
    result.recs_redelivered = sum(n - 1 for n in copies.values())
    for pair in expected.keys() - groups.keys():
        result.recs_missing += 1
        note("recs_missing", f"event {pair[0]} -> {pair[1]}")
    for pair in groups.keys() - expected.keys():
        result.recs_unexpected += 1
        note("recs_unexpected", f"event {pair[0]} -> {pair[1]}")
    for pair, ids in groups.items():
        if pair not in expected:
            continue
        deterministic = {
            recommendation_id(expected[pair], pair[1], pair[0], versions[rid].model_version)
            for rid in ids
        }
        if len(ids) > 1 or ids != deterministic:
            result.recs_conflicting += 1
            note("recs_conflicting", f"event {pair[0]} -> {pair[1]}: {sorted(ids)}")
    result.examples = dict(examples)
    return result


def audit_workload(
    settings: Settings,
    producer: PacedProducer,
    collector: RecCollector,
    states: Mapping[str, UserState],
    encoder: TextEncoder,
) -> Audit:
    """The audit of a :func:`workload` run against the offline single pass, plus what that
    workload promises: every record accounted for, the refused ones in the dead-letter topic
    and nowhere else. Raises AssertionError when a promise is broken."""
    result = audit(
        settings,
        producer.sent,
        states,
        replay_topics(settings, encoder),
        collector.stop(),
        dead_letters(settings),
    )
    assert result.events == producer.produced, result.figures()
    assert result.dead_lettered == result.records_invalid > 0, result.figures()
    assert result.applied == result.events - result.records_invalid, result.figures()
    assert result.recs_expected > 0, result.figures()
    return result
