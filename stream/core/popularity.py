"""What a worker answers for a user it knows nothing of: its domain's most applied items.

A request for a user without history (no event applied yet, or none in the domains that feed
the target) has nothing to rank by, so the answer is the target domain's popularity, marked
``model_version = "popularity"``. The counts are the interactions this worker applied since it
started: its partitions are a uniform share of the users (murmur2 of the user id), so their
ranking estimates the whole stream's. The ranked lists are rebuilt at most every few seconds,
so a request never sorts a large catalog.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection

from stream.core.emit import EmittedRecommendation, EmittedTrigger

POPULARITY_VERSION = "popularity"


class PopularityTally:
    """Interactions per item and domain, added by the batch thread, read by request threads."""

    def __init__(
        self, refresh_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._counts: dict[str, Counter[str]] = defaultdict(Counter)
        self._ranked: dict[str, tuple[float, list[tuple[str, float]]]] = {}
        self._lock = threading.Lock()

    def add(self, items: Counter[tuple[str, str]]) -> None:
        with self._lock:
            for (domain, item_id), count in items.items():
                self._counts[domain][item_id] += count

    def top(self, domain: str, k: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """The ``k`` most applied items of ``domain`` but ``exclude``, with their share of the
        domain's interactions, most applied first (ties by item id)."""
        now = self.clock()
        with self._lock:
            built, ranked = self._ranked.get(domain, (float("-inf"), []))
            if not ranked or now - built >= self.refresh_seconds:
                counts = self._counts.get(domain, Counter())
                total = sum(counts.values()) or 1
                ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
                # Enough to fill any request after its exclusions (bounded by max_request_k).
                ranked = [(item, count / total) for item, count in ordered[:2_000]]
                self._ranked[domain] = (now, ranked)
        return [pair for pair in ranked if pair[0] not in exclude][:k]


def popularity_recommendation(
    recommendation_id: str,
    user_id: str,
    target: str,
    items: list[tuple[str, float]],
    request_id: str,
    now: float,
) -> EmittedRecommendation:
    """The answer for a user without history: the domain's popularity, marked as such."""
    return EmittedRecommendation(
        recommendation_id=recommendation_id,
        user_id=user_id,
        target_domain=target,
        items=items,
        because=[[] for _ in items],
        model_version=POPULARITY_VERSION,
        source_domains=[],
        trigger=EmittedTrigger(request_id, target, now, None, None, None, "request"),
        generated_at=now,
    )
