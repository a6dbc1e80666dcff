"""Row 5: xdrec's own encoder against sentence-transformers on the same texts.

xdrec encodes with plain transformers (mean pooling, length-sorted batches) to avoid the extra
dependency; this row shows what that choice costs or saves in speed, and the cosine row shows
that the embeddings are the same ones sentence-transformers would give.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.harness import FULL, QUICK, Context, Outcome, RowSpec
from stream.encoder import TextEncoder, bundled_model_path, item_text
from stream.sample import sample_items

ENCODER = "encoder_items_per_s"
ST = "sentence_transformers_items_per_s"
COSINE = "encoder_mean_cosine_vs_st"
GPU = "encoder_items_per_s_gpu"
NEEDS_BROKER = False
BATCH = 64
_SAME = (
    f"the sample catalog's 144 item texts repeated to {FULL.encoder_texts:,} texts (quick: "
    f"{QUICK.encoder_texts:,}), batch {BATCH}, CPU, after warm-up, median of "
    f"{FULL.encoder_rounds} rounds (quick: {QUICK.encoder_rounds})"
)
ROWS = (
    RowSpec(ENCODER, "items/s", ST, f"`stream.encoder.TextEncoder.encode`: {_SAME}"),
    RowSpec(
        ST, "items/s", None, f"`SentenceTransformer(bundled model).encode`, normalized: {_SAME}"
    ),
    RowSpec(COSINE, "cosine", None, "mean cosine between the two embeddings of each text"),
    RowSpec(
        GPU,
        "items/s",
        ENCODER,
        "`TextEncoder.encode` as the CPU row on the first CUDA device, same texts and batch; "
        "only where `torch.cuda.is_available()`",
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


def cpu_rows(ctx: Context) -> dict[str, Outcome]:
    inputs = texts(ctx.sizes.encoder_texts)
    rounds = ctx.sizes.encoder_rounds
    encoder = TextEncoder(batch_size=BATCH, device="cpu")
    encoder.encode(inputs[:BATCH])  # warm-up: first-call allocations are not the steady rate
    try:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(bundled_model_path()), device="cpu")
        model.max_seq_length = encoder.max_length  # same truncation as xdrec's encoder

        def st_encode(batch: list[str]) -> np.ndarray:
            return model.encode(
                batch,
                batch_size=BATCH,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )

        st_encode(inputs[:BATCH])
    except Exception as exc:  # xdrec's own figure is still worth having
        st_error = f"sentence-transformers unavailable: {type(exc).__name__}: {exc}"
        seconds = [_timed(encoder.encode, inputs)[0] for _ in range(rounds)]
        return {
            ENCODER: Outcome(len(inputs) / statistics.median(seconds)),
            ST: Outcome.failed(st_error),
            COSINE: Outcome.failed(st_error),
        }

    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):  # alternated, so drift on a shared machine hits both alike
        elapsed, our_vectors = _timed(encoder.encode, inputs)
        ours.append(elapsed)
        elapsed, st_vectors = _timed(st_encode, inputs)
        theirs.append(elapsed)
    cosines = np.sum(our_vectors * st_vectors, axis=1)
    detail = f"{len(inputs):,} texts, median of {rounds} round(s)"
    return {
        ENCODER: Outcome(len(inputs) / statistics.median(ours), detail=detail),
        ST: Outcome(len(inputs) / statistics.median(theirs), detail=detail),
        COSINE: Outcome(float(np.mean(cosines)), detail=f"min {float(np.min(cosines)):.6f}"),
    }
