"""Item embeddings per domain: encoded once, persisted in RocksDB, served from memory.

Each item is encoded once per encoder fingerprint and text: the RocksDB copy survives
restarts, so a worker that restarts re-reads the catalog topic but encodes nothing it already
has. In memory, each domain keeps a growable matrix whose prefix is handed to the scorer
without copying, and, when the scorer's first pass runs in low precision, a copy in that dtype:
a bfloat16 copy updated row by row, or an int8 copy packed in chunks, a chunk packed again at
the next scoring snapshot after one of its rows changed. Thread-safe: the catalog reader and
the batch processor both write here.

A domain with at least ``ApproximateConfig.min_items`` items also keeps an approximate index
(:mod:`stream.core.ann`) in place of the low-precision copy: built when the catalog is loaded,
or by a background thread when the domain grows past the size (and again once stale entries
pile up); items added or changed meanwhile are added to it as they arrive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rocksdict import Options, Rdict, WriteBatch

from stream.core.ann import ApproximateConfig, ApproximateIndex
from stream.core.int8_rows import Int8Matrix, Int8Rows
from stream.core.items import DIGEST_BYTES
from stream.core.scoring import COARSE_MIN_ITEMS, DomainIndex

log = logging.getLogger(__name__)

_SEPARATOR = "\x1f"


@dataclass
class _DomainTable:
    dimension: int
    coarse_dtype: torch.dtype | None = None
    item_ids: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    digests: list[bytes] = field(default_factory=list)
    matrix: np.ndarray = field(init=False)
    active: np.ndarray = field(init=False)
    coarse: torch.Tensor | None = field(init=False)
    int8: Int8Rows | None = field(init=False)  # the packed int8 copy (coarse_dtype qint8)
    approximate: ApproximateIndex | None = None
    # Rows written while a background build of the approximate index runs (None: no build).
    written_during_build: list[int] | None = None
    # A read-only copy of ``active[:rows]`` handed to every scoring snapshot until a row is
    # added, re-activated or removed (None: to be copied again), instead of a copy per batch.
    _active_snapshot: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.matrix = np.zeros((16, self.dimension), dtype=np.float32)
        self.active = np.zeros(16, dtype=bool)
        int8 = self.coarse_dtype == torch.qint8
        self.int8 = Int8Rows() if int8 else None
        self.coarse = (
            torch.zeros((16, self.dimension), dtype=self.coarse_dtype)
            if self.coarse_dtype is not None and not int8
            else None
        )

    def upsert(self, item_id: str, digest: bytes, vector: np.ndarray) -> int:
        """Write the item's row; returns its row number."""
        position = self.positions.get(item_id)
        if position is None:
            position = len(self.item_ids)
            if position == len(self.matrix):
                # Grow into new arrays: views already handed out stay valid and unchanged.
                self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
                self.active = np.concatenate([self.active, np.zeros_like(self.active)])
                if self.coarse is not None:
                    self.coarse = torch.cat([self.coarse, torch.zeros_like(self.coarse)])
            self.item_ids.append(item_id)
            self.digests.append(digest)
            self.positions[item_id] = position
        else:
            self.digests[position] = digest
        self.matrix[position] = vector
        if not self.active[position]:
            self.active[position] = True
            self._active_snapshot = None
        if self.coarse is not None:
            self.coarse[position] = torch.from_numpy(self.matrix[position])
        if self.int8 is not None:
            self.int8.written(position)
        if self.written_during_build is not None:
            self.written_during_build.append(position)
        return position

    def deactivate(self, item_id: str) -> None:
        """The item is no longer recommended (its row and vector stay)."""
        position = self.positions.get(item_id)
        if position is not None and self.active[position]:
            self.active[position] = False
            self._active_snapshot = None

    def active_snapshot(self) -> np.ndarray:
        """Which rows may be recommended, as of now; later writes do not change it."""
        if self._active_snapshot is None:
            self._active_snapshot = self.active[: self.rows].copy()
            self._active_snapshot.setflags(write=False)
        return self._active_snapshot

    @property
    def rows(self) -> int:
        return len(self.item_ids)

    def coarse_snapshot(self, rows: int) -> torch.Tensor | Int8Matrix | None:
        """The first pass's copy of the first ``rows`` rows (int8 packed only where the
        scorer uses it: from ``COARSE_MIN_ITEMS`` rows on)."""
        if self.coarse is not None:
            return self.coarse[:rows]
        if self.int8 is not None and rows >= COARSE_MIN_ITEMS:
            return self.int8.snapshot(self.matrix[:rows])
        return None

    def index_rows(self, positions: list[int], indexed_before: int) -> None:
        """Add written rows to the approximate index (rows below ``indexed_before`` were in it
        already and leave a stale entry)."""
        if self.approximate is None or not positions:
            return
        unique = sorted(set(positions))
        self.approximate.add(np.asarray(unique), self.matrix[unique])
        self.approximate.replaced(sum(1 for position in unique if position < indexed_before))

    def adopt(self, built: ApproximateIndex, indexed_rows: int) -> None:
        """Take a freshly built index; rows written since its snapshot are added to it."""
        written = self.written_during_build or []
        self.written_during_build = None
        self.approximate = built
        self.coarse = self.int8 = None  # the approximate index replaces the low-precision copy
        self.index_rows(written + list(range(indexed_rows, self.rows)), indexed_rows)


class ItemCatalog:
    """Embeddings of every known item, keyed by domain and item id."""

    def __init__(
        self,
        path: Path,
        fingerprint: str,
        dimension: int,
        coarse_dtype: torch.dtype | None = None,
        approximate: ApproximateConfig | None = None,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        self._db = Rdict(str(path), options=options)
        self.fingerprint = fingerprint
        self.dimension = dimension
        self.coarse_dtype = coarse_dtype
        self.approximate = approximate if approximate and approximate.min_items > 0 else None
        self._tables: dict[str, _DomainTable] = {}
        self._lock = threading.Lock()

    def _key(self, domain: str, item_id: str) -> bytes:
        return _SEPARATOR.join((self.fingerprint, domain, item_id)).encode("utf-8")

    def load(self) -> int:
        """Read this encoder's persisted embeddings into memory; returns how many."""
        prefix = (self.fingerprint + _SEPARATOR).encode("utf-8")
        loaded = 0
        with self._lock:
            iterator = self._db.iter()
            iterator.seek(prefix)
            while iterator.valid():
                key = iterator.key()
                if not key.startswith(prefix):
                    break
                _, domain, item_id = key.decode("utf-8").split(_SEPARATOR, 2)
                value = iterator.value()
                vector = np.frombuffer(value[DIGEST_BYTES:], dtype="<f4")
                self._table(domain).upsert(item_id, value[:DIGEST_BYTES], vector)
                loaded += 1
                iterator.next()
        log.info("item embeddings loaded items=%d domains=%d", loaded, len(self._tables))
        for domain, table in list(self._tables.items()):
            if self._wants_approximate(table):
                table.written_during_build = []
                self._build_approximate(domain)
        return loaded

    def _wants_approximate(self, table: _DomainTable) -> bool:
        """True when the domain should get a (new) approximate index and none is being built."""
        if self.approximate is None or table.written_during_build is not None:
            return False
        if table.approximate is None:
            return table.rows >= self.approximate.min_items
        return table.approximate.needs_rebuild

    def _build_approximate(self, domain: str) -> None:
        """Build the domain's approximate index from a snapshot of its rows, outside the lock;
        rows written meanwhile are added when it is adopted. The caller has marked the build
        as started (``written_during_build = []``) under the lock."""
        assert self.approximate is not None
        with self._lock:
            table = self._tables[domain]
            rows = table.rows
            matrix = table.matrix[:rows]  # rows changed meanwhile are re-added on adoption
            active = table.active_snapshot()
            table.written_during_build = []  # rows written from this snapshot on
        try:
            built = ApproximateIndex.build(matrix, active, self.approximate)
        except Exception:
            log.exception("approximate index build failed domain=%s: scoring stays exact", domain)
            with self._lock:
                table.written_during_build = None
            return
        with self._lock:
            table.adopt(built, rows)
        log.info("approximate index in use domain=%s rows=%d", domain, rows)

    def _start_build(self, domain: str) -> None:
        """Mark a build as started and run it on a thread (called under the lock)."""
        self._tables[domain].written_during_build = []
        threading.Thread(
            target=self._build_approximate, args=(domain,), name=f"xdrec-ann-{domain}", daemon=True
        ).start()

    def _table(self, domain: str) -> _DomainTable:
        table = self._tables.get(domain)
        if table is None:
            table = self._tables[domain] = _DomainTable(self.dimension, self.coarse_dtype)
        return table

    def needs_encoding(self, domain: str, item_id: str, digest: bytes) -> bool:
        """True when the item is new or its text changed since it was encoded."""
        with self._lock:
            table = self._tables.get(domain)
            if table is None or item_id not in table.positions:
                return True
            position = table.positions[item_id]
            return table.digests[position] != digest or not table.active[position]

    def add(
        self, domain: str, item_ids: list[str], digests: list[bytes], vectors: np.ndarray
    ) -> None:
        """Store freshly encoded items, on disk first, then in memory."""
        if not item_ids:
            return
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        self.persist(domain, item_ids, digests, vectors)
        with self._lock:
            table = self._table(domain)
            indexed_before = table.rows
            written = [
                table.upsert(item_id, digest, vector)
                for item_id, digest, vector in zip(item_ids, digests, vectors, strict=True)
            ]
            table.index_rows(written, indexed_before)
            if self._wants_approximate(table):
                self._start_build(domain)

    def persist(
        self, domain: str, item_ids: list[str], digests: list[bytes], vectors: np.ndarray
    ) -> None:
        """Write items to disk only: what a bulk import does, and what ``add`` does first."""
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        batch = WriteBatch(raw_mode=True)
        for item_id, digest, vector in zip(item_ids, digests, vectors, strict=True):
            batch.put(self._key(domain, item_id), digest + vector.tobytes())
        self._db.write(batch)

    def remove(self, domain: str, item_id: str) -> None:
        """A catalog tombstone: the item is no longer recommended."""
        with self._lock:
            table = self._tables.get(domain)
            if table is not None:
                table.deactivate(item_id)
        self._db.delete(self._key(domain, item_id))

    def embedding(self, domain: str, item_id: str) -> np.ndarray | None:
        with self._lock:
            table = self._tables.get(domain)
            if table is None:
                return None
            position = table.positions.get(item_id)
            if position is None:
                return None
            return table.matrix[position].copy()

    def embeddings(self, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[bool]]:
        """The embeddings of the known ``(domain, item_id)`` keys stacked in order (one lock
        and one gather per domain), and which keys were known."""
        found: list[bool] = []
        wanted: dict[str, tuple[list[int], list[int]]] = {}  # domain -> (out rows, positions)
        rows = 0
        with self._lock:
            for domain, item_id in keys:
                table = self._tables.get(domain)
                position = table.positions.get(item_id) if table is not None else None
                found.append(position is not None)
                if position is not None:
                    out_rows, positions = wanted.setdefault(domain, ([], []))
                    out_rows.append(rows)
                    positions.append(position)
                    rows += 1
            out = np.empty((rows, self.dimension), dtype=np.float32)
            for domain, (out_rows, positions) in wanted.items():
                out[out_rows] = self._tables[domain].matrix[positions]
        return out, found

    def index(self, domain: str) -> DomainIndex:
        """A snapshot of the domain's items for scoring (no copy of the matrix)."""
        with self._lock:
            table = self._table(domain)
            rows = len(table.item_ids)
            return DomainIndex(
                domain=domain,
                item_ids=table.item_ids,
                positions=table.positions,
                matrix=table.matrix[:rows],
                active=table.active_snapshot(),
                coarse=table.coarse_snapshot(rows),
                approximate=table.approximate,
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {domain: int(table.active.sum()) for domain, table in self._tables.items()}

    def close(self) -> None:
        self._db.close()
