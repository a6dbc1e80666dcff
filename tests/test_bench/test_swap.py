"""``bench.swap``'s recommendation latency, without a broker: which events a window counts, and
that a doubled or lost recommendation neither shortens nor breaks the figures."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.swap import (
    Received,
    SwapPlan,
    Timeline,
    events,
    figures,
    rec_latency_figures,
    recorded,
)
from stream.settings import Settings


def _rec(event_id: str, at: float, copy: int = 0, version: str = "v0") -> Received:
    return Received(
        at=at,
        wall=1_700_000_000.0 + at,
        recommendation_id=f"r-{event_id}-{copy}",
        model_version=version,
        event_id=event_id,
        source=("events.books", 0),
        offset=0,
        generated_at=1_700_000_000.0 + at,
    )


def test_rec_latency_counts_the_events_produced_in_the_window_by_their_first_rec() -> None:
    sent = ["a", "b", "c", "d", "e"]
    produced_at = [9.0, 10.0, 11.0, 12.0, 13.0]
    received = [
        _rec("a", 9.5),  # produced before the window
        _rec("b", 10.02),  # at its start: counted, 20 ms
        _rec("c", 11.3, copy=1),  # consumed twice: the first copy counts, 50 ms
        _rec("c", 11.05),
        # "d" is lost: no latency, and no error
        _rec("e", 13.001),  # produced at the window's end: left to the next window
    ]
    figures = rec_latency_figures(sent, produced_at, received, 10.0, 13.0)
    assert figures["events"] == 2
    assert figures["max"] == pytest.approx(50.0)
    assert figures["p99"] == pytest.approx(float(np.percentile([20.0, 50.0], 99)))
    before = rec_latency_figures(sent, produced_at, received, 0.0, 10.0)
    assert before["events"] == 1 and before["max"] == pytest.approx(500.0)


def test_rec_latency_of_an_empty_window_is_none() -> None:
    figures = rec_latency_figures(["a"], [1.0], [_rec("a", 1.1)], 5.0, 6.0)
    assert figures == {"max": None, "p99": None, "events": 0}
    assert rec_latency_figures([], [], [], 0.0, 0.0)["max"] is None


def test_recorded_notes_when_each_event_is_drawn() -> None:
    ids: list[str] = []
    produced_at: list[float] = []
    stream = recorded(
        events(Settings(domains=["books", "music", "movies"]), 5, 7), ids, produced_at
    )
    drawn = list(itertools.islice(stream, 3))
    assert ids == [p.event_id for p in drawn]
    assert len(produced_at) == 3 and produced_at == sorted(produced_at)


def test_a_run_splits_its_events_into_warm_up_steady_and_swap_windows() -> None:
    # Stream from t=100, one event a second; update sent at 106, first v1 rec consumed at 108.
    sent = [f"e{n}" for n in range(14)]
    produced_at = [100.0 + n for n in range(14)]
    latency_ms = [900, 800, 50, 60, 70, 80, 400, 300, 200, 100, 30, 20, 10, 10]
    received = [
        _rec(e, at + ms / 1000, version="v0" if n < 8 else "v1")
        for n, (e, at, ms) in enumerate(zip(sent, produced_at, latency_ms, strict=True))
    ]
    times = Timeline(
        update_sent=106.0,
        update_acked=106.0,
        update_acked_wall=1_700_000_106.0,
        stream_started=100.0,
    )
    result = figures(
        SwapPlan(warmup_s=2.0, settle_s=2.0), sent, produced_at, received, [], 108.3, times, ""
    )
    assert result["lost"] == 0 and result["versions_in_order"]
    assert result["rec_latency_events"] == {"warmup": 2, "baseline": 4, "swap": 5}
    assert result["warmup_rec_latency_ms_max"] == pytest.approx(900.0)
    assert result["baseline_rec_latency_ms_max"] == pytest.approx(80.0)  # e2..e5
    assert result["rec_latency_ms_max"] == pytest.approx(400.0)  # e6..e10, up to 110.3
    assert result["rec_latency_ms_p99"] == pytest.approx(
        float(np.percentile([400, 300, 200, 100, 30], 99))
    )
    # Without /metrics reads there is no stall figure; the latency ones do not need them.
    assert result["stall_ms_max"] is None and result["baseline_stall_ms_max"] is None
    short = figures(SwapPlan(warmup_s=5.0), sent, produced_at, received, [], None, times, "")
    assert short["rec_latency_events"]["warmup"] == 3  # at most half the steady stream
    assert short["rec_latency_ms_max"] is None  # no new version: no swap window
