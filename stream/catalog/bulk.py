"""Item embeddings computed elsewhere, written into a worker's item store before it starts.

A catalog of millions of items takes hours to encode on a worker's CPU cores; a GPU batch job
(or a synthetic load test, ``stream.data.synthetic``) can compute the vectors instead. They are
written under the configured encoder's fingerprint and each item's text digest, exactly as the
worker would have stored them, so when the same items arrive on the catalog topic the worker
finds them encoded and encodes nothing; an item whose text differs from the imported one is
encoded as usual. The vectors must come from the same model, truncation and precision as the
worker's encoder: nothing here can check that, so the import says which fingerprint it wrote.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.catalog.store import ItemCatalog
from stream.core.items import item_text, text_digest

log = logging.getLogger(__name__)

CHUNK = 65_536


class EmbeddingImportError(ValueError):
    """The files cannot be imported; the message names the file, line or row."""


@dataclass(frozen=True)
class ImportStats:
    items: int
    domains: dict[str, int]
    seconds: float


def read_vectors(path: Path, dimension: int) -> np.ndarray:
    """A ``.npy`` matrix of ``dimension`` columns, memory-mapped (never unpickled)."""
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EmbeddingImportError(f"{path}: not a .npy array of numbers ({exc})") from exc
    if matrix.ndim != 2 or matrix.shape[1] != dimension:
        raise EmbeddingImportError(
            f"{path}: shape {matrix.shape}, but the encoder's vectors have {dimension} dimensions"
        )
    if not np.issubdtype(matrix.dtype, np.floating):
        raise EmbeddingImportError(f"{path}: dtype {matrix.dtype}; write float32 vectors")
    return matrix


def read_items(path: Path, domains: set[str]) -> list[tuple[str, str, bytes]]:
    """``(domain, item_id, text digest)`` per line of an items.jsonl (dataset format)."""
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                domain, item_id = str(row["domain"]), str(row["item_id"])
                text = item_text(row.get("title"), row.get("text"))
            except (ValueError, KeyError, TypeError) as exc:
                raise EmbeddingImportError(f"{path}:{number}: not an item line ({exc})") from exc
            if domain not in domains:
                raise EmbeddingImportError(
                    f"{path}:{number}: domain {domain!r} is not configured "
                    f"(domains: {', '.join(sorted(domains))})"
                )
            items.append((domain, item_id, text_digest(text)))
    return items


def import_embeddings(
    store: Path,
    fingerprint: str,
    dimension: int,
    items_path: Path,
    vectors_path: Path,
    domains: set[str],
) -> ImportStats:
    """Write row ``n`` of the vectors as the embedding of line ``n`` of the items file."""
    started = time.perf_counter()
    matrix = read_vectors(vectors_path, dimension)
    items = read_items(items_path, domains)
    if len(items) != len(matrix):
        raise EmbeddingImportError(
            f"{items_path} has {len(items)} items but {vectors_path} has {len(matrix)} rows"
        )
    try:
        catalog = ItemCatalog(store, fingerprint, dimension)
    except Exception as exc:
        raise EmbeddingImportError(
            f"cannot open the item store {store} ({exc}): stop the worker that uses it first"
        ) from exc
    counts: dict[str, int] = {}
    try:
        for start in range(0, len(items), CHUNK):
            block = np.asarray(matrix[start : start + CHUNK], dtype=np.float32)
            if not np.isfinite(block).all():
                bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                raise EmbeddingImportError(f"{vectors_path}: row {bad} is not finite")
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            if (norms == 0).any():
                raise EmbeddingImportError(
                    f"{vectors_path}: row {start + int(np.argmin(norms))} is zero"
                )
            block = block / norms
            by_domain: dict[str, list[int]] = {}
            for offset, (domain, _, _) in enumerate(items[start : start + CHUNK]):
                by_domain.setdefault(domain, []).append(offset)
            for domain, offsets in by_domain.items():
                chunk = [items[start + offset] for offset in offsets]
                catalog.persist(
                    domain, [i for _, i, _ in chunk], [d for _, _, d in chunk], block[offsets]
                )
                counts[domain] = counts.get(domain, 0) + len(offsets)
            done = min(len(items), start + CHUNK)
            log.info(
                "embeddings imported items=%d of=%d percent=%.0f",
                done,
                len(items),
                100 * done / max(len(items), 1),
            )
    finally:
        catalog.close()
    seconds = time.perf_counter() - started
    log.info(
        "embeddings import done items=%d domains=%s fingerprint=%s seconds=%.1f",
        len(items),
        counts,
        fingerprint,
        seconds,
    )
    return ImportStats(len(items), counts, seconds)
