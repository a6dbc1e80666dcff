"""The pipeline's promises, end to end against a real broker, real RocksDB and a real worker."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import pytest

from schemas.contracts import DeadLetterReason
from stream.data.dataset import Dataset
from stream.data.offline import replay_topics
from stream.data.replay import replay_dataset
from stream.data.sample import item_genre, sample_items, write_sample_dataset
from stream.devtools.supervisor import process_running
from stream.kafka.transport import OutgoingMessage
from stream.settings import Settings, settings_env
from testkit.deployment import REPO, WorkerProcess, produce, read_topic, user_event
from testkit.guarantees import RecSeen, compare_states, rec_groups, stored_states

pytestmark = pytest.mark.integration

T0 = 1_704_067_200.0  # 2024-01-01
DAY = 86_400.0


def items_of(domain: str, genre: str) -> list[str]:
    return [
        item["item_id"]
        for item in sample_items()
        if item["domain"] == domain and item_genre(item["item_id"]) == genre
    ]


@pytest.fixture(scope="module")
def pipeline(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """A deployment with the sample catalog published and one running worker."""
    settings = make_settings()
    sample = write_sample_dataset(tmp_path_factory.mktemp("sample"))
    replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
    worker_factory(settings).start()
    return settings


def recs_for(settings: Settings, event_ids: set[str], timeout: float = 90.0) -> list[dict]:
    """Recommendations on recs.movies until one exists for each of ``event_ids``."""
    recs = read_topic(
        settings,
        settings.topics.recs("movies"),
        lambda got: event_ids <= {rec["trigger"]["event_id"] for rec in got},
        timeout=timeout,
    )
    return [rec for rec in recs if rec["trigger"]["event_id"] in event_ids]


def test_cold_user_gets_target_domain_recs(pipeline: Settings) -> None:
    """Books and music history only → movie recommendations of the same taste."""
    books, music = items_of("books", "science_fiction"), items_of("music", "science_fiction")
    # Each domain has its own topic, so order across domains is only kept by waiting.
    book_events = [
        user_event(pipeline, "cold-user", item, T0 + i * 3600) for i, item in enumerate(books[:3])
    ]
    produce(pipeline, [message for _, message in book_events])
    recs_for(pipeline, {book_events[-1][0]})
    music_events = [
        user_event(pipeline, "cold-user", item, T0 + (10 + i) * 3600)
        for i, item in enumerate(music[:3])
    ]
    produce(pipeline, [message for _, message in music_events])
    [rec] = recs_for(pipeline, {music_events[-1][0]})

    assert rec["target_domain"] == "movies"
    assert rec["model_version"] == "v0"
    assert set(rec["source_domains"]) == {"books", "music"}
    assert len(rec["items"]) == pipeline.recommendations.top_k
    assert all(item["item_id"].startswith("movies-") for item in rec["items"])
    top3 = [item_genre(item["item_id"]) for item in rec["items"][:3]]
    assert top3.count("science_fiction") >= 2, top3


def test_recommendations_never_repeat_seen_movies(pipeline: Settings) -> None:
    seen_movies = items_of("movies", "horror")[:4]
    watched = [
        user_event(pipeline, "horror-fan", item, T0 + i * 3600)
        for i, item in enumerate(seen_movies)
    ]
    produce(pipeline, [message for _, message in watched])
    read_topic(  # movie events feed no route: wait until the worker has stored them
        pipeline,
        pipeline.topics.state_changelog(pipeline.app_id),
        lambda got: sum(1 for m in got if m.key() == b"horror-fan") >= 1,
        decode=False,
    )
    reading = [
        user_event(pipeline, "horror-fan", item, T0 + (10 + i) * 3600)
        for i, item in enumerate(items_of("books", "horror")[:3])
    ]
    produce(pipeline, [message for _, message in reading])
    [rec] = recs_for(pipeline, {reading[-1][0]})
    recommended = {item["item_id"] for item in rec["items"]}
    assert not recommended & set(seen_movies)
    assert "horror" in {item_genre(item_id) for item_id in recommended}


def test_recommendations_follow_interest_shift(pipeline: Settings) -> None:
    """Weeks of science fiction, then weeks of romance: the top movies move with the user."""
    scifi = items_of("books", "science_fiction") + items_of("music", "science_fiction")
    romance = items_of("books", "romance") + items_of("music", "romance")
    before = [
        user_event(pipeline, "shifter", item, T0 + i * DAY) for i, item in enumerate(scifi[:6])
    ]
    after = [
        user_event(pipeline, "shifter", item, T0 + (60 + i) * DAY)
        for i, item in enumerate(romance[:6])
    ]
    produce(pipeline, [message for _, message in before + after])
    recs = {r["trigger"]["event_id"]: r for r in recs_for(pipeline, {before[-1][0], after[-1][0]})}

    def top_genres(event_id: str) -> Counter[str]:
        return Counter(item_genre(item["item_id"]) for item in recs[event_id]["items"][:5])

    assert top_genres(before[-1][0]).most_common(1)[0][0] == "science_fiction"
    assert top_genres(after[-1][0]).most_common(1)[0][0] == "romance"


def malformed_events(settings: Settings) -> list[tuple[bytes, str]]:
    """100 hostile payloads for events.books, each with the reason it must be refused for:
    every dead-letter reason, each for its own case only."""
    valid = json.loads(user_event(settings, "m", "books-0001", T0)[1].value)

    def variant(**changes: object) -> bytes:
        body = {**valid, **changes}
        return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()

    kinds: list[tuple[bytes, str]] = [
        # A JSON object that lacks required fields, as a hand-written producer sends it.
        (b'{"schema_version": 1, "user_id": "m"}', "schema_violation"),
        (variant(event_type=...), "schema_violation"),
        (variant(user_id="someone-else"), "key_mismatch"),  # keyed b"m" like the rest
        (b"this is not json", "invalid_json"),
        (b'{"schema_version": 1, "event_id": "x"', "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_utf8"),
        (b'{"user_id": "\xc3\x28"}', "invalid_utf8"),
        (variant(timestamp="yesterday"), "schema_violation"),
        (variant(user_id=42), "schema_violation"),
        (variant(rating="five"), "schema_violation"),
        (variant(item_id=...), "schema_violation"),
        (variant(user_id=...), "schema_violation"),
        (variant(unexpected_field=1), "schema_violation"),
        (variant(domain="astrology"), "unknown_domain"),
        (variant(domain="movies"), "domain_mismatch"),
        (variant(text="x" * 70_000), "oversized"),
        (variant(item_id="new-book", text="y" * 20_000), "text_too_long"),
        (variant(timestamp=-5.0), "timestamp_out_of_range"),
        (variant(timestamp=4_102_444_800.0 * 10), "timestamp_out_of_range"),
        (variant(schema_version=99), "unsupported_schema_version"),
        (variant(event_type="teleport"), "unknown_event_type"),
        (variant(item_id="books-unknown"), "unknown_item"),
        (variant(rating=float("nan")), "schema_violation"),
        (variant(timestamp=float("inf")), "schema_violation"),
    ]
    assert {reason for _, reason in kinds} == set(get_args(DeadLetterReason)), "a reason untested"
    return [kinds[i % len(kinds)] for i in range(100)]


def test_malformed_events_go_to_dead_letters_with_reason(pipeline: Settings) -> None:
    bad = malformed_events(pipeline)
    messages: list[OutgoingMessage] = []
    valid_ids = []
    topic = pipeline.topics.events("books")
    books = items_of("books", "fantasy")
    for i, (payload, _) in enumerate(bad):
        messages.append(OutgoingMessage(topic, b"m", payload))
        if i % 10 == 0:
            event_id, message = user_event(pipeline, "m", books[i % len(books)], T0 + i)
            valid_ids.append(event_id)
            messages.append(message)
    produce(pipeline, messages)

    letters = read_topic(
        pipeline,
        pipeline.topics.dead_letters(),
        lambda got: sum(1 for letter in got if letter["key"] == "bQ==") >= len(bad),
    )
    letters = [letter for letter in letters if letter["key"] == "bQ=="]  # key b"m"
    assert len(letters) == len(bad)
    expected = Counter(reason for _, reason in bad)
    assert Counter(letter["reason"] for letter in letters) == expected
    for letter in letters:
        assert letter["topic"] == topic and letter["detail"]
        original = base64.b64decode(letter["original"])
        if letter["truncated"]:  # an oversized record's letter keeps its first bytes
            assert any(p.startswith(original) and r == letter["reason"] for p, r in bad)
            assert letter["original_bytes"] > len(original)
        else:
            assert (original, letter["reason"]) in bad
    recs_for(pipeline, set(valid_ids))  # every valid event around them was processed


def test_worker_killed_and_restarted_applies_each_event_once(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """SIGKILL mid-stream, restart: state equals one pass over the events, none lost."""
    settings = make_settings()
    replay_dataset(
        settings,
        Dataset(write_sample_dataset(tmp_path / "sample")),
        include_events=False,
        progress=False,
    )
    catalog = [
        item["item_id"] for item in sample_items() if not item["item_id"].startswith("movies")
    ]
    users = [f"user-{n}" for n in range(12)]

    def wave(start: int, count: int) -> list[tuple[str, OutgoingMessage]]:
        return [
            user_event(
                settings, users[i % len(users)], catalog[(i * 7) % len(catalog)], T0 + i * 60
            )
            for i in range(start, start + count)
        ]

    first, second, third = wave(0, 300), wave(300, 600), wave(900, 300)
    worker = worker_factory(settings).start()
    produce(settings, [m for _, m in first])
    recs_for(settings, {event_id for event_id, _ in first})
    produce(settings, [m for _, m in second])
    tree = worker.process_tree()
    assert len(tree) >= 2, f"no runtime process under the worker: {tree}"
    worker.kill()  # while the second wave is in flight
    deadline = time.monotonic() + 10
    while any(process_running(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in tree if process_running(pid)], "the runtime outlived its worker"
    worker.start()
    produce(settings, [m for _, m in third])
    all_ids = {event_id for event_id, _ in first + second + third}
    recs = recs_for(settings, all_ids, timeout=120)
    worker.stop()

    # Recommendations: one per event and target, possibly repeated after the crash, with the
    # same id.
    groups = rec_groups(RecSeen.of(rec) for rec in recs)
    assert {event_id for event_id, _ in groups} == all_ids
    assert all(len(ids) == 1 for ids in groups.values())

    actual = stored_states(settings)
    assert set(actual) == set(users)
    assert all(state.events_applied == 100 for state in actual.values())
    assert compare_states(actual, replay_topics(settings)) == {}


def test_recommendations_explain_themselves_and_consume_shows_why(pipeline: Settings) -> None:
    """Two interests (sci-fi books, romance music): each recommended movie of one of those
    genres names an item of the same genre first; `xdrec consume --explain` prints titles."""
    books, music = items_of("books", "science_fiction"), items_of("music", "romance")
    events = [
        user_event(pipeline, "two-tastes", item, T0 + i * 3600)
        for i, item in enumerate([books[0], books[1], books[2]])
    ]
    produce(pipeline, [message for _, message in events])
    recs_for(pipeline, {events[-1][0]})
    later = [
        user_event(pipeline, "two-tastes", item, T0 + (10 + i) * 3600)
        for i, item in enumerate(music[:3])
    ]
    produce(pipeline, [message for _, message in later])
    [rec] = recs_for(pipeline, {later[-1][0]})
    judged = 0
    for item in rec["items"]:
        genre = item_genre(item["item_id"])
        assert item["because"], item
        if genre in ("science_fiction", "romance"):
            judged += 1
            top = item["because"][0]
            assert item_genre(top["item_id"]) == genre
            assert top["domain"] == ("books" if genre == "science_fiction" else "music")
    assert judged >= 3

    env = {**os.environ, **settings_env(pipeline)}
    env.pop("XDREC_CONFIG", None)
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "consume",
            "recs.movies",
            "--from-beginning",
            "--explain",
            "--idle-timeout",
            "3",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    titles = {(i["domain"], i["item_id"]): i["title"] for i in sample_items()}
    first = rec["items"][0]
    reason = titles[(first["because"][0]["domain"], first["because"][0]["item_id"])]
    line = (
        f"recommended {titles[('movies', first['item_id'])]} because you interacted with {reason}"
    )
    assert line in shown.stdout, shown.stdout[-3000:]
