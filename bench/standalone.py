"""``python -m bench.NAME`` for one benchmark on its own: a broker of its own, an isolated
deployment, the measurement, its summary and JSON; Ctrl-C and SIGTERM clean up."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from stream.devtools.broker import start_broker, stop_broker
from stream.logs import configure_logging
from stream.settings import Settings
from testkit.deployment import isolated_settings


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM would end Python without running finally blocks, leaving the broker and the
    # worker (each in its own session) running: turn it into Ctrl-C.
    raise KeyboardInterrupt(f"signal {signum}")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`run_benchmark` reads, shared by the command-line benchmarks."""
    parser.add_argument(
        "--bootstrap-servers", help="use this broker instead of starting a local one"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    parser.add_argument("--log-level", default="warning", help="log level of this process")


def run_benchmark(
    name: str,
    args: argparse.Namespace,
    sections: Callable[[Path], dict[str, Any]],
    measure: Callable[[Settings, Path], dict[str, Any]],
    *,
    summary: Callable[[dict[str, Any]], str],
    problems: Callable[[dict[str, Any]], list[str]] = lambda result: [],
    say: Callable[[str], None],
) -> int:
    """``python -m bench.NAME``, given the options of :func:`add_run_arguments` and ``--json``:
    a scratch folder, a broker of its own in it (unless ``--bootstrap-servers``), an isolated
    deployment (own app id and topic prefix, ``sections(scratch)`` for the rest) with its
    topics, ``measure(settings, scratch)``, then its summary, JSON and ``problems``.

    SIGTERM counts as Ctrl-C, so the broker and the workers are stopped whatever happens. The
    scratch folder stays with ``--keep``, a failed run or problems. Returns the exit code: 0, 1
    when there were problems (each printed), 130 when interrupted; an error of ``measure`` is
    raised after the clean-up."""
    configure_logging(args.log_level)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main_thread else None
    workdir = Path(tempfile.mkdtemp(prefix=f"xdrec-bench-{name}-"))
    broker_dir = workdir / "broker"
    result: dict[str, Any] | None = None
    try:
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            say(f"starting a local broker in {broker_dir}")
            bootstrap = start_broker(broker_dir).bootstrap_servers
        settings = isolated_settings(
            bootstrap,
            workdir / "state",
            app_id=f"bench-{name}-{uuid.uuid4().hex[:6]}",
            **sections(workdir),
        )
        result = measure(settings, workdir)
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    finally:
        if args.bootstrap_servers is None:
            stop_broker(broker_dir)  # a no-op when none was started
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if args.keep or result is None or problems(result):
            print(f"scratch folder with logs kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(summary(result), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        say(f"wrote {args.json}")
    wrong = problems(result)
    for problem in wrong:
        print(f"{name}: WRONG: {problem}", file=sys.stderr)
    return 1 if wrong else 0
