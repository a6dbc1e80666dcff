"""Rows 2: what faust-streaming itself costs per event, with ``items()`` and with ``take()``.

Each is read against the confluent ceiling: the ratio is the share of the bare client's rate
that survives faust's stream machinery before any of xdrec's own work. The ``take()`` row sends
every event through faust's producer (``await topic.send``), which is not how xdrec's worker
produces; the ``take_confluent`` row is the agent xdrec's worker is built as, minus xdrec's
work, and so the floor the worker rows are read against.
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
TAKE_CONFLUENT = "faust_noop_take_confluent_events_per_s"
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
    RowSpec(
        TAKE_CONFLUENT,
        "events/s",
        CEILING,
        "no-op faust-streaming agent shaped like xdrec's worker (`stream.worker.app`): "
        "events taken with `stream.noack()` into natural batches of up to 500 "
        "(`stream.worker.batching.process_in_batches`: the next batch is what arrived while the "
        "last one ran; xdrec's `worker.batch_size` and `batch_within_seconds`), each batch "
        "handed to one worker thread that `json.loads`/`dumps` every value and produces it keyed "
        "with confluent-kafka (`stream.kafka.transport.produce_all`: one `produce()` per event, "
        "one `flush()` per batch, xdrec's producer settings), offsets acked after the flush and "
        "committed every 500 events or 1 s as xdrec's worker does; first to last output",
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
    for name, mode in ((ITEMS, "items"), (TAKE, "take"), (TAKE_CONFLUENT, "take-confluent")):
        short = f"faust_{mode.replace('-', '_')}"
        datadir = str(ctx.scratch(short) / "faust")
        try:
            results[name] = measure_forwarder(ctx, short, partial(_command, mode, datadir))
        except Exception as exc:  # the other mode still runs
            results[name] = Outcome.failed(f"{type(exc).__name__}: {exc}")
    return results
