"""The trainer's /metrics asks for the workers' bearer token when one is set; its probes don't."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from training.trainer_metrics import TrainerMetrics


def _status(port: int, path: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("token", ["s3cret", None])
def test_metrics_need_the_token_when_one_is_set(token: str | None) -> None:
    port = TrainerMetrics().serve("127.0.0.1", 0, token)
    assert _status(port, "/healthz") == 200 and _status(port, "/ready") == 200
    if token is None:
        assert _status(port, "/metrics") == 200
        return
    assert _status(port, "/metrics") == 401
    assert _status(port, "/metrics", "wrong") == 401
    assert _status(port, "/metrics", token) == 200
