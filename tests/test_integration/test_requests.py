"""Recommendations on request from two real workers sharing a consumer group: every worker
answers for every user (the owner from its state, the other by forwarding), with a token,
without naming users in its log, and with a reason for every bad request."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from schemas import Recommendation
from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import write_sample_dataset
from stream.devtools.broker import BrokerInfo, free_port
from stream.kafka.topics import key_partition
from stream.kafka.transport import make_producer, produce_all
from testkit import guarantees
from testkit.deployment import REPO, WorkerProcess, isolated_settings, user_event

pytestmark = pytest.mark.integration

PARTITIONS = 4
TOKEN = "s3cret-token"
T0 = 1_704_067_200.0


def _get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, dict, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, dict(error.headers), json.loads(body) if body.startswith(b"{") else {}


def _answer(port: int, user: str, timeout: float = 60.0) -> dict:
    """The user's movies recommendations, once the worker has applied the user's events."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = _get(port, f"/recommendations/movies/{user}?k=5&explain=true")
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return body
        time.sleep(0.3)


def test_any_worker_answers_for_any_user(kafka_broker: BrokerInfo, tmp_path: Path) -> None:
    settings = isolated_settings(
        kafka_broker.bootstrap_servers,
        tmp_path / "state",
        domains=["books", "music", "movies"],
        topics={"partitions": PARTITIONS},
        recommendations={"routes": {"movies": ["books", "music"]}},
        worker={"batch_within_seconds": 0.05},
    )
    sample = write_sample_dataset(tmp_path / "sample")
    replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
    ports = {"worker-a": free_port(), "worker-b": free_port()}
    workers = {
        name: WorkerProcess(
            guarantees.worker_settings(settings, name).model_copy(
                update={
                    "metrics": settings.metrics.model_copy(
                        update={"port": port, "token": SecretStr(TOKEN)}
                    )
                }
            ),
            tmp_path / f"{name}.log",
            cwd=REPO,
        )
        for name, port in ports.items()
    }
    users = [f"reader-{n}" for n in range(8)]
    try:
        for worker in workers.values():
            worker.start()
        owners = guarantees.settled_owners(
            settings,
            {name: worker.log_file for name, worker in workers.items()},
            180,
            alive=lambda: all(w.alive() for w in workers.values()),
        )
        # Before any event: nothing to rank by, not even popularity.
        for port in ports.values():
            status, _, body = _get(port, "/recommendations/movies/nobody-at-all")
            assert (status, body.get("reason")) == (404, "unknown_user"), body
        events = [
            user_event(settings, user, item, T0 + n)[1]
            for n, (user, item) in enumerate(
                (user, item)
                for user in users
                for item in ("movies-0005", "books-0001", "music-0002")
            )
        ]
        produce_all(make_producer(settings), events)
        port_a, port_b = ports["worker-a"], ports["worker-b"]
        for user in users:
            mine = _answer(port_a, user)
            theirs = _answer(port_b, user)
            for body in (mine, theirs):
                recommendation = Recommendation.model_validate(body)
                assert recommendation.trigger.kind == "request"
                assert recommendation.trigger.topic is None
                assert recommendation.user_id == user and len(recommendation.items) == 5
                assert all(item.because for item in recommendation.items)
            # The same state and version behind both: the owner answered, the other relayed.
            assert mine["items"] == theirs["items"]
            assert mine["model_version"] == theirs["model_version"]

        # Who may ask: probes without a token, everything else with it.
        assert _get(port_a, "/healthz", token=None)[0] == 200
        assert _get(port_a, "/ready", token=None)[0] == 200
        assert _get(port_a, "/metrics", token=None)[0] == 401
        status, headers, body = _get(port_a, f"/recommendations/movies/{users[0]}", None)
        assert status == 401 and body["reason"] == "unauthorized"
        assert _get(port_a, f"/recommendations/movies/{users[0]}", "wrong")[0] == 401

        # Bad requests get a reason; a user without events is not invented.
        for path, status, reason in (
            (f"/recommendations/cooking/{users[0]}", 404, "unknown_domain"),
            (f"/recommendations/books/{users[0]}", 404, "unknown_domain"),  # not a target
            (f"/recommendations/movies/{'x' * 2000}", 400, "bad_user_id"),
            (f"/recommendations/movies/{users[0]}?k=0", 400, "bad_k"),
            (f"/recommendations/movies/{users[0]}?k=5000", 400, "bad_k"),
            (f"/recommendations/movies/{users[0]}?explain=maybe", 400, "bad_explain"),
            (f"/recommendations/movies/{users[0]}?color=red", 400, "bad_parameter"),
            ("/recommendations/movies", 404, "not_found"),
        ):
            got, _, body = _get(port_a, path)
            assert (got, body.get("reason")) == (status, reason), path
        # A user without history gets the domain's popularity, marked as such.
        for port in ports.values():
            status, _, body = _get(port, "/recommendations/movies/nobody-at-all?k=3")
            assert status == 200 and body["model_version"] == "popularity", body
            assert body["items"][0]["item_id"] == "movies-0005"
            assert Recommendation.model_validate(body).trigger.kind == "request"
    finally:
        for worker in workers.values():
            worker.stop()

    # Both owners answered and both forwarded; the access log never names a user.
    owner_of = {p: name for name, partitions in owners.items() for p in partitions}
    assert {owner_of[key_partition(u.encode(), PARTITIONS)] for u in users} == set(workers)
    for worker in workers.values():
        lines = [
            line
            for line in worker.log_file.read_text(errors="replace").splitlines()
            if "request path=" in line
        ]
        assert any("outcome=forwarded" in line for line in lines)
        assert any("outcome=answered" in line for line in lines)
        assert not any(user in line for line in lines for user in [*users, "nobody-at-all"])
