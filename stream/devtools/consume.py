"""Reads an output topic the way a downstream service would, and prints what arrives."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

from confluent_kafka import KafkaException

from stream.kafka.snapshot import read_ranges, topic_ranges
from stream.kafka.transport import make_admin, make_consumer, unreachable_hint
from stream.settings import Settings


def resolve_topic(settings: Settings, topic: str) -> str:
    """Accept ``recs.movies`` for a prefixed deployment too; fail clearly on unknown topics."""
    try:
        existing = make_admin(settings).list_topics(timeout=10.0).topics
    except KafkaException as exc:
        raise ConnectionError(unreachable_hint(settings)) from exc
    for candidate in (topic, settings.topics.prefix + topic):
        if candidate in existing:
            return candidate
    known = sorted(name for name in existing if not name.startswith("__"))
    raise ValueError(f"topic {topic!r} does not exist; known topics: {', '.join(known)}")


def follow(
    settings: Settings,
    topics: str | list[str],
    *,
    from_beginning: bool = False,
    idle_timeout: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict]:
    """Yield decoded messages as they arrive; stops after ``idle_timeout`` seconds of silence."""
    consumer = make_consumer(
        settings,
        group_id=f"xdrec-consume-{uuid.uuid4().hex[:8]}",
        **{
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": False,
        },
    )
    consumer.subscribe([topics] if isinstance(topics, str) else topics)
    last = time.monotonic()
    try:
        while not should_stop():
            message = consumer.poll(0.5)
            if message is None:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    return
                continue
            if message.error():
                continue
            last = time.monotonic()
            try:
                yield json.loads(message.value())
            except (TypeError, ValueError):
                yield {"undecodable": repr(message.value()[:200])}
    finally:
        consumer.close()


def catalog_titles(settings: Settings) -> dict[tuple[str, str], str]:
    """(domain, item_id) -> title, from the catalog topics as they are now."""
    consumer = make_consumer(settings)
    titles: dict[tuple[str, str], str] = {}
    try:
        ranges = [
            r
            for domain in settings.domains
            for r in topic_ranges(consumer, settings.topics.catalog(domain), None)
        ]
        for message in read_ranges(consumer, ranges, "reading titles", progress=False):
            try:
                item = json.loads(message.value() or b"null")
                titles[(str(item["domain"]), str(item["item_id"]))] = str(item["title"])
            except (TypeError, ValueError, KeyError):
                continue  # tombstones and refused items have no title
    finally:
        consumer.close()
    return titles


def format_recommendation(
    rec: dict, titles: dict[tuple[str, str], str] | None = None, top: int = 5
) -> str:
    """One line a person can read: who, which domain, which model, the top items."""
    titles = titles or {}
    target = rec.get("target_domain", "")
    items = ", ".join(
        f"{item['rank']}. {titles.get((target, item['item_id']), item['item_id'])} "
        f"({item['score']:.2f})"
        for item in rec.get("items", [])[:top]
    )
    trigger = rec.get("trigger", {})
    return (
        f"{rec.get('user_id')} -> {rec.get('target_domain')} [{rec.get('model_version')}] "
        f"after {trigger.get('domain')} event: {items}"
    )


def format_explanation(rec: dict, titles: dict[tuple[str, str], str], top: int = 5) -> list[str]:
    """ "recommended X because you interacted with A (food), B (food)", one line per item."""
    target = rec.get("target_domain", "")
    lines = [format_recommendation(rec, titles, top)]
    for item in rec.get("items", [])[:top]:
        title = titles.get((target, item["item_id"]), item["item_id"])
        reasons = ", ".join(
            f"{titles.get((c['domain'], c['item_id']), c['item_id'])} ({c['domain']}, "
            f"{c['share']:.0%})"
            for c in item.get("because", [])
        )
        lines.append(
            f"  recommended {title} because you interacted with {reasons}"
            if reasons
            else f"  recommended {title} (no explanation recorded)"
        )
    return lines
