"""``python -m bench.NAME`` scaffolding without a broker: figures written, scratch folders
cleaned up or kept for diagnosis, interrupts answered."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.standalone import add_run_arguments, run_benchmark
from stream.settings import Settings
from testkit import deployment


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    add_run_arguments(parser)
    return parser.parse_args(
        ["--bootstrap-servers", "127.0.0.1:1", "--json", str(tmp_path / "out.json"), *extra]
    )


@pytest.fixture
def no_topics(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Deployments run_benchmark would create topics for (no broker in these tests)."""
    made: list[Settings] = []
    monkeypatch.setattr(deployment, "create_topics", made.append)
    return made


def test_run_benchmark_writes_the_figures_and_cleans_up(
    tmp_path: Path, no_topics: list[Settings]
) -> None:
    scratch: list[Path] = []

    def measure(settings: Settings, workdir: Path) -> dict[str, Any]:
        scratch.append(workdir)
        return {"lost": 0, "state": str(settings.worker.state_dir)}

    code = run_benchmark(
        "unit",
        _args(tmp_path),
        lambda workdir: {"worker": {"state_dir": str(workdir / "state")}},
        measure,
        summary=lambda result: f"lost={result['lost']}",
        say=lambda message: None,
    )
    assert code == 0
    (settings,) = no_topics
    assert settings.app_id.startswith("bench-unit-")
    assert settings.topics.prefix == f"{settings.app_id}."
    assert settings.kafka.bootstrap_servers == "127.0.0.1:1"
    assert json.loads((tmp_path / "out.json").read_text())["lost"] == 0
    assert not scratch[0].exists()


def test_run_benchmark_keeps_the_scratch_folder_of_a_wrong_or_broken_run(
    tmp_path: Path, no_topics: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    scratch: list[Path] = []

    def measure(settings: Settings, workdir: Path) -> dict[str, Any]:
        scratch.append(workdir)
        return {"lost": 2}

    def run(measure: Callable[[Settings, Path], dict[str, Any]]) -> int:
        return run_benchmark(
            "unit",
            _args(tmp_path),
            lambda workdir: {},
            measure,
            summary=str,
            problems=lambda result: [f"lost={result['lost']}"] if result["lost"] else [],
            say=lambda message: None,
        )

    assert run(measure) == 1
    assert "unit: WRONG: lost=2" in capsys.readouterr().err
    assert scratch[-1].exists()

    def broken(settings: Settings, workdir: Path) -> dict[str, Any]:
        scratch.append(workdir)
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        run(broken)
    assert scratch[-1].exists()

    def interrupted(settings: Settings, workdir: Path) -> dict[str, Any]:
        raise KeyboardInterrupt

    assert run(interrupted) == 130
    for folder in scratch:
        shutil.rmtree(folder)
