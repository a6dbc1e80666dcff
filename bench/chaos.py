"""Crash chaos: SIGKILL the worker at random moments under load, again and again, then prove
that nothing was lost and nothing applied twice.

``python -m bench.chaos --kills 10 --events 20000 --json OUT.json`` starts a local broker of
its own in a temporary folder (or uses ``--bootstrap-servers``; a broker it started is stopped
at the end, errors and Ctrl-C included), publishes the bundled sample catalog, and runs one
real ``xdrec worker`` (route movies <- books, music; a recommendation per source event). The
events (sample items, ``--users`` users, one record in ``--invalid-every`` refused by the
validator on purpose) are split into ``kills + 1`` segments. For each incarnation of the worker:
it starts (restarts), its segment is released to a producer pacing ``--rate`` records/s, and it
gets SIGKILL, with whatever it has in flight, at one of two moments drawn at random:

- ``random``: 0 to ``--max-delay`` seconds (uniform) after it finished its first batch, which
  mostly lands in the middle of processing a batch;
- ``on_output`` (a share ``--on-output-share`` of the kills): as soon as this process consumes
  the first recommendation the incarnation published, which lands between a batch's outputs
  and the commit of its source offsets: its events come again after the restart, and are
  recognized as applied.

After the last restart the stream is drained (every event committed, every source event
recommended), the worker is stopped, and :func:`bench.guarantees.audit` compares everything
with an offline single pass.

The figures, as defined in :mod:`testkit.guarantees`: ``lost`` (an acknowledged record that
never changed its user's state nor reached the dead-letter topic), ``duplicated`` (a record
applied to state more than once), ``state_mismatches`` (users whose stored state differs from
the offline pass beyond ``tolerance`` on interest vectors, exactly elsewhere),
``recs_missing`` (an applied source event without its recommendation), ``recs_conflicting``
and ``recs_unexpected``, and separately ``recs_redelivered`` (copies of an already delivered
recommendation id, which at-least-once delivery produces after a crash and consumers drop by
id). ``kills_under_load`` counts kills with records produced but not yet committed by the
worker group at that moment; ``redeliveries_skipped_at_least`` sums the worker's
``xdrec_events_duplicate_total`` as last read before each kill (redelivered events recognized
by the per-partition offsets in the user's state and skipped), ``dead_letters_redelivered``
the dead letters written again for redelivered invalid records.

Crash detection: the consumer group notices a SIGKILLed member only when its session expires.
faust's default session timeout is 60 s, which would make ten kills take over ten minutes, so
the workers run with ``--session-timeout`` (10 s; faust reads ``BROKER_SESSION_TIMEOUT``). It
changes how soon partitions move, never what is delivered.

Benchmarks are measurements, not tests: the exit code is 1 when the guarantee broke.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.standalone import add_run_arguments, run_benchmark
from stream.data.offline import replay_topics
from stream.devtools.supervisor import WorkerProcess
from stream.settings import Settings
from testkit import guarantees
from testkit.kafka_io import MetricsPoller

REPO = Path(__file__).resolve().parent.parent
SESSION_TIMEOUT_ENV = "BROKER_SESSION_TIMEOUT"
CONSUMED = "xdrec_events_consumed_total"
DUPLICATES = "xdrec_events_duplicate_total"


@dataclass(frozen=True, slots=True)
class ChaosPlan:
    """One run; the defaults finish in a few minutes on two cores."""

    kills: int = 10
    events: int = 20_000
    users: int = 1_000
    rate: float = 1_000.0  # records/s while a segment is released
    partitions: int = 4
    invalid_every: int = 200
    max_delay_s: float = 4.0
    on_output_share: float = 0.5  # kills right as the incarnation's first outputs appear
    session_timeout_s: float = 10.0
    start_timeout_s: float = 300.0
    drain_timeout_s: float = 600.0
    seed: int = 11


@dataclass(frozen=True, slots=True)
class Kill:
    """One SIGKILL: when in the incarnation, what it had done, what was in flight."""

    incarnation: int
    moment: str  # "random" (a delay after the first batch) or "on_output" (first recs seen)
    uptime_s: float  # since the incarnation was ready and assigned
    delay_s: float | None  # after its first finished batch, for "random"
    consumed: int  # events this incarnation had finished, as last read from /metrics
    backlog: int  # records not committed by the group when it died: redelivered next
    restart_s: float = 0.0  # from the kill to the next incarnation ready and assigned


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] chaos: {message}", flush=True)


@contextlib.contextmanager
def session_timeout(seconds: float) -> Iterator[None]:
    """Children started inside see ``BROKER_SESSION_TIMEOUT`` (faust's setting)."""
    previous = os.environ.get(SESSION_TIMEOUT_ENV)
    os.environ[SESSION_TIMEOUT_ENV] = f"{seconds:g}"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(SESSION_TIMEOUT_ENV, None)
        else:
            os.environ[SESSION_TIMEOUT_ENV] = previous


class Watch:
    """One incarnation's /metrics, read every quarter second while waiting for a moment."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.metrics = MetricsPoller(worker.metrics_port(), 0.25)

    def count(self, name: str) -> int:
        """``name``'s value as last read (a failed read keeps the one before)."""
        return int(self.metrics.last.get(name, 0))

    def until(self, moment: Callable[[], bool], timeout: float, what: str) -> float:
        """Until ``moment()`` holds; returns when. Fails if the worker exits or time runs out."""
        deadline = time.monotonic() + timeout
        next_read = 0.0
        while True:
            now = time.monotonic()
            if now >= next_read:
                next_read = now + self.metrics.interval
                self.metrics.poll()
            if moment():
                return now
            if not self.worker.alive():
                raise RuntimeError(f"worker exited before {what}; see {self.worker.log_file}")
            if now > deadline:
                raise RuntimeError(f"no {what} in {timeout:.0f}s; see {self.worker.log_file}")
            time.sleep(0.01)


def _await_moment(
    watch: Watch, collector: guarantees.RecCollector, plan: ChaosPlan, rng: random.Random
) -> tuple[str, float | None]:
    """Block until the moment to kill the watched incarnation; returns its kind and delay."""
    if rng.random() < plan.on_output_share:
        seen = len(collector.recs)
        watch.until(lambda: len(collector.recs) > seen, plan.start_timeout_s, "output")
        return "on_output", None
    delay = rng.uniform(0.0, plan.max_delay_s)
    first = watch.until(lambda: watch.count(CONSUMED) > 0, plan.start_timeout_s, "first batch")
    watch.until(lambda: time.monotonic() >= first + delay, 60.0, "the moment")
    return "random", delay


def measure(
    settings: Settings,
    plan: ChaosPlan,
    workdir: Path,
    progress: Callable[[str], None] = say,
) -> dict[str, Any]:
    """Run the plan against ``settings``' deployment (topics created) and audit it."""
    started = time.perf_counter()
    rng = random.Random(plan.seed)
    items = guarantees.sample_catalog()
    guarantees.publish_catalog(settings, items)
    encoder = guarantees.MemoEncoder(device="cpu")
    guarantees.prefill_items(settings, encoder, items, [settings.worker.name])
    planned = list(
        guarantees.workload(
            settings, plan.events, plan.users, plan.seed, invalid_every=plan.invalid_every
        )
    )
    segments = [round(len(planned) * (k + 1) / (plan.kills + 1)) for k in range(plan.kills + 1)]
    collector = guarantees.RecCollector(settings, settings.recommendations.routes or {})
    collector.start()
    producer = guarantees.TrackedProducer(settings, iter(planned), plan.rate, allowed=0)
    producer.start()
    worker = WorkerProcess(settings, workdir / "worker.log", cwd=REPO)
    kills: list[Kill] = []
    skipped_redeliveries = 0
    setup_s = time.perf_counter() - started
    progress(
        f"{len(planned):,} records in {len(segments)} segments, {plan.kills} kills, "
        f"{plan.users:,} users, {settings.topics.partitions} partitions (setup {setup_s:.1f}s)"
    )
    try:
        with session_timeout(plan.session_timeout_s):
            killed_at: float | None = None
            for incarnation in range(plan.kills + 1):
                worker.start(timeout=plan.start_timeout_s)
                ready_at = time.monotonic()
                if killed_at is not None:
                    kills[-1] = _with_restart(kills[-1], ready_at - killed_at)
                producer.allow(segments[incarnation])
                if incarnation == plan.kills:
                    progress(f"incarnation {incarnation} ready: last segment, draining")
                    break
                watch = Watch(worker)
                moment, delay = _await_moment(watch, collector, plan, rng)
                worker.kill()
                killed_at = time.monotonic()
                skipped_redeliveries += watch.count(DUPLICATES)
                kill = Kill(
                    incarnation=incarnation,
                    moment=moment,
                    uptime_s=round(killed_at - ready_at, 2),
                    delay_s=round(delay, 2) if delay is not None else None,
                    consumed=watch.count(CONSUMED),
                    backlog=guarantees.committed_lag(settings),
                )
                kills.append(kill)
                progress(
                    f"kill {len(kills)}/{plan.kills} ({moment}): SIGKILL {kill.uptime_s:.1f}s "
                    f"after ready, {kill.consumed:,}+ events done by this incarnation, "
                    f"{kill.backlog:,} uncommitted, produced {producer.produced:,}/{len(planned):,}"
                )
            stream_s = time.perf_counter() - started - setup_s
            producer.wait(plan.drain_timeout_s)
            drain_s = guarantees.wait_drained(
                settings,
                producer,
                collector,
                plan.drain_timeout_s,
                alive=worker.alive,
                progress=progress,
            )
            final = guarantees.scrape(worker.metrics_port())
            skipped_redeliveries += int(final.get(DUPLICATES, 0))
        worker.stop()
        progress(f"drained in {drain_s:.1f}s; worker stopped, auditing")
        audit_started = time.perf_counter()
        recs = collector.stop()
        letters = guarantees.dead_letters(settings)
        states = guarantees.stored_states(settings)
        reference = replay_topics(settings, encoder)
        result = guarantees.audit(settings, producer.sent, states, reference, recs, letters)
        audit_s = time.perf_counter() - audit_started
    finally:
        worker.stop()
        producer.stop()
        if collector.is_alive():
            collector.stop()
    restarts = [k.restart_s for k in kills]
    figures = result.figures()
    return {
        "kills": len(kills),
        "events": result.events,
        "lost": result.lost,
        "duplicated": result.duplicated,
        "state_mismatches": result.state_mismatches,
        "recs_missing": result.recs_missing,
        "recs_conflicting": result.recs_conflicting,
        "recs_unexpected": result.recs_unexpected,
        "recs_redelivered": result.recs_redelivered,
        "kills_under_load": sum(1 for k in kills if k.backlog > 0),
        "redeliveries_skipped_at_least": skipped_redeliveries,
        **{k: v for k, v in figures.items() if k not in {"events"}},
        "tolerance": guarantees.TOLERANCE,
        "seconds": {
            "total": round(time.perf_counter() - started, 1),
            "setup": round(setup_s, 1),
            "kills_and_restarts": round(stream_s, 1),
            "drain": round(drain_s, 1),
            "audit": round(audit_s, 1),
            "restart_mean": round(statistics.fmean(restarts), 1) if restarts else None,
            "restart_max": round(max(restarts), 1) if restarts else None,
        },
        "plan": asdict(plan),
        "kill_log": [asdict(k) for k in kills],
    }


def _with_restart(kill: Kill, seconds: float) -> Kill:
    return Kill(**{**asdict(kill), "restart_s": round(seconds, 2)})


def problems(result: dict[str, Any] | None) -> list[str]:
    if result is None:
        return ["no result"]
    wrong = [f"{name}={result[name]}" for name in guarantees.FAILURES if result[name]]
    if result["kills"] < result["plan"]["kills"]:
        wrong.append(f"only {result['kills']} of {result['plan']['kills']} kills")
    return wrong


def summary(result: dict[str, Any]) -> str:
    seconds = result["seconds"]
    verdict = "OK" if not problems(result) else "WRONG: " + "; ".join(problems(result))
    return (
        f"chaos: {result['kills']} kills ({result['kills_under_load']} under load), "
        f"{result['events']:,} records: lost={result['lost']} duplicated={result['duplicated']} "
        f"state_mismatches={result['state_mismatches']} recs_missing={result['recs_missing']} "
        f"(recs_redelivered={result['recs_redelivered']}, redeliveries skipped >= "
        f"{result['redeliveries_skipped_at_least']}); {seconds['total']:.0f}s total, restart "
        f"mean {seconds['restart_mean']}s: {verdict}"
    )


def _parser() -> argparse.ArgumentParser:
    defaults = ChaosPlan()
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--kills", type=int, default=defaults.kills, help="SIGKILLs in the run")
    parser.add_argument("--events", type=int, default=defaults.events, help="records to stream")
    parser.add_argument("--users", type=int, default=defaults.users, help="distinct users")
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="records/s while a segment is produced"
    )
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument(
        "--invalid-every",
        type=int,
        default=defaults.invalid_every,
        help="one record in N is refused on purpose (0: none)",
    )
    parser.add_argument(
        "--max-delay",
        type=float,
        default=defaults.max_delay_s,
        help="a kill comes 0..N s after the incarnation's first finished batch",
    )
    parser.add_argument(
        "--on-output-share",
        type=float,
        default=defaults.on_output_share,
        help="share of kills made as soon as the incarnation's first recommendation appears",
    )
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=defaults.session_timeout_s,
        help="consumer group session timeout of the workers, seconds",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.chaos``: 0 when nothing was lost or doubled, 1 otherwise, 130 when
    interrupted."""
    args = _parser().parse_args(argv)
    plan = ChaosPlan(
        kills=args.kills,
        events=args.events,
        users=args.users,
        rate=args.rate,
        partitions=args.partitions,
        invalid_every=args.invalid_every,
        max_delay_s=args.max_delay,
        on_output_share=args.on_output_share,
        session_timeout_s=args.session_timeout,
        seed=args.seed,
    )
    return run_benchmark(
        "chaos",
        args,
        lambda workdir: guarantees.deployment(workdir / "state", plan.partitions),
        lambda settings, workdir: measure(settings, plan, workdir),
        summary=summary,
        problems=problems,
        say=say,
    )


if __name__ == "__main__":
    sys.exit(main())
