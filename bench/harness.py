"""What every benchmark shares: row specs, outcomes, run sizes, isolated settings, children.

A benchmark module exposes ``ROWS`` (what it measures, each with its peer) and
``run(ctx) -> dict[str, Outcome]``. Rows are never asserted on: a failure becomes an outcome with
an error, so one broken benchmark never hides the figures of the others.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stream.procfs import cpu_seconds as process_cpu_seconds
from stream.settings import Settings, merge_sections
from testkit.deployment import isolated_settings

REPO = Path(__file__).resolve().parent.parent
NO_CUDA = "no CUDA device"


def alternated_medians(
    scans: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each scan over ``repeats`` rounds, and its last answer. Rounds
    alternate the scans, so drift on a shared machine hits all alike; each is run once untimed
    right before it is timed, so its large arrays come fresh from the allocator, not left to
    the page faults and caches of the one before it."""
    seconds: dict[str, list[float]] = {name: [] for name in scans}
    answers: dict[str, Any] = {}
    for _ in range(repeats):
        for name, scan in scans.items():
            scan()
            started = time.perf_counter()
            answers[name] = scan()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}, answers


@dataclass(frozen=True, slots=True)
class RowSpec:
    """One reported figure: its unit, the row it is compared with, and how it is measured."""

    name: str
    unit: str
    peer: str | None
    method: str
    full_only: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """A measured value, or None with the reason; ``detail`` goes to BENCHMARKS.md only."""

    value: float | None
    error: str | None = None
    detail: str = ""

    @classmethod
    def failed(cls, error: str) -> Outcome:
        return cls(value=None, error=error)

    @classmethod
    def no_gpu(cls) -> Outcome:
        """A GPU row on a machine without one: failed, but nothing went wrong."""
        return cls.failed(NO_CUDA)

    @property
    def broken(self) -> bool:
        """Failed for a reason worth a look (not a GPU row on a CPU machine)."""
        return self.value is None and self.error != NO_CUDA


def failed_rows(names: Iterable[str], exc: BaseException) -> dict[str, Outcome]:
    """Each of ``names`` failed with ``exc``: one failure spoils its own group of rows only."""
    return {name: Outcome.failed(f"{type(exc).__name__}: {exc}") for name in names}


class Benchmark(Protocol):
    """The shape of each benchmark module."""

    ROWS: tuple[RowSpec, ...]
    NEEDS_BROKER: bool

    def run(self, ctx: Context) -> dict[str, Outcome]: ...


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each benchmark does; ``--quick`` keeps the whole run under 5 minutes."""

    noop_events: int
    noop_users: int
    worker_events: int
    worker_users: int
    source_catalog_items: int  # per source domain (books, music)
    encoder_texts: int
    encoder_rounds: int
    topk_items: int
    topk_queries: int
    topk_repeats: int
    ann_items: int  # the approximate top-K row's synthetic catalog
    start_timeout_s: float
    min_events_per_s: float  # below this a wait for output gives up: the bound on wall time
    swap_events: int  # the hot-swap row streams these, the new version announced half-way
    swap_events_per_s: float  # about half of what one worker sustains on 2 cores
    latency_seconds: float  # each paced latency run (worker, then the bare client)
    recovery_keys: int  # user states in the changelog a fresh worker restores
    train_examples: int  # training examples timed, whole batches of 512 (part of an epoch)


QUICK = Sizes(
    noop_events=20_000,
    noop_users=2_000,
    worker_events=5_000,
    worker_users=2_000,
    source_catalog_items=2_000,
    encoder_texts=640,
    encoder_rounds=1,
    topk_items=100_000,
    topk_queries=256,
    topk_repeats=3,
    ann_items=300_000,
    start_timeout_s=120.0,
    min_events_per_s=200.0,
    swap_events=4_000,
    swap_events_per_s=400.0,
    latency_seconds=10.0,
    recovery_keys=20_000,
    train_examples=1_024,
)

FULL = Sizes(
    noop_events=100_000,
    noop_users=2_000,
    worker_events=20_000,
    worker_users=2_000,
    source_catalog_items=2_000,
    encoder_texts=1_280,
    encoder_rounds=3,
    topk_items=100_000,
    topk_queries=256,
    topk_repeats=7,
    ann_items=1_000_000,
    start_timeout_s=300.0,
    min_events_per_s=200.0,
    swap_events=6_000,
    swap_events_per_s=400.0,
    latency_seconds=25.0,
    recovery_keys=100_000,
    train_examples=5_120,
)


class Context:
    """One run: the broker address, a scratch folder, the sizes and the children to clean up."""

    def __init__(
        self,
        *,
        bootstrap_servers: str | None,
        workdir: Path,
        sizes: Sizes,
        quick: bool,
        quix_python: str,
        partitions: int = 4,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.broker_pid: int | None = None  # for CPU accounting, when this run started it
        self.broker_error: str | None = None
        self.workdir = workdir
        self.sizes = sizes
        self.quick = quick
        self.quix_python = quix_python
        self.partitions = partitions
        self.run_id = uuid.uuid4().hex[:6]
        self.cache: dict[str, Any] = {}

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def settings(self, name: str, **overrides: Any) -> Settings:
        """Settings of an isolated deployment (own app id, topic prefix, state) with topics."""
        if self.bootstrap_servers is None:
            raise RuntimeError(f"no broker: {self.broker_error or 'not started'}")
        return isolated_settings(
            self.bootstrap_servers,
            self.scratch(f"{name}/state"),
            app_id=f"bench-{self.run_id}-{name.replace('_', '-')}",
            **merge_sections({"topics": {"partitions": self.partitions}}, overrides),
        )

    def wait_budget(self, events: int) -> float:
        """Seconds to wait for ``events`` outputs before calling the row failed."""
        return 30.0 + events / self.sizes.min_events_per_s


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: the repository importable, XDREC_CONFIG not inherited."""
    env = {**os.environ, **(extra or {})}
    env.pop("XDREC_CONFIG", None)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
    return env


class Stopwatch:
    """``with Stopwatch() as watch: ...`` then ``watch.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far (Linux /proc); an
    exited one counts nothing."""
    return sum(seconds for seconds in map(process_cpu_seconds, pids) if seconds is not None)
