"""The README's first command: the quick start runs end to end and cleans up after itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testkit.deployment import REPO

pytestmark = pytest.mark.integration


def test_demo_prints_recommendations_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--workdir", str(workdir), "--exit-when-done"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    recommendations = [line for line in lines if " [v0] after " in line]
    assert sum(" -> movies [v0] " in line for line in recommendations) > 100
    assert {line.split(" -> ")[1].split()[0] for line in recommendations} == {
        "books",
        "music",
        "movies",
    }
    summary = next(line for line in lines if line.startswith("summary:"))
    assert f"→ {len(recommendations)} recommendations" in summary
    assert "stopped worker and broker" in lines[-1]
    assert not (workdir / "broker" / "broker.json").exists()
