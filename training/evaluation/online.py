"""Online comparison of model versions from what the workers actually emitted.

Reads the recommendation topics and the event topics of a deployment and replays, per user and
in event time, the worker's online hit definition: every later interaction in a domain is
checked against the recommendation last shown for that domain, and it is a hit when its item was
on the list. Each check counts for the version that made the list. With an experiment running
(``experiment.share`` of users served by a candidate), the two versions' hit rates are compared
with Wilson 95% intervals and a normal-approximation interval for their difference.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer

from schemas import FEEDBACK_ONLY, EventValidator, Rejection
from stream.kafka.snapshot import read_ranges, topic_ranges
from stream.kafka.transport import make_consumer
from stream.settings import Settings

Z95 = 1.959964


def wilson(hits: int, checks: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (well-behaved near 0 and with few checks)."""
    if checks == 0:
        return (0.0, 1.0)
    p = hits / checks
    centre = (p + z * z / (2 * checks)) / (1 + z * z / checks)
    half = (
        z * math.sqrt(p * (1 - p) / checks + z * z / (4 * checks * checks)) / (1 + z * z / checks)
    )
    return (max(0.0, centre - half), min(1.0, centre + half))


def _read(settings: Settings, consumer: Consumer, progress: bool) -> tuple[list, list]:
    """(recommendations, interactions) as time-ordered tuples per kind."""
    recs: dict[str, tuple] = {}
    ranges = [
        r for d in settings.domains for r in topic_ranges(consumer, settings.topics.recs(d), None)
    ]
    for message in read_ranges(consumer, ranges, "reading recommendations", progress):
        try:
            rec = json.loads(message.value() or b"null")
            recs[rec["recommendation_id"]] = (  # redeliveries carry the same id
                rec["user_id"],
                rec["target_domain"],
                rec["model_version"],
                frozenset(item["item_id"] for item in rec["items"]),
                float(rec["trigger"]["event_time"]),
            )
        except (TypeError, ValueError, KeyError):
            continue
    validator = EventValidator(settings.domains)
    events: dict[str, tuple] = {}
    for domain in settings.domains:
        ranges = topic_ranges(consumer, settings.topics.events(domain), None)
        for message in read_ranges(consumer, ranges, f"reading events.{domain}", progress):
            event = validator.validate_event(message.value(), domain)
            if isinstance(event, Rejection) or event.event_type in FEEDBACK_ONLY:
                continue
            events[event.event_id] = (event.user_id, event.domain, event.item_id, event.timestamp)
    return list(recs.values()), list(events.values())


def compare_versions(recs: list[tuple], events: list[tuple], since: float | None = None) -> dict:
    """Hits and checks per version (see the module docstring); ``since`` counts only checks of
    interactions at or after that event time (e.g. after the candidate's training window)."""
    timeline: dict[str, list[tuple]] = defaultdict(list)
    for user, target, version, items, at in recs:
        timeline[user].append((at, 1, target, version, items))  # after its triggering event
    for user, domain, item, at in events:
        timeline[user].append((at, 0, domain, item, None))
    checks: dict[str, int] = defaultdict(int)
    hits: dict[str, int] = defaultdict(int)
    users: dict[str, set[str]] = defaultdict(set)
    for user, steps in timeline.items():
        shown: dict[str, tuple[str, frozenset[str]]] = {}
        for at, kind, domain, value, items in sorted(steps, key=lambda s: (s[0], s[1])):
            if kind == 1:
                shown[domain] = (value, items)
                users[value].add(user)
                continue
            if domain not in shown or (since is not None and at < since):
                continue
            version, listed = shown[domain]
            checks[version] += 1
            hits[version] += int(value in listed)
    versions = {}
    for version in sorted(checks):
        low, high = wilson(hits[version], checks[version])
        versions[version] = {
            "checks": checks[version],
            "hits": hits[version],
            "hit_rate": hits[version] / checks[version],
            "ci95": [low, high],
            "users": len(users[version]),
        }
    result: dict = {"versions": versions, "since": since}
    if len(versions) == 2:
        (a, first), (b, second) = versions.items()
        p1, n1, p2, n2 = first["hit_rate"], first["checks"], second["hit_rate"], second["checks"]
        half = Z95 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        result["difference"] = {
            "versions": [b, a],
            "value": p2 - p1,
            "ci95": [p2 - p1 - half, p2 - p1 + half],
        }
    return result


def evaluate_online(settings: Settings, since: float | None = None, progress: bool = True) -> dict:
    """Read the deployment's topics as they are now and compare the versions found."""
    started = time.perf_counter()
    consumer = make_consumer(settings)
    try:
        recs, events = _read(settings, consumer, progress)
    finally:
        consumer.close()
    result = compare_versions(recs, events, since)
    result["recommendations"] = len(recs)
    result["interactions"] = len(events)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def write_online_report(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Online comparison",
        "",
        f"{result.get('recommendations', 0):,} recommendations, "
        f"{result.get('interactions', 0):,} interactions"
        + (f", checks from event time {result['since']:.0f} on" if result.get("since") else "")
        + ".",
        "",
        "| version | users | checks | hits | hit rate | 95% CI |",
        "|---|---|---|---|---|---|",
    ]
    for version, row in result["versions"].items():
        low, high = row["ci95"]
        lines.append(
            f"| {version} | {row['users']:,} | {row['checks']:,} | {row['hits']:,} | "
            f"{row['hit_rate']:.4f} | [{low:.4f}, {high:.4f}] |"
        )
    if "difference" in result:
        diff = result["difference"]
        low, high = diff["ci95"]
        lines += [
            "",
            f"Difference {diff['versions'][0]} − {diff['versions'][1]}: {diff['value']:+.4f} "
            f"(95% CI [{low:+.4f}, {high:+.4f}]).",
        ]
    markdown = out / "online.md"
    markdown.write_text("\n".join(lines) + "\n")
    document = out / "online.json"
    document.write_text(json.dumps(result, indent=2))
    return [markdown, document]
