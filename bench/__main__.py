"""``python -m bench [--quick] [--json OUT.json]``: every benchmark in sequence, one broker.

Starts one local Kafka broker for the whole run, runs each benchmark module (a failure is
recorded on its rows and the next module runs), stops the broker, then writes the JSON file and
BENCHMARKS.md. Benchmarks are measurements, not tests: nothing here fails on a slow figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType

from bench import (
    ann,
    ceiling,
    encoder_speed,
    faust_noop,
    misrouting,
    on_request,
    quix_noop,
    recovery,
    scale_out,
    swap,
    topk,
    training_speed,
    worker_throughput,
)
from bench.harness import FULL, NO_CUDA, QUICK, REPO, Context, Outcome, RowSpec
from bench.report import DEFAULT_NOTE, machine, markdown, rows_json, write_json
from stream.devtools.broker import start_broker, stop_broker
from stream.logs import configure_logging

MODULES: tuple[ModuleType, ...] = (
    ceiling,
    faust_noop,
    quix_noop,
    worker_throughput,
    misrouting,
    scale_out,
    on_request,
    recovery,
    swap,
    training_speed,
    encoder_speed,
    topk,
    ann,
)

log = logging.getLogger("bench")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller run, about 5 minutes")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument(
        "--markdown", type=Path, default=REPO / "BENCHMARKS.md", help="the table (BENCHMARKS.md)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[module.__name__.rpartition(".")[2] for module in MODULES],
        help="run only these benchmark modules",
    )
    parser.add_argument(
        "--quix-python",
        default=os.environ.get("XDREC_BENCH_QUIX_PYTHON", sys.executable),
        help="interpreter with quixstreams installed (default: XDREC_BENCH_QUIX_PYTHON)",
    )
    parser.add_argument(
        "--gpu-json",
        type=Path,
        help="GPU rows measured elsewhere by `python -m bench.gpu`, shown where this machine "
        "has no GPU",
    )
    parser.add_argument("--note", default=DEFAULT_NOTE, help="sentence above the table")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    return parser


def _run_module(module: ModuleType, specs: list[RowSpec], ctx: Context) -> dict[str, Outcome]:
    name = module.__name__.rpartition(".")[2]
    print(f"-- {name}", flush=True)
    started = time.perf_counter()
    if module.NEEDS_BROKER and ctx.bootstrap_servers is None:
        outcomes: dict[str, Outcome] = {}
        error = f"no broker: {ctx.broker_error}"
    else:
        try:
            outcomes = module.run(ctx)
            error = "not measured"
        except Exception as exc:
            traceback.print_exc()
            outcomes = {}
            error = f"{type(exc).__name__}: {exc}"
    results = {spec.name: outcomes.get(spec.name) or Outcome.failed(error) for spec in specs}
    for spec in specs:
        outcome = results[spec.name]
        if outcome.value is not None:
            shown = f"{outcome.value:,.4g} {spec.unit}"
        elif outcome.error == NO_CUDA:
            shown = f"no GPU ({NO_CUDA})"
        else:
            shown = f"FAILED: {(outcome.error or '').splitlines()[0]}"
        print(f"   {spec.name}: {shown}", flush=True)
    print(f"   ({time.perf_counter() - started:.0f}s)", flush=True)
    return results


def merge_gpu_rows(outcomes: dict[str, Outcome], path: Path) -> str:
    """Put the rows of a ``python -m bench.gpu`` run (``path``) in place of this run's ``no
    GPU`` rows; measured rows stay. Returns that GPU machine in one line."""
    data = json.loads(path.read_text())
    info = data["machine"]
    where = (
        f"{info.get('gpu')} beside {info.get('cores')} cores of {info.get('cpu_model')}, "
        f"{data['date']}"
    )
    for name, row in data["rows"].items():
        if name in outcomes and outcomes[name].error == NO_CUDA:
            detail = f"{row.get('detail', '')}; measured on {where}"
            outcomes[name] = Outcome(row["value"], row.get("error"), detail)
    return where


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM would end Python without running finally blocks, leaving the broker and the
    # children (each in its own session) running: turn it into Ctrl-C.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    configure_logging("warning")
    modules = [m for m in MODULES if not args.only or m.__name__.rpartition(".")[2] in args.only]
    specs = [s for m in modules for s in m.ROWS if not (s.full_only and args.quick)]
    workdir = Path(tempfile.mkdtemp(prefix="xdrec-bench-"))
    ctx = Context(
        bootstrap_servers=None,
        workdir=workdir,
        sizes=QUICK if args.quick else FULL,
        quick=args.quick,
        quix_python=args.quix_python,
    )
    date = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    outcomes: dict[str, Outcome] = {}
    broker_dir = workdir / "broker"
    try:
        if any(m.NEEDS_BROKER for m in modules):
            try:
                broker = start_broker(broker_dir)
                ctx.bootstrap_servers, ctx.broker_pid = broker.bootstrap_servers, broker.pid
            except Exception as exc:
                ctx.broker_error = f"{type(exc).__name__}: {exc}"
                print(f"broker did not start: {ctx.broker_error}", file=sys.stderr)
        for module in modules:
            module_specs = [s for s in module.ROWS if s in specs]
            outcomes.update(_run_module(module, module_specs, ctx))
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    finally:
        stop_broker(broker_dir)  # also one interrupted while starting; a no-op without one
        if args.keep or any(outcome.broken for outcome in outcomes.values()):
            print(f"scratch folder with logs kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info = machine()
    if args.gpu_json:
        info["gpu_rows_measured_on"] = merge_gpu_rows(outcomes, args.gpu_json)
    rows = rows_json(specs, outcomes)
    mode = "quick" if args.quick else "full"
    if args.json:
        write_json(args.json, rows, info, date)
    args.markdown.write_text(markdown(specs, rows, outcomes, info, date, mode, args.note))
    print(f"done in {time.perf_counter() - started:.0f}s; wrote {args.markdown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
