"""Erasure and feedback against the real broker: a forgotten user's state is gone from RocksDB,
does not come back when another worker restores from the changelog, and is left out of the
trainer's window; dismissed items are never shown again and feedback is counted per version."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import item_genre, sample_items, write_sample_dataset
from stream.settings import Settings
from stream.state.store import UserStateStore
from stream.worker.erasure import request_erasure
from testkit.deployment import WorkerProcess, produce, read_topic, user_event
from training.event_log import Window, snapshot_window

pytestmark = pytest.mark.integration

T0 = 1_704_067_200.0


def items_of(domain: str, genre: str) -> list[str]:
    return [
        i["item_id"]
        for i in sample_items()
        if i["domain"] == domain and item_genre(i["item_id"]) == genre
    ]


def movie_rec(settings: Settings, event_id: str) -> dict:
    recs = read_topic(
        settings,
        settings.topics.recs("movies"),
        lambda got: any(r["trigger"]["event_id"] == event_id for r in got),
        timeout=90,
    )
    return next(r for r in recs if r["trigger"]["event_id"] == event_id)


def metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def deployment(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Settings, WorkerProcess, Callable[[Settings], WorkerProcess]]:
    settings = make_settings()
    sample = write_sample_dataset(tmp_path_factory.mktemp("sample"))
    replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
    return settings, worker_factory(settings).start(), worker_factory


def test_dismissed_items_never_return_and_feedback_is_counted(deployment) -> None:  # noqa: ANN001
    settings, worker, _ = deployment
    books = items_of("books", "science_fiction")
    _, first = user_event(settings, "feedback-user", books[0], T0)
    event_id, second = user_event(settings, "feedback-user", books[1], T0 + 60)
    produce(settings, [first, second])
    rec = movie_rec(settings, event_id)
    shown = [item["item_id"] for item in rec["items"]]
    rec_id = rec["recommendation_id"]
    _, impression = user_event(
        settings,
        "feedback-user",
        shown[0],
        T0 + 120,
        event_type="impression",
        recommendation_id=rec_id,
    )
    _, dismiss = user_event(
        settings,
        "feedback-user",
        shown[0],
        T0 + 130,
        event_type="dismiss",
        recommendation_id=rec_id,
    )
    _, click = user_event(
        settings,
        "feedback-user",
        shown[1],
        T0 + 140,
        event_type="click",
        recommendation_id=rec_id,
    )
    produce(settings, [impression, dismiss, click])
    port = worker.metrics_port()
    for event_type in ("impression", "dismiss", "click"):
        labels = {"domain": "movies", "model_version": "v0", "event_type": event_type}
        wait_until(
            lambda wanted=labels: metric(port, "xdrec_feedback_total", **wanted) == 1, event_type
        )

    later = [
        user_event(settings, "feedback-user", b, T0 + 200 + n) for n, b in enumerate(books[2:5])
    ]
    produce(settings, [message for _, message in later])
    for later_id, _ in later:
        items = [item["item_id"] for item in movie_rec(settings, later_id)["items"]]
        assert shown[0] not in items  # dismissed
        assert shown[1] not in items  # clicked: now an interaction, so seen


def test_erasure_forgets_the_user_everywhere(deployment, tmp_path: Path) -> None:  # noqa: ANN001
    settings, worker, worker_factory = deployment
    books = items_of("books", "romance")
    events = [user_event(settings, "forget-me", b, T0 + n * 60) for n, b in enumerate(books[:3])]
    keep = [user_event(settings, "keep-me", b, T0 + n * 60) for n, b in enumerate(books[3:5])]
    produce(settings, [message for _, message in events + keep])
    movie_rec(settings, events[-1][0])
    movie_rec(settings, keep[-1][0])

    request_erasure(settings, "forget-me")
    port = worker.metrics_port()
    wait_until(lambda: metric(port, "xdrec_users_erased_total") >= 1, "the erasure")
    # Another user's event flows through afterwards: nothing is emitted for the forgotten one.
    nudge_id, nudge = user_event(settings, "keep-me", books[5], T0 + 600)
    produce(settings, [nudge])
    recs = read_topic(
        settings,
        settings.topics.recs("movies"),
        lambda got: any(r["trigger"]["event_id"] == nudge_id for r in got),
        timeout=90,
    )
    forgotten = [r for r in recs if r["user_id"] == "forget-me"]
    assert {r["trigger"]["event_id"] for r in forgotten} <= {e for e, _ in events}

    worker.stop()
    store = UserStateStore(settings.worker.state_dir / settings.worker.name / "users")
    try:
        assert store.get("forget-me") is None
        assert store.get("keep-me") is not None
    finally:
        store.close()

    # A worker that restores everything from the changelog does not bring the user back.
    restored_settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"name": "restored"})}
    )
    fresh = worker_factory(restored_settings).start()
    # State is restored per partition when its first batch arrives: touch every partition.
    touches = [user_event(settings, f"toucher-{n}", books[0], T0 + 900) for n in range(12)]
    produce(settings, [message for _, message in touches])
    for touch_id, _ in touches:
        movie_rec(settings, touch_id)
    assert metric(fresh.metrics_port(), "xdrec_state_restored_records_total") > 0
    fresh.stop()
    store = UserStateStore(restored_settings.worker.state_dir / "restored" / "users")
    try:
        assert store.get("keep-me") is not None
        assert store.get("forget-me") is None
    finally:
        store.close()

    # The trainer's next window leaves the user out.
    stats = snapshot_window(
        settings,
        Window(),
        tmp_path / "window",
        holdout_share=0.1,
        max_holdout_users=10,
        progress=False,
    )
    users = {
        json.loads(line)["user_id"] for line in (tmp_path / "window" / "interactions.jsonl").open()
    }
    assert "keep-me" in users and "forget-me" not in users
    assert stats.skipped["erased_user"] == 3

    # Ids never reach info-level logs.
    assert "forget-me" not in worker.log_file.read_text(errors="replace")
