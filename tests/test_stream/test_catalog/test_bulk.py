"""Imported embeddings land in the item store as the worker would have stored them (so the same
texts are not encoded again, changed ones are), and bad files are refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream.catalog.bulk import EmbeddingImportError, import_embeddings
from stream.catalog.store import ItemCatalog
from stream.core.items import item_text, text_digest
from stream.data.synthetic import synthetic_catalog, write_synthetic_dataset

DOMAINS = {"books", "music"}


def _folder(tmp_path: Path, count: int = 300) -> tuple[Path, np.ndarray]:
    catalog = synthetic_catalog(count, ("books", "music"), seed=4)
    folder = write_synthetic_dataset(catalog, tmp_path / "synthetic")
    vectors = catalog.vectors(16, seed=4) * 3.0  # not unit length: the import normalizes
    np.save(folder / "vectors.npy", vectors, allow_pickle=False)
    return folder, vectors


def test_imported_vectors_are_found_and_same_texts_need_no_encoding(tmp_path: Path) -> None:
    folder, vectors = _folder(tmp_path)
    store = tmp_path / "state" / "items"
    stats = import_embeddings(
        store, "fp", 16, folder / "items.jsonl", folder / "vectors.npy", DOMAINS
    )
    assert stats.items == 300 and stats.domains == {"books": 150, "music": 150}
    catalog = ItemCatalog(store, "fp", 16)
    assert catalog.load() == 300
    lines = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]
    for row, vector in zip(lines[:20], vectors[:20], strict=True):
        stored = catalog.embedding(row["domain"], row["item_id"])
        np.testing.assert_allclose(stored, vector / np.linalg.norm(vector), rtol=1e-6)
        digest = text_digest(item_text(row["title"], row["text"]))
        assert not catalog.needs_encoding(row["domain"], row["item_id"], digest)
        changed = text_digest(item_text(row["title"], row["text"] + " New edition."))
        assert catalog.needs_encoding(row["domain"], row["item_id"], changed)
    catalog.close()
    # Another encoder's fingerprint sees none of them.
    other = ItemCatalog(store, "another-fp", 16)
    assert other.load() == 0
    other.close()


def test_bad_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    folder, vectors = _folder(tmp_path, 20)
    items, store = folder / "items.jsonl", tmp_path / "items"

    def refused(path: Path, dimension: int = 16, domains: set[str] = DOMAINS) -> str:
        with pytest.raises(EmbeddingImportError) as caught:
            import_embeddings(store, "fp", dimension, items, path, domains)
        return str(caught.value)

    assert "dimensions" in refused(folder / "vectors.npy", dimension=32)
    assert "domain 'music' is not configured" in refused(folder / "vectors.npy", domains={"books"})
    np.save(tmp_path / "short.npy", vectors[:5], allow_pickle=False)
    assert "has 20 items but" in refused(tmp_path / "short.npy")
    broken = vectors.copy()
    broken[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", broken, allow_pickle=False)
    assert "row 7 is not finite" in refused(tmp_path / "nan.npy")
    np.save(tmp_path / "objects.npy", np.array([[{"a": 1}] * 16] * 20, dtype=object))
    assert "not a .npy array of numbers" in refused(tmp_path / "objects.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    assert "not a .npy array of numbers" in refused(tmp_path / "text.npy")
