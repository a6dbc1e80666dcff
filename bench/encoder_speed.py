"""Row 5: xdrec's own encoder against sentence-transformers on the same texts.

xdrec encodes with plain transformers (mean pooling, length-sorted batches) to avoid the extra
dependency, and on the CPU in a lower precision where that is both faster and close to float32
(``encoder.precision``). The first rows show the encoder as configured by default against
sentence-transformers' float32 ``encode()``; one row pair per precision shows what each mode
gains in speed and loses in cosine, so the default can be checked against the alternatives.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.harness import FULL, QUICK, Context, Outcome, RowSpec
from stream.encoder import TextEncoder, bundled_model_path, item_text, native_cpu_precisions
from stream.sample import sample_items

ENCODER = "encoder_items_per_s"
ST = "sentence_transformers_items_per_s"
COSINE = "encoder_mean_cosine_vs_st"
GPU = "encoder_items_per_s_gpu"
NEEDS_BROKER = False
BATCH = 64
# Every explicit CPU precision of TextEncoder; "auto" is the default row.
MODES = ("float32", "bfloat16", "int8")
_SAME = (
    f"the sample catalog's 144 item texts repeated to {FULL.encoder_texts:,} texts (quick: "
    f"{QUICK.encoder_texts:,}), batch {BATCH}, CPU, after warm-up, median of "
    f"{FULL.encoder_rounds} rounds (quick: {QUICK.encoder_rounds}), rows alternated per round"
)


def speed_row(mode: str) -> str:
    return f"{ENCODER}_{mode}"


def cosine_row(mode: str) -> str:
    return f"{COSINE}_{mode}"


ROWS = (
    RowSpec(
        ENCODER,
        "items/s",
        ST,
        f"`stream.encoder.TextEncoder.encode` with the default `encoder.precision` (auto; the "
        f"mode it picked is in the notes): {_SAME}",
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
                "runs the mode natively (bfloat16: AMX, int8: VNNI)",
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
        ENCODER,
        "`TextEncoder.encode` as the CPU row on the first CUDA device (always float32), same "
        "texts and batch; only where `torch.cuda.is_available()`",
    ),
)


def texts(count: int) -> list[str]:
    base = [item_text(item["title"], item["text"]) for item in sample_items()]
    return [base[number % len(base)] for number in range(count)]


def _timed(
    encode: Callable[[list[str]], np.ndarray], inputs: list[str]
) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = encode(inputs)
    return time.perf_counter() - started, vectors


def on_gpu(inputs: list[str], rounds: int) -> Outcome:
    """The same encoder on the first CUDA device, or why there is no figure."""
    if not torch.cuda.is_available():
        return Outcome.no_gpu()
    encoder = TextEncoder(batch_size=BATCH, device="cuda")
    encoder.encode(inputs[:BATCH])
    # encode() returns host arrays, so each timing includes the copy back: no sync needed.
    seconds = [_timed(encoder.encode, inputs)[0] for _ in range(rounds)]
    return Outcome(
        len(inputs) / statistics.median(seconds),
        detail=f"{torch.cuda.get_device_name(0)}; {len(inputs):,} texts, median of {rounds}",
    )


def run(ctx: Context) -> dict[str, Outcome]:
    results = cpu_rows(ctx)
    try:
        results[GPU] = on_gpu(texts(ctx.sizes.encoder_texts), ctx.sizes.encoder_rounds)
    except Exception as exc:  # the CPU rows stand
        results[GPU] = Outcome.failed(f"{type(exc).__name__}: {exc}")
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
            encoders[mode] = TextEncoder(batch_size=BATCH, device="cpu", precision=mode)
        else:
            needs = "AMX-BF16" if mode == "bfloat16" else "VNNI"
            missing[speed_row(mode)] = missing[cosine_row(mode)] = Outcome.failed(
                f"no {needs} on this CPU"
            )
    return encoders, missing


def st_encoder(max_length: int) -> Callable[[list[str]], np.ndarray]:
    """sentence-transformers' float32 ``encode()`` on the bundled model, xdrec's truncation."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    model.max_seq_length = max_length

    def encode(batch: list[str]) -> np.ndarray:
        return model.encode(
            batch,
            batch_size=BATCH,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    return encode


def cpu_rows(ctx: Context) -> dict[str, Outcome]:
    inputs = texts(ctx.sizes.encoder_texts)
    rounds = ctx.sizes.encoder_rounds
    default = TextEncoder(batch_size=BATCH, device="cpu")
    encoders, results = mode_encoders(default)
    timed: dict[str, Callable[[list[str]], np.ndarray]] = {
        mode: encoder.encode for mode, encoder in encoders.items()
    }
    st_error = None
    try:
        timed[ST] = st_encoder(default.max_length)
    except Exception as exc:  # xdrec's own figures are still worth having
        st_error = f"sentence-transformers unavailable: {type(exc).__name__}: {exc}"
    for encode in timed.values():  # warm-up: first-call allocations are not the steady rate
        encode(inputs[:BATCH])

    seconds: dict[str, list[float]] = {name: [] for name in timed}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):  # alternated, so drift on a shared machine hits every row alike
        for name, encode in timed.items():
            elapsed, vectors[name] = _timed(encode, inputs)
            seconds[name].append(elapsed)
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
