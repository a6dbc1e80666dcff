"""The runtime process: commands answered in order, failures carried back, a clean exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.settings import Settings
from stream.worker.runtime_process import LoopLagWatch, RuntimeCommandFailed, RuntimeProcess


def test_loop_lag_watch_keeps_the_window_maximum() -> None:
    watch = LoopLagWatch(window_seconds=10.0)
    watch.observe(0.2, now=0.0)
    watch.observe(0.05, now=5.0)
    assert watch.window_max == 0.2
    watch.observe(0.01, now=10.5)  # the 0.2 s sample is older than the window now
    assert watch.window_max == 0.05
    watch.observe(0.3, now=11.0)
    assert watch.window_max == 0.3
    assert watch.drain() == [0.2, 0.05, 0.01, 0.3]
    assert watch.drain() == []


def test_runtime_process_reports_a_failed_command_and_closes(tmp_path: Path) -> None:
    """A batch before start fails in the runtime process: the worker gets the traceback (and
    would exit); close still ends the process cleanly."""
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},  # never contacted: nothing is produced
        worker={"state_dir": str(tmp_path)},
        metrics={"enabled": False},
    )
    runtime = RuntimeProcess(settings, "warning")
    try:
        runtime.forget_partitions({0, 1})  # answered: nothing to forget yet
        with pytest.raises(RuntimeCommandFailed, match="AssertionError"):
            runtime.handle_batch([("events.books", 0, 0, b"u", b"{}", None)])
        assert runtime.pid is not None
    finally:
        runtime.close()
    assert runtime.exitcode == 0
