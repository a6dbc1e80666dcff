"""The quick start: a local broker, one worker, the three-domain sample replayed, and the
recommendations printed as a downstream service receives them. Ctrl-C, SIGTERM and SIGHUP
(``kill``, ``timeout``, a closed terminal, systemd) stop all of it."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import sample_items, write_sample_dataset
from stream.devtools.broker import start_broker, stop_broker
from stream.devtools.consume import follow, format_recommendation
from stream.devtools.supervisor import WorkerProcess
from stream.kafka.topics import create_topics
from stream.settings import Settings

log = logging.getLogger(__name__)


def run_demo(
    settings: Settings, workdir: Path, *, rate: float | None = None, exit_when_done: bool = False
) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    broker_dir = workdir / "broker"
    # Recommendations of an earlier run in the same folder are still on the topics: this run
    # shows and counts only those made after it began.
    run_started = time.time()
    previous_handlers = {
        signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    worker: WorkerProcess | None = None
    stop = threading.Event()
    try:
        info = start_broker(broker_dir)
        print(f"broker  {info.bootstrap_servers} (log: {info.log_file})", flush=True)
        settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(
                    update={"bootstrap_servers": info.bootstrap_servers}
                ),
                "worker": settings.worker.model_copy(update={"state_dir": workdir / "state"}),
            }
        )
        create_topics(settings)
        dataset = Dataset(write_sample_dataset(workdir / "sample"))
        titles = {(item["domain"], item["item_id"]): item["title"] for item in sample_items()}
        # The catalog goes first, as in production: the worker encodes it once at start.
        catalog = replay_dataset(settings, dataset, include_events=False, progress=False)
        print(f"catalog {catalog.items} items published", flush=True)
        worker_log = workdir / "worker.log"
        worker = WorkerProcess(settings, worker_log)
        print(f"worker  starting (log: {worker_log}); loading the encoder…", flush=True)
        worker.start()

        targets = list(settings.recommendations.routes)
        received: list[dict] = []
        arrivals: list[float] = []
        printer = threading.Thread(
            target=_print_recommendations,
            args=(settings, targets, titles, received, arrivals, stop, run_started),
            daemon=True,
        )
        printer.start()
        time.sleep(2.0)  # let the printer's consumer join before the first recommendation
        replay_started = time.monotonic()
        stats = replay_dataset(settings, dataset, rate=rate, include_catalog=False, progress=False)
        print(f"replayed {stats.events} events in {stats.seconds:.1f}s", flush=True)
        deadline = time.monotonic() + 180.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            quiet = time.monotonic() - (arrivals[-1] if arrivals else replay_started)
            if arrivals and quiet > 5.0:
                break
            if not worker.alive():
                raise RuntimeError(f"worker exited; see {worker_log}")
        if arrivals:
            elapsed = arrivals[-1] - replay_started
            print(
                f"\nsummary: {stats.events} events → {len(received)} recommendations; the last "
                f"arrived {elapsed:.1f}s after the replay began ({stats.events / elapsed:.0f} "
                "events/s through broker, worker and back)",
                flush=True,
            )
        else:
            print(f"\nno recommendations arrived; see {worker_log}", flush=True)
        if exit_when_done:
            return 0 if received else 1
        print(
            "the worker keeps running: publish more with `xdrec replay`; Ctrl-C stops all",
            flush=True,
        )
        while worker.alive():
            time.sleep(0.5)
        return 1  # the worker stopped by itself
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        # A second Ctrl-C (or signal) must not leave the worker or the broker running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        stop.set()
        if worker is not None:
            worker.stop()
        stop_broker(broker_dir)
        print("stopped worker and broker", flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP stop the demo the way Ctrl-C does."""
    raise KeyboardInterrupt


def _print_recommendations(
    settings: Settings,
    targets: list[str],
    titles: dict[tuple[str, str], str],
    received: list[dict],
    arrivals: list[float],
    stop: threading.Event,
    since: float,
) -> None:
    topics = [settings.topics.recs(target) for target in targets]
    for rec in follow(settings, topics, from_beginning=True, should_stop=stop.is_set):
        if rec.get("generated_at", 0.0) < since:
            continue  # an earlier run's
        received.append(rec)
        arrivals.append(time.monotonic())
        print(format_recommendation(rec, titles, top=3), flush=True)
