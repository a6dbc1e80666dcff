"""Top-K over a large catalog: the approximate first pass against exact top-K on the same queries.

The catalog is synthetic (``stream.data.synthetic``: item texts from the sample's word lists,
vectors that agree with the texts, because encoding a million texts would take over an hour
on two cores); the queries are interest-shaped (the mean of three random items), each with 5
excluded items. The approximate path is ``stream.core.scoring.top_k`` as the worker runs it on
a domain with an approximate index, built and calibrated with the default settings; its peer is
exact float32 top-K in torch (``Q @ M.T``, excluded set to -inf, ``torch.topk``), whose answers
are the truth the recall is measured against. The worker's exact path (a bfloat16 or int8 first
pass where the CPU has one) is shown beside both. RSS is the process's resident memory grown by
the vectors and by the index.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.harness import Context, Outcome, RowSpec, alternated_medians
from bench.soak import rss_mib
from stream.core.ann import ApproximateConfig, ApproximateIndex
from stream.core.scoring import DomainIndex, coarse_copy, coarse_dtype, top_k
from stream.data.synthetic import synthetic_catalog
from stream.settings import RecommendationSettings

log = logging.getLogger(__name__)

APPROXIMATE = "topk_approximate_queries_per_s"
EXACT_TORCH = "topk_exact_torch_queries_per_s"
EXACT_WORKER = "topk_exact_worker_path_queries_per_s"
RECALL = "topk_approximate_recall_at_10"
BUILD = "approximate_index_build_s"
RSS = "large_catalog_rss_mib"
NEEDS_BROKER = False
K = 10
EXCLUDED_PER_QUERY = 5
DIMENSION = 384
_SAME = "synthetic catalog (384-d), interest-shaped queries, k=10, 5 excluded each"
ROWS = (
    RowSpec(
        APPROXIMATE,
        "queries/s",
        EXACT_TORCH,
        "`stream.core.scoring.top_k` on a domain with an approximate index (faiss IVF, 4-bit PQ "
        f"fast scan, probes calibrated to recall 0.97), shortlist rescored in float32: {_SAME}",
    ),
    RowSpec(
        EXACT_WORKER,
        "queries/s",
        EXACT_TORCH,
        f"`top_k` without the approximate index (bfloat16 or int8 first pass, as `auto`): {_SAME}",
    ),
    RowSpec(EXACT_TORCH, "queries/s", None, f"exact float32 `Q @ M.T` + `torch.topk`: {_SAME}"),
    RowSpec(
        RECALL,
        "recall",
        None,
        "share of the exact top 10 (torch row) that the approximate row returns, same queries",
    ),
    RowSpec(BUILD, "s", None, "training, filling and calibrating the approximate index"),
    RowSpec(
        RSS,
        "MiB",
        None,
        "resident memory the catalog's float32 vectors and its approximate index added",
    ),
)


def run(ctx: Context) -> dict[str, Outcome]:
    items = ctx.sizes.ann_items
    count = ctx.sizes.topk_queries
    log.info("ann: generating a synthetic catalog of %d items", items)
    catalog = synthetic_catalog(items, seed=11)
    item_ids = catalog.item_ids
    before = rss_mib([os.getpid()])
    matrix = catalog.vectors(DIMENSION, seed=11)
    with_vectors = rss_mib([os.getpid()])
    active = np.ones(items, dtype=bool)
    config = ApproximateConfig.from_settings(RecommendationSettings(approximate_min_items=1))
    assert config is not None
    log.info("ann: building the approximate index")
    started = time.perf_counter()
    approximate = ApproximateIndex.build(matrix, active, config)
    build_seconds = time.perf_counter() - started
    with_index = rss_mib([os.getpid()])
    positions = {item_id: number for number, item_id in enumerate(item_ids)}
    coarse = coarse_copy(matrix, coarse_dtype("auto"))
    exact_index = DomainIndex("books", item_ids, positions, matrix, active, coarse=coarse)
    approximate_index = DomainIndex(
        "books", item_ids, positions, matrix, active, approximate=approximate
    )

    rng = np.random.default_rng(12)
    picked = matrix[rng.integers(0, items, (count, 3))].mean(axis=1)
    queries = (picked / np.linalg.norm(picked, axis=1, keepdims=True)).astype(np.float32)
    excluded = rng.integers(0, items, (count, EXCLUDED_PER_QUERY))
    exclude = [frozenset(item_ids[p] for p in row) for row in excluded]
    matrix_tensor = torch.from_numpy(matrix)

    def exact_torch() -> np.ndarray:
        best = []
        for start in range(0, count, 64):  # 64 queries x 1M items of float32 = 256 MB at a time
            scores = torch.from_numpy(queries[start : start + 64]) @ matrix_tensor.T
            rows = torch.arange(len(scores))[:, None].expand(-1, EXCLUDED_PER_QUERY)
            scores[rows, torch.from_numpy(excluded[start : start + 64])] = -torch.inf
            best.append(torch.topk(scores, K, dim=1).indices.numpy())
        return np.concatenate(best)

    def batched(index: DomainIndex) -> Callable[[], list[list[tuple[str, float]]]]:
        def scan() -> list[list[tuple[str, float]]]:
            found: list[list[tuple[str, float]]] = []
            for start in range(0, count, 64):  # the worker scores a batch's queries at once
                found += top_k(index, queries[start : start + 64], exclude[start : start + 64], K)
            return found

        return scan

    log.info("ann: timing %d queries over %d items", count, items)
    seconds, answers = alternated_medians(
        {
            APPROXIMATE: batched(approximate_index),
            EXACT_WORKER: batched(exact_index),
            EXACT_TORCH: exact_torch,
        },
        ctx.sizes.topk_repeats,
    )
    truth = [{item_ids[p] for p in row} for row in answers[EXACT_TORCH]]
    recall = float(
        np.mean(
            [
                len(want & {item for item, _ in got}) / K
                for want, got in zip(truth, answers[APPROXIMATE], strict=True)
            ]
        )
    )
    worker_agrees = sum(
        {item for item, _ in got} == want
        for want, got in zip(truth, answers[EXACT_WORKER], strict=True)
    )
    size = f"{items:,} items, {count} queries, median of {ctx.sizes.topk_repeats}"
    vectors_mib = with_vectors - before
    index_mib = with_index - with_vectors
    return {
        APPROXIMATE: Outcome(
            count / seconds[APPROXIMATE],
            detail=f"{size}; {approximate.lists} lists, {approximate.probes} probed, shortlist "
            f"{approximate.width(K)}; calibrated recall {approximate.recall:.3f}",
        ),
        EXACT_WORKER: Outcome(
            count / seconds[EXACT_WORKER],
            detail=f"{size}; same top 10 as torch for {worker_agrees}/{count} queries",
        ),
        EXACT_TORCH: Outcome(count / seconds[EXACT_TORCH], detail=size),
        RECALL: Outcome(recall, detail=size),
        BUILD: Outcome(build_seconds, detail=f"{items:,} items"),
        RSS: Outcome(
            with_index - before,
            detail=f"{items:,} items: float32 vectors {vectors_mib:.0f} MiB "
            f"({matrix.nbytes / 2**20:.0f} MiB of data), approximate index {index_mib:.0f} MiB",
        ),
    }
