"""Rows 2: what faust-streaming itself costs per event, with ``items()`` and with ``take()``.

Both are read against the confluent ceiling: the ratio is the share of the bare client's rate
that survives faust's stream machinery before any of xdrec's own work.
"""

from __future__ import annotations

import sys
from functools import partial

from bench.ceiling import NAME as CEILING
from bench.forwarding import NoopSource, measure_forwarder
from bench.harness import Context, Outcome, RowSpec
from stream.settings import Settings

ITEMS = "faust_noop_items_events_per_s"
TAKE = "faust_noop_take_events_per_s"
NEEDS_BROKER = True
ROWS = (
    RowSpec(
        ITEMS,
        "events/s",
        CEILING,
        "no-op faust-streaming agent, `async for key, value in stream.items()`, each sent to "
        "an output topic; `faust.Worker` in a child process; first to last output",
    ),
    RowSpec(
        TAKE,
        "events/s",
        CEILING,
        "as above with `stream.take(2000, within=0.2)` batches (values only, sent unkeyed)",
    ),
)


def _command(
    mode: str, datadir: str, source: NoopSource, settings: Settings, output: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.faust_app",
        "--mode",
        mode,
        "--source",
        source.topic,
        "--output",
        output,
        "--datadir",
        datadir,
    ]


def run(ctx: Context) -> dict[str, Outcome]:
    results = {}
    for name, mode in ((ITEMS, "items"), (TAKE, "take")):
        short = f"faust_{mode}"
        datadir = str(ctx.scratch(short) / "faust")
        try:
            results[name] = measure_forwarder(ctx, short, partial(_command, mode, datadir))
        except Exception as exc:  # the other mode still runs
            results[name] = Outcome.failed(f"{type(exc).__name__}: {exc}")
    return results
