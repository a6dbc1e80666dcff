"""Row 5: xdrec's own encoder against sentence-transformers on the same texts.

xdrec encodes with plain transformers (mean pooling, length-sorted batches) to avoid the extra
dependency, and on the CPU in a lower precision where that is both faster and close to float32
(``encoder.precision``). The first rows show the encoder as configured by default against
sentence-transformers' float32 ``encode()``; one row pair per precision shows what each mode
gains in speed and loses in cosine, so the default can be checked against the alternatives.
The GPU rows set xdrec's encoder (float16 and float32) beside sentence-transformers (float32 and
float16) on the same GPU, with larger batches; ``python -m bench.gpu`` runs them alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.harness import FULL, QUICK, Context, Outcome, RowSpec, failed_rows
from stream.catalog.encoder import (
    CPU_BATCH,
    TextEncoder,
    bundled_model_path,
    native_cpu_precisions,
)
from stream.core.items import item_text
from stream.data.sample import sample_items
from stream.settings import load_settings

ENCODER = "encoder_items_per_s"
ST = "sentence_transformers_items_per_s"
COSINE = "encoder_mean_cosine_vs_st"
GPU = "encoder_items_per_s_gpu"
GPU_FLOAT32 = "encoder_items_per_s_gpu_float32"
ST_GPU = "sentence_transformers_items_per_s_gpu"
ST_GPU_HALF = "sentence_transformers_items_per_s_gpu_float16"
COSINE_GPU = "encoder_mean_cosine_vs_st_gpu"
NEEDS_BROKER = False
BATCH = CPU_BATCH  # the encoder's CPU default, and sentence-transformers' own
GPU_BATCH = 512  # a GPU wants more rows per kernel; the same for every GPU row
GPU_TEXTS = 50_000
GPU_ROUNDS = 3
# Every explicit CPU precision of TextEncoder; "auto" is the default row.
MODES = ("float32", "bfloat16", "int8")
_SAME = (
    f"the sample catalog's 144 item texts repeated to {FULL.encoder_texts:,} texts (quick: "
    f"{QUICK.encoder_texts:,}), batch {BATCH}, CPU, after warm-up, median of "
    f"{FULL.encoder_rounds} rounds (quick: {QUICK.encoder_rounds}), rows alternated per round"
)

_GPU_SAME = (
    f"the sample catalog's texts repeated to {GPU_TEXTS:,}, batch {GPU_BATCH}, the first CUDA "
    f"device, after warm-up, median of {GPU_ROUNDS} rounds, rows alternated per round; only "
    "where `torch.cuda.is_available()` (or measured on a GPU machine by `python -m bench.gpu` "
    "and merged with `--gpu-json`)"
)
GPU_ROWS = (GPU, GPU_FLOAT32, ST_GPU, ST_GPU_HALF, COSINE_GPU)


def speed_row(mode: str) -> str:
    return f"{ENCODER}_{mode}"


def cosine_row(mode: str) -> str:
    return f"{COSINE}_{mode}"


ROWS = (
    RowSpec(
        ENCODER,
        "items/s",
        ST,
        f"`stream.catalog.encoder.TextEncoder.encode` with the default `encoder.precision` "
        f"(auto; the mode it picked is in the notes): {_SAME}",
    ),
    RowSpec(
        ST, "items/s", None, f"`SentenceTransformer(bundled model).encode`, normalized: {_SAME}"
    ),
    RowSpec(
        COSINE,
        "cosine",
        None,
        "mean cosine between the default encoder's and sentence-transformers' (float32) "
        "embedding of each text",
    ),
    *(
        spec
        for mode in MODES
        for spec in (
            RowSpec(
                speed_row(mode),
                "items/s",
                ST,
                f'`TextEncoder(precision="{mode}")` as the default row; only where the CPU '
                "runs the mode natively (bfloat16: AMX, int8: VNNI or AVX2)",
            ),
            RowSpec(
                cosine_row(mode),
                "cosine",
                None,
                f"mean cosine of the {mode} encoder's embeddings to sentence-transformers'",
            ),
        )
    ),
    RowSpec(
        GPU,
        "items/s",
        ST_GPU,
        f'`TextEncoder(device="cuda").encode` with the default precision (float16 on a GPU): '
        f"{_GPU_SAME}",
    ),
    RowSpec(
        GPU_FLOAT32,
        "items/s",
        ST_GPU,
        f'`TextEncoder(device="cuda", precision="float32")`: {_GPU_SAME}',
    ),
    RowSpec(
        ST_GPU,
        "items/s",
        None,
        f'`SentenceTransformer(bundled model, device="cuda").encode`, float32: {_GPU_SAME}',
    ),
    RowSpec(
        ST_GPU_HALF,
        "items/s",
        ST_GPU,
        f"sentence-transformers as the row above with its model in float16: {_GPU_SAME}",
    ),
    RowSpec(
        COSINE_GPU,
        "cosine",
        None,
        "mean cosine between the default GPU encoder's and sentence-transformers' float32 GPU "
        "embedding of each text",
    ),
)


def model_folder() -> Path:
    """The configured encoder folder (``XDREC_ENCODER__MODEL_PATH``), else the bundled one: a
    GPU machine is sent a float16 copy, the full model being too large to travel."""
    return load_settings().encoder.model_path or bundled_model_path()


def texts(count: int) -> list[str]:
    base = [item_text(item["title"], item["text"]) for item in sample_items()]
    return [base[number % len(base)] for number in range(count)]


def _timed(
    encode: Callable[[list[str]], np.ndarray], inputs: list[str]
) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = encode(inputs)
    return time.perf_counter() - started, vectors


def gpu_rows() -> dict[str, Outcome]:
    """xdrec's encoder and sentence-transformers on the first CUDA device, or why not."""
    if not torch.cuda.is_available():
        return {name: Outcome.no_gpu() for name in GPU_ROWS}
    inputs = texts(GPU_TEXTS)
    folder = model_folder()
    default = TextEncoder(folder, batch_size=GPU_BATCH, device="cuda")
    full = TextEncoder(folder, batch_size=GPU_BATCH, device="cuda", precision="float32")
    timed: dict[str, Callable[[list[str]], np.ndarray]] = {
        GPU: default.encode,
        GPU_FLOAT32: full.encode,
        ST_GPU: st_encoder(default, device="cuda", batch=GPU_BATCH),
        ST_GPU_HALF: st_encoder(default, device="cuda", batch=GPU_BATCH, half=True),
    }
    seconds, vectors = _alternate(timed, inputs, GPU_ROUNDS)
    device = torch.cuda.get_device_name(0)
    detail = f"{device}; {len(inputs):,} texts, median of {GPU_ROUNDS}"
    results = {
        name: Outcome(len(inputs) / statistics.median(seconds[name]), detail=detail)
        for name in timed
    }
    cosines = np.sum(vectors[GPU] * vectors[ST_GPU], axis=1)
    results[COSINE_GPU] = Outcome(
        float(np.mean(cosines)), detail=f"{device}; min {float(np.min(cosines)):.6f}"
    )
    return results


def _alternate(
    timed: dict[str, Callable[[list[str]], np.ndarray]], inputs: list[str], rounds: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Each encoder's seconds per round and last vectors, after a one-batch warm-up; rounds
    alternate the encoders, so drift on a shared machine hits every row alike."""
    for encode in timed.values():  # first-call allocations are not the steady rate
        encode(inputs[:BATCH])
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, encode in timed.items():
            elapsed, vectors[name] = _timed(encode, inputs)
            seconds[name].append(elapsed)
    return seconds, vectors


def run(ctx: Context) -> dict[str, Outcome]:
    results = cpu_rows(ctx)
    try:
        results.update(gpu_rows())
    except Exception as exc:  # the CPU rows stand
        results.update(failed_rows(GPU_ROWS, exc))
    return results


def mode_encoders(default: TextEncoder) -> tuple[dict[str, TextEncoder], dict[str, Outcome]]:
    """One encoder per precision this CPU runs natively (the default one reused), and the
    failed rows of the others: an emulated mode would only be slow, or fall back to float32."""
    encoders: dict[str, TextEncoder] = {}
    missing: dict[str, Outcome] = {}
    native = native_cpu_precisions()
    for mode in MODES:
        if mode == default.precision:
            encoders[mode] = default
        elif mode in native:
            encoders[mode] = TextEncoder(
                default.model_path, batch_size=BATCH, device="cpu", precision=mode
            )
        else:
            needs = "AMX-BF16" if mode == "bfloat16" else "VNNI or AVX2"
            missing[speed_row(mode)] = missing[cosine_row(mode)] = Outcome.failed(
                f"no {needs} on this CPU"
            )
    return encoders, missing


def st_encoder(
    like: TextEncoder, device: str = "cpu", batch: int = BATCH, half: bool = False
) -> Callable[[list[str]], np.ndarray]:
    """sentence-transformers' ``encode()`` on the model folder and truncation of ``like``;
    float32 (whatever the folder stores) unless ``half``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(like.model_path), device=device)
    model.max_seq_length = like.max_length
    model.half() if half else model.float()

    def encode(inputs: list[str]) -> np.ndarray:
        return model.encode(
            inputs,
            batch_size=batch,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    return encode


def cpu_rows(ctx: Context) -> dict[str, Outcome]:
    inputs = texts(ctx.sizes.encoder_texts)
    rounds = ctx.sizes.encoder_rounds
    default = TextEncoder(model_folder(), batch_size=BATCH, device="cpu")
    encoders, results = mode_encoders(default)
    timed: dict[str, Callable[[list[str]], np.ndarray]] = {
        mode: encoder.encode for mode, encoder in encoders.items()
    }
    st_error = None
    try:
        timed[ST] = st_encoder(default)
    except Exception as exc:  # xdrec's own figures are still worth having
        st_error = f"sentence-transformers unavailable: {type(exc).__name__}: {exc}"
    seconds, vectors = _alternate(timed, inputs, rounds)
    detail = f"{len(inputs):,} texts, median of {rounds} round(s)"
    for name in timed:
        rate = Outcome(len(inputs) / statistics.median(seconds[name]), detail=detail)
        results[ST if name == ST else speed_row(name)] = rate
    for mode in encoders:
        if st_error is not None:
            results[cosine_row(mode)] = Outcome.failed(st_error)
            continue
        cosines = np.sum(vectors[mode] * vectors[ST], axis=1)
        results[cosine_row(mode)] = Outcome(
            float(np.mean(cosines)), detail=f"min {float(np.min(cosines)):.6f}"
        )
    if st_error is not None:
        results[ST] = Outcome.failed(st_error)
    chosen = results[speed_row(default.precision)]
    results[ENCODER] = Outcome(chosen.value, detail=f"precision {default.precision}; {detail}")
    results[COSINE] = results[cosine_row(default.precision)]
    return results
