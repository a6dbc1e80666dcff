"""The batch pipeline on its own (no broker): what it accepts, refuses, applies once and
recommends, whatever the batch boundaries."""

from __future__ import annotations

import json

from memory_catalog import MemoryCatalog

from stream.core.processor import BatchProcessor, in_experiment, recommendation_id
from stream.core.records import SourceRecord
from stream.core.state import UserState
from stream.settings import Settings

T0 = 1_704_067_200.0
ITEMS = {"books": [f"b{i}" for i in range(6)], "movies": [f"m{i}" for i in range(6)]}


def _settings(**overrides: object) -> Settings:
    return Settings(domains=["books", "movies"], recommendations={"top_k": 3}, **overrides)


def _event(user: str, domain: str, item: str, ts: float, **extra: object) -> dict:
    return {
        "schema_version": 1,
        "event_id": f"{user}-{domain}-{item}-{ts}",
        "user_id": user,
        "domain": domain,
        "item_id": item,
        "event_type": "purchase",
        "timestamp": ts,
        **extra,
    }


def _record(
    settings: Settings, offset: int, event: dict, partition: int = 0, topic: str | None = None
) -> SourceRecord:
    return SourceRecord(
        topic or settings.topics.events(event["domain"]),
        partition,
        offset,
        event["user_id"].encode(),
        json.dumps(event).encode(),
    )


class _Run:
    """A processor over an in-memory catalog with states kept between batches as the store
    keeps them (serialized)."""

    def __init__(self, settings: Settings) -> None:
        self.processor = BatchProcessor(
            settings,
            MemoryCatalog.random(ITEMS),
            encoder=None,  # type: ignore[arg-type]
            clock=lambda: T0 + 10_000,
        )
        self.states: dict[str, UserState] = {}

    def batch(self, records: list[SourceRecord]):  # noqa: ANN201
        output = self.processor.process(records, lambda user: self.states.get(user))
        for user, (_, state) in output.states.items():
            self.states[user] = UserState.from_bytes(state.to_bytes())
        return output


def test_bad_records_are_dead_lettered_and_the_rest_of_the_batch_is_applied() -> None:
    settings = _settings()
    good = _record(settings, 0, _event("u1", "books", "b0", T0))
    malformed = SourceRecord(settings.topics.events("books"), 0, 1, b"u1", b"{not json")
    stray = _record(settings, 2, _event("u1", "books", "b1", T0), topic="events.unknown")
    unknown_item = _record(settings, 3, _event("u1", "books", "nope", T0 + 1))
    wrong_key = SourceRecord(
        settings.topics.events("books"),
        0,
        4,
        b"someone-else",
        json.dumps(_event("u1", "books", "b2", T0 + 2)).encode(),
    )
    output = _Run(settings).batch([good, malformed, stray, unknown_item, wrong_key])
    reasons = {letter.offset: letter.reason for letter in output.dead_letters}
    assert reasons == {
        1: "invalid_json",
        2: "unknown_domain",
        3: "unknown_item",
        4: "key_mismatch",
    }
    assert output.applied_by_domain == {"books": 1}
    assert [i.item_id for i in output.states["u1"][1].recent] == ["b0"]


def test_a_redelivered_record_is_applied_once() -> None:
    settings = _settings()
    run = _Run(settings)
    records = [_record(settings, n, _event("u1", "books", f"b{n}", T0 + n)) for n in range(3)]
    run.batch(records[:2])
    output = run.batch(records)  # the first two again, as after a crash before the commit
    assert output.duplicates_by_domain == {"books": 2}
    assert output.applied_by_domain == {"books": 1}
    assert [i.item_id for i in run.states["u1"].recent] == ["b0", "b1", "b2"]


def test_a_user_new_to_a_domain_gets_its_recommendations_with_a_stable_id() -> None:
    settings = _settings()
    event = _event("u1", "books", "b0", T0)
    output = _Run(settings).batch([_record(settings, 0, event)])
    by_target = {rec.target_domain: rec for rec in output.recommendations}
    assert set(by_target) == {"movies"}  # the default routes: each domain feeds the others
    movies = by_target["movies"]
    assert len(movies.items) == 3 and all(item[0].startswith("m") for item in movies.items)
    assert movies.recommendation_id == recommendation_id(
        "u1", "movies", event["event_id"], movies.model_version
    )
    again = _Run(settings).batch([_record(settings, 0, event)])
    assert {r.recommendation_id for r in again.recommendations} == {
        r.recommendation_id for r in output.recommendations
    }


def test_events_of_two_partitions_are_applied_in_event_time_order() -> None:
    settings = _settings()
    books = [_record(settings, n, _event("u1", "books", f"b{n}", T0 + 2 * n)) for n in range(3)]
    movies = [
        _record(settings, n, _event("u1", "movies", f"m{n}", T0 + 2 * n + 1), partition=1)
        for n in range(3)
    ]
    run = _Run(settings)
    run.batch(movies + books)  # one domain's fetch arrived first
    assert [i.item_id for i in run.states["u1"].recent] == ["b0", "m0", "b1", "m1", "b2", "m2"]


def test_an_erasure_forgets_the_user_and_its_recommendations_of_the_batch() -> None:
    settings = _settings()
    erasure = {
        "schema_version": 1,
        "user_id": "u1",
        "requested_at": T0 + 5,
        "requested_by": "tests",
    }
    records = [
        _record(settings, 0, _event("u1", "books", "b0", T0)),
        _record(settings, 1, _event("u2", "books", "b1", T0)),
        SourceRecord(settings.topics.erasure(), 3, 0, b"u1", json.dumps(erasure).encode()),
    ]
    output = _Run(settings).batch(records)
    assert output.erased == {"u1": 3}
    assert set(output.states) == {"u2"}
    assert {rec.user_id for rec in output.recommendations} == {"u2"}


def test_experiment_assignment_is_stable_and_near_its_share() -> None:
    settings = _settings(experiment={"share": 0.25, "salt": "s"})
    users = [f"user-{n}" for n in range(4_000)]
    chosen = [in_experiment(user, settings) for user in users]
    assert chosen == [in_experiment(user, settings) for user in users]
    assert 0.22 < sum(chosen) / len(users) < 0.28


def test_a_moved_copy_is_applied_as_the_event_where_it_first_landed_and_only_once() -> None:
    settings = _settings()
    run = _Run(settings)
    topic = settings.topics.events("books")
    event = _event("u1", "books", "b0", T0)
    origin = (topic, 3, 41)  # where a CRC32 producer put it
    copy = _record(settings, 7, event, partition=1)._replace(origin=origin)
    output = run.batch([copy])
    assert output.applied_by_domain["books"] == 1
    assert output.states["u1"][0] == 1  # its state and changelog stay on the owner's partition
    assert run.states["u1"].offsets == {f"{topic}:3": 41}
    (rec,) = [r for r in output.recommendations if r.target_domain == "movies"]
    assert (rec.trigger.topic, rec.trigger.partition, rec.trigger.offset) == origin
    # The same event moved twice (its batch replayed after a crash): a duplicate.
    again = run.batch([copy._replace(offset=9)])
    assert again.duplicates_by_domain["books"] == 1 and not again.recommendations
    # A refused copy is dead-lettered under its origin, where an operator finds the original.
    broken = SourceRecord(topic, 1, 10, b"u1", b"{not json", origin=(topic, 3, 42))
    (letter,) = run.batch([broken]).dead_letters
    assert (letter.topic, letter.partition, letter.offset) == (topic, 3, 42)
