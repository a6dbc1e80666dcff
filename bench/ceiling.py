"""Row 1: the ceiling, what a bare confluent-kafka loop forwards per second on this machine.

Every framework row is read against it: the gap is what the framework costs per event.
"""

from __future__ import annotations

import sys

from bench.forwarding import NoopSource, measure_forwarder
from bench.harness import Context, Outcome, RowSpec
from stream.settings import Settings

NAME = "ceiling_confluent_events_per_s"
NEEDS_BROKER = True
ROWS = (
    RowSpec(
        NAME,
        "events/s",
        None,
        "confluent-kafka consumer (`consume(10000)`, `json.loads` each) re-producing every event "
        "to an output topic, in a child process; first to last output",
    ),
)


def _command(source: NoopSource, settings: Settings, output: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.confluent_forward",
        "--source",
        source.topic,
        "--output",
        output,
        "--group",
        settings.app_id,
    ]


def run(ctx: Context) -> dict[str, Outcome]:
    return {NAME: measure_forwarder(ctx, "ceiling", _command)}
