"""Reads an output topic the way a downstream service would, and prints what arrives."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

from confluent_kafka import KafkaException

from stream.settings import Settings
from stream.transport import make_admin, make_consumer, unreachable_hint


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


def format_recommendation(rec: dict, titles: dict[str, str] | None = None, top: int = 5) -> str:
    """One line a person can read: who, which domain, which model, the top items."""
    titles = titles or {}
    items = ", ".join(
        f"{item['rank']}. {titles.get(item['item_id'], item['item_id'])} ({item['score']:.2f})"
        for item in rec.get("items", [])[:top]
    )
    trigger = rec.get("trigger", {})
    return (
        f"{rec.get('user_id')} -> {rec.get('target_domain')} [{rec.get('model_version')}] "
        f"after {trigger.get('domain')} event: {items}"
    )
