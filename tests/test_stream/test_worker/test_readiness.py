"""/healthz and /ready of a worker's runtime on a real broker and a real RocksDB store: ready
only once the catalog is caught up, a model is loaded, the group's assignment is known and
every assigned partition's state is restored; not ready while a restore runs or a rebalance
is under way, and then requests for recommendations get a 503, never an answer."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from stream.core.state import UserState
from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import write_sample_dataset
from stream.settings import Settings
from stream.worker.runtime import WorkerRuntime
from testkit.kafka_io import produce_fast

STATES = 30_000
REQUEST = "/recommendations/movies/user-7"
UNKNOWN = {
    "reason": "unknown_user",
    "detail": "the user has no history in the domains that feed movies, and this worker has "
    "applied no movies events yet",
}


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_ready_only_when_the_state_is_there(
    make_settings: Callable[..., Settings], tmp_path_factory
) -> None:
    settings = make_settings()
    sample = write_sample_dataset(tmp_path_factory.mktemp("sample"))
    replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
    runtime = WorkerRuntime(settings)

    def states_written_elsewhere(first: int) -> None:
        """Users on partition 0 of the changelog, as another worker leaves them."""
        users = {
            f"user-{n}": (0, UserState(user_id=f"user-{n}").to_bytes())
            for n in range(first, first + STATES)
        }
        produce_fast(settings, runtime.changelog.messages(users))

    def restored() -> float:
        return runtime.metrics.registry.get_sample_value("xdrec_state_restored_records_total")

    states_written_elsewhere(0)
    try:
        runtime.assign_partitions({0, 1})  # the group answers before start-up is done
        runtime.start()
        port = runtime.metrics_port
        assert port is not None
        assert _get(port, "/healthz") == (200, {"alive": True})
        status, state = _get(port, "/ready")
        assert status == 200 and state["ready"], state
        assert restored() == STATES

        # A user with a state but no history: answered (the popularity of a domain nobody
        # used yet is nothing to rank by: 404), not refused.
        assert _get(port, REQUEST) == (404, UNKNOWN)

        runtime.forget_partitions({0, 1})  # a rebalance begins; meanwhile others write
        status, state = _get(port, "/ready")
        assert status == 503 and not state["partitions_assigned"]
        assert _get(port, REQUEST)[1]["reason"] == "rebalancing"
        states_written_elsewhere(STATES)

        seen: list[tuple[tuple[int, dict], dict]] = []
        assigning = threading.Thread(target=runtime.assign_partitions, args=({0, 1},))
        assigning.start()
        while assigning.is_alive():
            request = _get(port, REQUEST)  # asked first: if answered, the restore was done
            seen.append((request, _get(port, "/ready")[1]))
            time.sleep(0.002)
        assigning.join()
        states = [ready for _, ready in seen]
        assert any(s["partitions_assigned"] and not s["state_restored"] for s in states), (
            "never saw the restore in progress"
        )
        assert not any(s["ready"] for s in states[:-1] if not s["state_restored"])
        assert any(answer[1].get("reason") == "restoring" for answer, _ in seen)
        for (status, body), ready in seen:
            assert status == 503 or ready["state_restored"], (status, body, ready)
        assert _get(port, "/ready")[0] == 200
        assert _get(port, REQUEST) == (404, UNKNOWN)
        assert restored() == 2 * STATES
    finally:
        runtime.close()
