"""``python -m bench.gpu --json OUT.json``: the GPU rows alone, on a machine with a GPU.

A GPU machine need not run a broker: this runs the encoder's and the trainer's GPU rows, each
beside its peer on the same GPU, and writes them as ``python -m bench --json`` does, with the
GPU named. ``python -m bench --gpu-json OUT.json`` then puts them in BENCHMARKS.md in place of
the ``no GPU`` rows of a CPU machine. The encoder folder comes from ``XDREC_ENCODER__MODEL_PATH``
(a float16 copy travels where the full model cannot), the dataset from ``XDREC_BENCH_DATASET``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench import encoder_speed, training_speed
from bench.harness import Outcome, failed_rows
from bench.report import machine, rows_json, write_json
from stream.logs import configure_logging

SPECS = tuple(
    spec
    for module, names in (
        (training_speed, training_speed.GPU_ROWS),
        (encoder_speed, encoder_speed.GPU_ROWS),
    )
    for spec in module.ROWS
    if spec.name in names
)


def _guarded(measure: Callable[[], dict[str, Outcome]], names: Sequence[str]) -> dict[str, Outcome]:
    """``measure``'s rows, or each of ``names`` failed with the error: one failure spoils one
    group only."""
    started = time.perf_counter()
    try:
        outcomes = measure()
    except Exception as exc:
        traceback.print_exc()
        outcomes = failed_rows(names, exc)
    for name in names:
        outcome = outcomes[name]
        shown = f"{outcome.value:,.4g}" if outcome.value is not None else outcome.error
        print(f"   {name}: {shown}", flush=True)
    print(f"   ({time.perf_counter() - started:.0f}s)", flush=True)
    return outcomes


def _training() -> dict[str, Outcome]:
    space, text, epoch, source = training_speed.epoch_data(quick=False)
    return training_speed.gpu_rows(space, text, epoch, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    parser.add_argument("--json", type=Path, required=True, help="write the GPU rows here")
    args = parser.parse_args(argv)
    configure_logging("warning")
    if not torch.cuda.is_available():
        print("no CUDA device here: run this on a machine with a GPU", file=sys.stderr)
        return 2
    date = datetime.now(UTC).isoformat(timespec="seconds")
    outcomes = _guarded(_training, training_speed.GPU_ROWS)
    outcomes.update(_guarded(encoder_speed.gpu_rows, encoder_speed.GPU_ROWS))
    info = machine() | {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    write_json(args.json, rows_json(SPECS, outcomes), info, date)
    print(f"wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
