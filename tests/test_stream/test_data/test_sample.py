"""Unit tests for the synthetic sample dataset: it must be stable, consistent and well formed."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stream.data.sample import (
    DOMAINS,
    EVENT_TYPES,
    GENRES,
    item_genre,
    sample_interactions,
    sample_items,
    sample_splits,
    sample_user_genres,
    write_sample_dataset,
)

START = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return sample_items()


@pytest.fixture(scope="module")
def interactions() -> list[dict]:
    return sample_interactions()


def test_deterministic() -> None:
    assert sample_items() == sample_items()
    assert sample_interactions() == sample_interactions()
    assert sample_splits() == sample_splits()


def test_seed_changes_text_but_not_layout() -> None:
    other = sample_items(seed=8)
    assert other != sample_items()
    assert [item["item_id"] for item in other] == [item["item_id"] for item in sample_items()]


def test_item_schema(items: list[dict]) -> None:
    for item in items:
        assert set(item) == {"item_id", "domain", "title", "text"}
        assert all(isinstance(value, str) and value for value in item.values())
        assert item["domain"] in DOMAINS
        assert item["item_id"].startswith(item["domain"] + "-")
        assert 15 <= len(item["text"].split()) <= 40


def test_ids_and_titles_unique(items: list[dict]) -> None:
    ids = [item["item_id"] for item in items]
    assert len(ids) == len(set(ids))
    titles = [item["title"] for item in items]
    assert len(titles) == len(set(titles))


def test_every_domain_has_every_genre(items: list[dict]) -> None:
    assert len(GENRES) == 8
    counts = Counter((item["domain"], item_genre(item["item_id"])) for item in items)
    for domain in DOMAINS:
        for genre in GENRES:
            assert counts[(domain, genre)] >= 5


def test_item_genre_rejects_unknown_id() -> None:
    with pytest.raises(KeyError):
        item_genre("books-9999")


def test_interactions_reference_existing_items(items: list[dict], interactions: list[dict]) -> None:
    domain_of = {item["item_id"]: item["domain"] for item in items}
    for event in interactions:
        assert event["item_id"] in domain_of
        assert event["domain"] == domain_of[event["item_id"]]


def test_interaction_schema_and_order(interactions: list[dict]) -> None:
    keys = {"user_id", "item_id", "domain", "ts", "rating", "event_type"}
    for event in interactions:
        assert set(event) == keys
        assert isinstance(event["ts"], float)
        assert event["event_type"] in EVENT_TYPES
    stamps = [event["ts"] for event in interactions]
    assert stamps == sorted(stamps)
    assert stamps[0] == START


def test_ratings_only_on_reviews(interactions: list[dict]) -> None:
    reviews = [event for event in interactions if event["event_type"] == "review"]
    assert reviews
    for event in interactions:
        if event["event_type"] == "review":
            assert isinstance(event["rating"], float)
            assert 1.0 <= event["rating"] <= 5.0
        else:
            assert event["rating"] is None


def test_users_mostly_follow_their_genres(interactions: list[dict]) -> None:
    favourites = sample_user_genres()
    per_user = Counter(event["user_id"] for event in interactions)
    assert set(per_user) == set(favourites)
    assert all(8 <= count <= 30 for count in per_user.values())
    in_favourite = sum(
        item_genre(event["item_id"]) in favourites[event["user_id"]] for event in interactions
    )
    assert in_favourite / len(interactions) > 0.75
    movie_users = {event["user_id"] for event in interactions if event["domain"] == "movies"}
    assert 0.3 * len(per_user) <= len(movie_users) <= 0.7 * len(per_user)
    domains = Counter(event["domain"] for event in interactions)
    assert domains["movies"] < domains["books"] and domains["movies"] < domains["music"]


def test_splits_cover_all_users() -> None:
    splits = sample_splits()
    assert set(splits) == set(sample_user_genres())
    counts = Counter(splits.values())
    assert set(counts) == {"train", "valid", "test"}
    assert counts["train"] > counts["valid"] + counts["test"]


def test_write_sample_dataset_round_trips(tmp_path: Path) -> None:
    target = tmp_path / "sample"
    assert write_sample_dataset(target) == target

    def read_jsonl(name: str) -> list[dict]:
        lines = (target / name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    assert read_jsonl("items.jsonl") == sample_items()
    assert read_jsonl("interactions.jsonl") == sample_interactions()
    splits = json.loads((target / "splits.json").read_text(encoding="utf-8"))
    assert splits == sample_splits()
    stats = json.loads((target / "stats.json").read_text(encoding="utf-8"))
    assert stats["items"] == len(sample_items())
    assert stats["interactions"] == len(sample_interactions())
    assert stats["users"] == len(splits)
    assert set(stats["domains"]) == set(DOMAINS)
    assert sum(d["interactions"] for d in stats["domains"].values()) == stats["interactions"]
    assert sum(d["items"] for d in stats["domains"].values()) == stats["items"]
