"""A small synthetic three-domain dataset for the quick-start demo and the tests.

The catalog covers eight genres that exist in every domain (``books``, ``music``, ``movies``).
Each item's title and text are assembled from per-genre word lists, so the genre is carried by
ordinary words a sentence encoder understands: a space-opera novel, a synthwave album about
astronauts and a sci-fi thriller film land close together. That makes cross-domain transfer
visible on a dataset small enough to build in milliseconds and to ship without any download.

Users have one or two favourite genres and mostly act in ``books`` and ``music``; about half of
them also touch ``movies``, which gives the demo a held-out target domain. Everything is seeded,
so every call returns the same data.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from stream.data.dataset import write_jsonl

DOMAINS: tuple[str, ...] = ("books", "music", "movies")

ITEMS_PER_GENRE = 6
N_USERS = 60
START_TS = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
FAVOURITE_SHARE = 0.85
EVENT_TYPES: tuple[str, ...] = ("view", "click", "purchase", "review")

# Per genre: words for titles (adjectives, nouns, places) and for descriptions. ``subjects`` and
# ``settings`` are shared by all domains so that items of one genre use the same vocabulary
# whatever their domain; the remaining lists give each domain its natural phrasing. Titles and
# texts follow the per-domain patterns. The word lists are data, kept beside this module.
_VOCABULARY = json.loads((Path(__file__).with_name("sample_vocabulary.json")).read_text())
GENRE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    genre: {kind: tuple(words) for kind, words in lists.items()}
    for genre, lists in _VOCABULARY["genre_words"].items()
}
GENRES: tuple[str, ...] = tuple(GENRE_WORDS)
_TITLE_PATTERNS: dict[str, tuple[str, ...]] = {
    domain: tuple(patterns) for domain, patterns in _VOCABULARY["title_patterns"].items()
}
_TEXT_PATTERNS: dict[str, tuple[str, ...]] = {
    domain: tuple(patterns) for domain, patterns in _VOCABULARY["text_patterns"].items()
}


_ARTICLE = re.compile(r"\b([Aa])( [aeiouAEIOU])")


@cache
def _layout(domain: str) -> tuple[str, ...]:
    """Genre of each item slot of ``domain``, in item-id order.

    The layout is fixed (independent of the text seed) and interleaves genres, so an item id
    carries no visible hint of its genre, and ``item_genre`` is valid for every seed.
    """
    slots = [genre for genre in GENRES for _ in range(ITEMS_PER_GENRE)]
    random.Random(f"xdrec-sample-layout-{domain}").shuffle(slots)
    return tuple(slots)


def _item_id(domain: str, index: int) -> str:
    return f"{domain}-{index + 1:04d}"


@cache
def _genre_lookup() -> dict[str, str]:
    return {
        _item_id(domain, index): genre
        for domain in DOMAINS
        for index, genre in enumerate(_layout(domain))
    }


def item_genre(item_id: str) -> str:
    """The genre ``item_id`` was generated from: ground truth for tests and demo metrics."""
    try:
        return _genre_lookup()[item_id]
    except KeyError:
        raise KeyError(f"not a sample item id: {item_id!r}") from None


def _items_by_domain_genre() -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for item_id, genre in _genre_lookup().items():
        grouped.setdefault((item_id.split("-", 1)[0], genre), []).append(item_id)
    return grouped


def _two(rng: random.Random, words: tuple[str, ...]) -> tuple[str, str]:
    first, second = rng.sample(words, 2)
    return first, second


def _title(
    rng: random.Random, domain: str, words: dict[str, tuple[str, ...]], taken: set[str]
) -> str:
    for _ in range(200):
        title = rng.choice(_TITLE_PATTERNS[domain]).format(
            adj=rng.choice(words["title_adj"]),
            noun=rng.choice(words["title_noun"]),
            place=rng.choice(words["title_place"]),
        )
        if title not in taken:
            taken.add(title)
            return title
    raise RuntimeError(f"ran out of distinct titles for {domain}")


def _text(rng: random.Random, domain: str, words: dict[str, tuple[str, ...]]) -> str:
    adj = rng.choice(words["adj"])
    theme, theme2 = _two(rng, words["themes"])
    sound, sound2 = _two(rng, words["music_sound"])
    feature, feature2 = _two(rng, words["film_feature"])
    text = rng.choice(_TEXT_PATTERNS[domain]).format(
        adj=adj,
        adj_cap=adj[:1].upper() + adj[1:],
        subject=rng.choice(words["subjects"]),
        setting=rng.choice(words["settings"]),
        theme=theme,
        theme2=theme2,
        book_label=rng.choice(words["book_label"]),
        music_style=rng.choice(words["music_style"]),
        sound=sound,
        sound2=sound2,
        film_kind=rng.choice(words["film_kind"]),
        feature=feature,
        feature2=feature2,
    )
    text = _ARTICLE.sub(lambda match: match.group(1) + "n" + match.group(2), text)
    return text[:1].upper() + text[1:]


def sample_items(seed: int = 7) -> list[dict]:
    """The catalog: ``ITEMS_PER_GENRE`` items per genre and domain, sorted by item id.

    A fresh list is built on each call, so callers may mutate it freely.
    """
    rng = random.Random(f"xdrec-sample-items-{seed}")
    taken: set[str] = set()
    items: list[dict] = []
    for domain in DOMAINS:
        for index, genre in enumerate(_layout(domain)):
            words = GENRE_WORDS[genre]
            items.append(
                {
                    "item_id": _item_id(domain, index),
                    "domain": domain,
                    "title": _title(rng, domain, words, taken),
                    "text": _text(rng, domain, words),
                }
            )
    return items


def sample_user_genres(seed: int = 7) -> dict[str, tuple[str, ...]]:
    """Favourite genres per user: the ground truth that the interactions are drawn from."""
    rng = random.Random(f"xdrec-sample-users-{seed}")
    users: dict[str, tuple[str, ...]] = {}
    for number in range(N_USERS):
        # Round-robin primaries keep every genre represented by several users.
        primary = GENRES[number % len(GENRES)]
        favourites: tuple[str, ...] = (primary,)
        if rng.random() < 0.5:
            favourites += (rng.choice([g for g in GENRES if g != primary]),)
        users[f"u{number + 1:04d}"] = favourites
    return users


def _visit(
    rng: random.Random, user_id: str, item_id: str, domain: str, favourite: bool
) -> list[dict]:
    """One item visit as a small funnel: view, then maybe click, purchase and review.

    Timestamps are filled in later, once the user's events are in their final order.
    """
    kinds = ["view"]
    if rng.random() < 0.55:
        kinds.append("click")
        if rng.random() < 0.45:
            kinds.append("purchase")
            if rng.random() < 0.6:
                kinds.append("review")
    events = []
    for kind in kinds:
        rating = None
        if kind == "review":
            rating = float(rng.choice((3, 4, 4, 5, 5, 5) if favourite else (1, 2, 2, 3, 3, 4)))
        events.append(
            {
                "user_id": user_id,
                "item_id": item_id,
                "domain": domain,
                "ts": 0.0,
                "rating": rating,
                "event_type": kind,
            }
        )
    return events


def _domain_events(
    rng: random.Random,
    user_id: str,
    favourites: tuple[str, ...],
    domains: tuple[str, ...],
    count: int,
    grouped: dict[tuple[str, str], list[str]],
) -> list[dict]:
    others = [g for g in GENRES if g not in favourites]
    seen: set[str] = set()
    events: list[dict] = []
    while len(events) < count:
        domain = rng.choice(domains)
        favourite = rng.random() < FAVOURITE_SHARE
        genre = rng.choice(favourites if favourite else others)
        pool = grouped[(domain, genre)]
        fresh = [item_id for item_id in pool if item_id not in seen]
        item_id = rng.choice(fresh or pool)
        seen.add(item_id)
        events.extend(_visit(rng, user_id, item_id, domain, favourite))
    return events[:count]


def sample_interactions(seed: int = 7) -> list[dict]:
    """Every user's events, sorted by ``ts`` (ties by user id) and starting at 2024-01-01Z.

    Users act mostly in their favourite genres (85 %), mostly in books and music; about half
    of them also leave a few movie events, which the demo uses as the target domain.
    """
    rng = random.Random(f"xdrec-sample-interactions-{seed}")
    grouped = _items_by_domain_genre()
    users = sample_user_genres(seed)
    user_ids = list(users)
    movie_users = set(rng.sample(user_ids, len(user_ids) // 2))
    events: list[dict] = []
    for user_id in user_ids:
        favourites = users[user_id]
        total = rng.randint(8, 30)
        n_movies = min(rng.randint(2, 5), total - 6) if user_id in movie_users else 0
        own = _domain_events(
            rng, user_id, favourites, ("books", "music"), total - n_movies, grouped
        )
        movies = _domain_events(rng, user_id, favourites, ("movies",), n_movies, grouped)
        # Movie events sit in the later part of a history, after some books and music, so a
        # time-ordered split leaves them to predict from the source domains.
        insert_at = rng.randint(len(own) // 2, len(own))
        ordered = own[:insert_at] + movies + own[insert_at:]
        clock = START_TS + 60.0 * rng.randint(0, 48 * 60)
        for event in ordered:
            event["ts"] = clock
            # Minutes within a session, sometimes hours between sessions.
            step = rng.randint(1, 30) if rng.random() < 0.7 else rng.randint(60, 12 * 60)
            clock += 60.0 * step
        events.extend(ordered)
    shift = min(event["ts"] for event in events) - START_TS
    for event in events:
        event["ts"] -= shift
    events.sort(key=lambda event: (event["ts"], event["user_id"]))
    return events


def sample_splits(seed: int = 7) -> dict[str, str]:
    """User-level split: about 80 % train, 10 % valid, 10 % test, seeded."""
    user_ids = list(sample_user_genres(seed))
    random.Random(f"xdrec-sample-splits-{seed}").shuffle(user_ids)
    n_valid = n_test = max(1, round(len(user_ids) * 0.1))
    n_train = len(user_ids) - n_valid - n_test
    splits = {user_id: "train" for user_id in user_ids[:n_train]}
    splits.update({user_id: "valid" for user_id in user_ids[n_train : n_train + n_valid]})
    splits.update({user_id: "test" for user_id in user_ids[n_train + n_valid :]})
    return dict(sorted(splits.items()))


def write_sample_dataset(directory: Path, seed: int = 7) -> Path:
    """Write the dataset in the normalized layout so the demo can run without any download.

    Files: ``items.jsonl``, ``interactions.jsonl``, ``splits.json`` (user id -> split) and
    ``stats.json`` (counts overall and per domain). Returns ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    items = sample_items(seed)
    interactions = sample_interactions(seed)
    splits = sample_splits(seed)
    write_jsonl(directory / "items.jsonl", items)
    write_jsonl(directory / "interactions.jsonl", interactions)
    (directory / "splits.json").write_text(json.dumps(splits, indent=2) + "\n", encoding="utf-8")
    domains = {
        domain: {
            "items": sum(item["domain"] == domain for item in items),
            "users": len({e["user_id"] for e in interactions if e["domain"] == domain}),
            "interactions": sum(e["domain"] == domain for e in interactions),
        }
        for domain in DOMAINS
    }
    stats = {
        "items": len(items),
        "users": len({event["user_id"] for event in interactions}),
        "interactions": len(interactions),
        "domains": domains,
    }
    (directory / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return directory
