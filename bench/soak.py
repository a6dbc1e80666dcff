"""Soak: one worker at half its maximum rate for a long while, watching memory and lag.

``python -m bench.soak --minutes 30 --json OUT.json`` starts a local broker of its own in a
temporary folder (or uses ``--bootstrap-servers``; a broker it started is stopped at the end,
errors and Ctrl-C included), publishes the bundled sample catalog and runs one real
``xdrec worker`` (route movies <- books, music; a recommendation per source event). Without
``--rate`` it first measures the worker's maximum: ``--probe-events`` records produced at once,
timed from the first produced to the worker's ``xdrec_events_consumed_total`` reaching them.
Then an endless stream of sample-item events over ``--users`` users is paced at half that rate
(or at ``--rate``) for ``--minutes``, and every ``--interval`` seconds this process samples:

- the worker's resident memory: ``VmRSS`` of its process and its runtime process together,
- its consumer lag: ``xdrec_consumer_lag_messages`` of its /metrics summed over partitions
  (refreshed every second), and the group's lag from committed offsets (admin API).

Written: RSS at start, end and peak, lag at start, end and max, and least-squares slopes over
the samples (RSS in MiB per hour, over all samples and over those after the first fifth, which
leaves warm-up out; lag in messages per minute). A steady worker keeps both slopes near zero;
a growing RSS slope after warm-up points to a leak, a growing lag slope to a rate it cannot
sustain. Benchmarks are measurements: the exit code is 1 only when the worker died.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.standalone import add_run_arguments, run_benchmark
from stream.catalog.encoder import TextEncoder
from stream.devtools.supervisor import WorkerProcess
from stream.settings import Settings
from testkit import guarantees
from testkit.kafka_io import MetricsPoller

REPO = Path(__file__).resolve().parent.parent
LAG = "xdrec_consumer_lag_messages"
CONSUMED = "xdrec_events_consumed_total"


@dataclass(frozen=True, slots=True)
class SoakPlan:
    minutes: float = 30.0
    rate: float | None = None  # None: half the measured maximum
    interval_s: float = 10.0
    users: int = 2_000
    partitions: int = 4
    probe_events: int = 4_000
    start_timeout_s: float = 300.0
    seed: int = 21


@dataclass(frozen=True, slots=True)
class Sample:
    at_s: float  # since the paced stream started
    rss_mib: float
    lag: float | None  # the worker's gauge, summed
    committed_lag: int | None
    consumed: float | None  # the worker's counter
    produced: int


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] soak: {message}", flush=True)


def rss_mib(pids: Sequence[int]) -> float:
    """Resident memory of the processes ``pids`` together, in MiB (``VmRSS`` of each)."""
    total_kib = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:  # exited meanwhile
            continue
        total_kib += next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)
    return total_kib / 1024


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points; None with fewer than three."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def max_rate(
    settings: Settings, worker: WorkerProcess, events: int, seed: int, users: int
) -> tuple[float, float]:
    """Events/s the worker sustains on a backlog of ``events``; returns (rate, seconds)."""
    metrics = MetricsPoller(worker.metrics_port())
    before = metrics.poll().get(CONSUMED, 0.0)
    planned = guarantees.workload(settings, events, users, seed)
    producer = guarantees.TrackedProducer(settings, planned, rate=1e9, track=False)
    started = time.perf_counter()
    producer.start()
    deadline = time.monotonic() + 60 + events / 20
    while metrics.poll().get(CONSUMED, 0.0) - before < events:
        if not worker.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not get through the probe; see {worker.log_file}")
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    producer.wait(60)
    return events / seconds, seconds


def measure(
    settings: Settings,
    plan: SoakPlan,
    workdir: Path,
    progress: Callable[[str], None] = say,
) -> dict[str, Any]:
    """Run the plan against ``settings``' deployment (topics created)."""
    items = guarantees.sample_catalog()
    guarantees.publish_catalog(settings, items)
    guarantees.prefill_items(settings, TextEncoder(device="cpu"), items, [settings.worker.name])
    worker = WorkerProcess(settings, workdir / "worker.log", cwd=REPO)
    samples: list[Sample] = []
    producer: guarantees.TrackedProducer | None = None
    probe: dict[str, float] | None = None
    try:
        worker.start(timeout=plan.start_timeout_s)
        assert worker.pid is not None
        poller = MetricsPoller(worker.metrics_port())
        rate = plan.rate
        if rate is None:
            progress(f"measuring the maximum rate on {plan.probe_events:,} events")
            peak, seconds = max_rate(settings, worker, plan.probe_events, plan.seed + 1, plan.users)
            probe = {
                "events": plan.probe_events,
                "seconds": round(seconds, 2),
                "rate": round(peak, 1),
            }
            rate = peak / 2
            progress(f"maximum {peak:,.0f} events/s; soaking at {rate:,.0f} events/s")
        planned = guarantees.workload(settings, None, plan.users, plan.seed)
        producer = guarantees.TrackedProducer(settings, planned, rate, track=False)
        started = time.monotonic()
        producer.start()
        end = started + plan.minutes * 60
        next_at = started
        while True:
            now = time.monotonic()
            if not worker.alive():
                raise RuntimeError(f"worker exited during the soak; see {worker.log_file}")
            if producer.error is not None:
                raise RuntimeError(f"producer failed: {producer.error}")
            if now >= next_at:
                metrics = poller.poll()
                try:
                    committed: int | None = guarantees.committed_lag(settings)
                except Exception:  # a slow admin answer must not end a long run
                    committed = None
                sample = Sample(
                    at_s=round(now - started, 1),
                    rss_mib=round(rss_mib(worker.process_tree()), 1),
                    lag=metrics.get(LAG),
                    committed_lag=committed,
                    consumed=metrics.get(CONSUMED),
                    produced=producer.produced,
                )
                samples.append(sample)
                progress(
                    f"{sample.at_s:6.0f}s rss {sample.rss_mib:,.0f} MiB, lag {_count(sample.lag)}, "
                    f"committed lag {_count(committed)}, consumed {_count(sample.consumed)}, "
                    f"produced {sample.produced:,}"
                )
                next_at += plan.interval_s
                if now >= end:
                    break
            time.sleep(min(1.0, max(0.0, next_at - time.monotonic())))
        producer.stop()
        producer.finished.wait(60)
    finally:
        if producer is not None:
            producer.stop()
        worker.stop()
    return figures(plan, rate, probe, samples)


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def figures(
    plan: SoakPlan, rate: float, probe: dict[str, float] | None, samples: list[Sample]
) -> dict[str, Any]:
    rss = [(s.at_s, s.rss_mib) for s in samples]
    lags = [(s.at_s, s.lag) for s in samples if s.lag is not None]
    warm = rss[len(rss) // 5 :]
    first, last = samples[0], samples[-1]
    consumed = (
        (last.consumed - first.consumed) / (last.at_s - first.at_s)
        if last.consumed is not None and first.consumed is not None and last.at_s > first.at_s
        else None
    )
    rss_slope = slope(rss)
    warm_slope = slope(warm)
    lag_slope = slope(lags)
    committed = [s.committed_lag for s in samples if s.committed_lag is not None]
    return {
        "minutes": round(last.at_s / 60, 2),
        "rate": round(rate, 1),
        "max_rate": probe,
        "consumed_per_s": round(consumed, 1) if consumed is not None else None,
        "samples": len(samples),
        "rss_mib": {
            "start": first.rss_mib,
            "end": last.rss_mib,
            "peak": max(r for _, r in rss),
            "slope_per_hour": round(rss_slope * 3600, 1) if rss_slope is not None else None,
            "slope_per_hour_after_warmup": (
                round(warm_slope * 3600, 1) if warm_slope is not None else None
            ),
        },
        "lag": {
            "start": first.lag,
            "end": last.lag,
            "max": max((lag for _, lag in lags), default=None),
            "slope_per_minute": round(lag_slope * 60, 2) if lag_slope is not None else None,
            "committed_start": first.committed_lag,
            "committed_end": last.committed_lag,
            "committed_max": max(committed, default=None),
        },
        "plan": asdict(plan),
        "series": [asdict(s) for s in samples],
    }


def summary(result: dict[str, Any]) -> str:
    rss, lag = result["rss_mib"], result["lag"]
    return (
        f"soak: {result['minutes']:.1f} min at {result['rate']:,.0f} events/s "
        f"(consumed {result['consumed_per_s']}/s): RSS {rss['start']:,.0f} -> {rss['end']:,.0f} "
        f"MiB (peak {rss['peak']:,.0f}, slope {rss['slope_per_hour']} MiB/h, after warm-up "
        f"{rss['slope_per_hour_after_warmup']} MiB/h); lag {lag['start']} -> {lag['end']} "
        f"(max {lag['max']}, slope {lag['slope_per_minute']}/min)"
    )


def _parser() -> argparse.ArgumentParser:
    defaults = SoakPlan()
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--rate", type=float, help="events/s (default: half the measured max)")
    parser.add_argument(
        "--interval", type=float, default=defaults.interval_s, help="seconds between samples"
    )
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--probe-events", type=int, default=defaults.probe_events)
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    add_run_arguments(parser)
    return parser


def _sections(workdir: Path, plan: SoakPlan) -> dict[str, Any]:
    overrides = guarantees.deployment(workdir / "state", plan.partitions)
    overrides["interest"] = {}  # the product's bounded recent list, not the audit's
    return overrides


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.soak``: 0 when the worker lasted, 1 when it died, 130 when
    interrupted."""
    args = _parser().parse_args(argv)
    plan = SoakPlan(
        minutes=args.minutes,
        rate=args.rate,
        interval_s=args.interval,
        users=args.users,
        partitions=args.partitions,
        probe_events=args.probe_events,
    )
    try:
        return run_benchmark(
            "soak",
            args,
            lambda workdir: _sections(workdir, plan),
            lambda settings, workdir: measure(settings, plan, workdir),
            summary=summary,
            say=say,
        )
    except RuntimeError as exc:
        print(f"soak: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
