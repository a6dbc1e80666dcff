"""The no-op forwarding setup shared by the ceiling, faust and quix rows.

The same N events are produced once per run to one events topic; each forwarder (a child
process) reads them with its own consumer group and writes them to its own output topic, which
the parent counts. The rate is taken from the first output to the last, so start-up, group
join and rebalance time of the framework are left out and only the forwarding path is compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.harness import REPO, Context, Outcome, child_env
from stream.data.sample import sample_items
from stream.devtools.supervisor import ChildProcess
from stream.settings import Settings, settings_env
from testkit.kafka_io import ArrivalCounter, create_topic, produce_fast, synthetic_events

_SOURCE_KEY = "noop_source"


@dataclass(frozen=True, slots=True)
class NoopSource:
    settings: Settings
    topic: str
    events: int


def noop_source(ctx: Context) -> NoopSource:
    """The run's pre-produced events (books events for many users), produced on first use."""
    cached = ctx.cache.get(_SOURCE_KEY)
    if cached is not None:
        return cached
    settings = ctx.settings("source")
    books = [item["item_id"] for item in sample_items() if item["domain"] == "books"]
    sizes = ctx.sizes
    messages = synthetic_events(settings, sizes.noop_events, sizes.noop_users, {"books": books}, 1)
    produce_fast(settings, messages)
    source = NoopSource(settings, settings.topics.events("books"), len(messages))
    ctx.cache[_SOURCE_KEY] = source
    return source


def measure_forwarder(
    ctx: Context,
    name: str,
    command: Callable[[NoopSource, Settings, str], Sequence[str]],
) -> Outcome:
    """Start the forwarder ``command(source, settings, output_topic)``, count its output.

    The child gets ``settings`` as ``XDREC_*`` variables; its consumer group is its own."""
    source = noop_source(ctx)
    settings = ctx.settings(name)
    output = f"{settings.topics.prefix}forwarded"
    create_topic(settings, output, ctx.partitions)
    counter = ArrivalCounter(settings, output, source.events)
    counter.start()
    counter.wait_ready()
    child = ChildProcess(
        command(source, settings, output),
        ctx.scratch(name) / "child.log",
        child_env(settings_env(settings)),
        cwd=REPO,
    )
    timeout = ctx.sizes.start_timeout_s + ctx.wait_budget(source.events)
    try:
        child.start()
        arrivals = counter.wait(timeout, alive=child.alive)
        exited = child.exit_code()
    finally:
        child.stop()
    if arrivals.count < source.events:
        why = f"child exited with code {exited}" if exited is not None else f"{timeout:.0f}s"
        return Outcome.failed(
            f"{arrivals.count}/{source.events} events forwarded in time ({why}); "
            f"log {child.log_file}:\n{child.tail()}"
        )
    rate = arrivals.steady_rate()
    if rate is None:
        return Outcome.failed("all events arrived in one read: too few events to time")
    assert arrivals.first_at is not None and arrivals.last_at is not None
    return Outcome(
        rate,
        detail=f"{source.events:,} events, {arrivals.last_at - arrivals.first_at:.2f}s "
        "first to last output",
    )
