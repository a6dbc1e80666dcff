"""The popularity a worker answers unknown users with: counted from applied interactions."""

from __future__ import annotations

from collections import Counter

from stream.core.popularity import PopularityTally


def test_the_most_applied_items_come_first_with_their_share() -> None:
    now = [0.0]
    tally = PopularityTally(refresh_seconds=5.0, clock=lambda: now[0])
    assert tally.top("movies", 3) == []
    tally.add(Counter({("movies", "m1"): 1, ("movies", "m2"): 3, ("books", "b1"): 9}))
    assert tally.top("movies", 3) == [("m2", 0.75), ("m1", 0.25)]
    assert tally.top("movies", 3, exclude={"m2"}) == [("m1", 0.25)]
    # Rebuilt at most every refresh_seconds: a request never sorts the catalog again.
    tally.add(Counter({("movies", "m1"): 5}))
    assert tally.top("movies", 1) == [("m2", 0.75)]
    now[0] = 5.0
    assert tally.top("movies", 1) == [("m1", 0.6666666666666666)]
    assert tally.top("music", 2) == []


def test_ties_are_ranked_by_item_id() -> None:
    tally = PopularityTally()
    tally.add(Counter({("books", "b2"): 2, ("books", "b1"): 2, ("books", "b3"): 1}))
    assert [item for item, _ in tally.top("books", 3)] == ["b1", "b2", "b3"]
