"""A real Prometheus server scrapes a running worker and answers the on-call's questions."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import write_sample_dataset
from stream.devtools.broker import free_port
from stream.kafka.transport import OutgoingMessage
from stream.settings import Settings
from testkit.deployment import REPO, WorkerProcess, produce, read_topic, require_binary, user_event

pytestmark = pytest.mark.integration

T0 = 1_704_067_200.0


class PrometheusServer:
    def __init__(self, directory: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for name in ("recording_rules.yml", "alert_rules.yml"):
            shutil.copy(REPO / "deploy" / "prometheus" / name, directory / name)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["recording_rules.yml", "alert_rules.yml"],
            "scrape_configs": [
                {"job_name": "xdrec-worker", "static_configs": [{"targets": targets}]}
            ],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config))
        self.log = (directory / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                require_binary("prometheus"),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("prometheus did not become ready")

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, check: Callable[[float], bool], timeout: float = 60.0) -> float:
        """Poll until the first sample of ``promql`` satisfies ``check``; returns its value."""
        deadline = time.monotonic() + timeout
        last: list[dict] = []
        while time.monotonic() < deadline:
            last = self.query(promql)
            if last and check(float(last[0]["value"][1])):
                return float(last[0]["value"][1])
            time.sleep(1.0)
        raise AssertionError(f"{promql} never satisfied the check; last result {last}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def monitored(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, PrometheusServer]]:
    require_binary("prometheus")
    settings = make_settings()
    sample = write_sample_dataset(tmp_path_factory.mktemp("sample"))
    replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
    worker = worker_factory(settings).start()
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{worker.metrics_port()}"]
    )
    yield settings, server
    server.stop()


def test_prometheus_answers_the_on_call_questions(
    monitored: tuple[Settings, PrometheusServer],
) -> None:
    settings, prometheus = monitored
    prometheus.wait_for('up{job="xdrec-worker"}', lambda v: v == 1)
    assert prometheus.query('xdrec_model_info{model_version="v0"}')

    books = [f"books-{n:04d}" for n in range(1, 9)]
    events = [user_event(settings, f"p{i % 5}", books[i % 8], T0 + i) for i in range(200)]
    bad = [OutgoingMessage(settings.topics.events("books"), b"p0", b"{broken") for _ in range(7)]
    produce(settings, [m for _, m in events] + bad)
    ids = {event_id for event_id, _ in events}
    read_topic(
        settings,
        settings.topics.recs("movies"),
        lambda got: ids <= {rec["trigger"]["event_id"] for rec in got},
    )

    prometheus.wait_for("sum(rate(xdrec_events_consumed_total[1m]))", lambda v: v > 0)
    prometheus.wait_for('sum(xdrec_events_consumed_total{domain="books"})', lambda v: v == 207)
    prometheus.wait_for("sum(rate(xdrec_recommendations_total[1m]))", lambda v: v > 0)
    prometheus.wait_for(
        'sum(xdrec_recommendations_total{target_domain="movies", model_version="v0"})',
        lambda v: v == 200,
    )
    prometheus.wait_for('sum(xdrec_dead_letters_total{reason="invalid_json"})', lambda v: v == 7)
    prometheus.wait_for("sum(xdrec_consumer_lag_messages)", lambda v: v == 0)
    prometheus.wait_for("sum(xdrec_state_keys)", lambda v: v >= 1)
    prometheus.wait_for('xdrec_catalog_items{domain="movies"}', lambda v: v == 48)
    prometheus.wait_for(
        "histogram_quantile(0.99, sum by (le) (rate(xdrec_event_processing_seconds_bucket[1m])))",
        lambda v: v > 0,
    )
    prometheus.wait_for("xdrec:dead_letter_ratio:rate5m", lambda v: v > 0)
