"""Turns outcomes into the two records of a run: the JSON file and BENCHMARKS.md.

Ratios are computed here, once, as value / peer's value, so every consumer reads the same ones.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import NO_CUDA, Outcome, RowSpec

DEFAULT_NOTE = (
    "Measured on a shared {cores}-core machine with other work (CI runs) beside it: absolute "
    "figures drift between runs, so read each row against its peer, measured minutes apart in "
    "the same run (the ratio column)."
)


# The vector units that decide the CPU paths (encoder precision, the scorer's first pass): two
# machines both called "AMD EPYC" differed by AVX-512 and encoded at different speeds.
CPU_FEATURES = (
    "avx2",
    "avx512_f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_features() -> str:
    """Which of ``CPU_FEATURES`` this CPU has, as torch's cpuinfo reports them."""
    from stream.cpu import capabilities

    found = capabilities()
    return " ".join(name for name in CPU_FEATURES if found.get(name)) or "none of " + " ".join(
        CPU_FEATURES
    )


def machine() -> dict[str, Any]:
    """``uname -a``, CPU model and vector units, logical cores, RAM and Python of this
    machine."""
    try:
        uname = subprocess.run(
            ["uname", "-a"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uname = " ".join(platform.uname())
    cpu = platform.processor() or "unknown"
    ram_gib: float | None = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    return {
        "uname": uname,
        "cpu_model": cpu,
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
    }


def rows_json(specs: Sequence[RowSpec], outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """``NAME -> {value, unit, peer, ratio, detail}`` plus ``error`` for rows that failed."""
    rows: dict[str, Any] = {}
    for spec in specs:
        outcome = outcomes[spec.name]
        peer = outcomes.get(spec.peer) if spec.peer else None
        ratio = None
        if outcome.value is not None and peer is not None and peer.value:
            ratio = outcome.value / peer.value
        row: dict[str, Any] = {
            "value": outcome.value,
            "unit": spec.unit,
            "peer": spec.peer,
            "ratio": ratio,
            "detail": outcome.detail,
        }
        if outcome.error is not None:
            row["error"] = outcome.error
        rows[spec.name] = row
    return rows


def write_json(path: Path, rows: dict[str, Any], info: dict[str, Any], date: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows, "machine": info, "date": date}, indent=2) + "\n")


def _number(value: float, unit: str) -> str:
    if unit == "cosine":
        return f"{value:.6f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"


def markdown(
    specs: Sequence[RowSpec],
    rows: dict[str, Any],
    outcomes: dict[str, Outcome],
    info: dict[str, Any],
    date: str,
    mode: str,
    note: str,
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` (see `bench/`); rerun it to refresh this file. "
        "Benchmarks print and save figures; nothing here is a pass/fail check.",
        "",
        note.format(cores=info.get("cores")),
        "",
        f"Run: {date}, mode `{mode}`.",
        "",
        "| row | value | unit | peer | ratio | notes |",
        "|---|---:|---|---|---:|---|",
    ]
    failures = []
    for spec in specs:
        row = rows[spec.name]
        value = "failed" if row["value"] is None else _number(row["value"], spec.unit)
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.3f}"
        detail = outcomes[spec.name].detail
        if row.get("error") == NO_CUDA:
            value, detail = "no GPU", f"{NO_CUDA} on this machine"
        elif "error" in row:
            detail = "error below"
            failures.append((spec.name, row["error"]))
        lines.append(
            f"| `{spec.name}` | {value} | {spec.unit} | {f'`{spec.peer}`' if spec.peer else ''} "
            f"| {ratio} | {detail} |"
        )
    lines += [
        "",
        "ratio = value / peer's value, both from the same run (a merged GPU row and its peer: "
        "the GPU machine's run).",
        "",
    ]
    if failures:
        lines += ["## Rows that failed", ""]
        for name, error in failures:
            lines += [f"`{name}`:", "", "```", error.strip(), "```", ""]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in info.items()]
    lines += ["", "## How each row is measured", ""]
    lines += [f"- `{spec.name}`: {spec.method}." for spec in specs]
    lines += [
        "",
        "Throughput rows share one local Kafka broker "
        "(`stream.devtools.broker.start_broker`) started for the run; each benchmark has its "
        "own app id, topic prefix and state folder. The "
        "forwarding rows (ceiling, faust, quix) read the same pre-produced events (4 partitions) "
        "and are timed from their first output message to their last, as seen by one counting "
        "consumer in the parent process, so framework start-up is not counted. The ceiling "
        "and faust's `take_confluent` row produce with xdrec's producer settings "
        "(`stream.kafka.transport.make_producer`); the other faust rows and quix keep their own "
        "defaults. The worker rows preload the worker's item store (random unit vectors under "
        "the real encoder's fingerprint), start the worker, then produce their events and time "
        "from the first one produced to the last recommendation read.",
        "",
        "The latency rows pace events at half the rate the 10k-catalog worker just reached "
        "(`bench/latency.py`) after warm-up events have come through; each event's `timestamp` is "
        "the wall-clock time it is produced and each output is stamped with the wall clock of "
        "the same process when it is read, so both ends use one clock. Every event must yield "
        "one output; the percentiles are over all of them. `latency_samples.json` in the "
        "scratch folder (`--keep`) has every latency in production order.",
        "",
        "The hot-swap rows (`bench/swap.py`, alone: `python -m bench.swap --json OUT.json`) "
        "stream events into one worker at a steady rate, announce a trained model half-way, "
        "read the worker's event-loop lag from /metrics every 100 ms and check that every event "
        "got exactly one recommendation across the swap; a lost or doubled one fails the rows.",
        "",
        "GPU rows run only where `torch.cuda.is_available()`; elsewhere they show `no GPU`, or "
        "the rows of a `python -m bench.gpu` run on a GPU machine merged with `--gpu-json` "
        "(their notes name that machine and date).",
        "",
        "## Running",
        "",
        "```bash",
        "python -m bench --json bench.json            # full run, about 8 minutes on 2 cores",
        "python -m bench --quick --json bench.json    # about 5 minutes: smaller sizes, no "
        "100k-catalog row, synthetic training data",
        "python -m bench.gpu --json gpu.json          # on a GPU machine: the GPU rows alone, no "
        "broker",
        "python -m bench --json bench.json --gpu-json gpu.json   # this machine's rows, the GPU "
        "rows from gpu.json",
        "```",
        "",
        "Extras: `pip install -r bench/requirements.txt` (sentence-transformers) into the project "
        "venv; quix-streams pins an older confluent-kafka than xdrec, so it lives in its own "
        "venv (`bench/requirements-quix.txt`), passed as `--quix-python VENV/bin/python` or "
        "`XDREC_BENCH_QUIX_PYTHON`.",
        "",
    ]
    return "\n".join(lines)
