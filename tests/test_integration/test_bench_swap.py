"""``bench.swap`` end to end on a small configuration: it writes every figure, no event is lost
or doubled across the swap, and the new version serves. Benchmarks are not tests, so no figure
is held to a bound here."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stream.devtools.broker import BrokerInfo
from testkit.deployment import REPO

pytestmark = pytest.mark.integration

KEYS = {
    "events",
    "lost",
    "duplicated",
    "stall_ms_max",
    "stall_ms_p99",
    "swap_to_first_new_rec_ms",
    "baseline_stall_ms_max",
    "rec_latency_ms_max",
    "rec_latency_ms_p99",
    "baseline_rec_latency_ms_max",
    "baseline_rec_latency_ms_p99",
    "version_before",
    "version_after",
    "versions_in_order",
}


def bench_swap() -> ModuleType:
    # bench/ lives in the checkout but is not part of the installed package.
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("bench.swap")


def test_swap_benchmark_loses_nothing_and_serves_the_new_version(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    out = tmp_path / "swap.json"
    code = bench_swap().main(
        [
            "--json",
            str(out),
            "--events",
            "800",
            "--rate",
            "200",
            "--catalog-items",
            "500",
            "--users",
            "200",
            "--bootstrap-servers",
            kafka_broker.bootstrap_servers,
        ]
    )
    result = json.loads(out.read_text())
    assert code == 0, result
    assert KEYS <= set(result)
    assert result["events"] >= 800
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["reprocessed"] == 0
    assert result["version_before"] == "v0" and result["version_after"] == "v1"
    assert result["recs_by_version"]["v1"] > 0 and result["recs_by_version"]["v0"] > 0
    assert result["versions_in_order"], result["versions_detail"]
    for key in (
        "stall_ms_max",
        "stall_ms_p99",
        "swap_to_first_new_rec_ms",
        "rec_latency_ms_max",
        "baseline_rec_latency_ms_max",
    ):
        assert isinstance(result[key], float), key
