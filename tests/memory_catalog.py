"""Item embeddings held in a dict: the processor's catalog interface without RocksDB, for tests
of pure processing logic."""

from __future__ import annotations

import numpy as np

from stream.core.scoring import DomainIndex


class MemoryCatalog:
    """``vectors``: (domain, item_id) -> L2-normalized embedding."""

    def __init__(self, vectors: dict[tuple[str, str], np.ndarray]) -> None:
        self.vectors = vectors
        self.approximate = None  # every domain is scored exactly
        self.items: dict[str, list[str]] = {}
        for domain, item in vectors:
            self.items.setdefault(domain, []).append(item)

    @classmethod
    def random(cls, items: dict[str, list[str]], dim: int = 8, seed: int = 0) -> MemoryCatalog:
        rng = np.random.default_rng(seed)
        vectors = {}
        for domain, ids in items.items():
            for item in ids:
                vector = rng.normal(size=dim).astype(np.float32)
                vectors[(domain, item)] = vector / np.linalg.norm(vector)
        return cls(vectors)

    def embedding(self, domain: str, item_id: str) -> np.ndarray | None:
        return self.vectors.get((domain, item_id))

    def embeddings(self, keys: list[tuple[str, str]]) -> tuple[np.ndarray, list[bool]]:
        found = [key in self.vectors for key in keys]
        rows = [self.vectors[key] for key in keys if key in self.vectors]
        dimension = len(next(iter(self.vectors.values())))
        return np.stack(rows) if rows else np.zeros((0, dimension), np.float32), found

    def add(self, domain, item_ids, digests, vectors) -> None:  # noqa: ANN001
        raise AssertionError("no inline items in these tests")

    def index(self, domain: str) -> DomainIndex:
        ids = self.items[domain]
        matrix = np.stack([self.vectors[(domain, i)] for i in ids])
        positions = {item: n for n, item in enumerate(ids)}
        return DomainIndex(domain, ids, positions, matrix, np.ones(len(ids), bool))
