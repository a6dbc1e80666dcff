"""The worker's runtime in a process of its own, so that faust's event loop and xdrec's batch
work do not share one GIL.

faust spends about 170 µs of Python per event on its event loop; the batch work (validation,
state, scoring, explanations, producing) is Python too. In one process the two take turns on
one interpreter lock: the loop stalls for as long as a batch step holds it, heartbeats and
intake wait, and the worker runs at the sum of both costs. Here the faust process only takes
events in, hands each batch to the runtime process over a pipe and acknowledges it when the
runtime answers; the runtime process owns everything else (encoder, catalog, state store,
changelog, producer, model watcher, /metrics) through :class:`stream.worker.runtime.WorkerRuntime`.
A batch is acknowledged only after the runtime
reported it durable, and if either process dies the other follows (the runtime gets SIGKILL
when its parent dies; the parent exits when the runtime is gone), so an unacknowledged batch is
replayed after a restart and the offsets in each user's state skip what was already applied.

Only records (named tuples of bytes and numbers) and our own settings object cross the pipe,
between a parent and the child it spawned; nothing read from a file or the network is
unpickled.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from stream.core.records import SourceRecord
from stream.settings import Settings

log = logging.getLogger(__name__)

LOOP_LAG_WINDOW_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 30.0
# How long the runtime waits for a command before it swaps in a prepared model by itself.
IDLE_SWAP_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


class RuntimeCommandFailed(RuntimeError):
    """The runtime process failed a command; the message carries its traceback."""


class RuntimeGone(RuntimeError):
    """The runtime process exited while the worker still needed it."""


class RuntimeProcess:
    """Parent-side handle of the runtime process: one command at a time, each answered.

    Commands are made from one worker thread (the agent's executor), so the event loop never
    waits on the pipe; a lock keeps them in order if another thread calls too.
    """

    def __init__(self, settings: Settings, log_level: str) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process running threads
        self._commands, child_commands = context.Pipe()
        lag_reader, self._lag_writer = context.Pipe(duplex=False)
        self._process = context.Process(
            target=serve,
            args=(child_commands, lag_reader, settings, log_level, os.getpid()),
            name="xdrec-runtime",
            daemon=True,
        )
        self._process.start()
        # Our copies of the child's ends: closed, so that a dead child reads as EOF here.
        child_commands.close()
        lag_reader.close()
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)
        log.info("runtime process started pid=%d", self._process.pid)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        """None while the runtime process runs."""
        return self._process.exitcode

    def _call(self, command: str, argument: Any = None) -> Any:
        with self._lock:
            try:
                self._commands.send((command, argument))
                status, result = self._commands.recv()
            except (EOFError, OSError) as exc:
                self._process.join(1.0)
                raise RuntimeGone(
                    f"the runtime process exited (code {self._process.exitcode}) during "
                    f"{command!r}; its log lines above say why"
                ) from exc
        if status == "error":
            raise RuntimeCommandFailed(f"runtime {command!r} failed:\n{result}")
        return result

    def start(self) -> None:
        """Load the encoder, open the stores, catch the catalog up (may take a while)."""
        self._call("start")

    def handle_batch(self, records: list[SourceRecord]) -> int:
        """Process one batch to completion; returns when its outputs are durable."""
        return int(self._call("batch", records))

    def forget_partitions(self, partitions: set[int]) -> None:
        self._call("forget", partitions)

    def assign_partitions(self, partitions: set[int], owners: dict[int, str]) -> None:
        """The group's new assignment: the runtime restores these partitions now;
        ``owners`` maps every partition to its worker's URL (request forwarding)."""
        self._call("assign", (partitions, owners))

    def report_loop_lag(self, samples: list[float], window_max: float) -> None:
        """Event-loop lag seen in this process, for the runtime's /metrics. Never blocks the
        loop for long: the runtime drains this pipe on a thread of its own."""
        if self._closed:
            return
        try:
            self._lag_writer.send((samples, window_max))
        except OSError:
            pass  # the runtime is gone; the next command reports it

    def close(self) -> None:
        """Close the runtime's stores and wait for it to exit; kill it if it does not."""
        if self._closed:
            return
        self._closed = True
        if self._process.is_alive():
            try:
                self._call("close")
            except Exception as exc:  # closing must go on whatever the runtime said
                log.warning("runtime close failed error=%s", exc)
        self._process.join(CLOSE_TIMEOUT_SECONDS)
        if self._process.is_alive():
            log.warning("runtime process did not exit in %.0fs; killing it", CLOSE_TIMEOUT_SECONDS)
            self._process.kill()
            self._process.join()
        self._lag_writer.close()
        self._commands.close()


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), so that a crashed worker's runtime
    never outlives it holding the state store's lock."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        log.warning("cannot ask to die with the parent on this platform")
    if os.getppid() != parent_pid:  # it died before the request took effect
        os._exit(1)


def _observe_loop_lag(lags: Connection, metrics: Any) -> None:
    """Feed the parent's event-loop lag samples into this process's /metrics."""
    while True:
        try:
            samples, window_max = lags.recv()
        except (EOFError, OSError):
            return
        for lag in samples:
            metrics.loop_lag.observe(lag)
        metrics.loop_lag_max.set(window_max)


def serve(
    commands: Connection, lags: Connection, settings: Settings, log_level: str, parent_pid: int
) -> None:
    """The runtime process: answer the parent's commands until it says close or goes away."""
    _die_with_parent(parent_pid)
    # Signals are the parent's to act on: it drains its batch and then closes us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Before numpy and torch load: their thread pools size themselves from these at import.
    threads = str(settings.worker.compute_threads)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = threads
    from stream.logs import configure_logging

    configure_logging(log_level)
    import torch

    from stream.worker.runtime import WorkerRuntime

    log.info("runtime process up pid=%d compute_threads=%d", os.getpid(), torch.get_num_threads())
    runtime = WorkerRuntime(settings)
    threading.Thread(
        target=_observe_loop_lag, args=(lags, runtime.metrics), name="xdrec-loop-lag", daemon=True
    ).start()
    started = False
    while True:
        try:
            if started and not commands.poll(IDLE_SWAP_SECONDS):
                runtime.swap_if_pending()
                continue
            command, argument = commands.recv()
        except (EOFError, OSError):
            log.warning("worker process gone; runtime exiting")
            runtime.close()
            return
        try:
            result: Any = None
            if command == "batch":
                result = runtime.handle_batch(argument).records
            elif command == "start":
                runtime.start()
                started = True
                # What start-up loaded lives as long as the process: out of the collector's
                # sight, full collections stay near-free instead of 0.3-0.6 s pauses.
                gc.collect()
                gc.freeze()
            elif command == "forget":
                runtime.forget_partitions(argument)
            elif command == "assign":
                runtime.assign_partitions(*argument)
            elif command == "close":
                runtime.close()
                commands.send(("ok", None))
                logging.shutdown()
                # Everything is closed and flushed: skip interpreter teardown, where native
                # extensions loaded with torch print leak reports into the worker's log.
                os._exit(0)
            else:
                raise ValueError(f"unknown runtime command {command!r}")
            commands.send(("ok", result))
        except Exception:
            commands.send(("error", traceback.format_exc()))


class LoopLagWatch:
    """How late the event loop wakes a short timer, kept as samples plus a sliding-window max:
    anything that holds this process's loop or GIL shows up here."""

    def __init__(self, window_seconds: float = LOOP_LAG_WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._recent: deque[tuple[float, float]] = deque()
        self._samples: list[float] = []

    def observe(self, lag: float, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        recent = self._recent
        while recent and recent[0][0] < now - self.window_seconds:
            recent.popleft()
        while recent and recent[-1][1] <= lag:
            recent.pop()  # a monotonic queue: the front is the window's maximum
        recent.append((now, lag))
        self._samples.append(lag)

    @property
    def window_max(self) -> float:
        return self._recent[0][1] if self._recent else 0.0

    def drain(self) -> list[float]:
        """The samples since the last drain."""
        samples, self._samples = self._samples, []
        return samples
