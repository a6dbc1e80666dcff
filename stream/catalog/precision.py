"""Which precision ``encoder.precision = "fastest"`` runs at on a CPU, measured on the CPU at hand.

How much faster a lower precision encodes differs between CPUs of the same kind (int8 dynamic
quantization measured 1.5x on one VM and 2.8x on another), and how close it stays to float32
differs between models. So on a CPU that can run a faster precision natively (int8 with VNNI
or AVX2), ``fastest`` encodes a fixed set of probe texts in float32 and in each candidate, and
keeps the fastest candidate whose vectors stay within ``MIN_MEAN_COSINE`` of float32's and which
is at least ``MIN_SPEEDUP`` times as fast; otherwise float32. The choice and its figures are logged.

The probe texts are the sample catalog's item texts (stream.data.sample), so the measurement is
the same wherever it runs, and the accuracy half of the decision is deterministic. The choice
is remembered per model, truncation, torch version and CPU (a small JSON file under
``$XDREC_CACHE_DIR``, default ``~/.cache/xdrec``): a precision names the encoder's fingerprint,
under which a worker's item embeddings are stored, so it must not change from run to run with
the noise of a timing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

MIN_MEAN_COSINE = 0.99
MIN_SPEEDUP = 1.2
ROUNDS = 2  # timed encodes per precision, the fastest kept


@dataclass(frozen=True, slots=True)
class PrecisionTrial:
    precision: str
    speedup: float  # float32's seconds over this precision's, on the probe texts
    mean_cosine: float  # to float32's vectors
    min_cosine: float

    @property
    def acceptable(self) -> bool:
        return self.mean_cosine >= MIN_MEAN_COSINE and self.speedup >= MIN_SPEEDUP


def probe_texts() -> list[str]:
    """Texts of the kind a catalog holds, the same on every machine."""
    from stream.core.items import item_text
    from stream.data.sample import sample_items

    return [item_text(item["title"], item["text"]) for item in sample_items()]


def choose_precision(
    encode: Callable[[str, Sequence[str]], tuple[np.ndarray, float]],
    candidates: Sequence[str],
    texts: Sequence[str],
) -> tuple[str, list[PrecisionTrial]]:
    """The precision to run, and the trials it was chosen from. ``encode(precision, texts)``
    returns the vectors and the fastest of ``ROUNDS`` timed encodes in that precision."""
    reference, reference_seconds = encode("float32", texts)
    trials = []
    for precision in candidates:
        vectors, seconds = encode(precision, texts)
        cosine = np.sum(vectors * reference, axis=1)
        trials.append(
            PrecisionTrial(
                precision,
                reference_seconds / max(seconds, 1e-9),
                float(cosine.mean()),
                float(cosine.min()),
            )
        )
    accepted = [trial for trial in trials if trial.acceptable]
    chosen = max(accepted, key=lambda trial: trial.speedup).precision if accepted else "float32"
    for trial in trials:
        log.info(
            "encoder precision trial precision=%s speedup=%.2f mean_cosine=%.4f "
            "min_cosine=%.4f acceptable=%s",
            trial.precision,
            trial.speedup,
            trial.mean_cosine,
            trial.min_cosine,
            trial.acceptable,
        )
    log.info(
        "encoder precision chosen precision=%s candidates=%s min_mean_cosine=%.2f min_speedup=%.1f",
        chosen,
        ",".join(candidates),
        MIN_MEAN_COSINE,
        MIN_SPEEDUP,
    )
    return chosen, trials


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precision_memory_path(model_key: bytes) -> Path:
    """Where the choice for this model on this CPU is remembered."""
    capabilities = sorted(name for name, on in torch.cpu.get_capabilities().items() if on)
    identity = b"|".join(
        [
            model_key,
            torch.__version__.encode(),
            _cpu_name().encode(),
            ",".join(capabilities).encode(),
        ]
    )
    folder = Path(os.environ.get("XDREC_CACHE_DIR") or Path.home() / ".cache" / "xdrec")
    return folder / f"encoder-precision-{hashlib.sha256(identity).hexdigest()[:16]}.json"


def read_remembered_precision(path: Path, candidates: Sequence[str]) -> str | None:
    """The remembered choice, if there is a readable one among ``candidates`` or float32."""
    try:
        chosen = json.loads(path.read_text())["precision"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return chosen if chosen in (*candidates, "float32") else None


def remember_precision(path: Path, precision: str) -> None:
    """Keep the choice; a cache that cannot be written only means measuring again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"precision": precision}))
        temporary.replace(path)
    except OSError as exc:
        log.warning("encoder precision not remembered file=%s error=%s", path, exc)
