"""The approximate first pass of top-K over large catalogs.

Exact top-K costs one dot product per item and query: at a million items that is about 130
queries/s on two cores, so a worker would spend most of each event scoring. Above a configured
catalog size a domain also keeps a faiss inverted-file index with 4-bit product-quantization
codes (``IVF{lists},PQ{dims/4}x4fs``: about 48 bytes an item at 384 dimensions, scanned with
SIMD), which proposes a shortlist per query; :mod:`stream.core.scoring` then scores only the
shortlist exactly in float32 and masks seen and removed items exactly, as before.

How many lists to probe is not a constant: when the index is built it is calibrated on queries
drawn from its own items (the mean of three random items, the shape of an interest query)
against exact top-K, and the fewest probes (and, where the codes are too coarse, the narrowest
widening of the shortlist) that reach the target recall@10 are kept; the recall reached is
logged. The index only grows: an added or changed item is added again under
its row number (its old entry, if any, becomes a stale duplicate that the exact pass drops),
and the owner rebuilds it off the hot path once stale entries pile up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from stream.settings import RecommendationSettings

log = logging.getLogger(__name__)

CALIBRATION_QUERIES = 256
CALIBRATION_K = 10
SHORTLIST_PER_K = 20  # exact rescoring of 20 candidates per wanted item (200 for k = 10)
MIN_SHORTLIST = 200
TRAINING_SAMPLE = 100_000  # rows the coarse lists and codebooks are trained on
STALE_REBUILD_SHARE = 0.25  # rebuild once stale entries exceed this share of live rows
WIDEN_STEPS = (1, 2, 4)  # shortlist multiples tried where the codes are too coarse


@dataclass(frozen=True, slots=True)
class ApproximateConfig:
    """When a domain gets an approximate index, and how well it must find the exact top-K."""

    min_items: int
    target_recall: float = 0.97
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: RecommendationSettings) -> ApproximateConfig | None:
        """``recommendations.approximate_*`` as a configuration, or None when it is off."""
        if settings.approximate_min_items == 0:
            return None
        return cls(settings.approximate_min_items, settings.approximate_recall)


def favoured_rows(bias: np.ndarray, width: int) -> np.ndarray:
    """The rows of the ``width`` largest biases, largest first: the part of an approximate
    shortlist that a popularity prior adds, whatever the query (any prefix of it is the
    shortlist of a narrower width)."""
    top = np.argpartition(-bias, width - 1)[:width] if width < len(bias) else np.arange(len(bias))
    return top[np.argsort(-bias[top], kind="stable")]


def shortlist_width(k: int) -> int:
    """Candidates rescored exactly per query for a top-``k``."""
    return max(MIN_SHORTLIST, SHORTLIST_PER_K * k)


class ApproximateIndex:
    """A faiss IVF-PQ fast-scan index over one matrix's rows, searched under a lock (faiss
    indexes are not safe to search while another thread adds to them)."""

    def __init__(self, index: faiss.IndexIVF, padded: int, rows: int) -> None:
        self._index = index
        self._padded = padded
        self._lock = threading.Lock()
        self.live = rows
        self.stale = 0
        self.recall = math.nan  # recall@10 measured at calibration
        self.probes = 1
        self.widen = 1  # shortlist multiple, where the codes are too coarse for the base width

    @classmethod
    def build(
        cls, matrix: np.ndarray, active: np.ndarray, config: ApproximateConfig
    ) -> ApproximateIndex:
        """Train, fill and calibrate an index over ``matrix``'s rows (removed rows included:
        the exact pass masks them)."""
        started = time.perf_counter()
        rows, dimension = matrix.shape
        padded = -(-dimension // 8) * 8  # fast scan wants an even number of 4-bit codes
        lists = int(min(max(round(math.sqrt(rows)), 16), 8_192))
        index = faiss.index_factory(
            padded, f"IVF{lists},PQ{padded // 4}x4fs", faiss.METRIC_INNER_PRODUCT
        )
        rng = np.random.default_rng(config.seed)
        sample = rng.choice(rows, size=min(rows, max(TRAINING_SAMPLE, lists * 40)), replace=False)
        index.train(_pad(matrix[np.sort(sample)], padded))
        built = cls(index, padded, 0)
        for start in range(0, rows, 65_536):
            end = min(rows, start + 65_536)
            built.add(np.arange(start, end), matrix[start:end])
        built.calibrate(matrix, active, config, rng)
        log.info(
            "approximate index built rows=%d lists=%d probes=%d shortlist=%d recall_at_10=%.4f "
            "index_mib=%.1f seconds=%.1f",
            rows,
            lists,
            built.probes,
            built.width(CALIBRATION_K),
            built.recall,
            built.nbytes / 2**20,
            time.perf_counter() - started,
        )
        return built

    @property
    def nbytes(self) -> int:
        """The index's size serialized: its codes, ids and coarse centroids."""
        with self._lock:
            return int(faiss.serialize_index(self._index).nbytes)

    @property
    def lists(self) -> int:
        return int(self._index.nlist)

    def add(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        """Index rows under their row numbers; a row indexed before leaves a stale entry."""
        if len(positions) == 0:
            return
        padded = _pad(
            np.asarray(vectors, dtype=np.float32).reshape(len(positions), -1), self._padded
        )
        with self._lock:
            self._index.add_with_ids(padded, np.asarray(positions, dtype=np.int64))
            self.live += len(positions)

    def replaced(self, count: int) -> None:
        """``count`` rows added again: their earlier entries are stale duplicates now."""
        self.stale += count
        self.live -= count

    @property
    def needs_rebuild(self) -> bool:
        return self.stale > STALE_REBUILD_SHARE * max(self.live, 1)

    def search(self, queries: np.ndarray, width: int) -> np.ndarray:
        """``width`` candidate rows per query (-1 where fewer were found), in no useful order."""
        padded = _pad(queries, self._padded)
        with self._lock:
            _, labels = self._index.search(
                padded, width, params=faiss.SearchParametersIVF(nprobe=self.probes)
            )
        return labels

    def calibrate(
        self,
        matrix: np.ndarray,
        active: np.ndarray,
        config: ApproximateConfig,
        rng: np.random.Generator,
    ) -> None:
        """Keep the fewest probes whose shortlist holds ``target_recall`` of the exact top 10."""
        live = np.flatnonzero(active[: len(matrix)])
        if len(live) <= CALIBRATION_K:
            self.probes, self.recall = self.lists, 1.0
            return
        picked = matrix[rng.choice(live, size=(CALIBRATION_QUERIES, 3))].mean(axis=1)
        queries = (
            picked / np.maximum(np.linalg.norm(picked, axis=1, keepdims=True), 1e-12)
        ).astype(np.float32)
        exact = _exact_top(matrix, active, queries, CALIBRATION_K)
        # faiss returns each shortlist best first, so one search at the widest width also
        # tells the recall of every narrower one.
        base = shortlist_width(CALIBRATION_K)
        probes = 1
        while True:
            self.probes = probes
            found = self.search(queries, base * WIDEN_STEPS[-1])
            for widen in WIDEN_STEPS:
                self.widen = widen
                self.recall = float(
                    np.mean(
                        [
                            np.isin(want, got[: base * widen]).mean()
                            for want, got in zip(exact, found, strict=True)
                        ]
                    )
                )
                if self.recall >= config.target_recall:
                    return
            if probes >= self.lists:
                return
            probes = min(self.lists, probes * 2)

    def width(self, k: int) -> int:
        """Candidates to rescore exactly for a top-``k``."""
        return shortlist_width(k) * self.widen


def _pad(vectors: np.ndarray, width: int) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.shape[1] == width:
        return vectors
    out = np.zeros((len(vectors), width), dtype=np.float32)
    out[:, : vectors.shape[1]] = vectors
    return out


def _exact_top(matrix: np.ndarray, active: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` rows per query among active rows, a block of rows at a time."""
    dead = torch.from_numpy(~active[: len(matrix)])
    best_values = torch.full((len(queries), 0), -torch.inf)
    best_rows = torch.zeros((len(queries), 0), dtype=torch.int64)
    query_tensor = torch.from_numpy(queries)
    for start in range(0, len(matrix), 262_144):
        block = torch.from_numpy(np.ascontiguousarray(matrix[start : start + 262_144]))
        scores = query_tensor @ block.T
        scores[:, dead[start : start + len(block)]] = -torch.inf
        values, picked = torch.topk(scores, min(k, len(block)), dim=1)
        best_values = torch.cat([best_values, values], dim=1)
        best_rows = torch.cat([best_rows, picked + start], dim=1)
        best_values, order = torch.topk(best_values, min(k, best_values.shape[1]), dim=1)
        best_rows = torch.gather(best_rows, 1, order)
    return best_rows.numpy()
