"""The README's first command: the quick start runs end to end and cleans up after itself,
on Ctrl-C as on SIGTERM, and a second run in the same folder reports only its own work."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.devtools.supervisor import process_running, process_tree
from testkit.deployment import REPO

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-m", "stream.cli", "demo", "--workdir"]


def _recommendations(lines: list[str]) -> list[str]:
    return [line for line in lines if " [v0] after " in line]


def _summary_count(lines: list[str]) -> int:
    summary = next(line for line in lines if line.startswith("summary:"))
    return int(summary.split("→ ")[1].split()[0])


def test_demo_prints_recommendations_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [*DEMO, str(workdir), "--exit-when-done"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    recommendations = _recommendations(lines)
    assert sum(" -> movies [v0] " in line for line in recommendations) > 100
    assert {line.split(" -> ")[1].split()[0] for line in recommendations} == {
        "books",
        "music",
        "movies",
    }
    assert _summary_count(lines) == len(recommendations)
    assert "stopped worker and broker" in lines[-1]
    assert not (workdir / "broker" / "broker.json").exists()

    # Again in the same folder, stopped by SIGTERM as `kill`, `timeout` or Kubernetes stop it:
    # the summary counts this run only, and neither the worker nor the broker outlives it.
    demo = subprocess.Popen(
        [*DEMO, str(workdir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    lines = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("the worker keeps running"):
            break
    assert lines and lines[-1].startswith("the worker keeps running"), "\n".join(lines[-30:])
    tree = process_tree(demo.pid)
    assert len(tree) >= 3, "the demo, its worker and its broker"
    demo.send_signal(signal.SIGTERM)
    rest, _ = demo.communicate(timeout=120)
    lines += rest.splitlines()
    assert demo.returncode == 0, "\n".join(lines[-30:])
    assert "stopped worker and broker" in lines[-1]
    again = _summary_count(lines)
    assert again == len(_recommendations(lines)), "the summary counts what this run printed"
    assert 0 < again <= len(recommendations), "an earlier run's recommendations are not counted"
    time.sleep(1.0)
    assert [pid for pid in tree if process_running(pid)] == []
