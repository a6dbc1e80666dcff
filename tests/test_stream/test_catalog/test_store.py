"""The item catalog's in-memory views: batched lookups and the low-precision scoring copy stay
in step with the float32 matrix through inserts, updates, growth, removals and a reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stream.catalog.store import ItemCatalog
from stream.core import int8_rows
from stream.core.int8_rows import Int8Matrix
from stream.core.scoring import COARSE_MIN_ITEMS, DomainIndex


def vectors(count: int, seed: int, dim: int = 8) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_batched_lookup_and_bfloat16_copy_follow_every_change(tmp_path: Path) -> None:
    catalog = ItemCatalog(tmp_path / "items", "fp", 8, torch.bfloat16)
    first = vectors(40, 0)  # more than the initial 16 rows: the tables grow twice
    catalog.add("books", [f"b{i}" for i in range(40)], [b"d" * 16] * 40, first)
    catalog.add("music", ["s1"], [b"d" * 16], vectors(1, 1))
    changed = vectors(1, 2)
    catalog.add("books", ["b3"], [b"e" * 16], changed)
    catalog.remove("books", "b5")

    keys = [("books", "b3"), ("music", "nope"), ("music", "s1"), ("films", "x"), ("books", "b0")]
    found_vectors, found = catalog.embeddings(keys)
    assert found == [True, False, True, False, True]
    np.testing.assert_array_equal(found_vectors[0], changed[0])
    assert found_vectors.shape == (3, 8)  # the known keys' rows, in order
    np.testing.assert_array_equal(found_vectors[1], catalog.embedding("music", "s1"))
    np.testing.assert_array_equal(found_vectors[2], first[0])

    index = catalog.index("books")
    assert index.coarse is not None and index.size == 40
    np.testing.assert_array_equal(
        index.coarse.float().numpy(),
        torch.from_numpy(index.matrix).bfloat16().float().numpy(),
    )
    assert not index.active[index.positions["b5"]]
    catalog.close()

    reloaded = ItemCatalog(tmp_path / "items", "fp", 8, torch.bfloat16)
    assert reloaded.load() == 40  # b5 was removed for good
    again = reloaded.index("books")
    assert again.coarse is not None
    np.testing.assert_array_equal(
        again.coarse.float().numpy(),
        torch.from_numpy(again.matrix).bfloat16().float().numpy(),
    )
    assert reloaded.embeddings([])[0].shape == (0, 8)
    reloaded.close()


def test_a_scoring_snapshot_keeps_its_active_rows_and_the_next_one_sees_every_change(
    tmp_path: Path,
) -> None:
    catalog = ItemCatalog(tmp_path / "items", "fp", 8)
    catalog.add("books", [f"b{i}" for i in range(20)], [b"d" * 16] * 20, vectors(20, 0))
    before = catalog.index("books")
    assert catalog.index("books").active is before.active  # unchanged: one copy, shared
    assert not before.active.flags.writeable

    catalog.remove("books", "b2")
    catalog.add("books", ["b20"], [b"d" * 16], vectors(1, 1))
    assert before.active.all() and len(before.active) == 20  # a snapshot does not move
    after = catalog.index("books")
    assert len(after.active) == 21 and not after.active[after.positions["b2"]]

    catalog.add("books", ["b2"], [b"e" * 16], vectors(1, 2))  # back in the catalog
    assert catalog.index("books").active.all()
    catalog.close()


def test_int8_copy_repacks_the_chunks_that_changed_and_keeps_old_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The packed int8 copy follows adds and changes chunk by chunk; a snapshot already handed
    to the scorer keeps scoring the rows it was taken with."""
    monkeypatch.setattr(int8_rows, "CHUNK_ROWS", 1_000)
    dim = 32
    catalog = ItemCatalog(tmp_path / "items", "fp", dim, torch.qint8)
    small = vectors(10, 0, dim)
    catalog.add("books", [f"b{i}" for i in range(10)], [b"d" * 16] * 10, small)
    assert catalog.index("books").coarse is None  # below COARSE_MIN_ITEMS: exact only
    rest = COARSE_MIN_ITEMS + 500 - 10
    catalog.add(
        "books", [f"b{i}" for i in range(10, 10 + rest)], [b"d" * 16] * rest, vectors(rest, 1, dim)
    )
    before = catalog.index("books")
    assert isinstance(before.coarse, Int8Matrix) and before.coarse.rows == before.size
    assert len(before.coarse.chunks) == 3
    queries = vectors(4, 2, dim)

    def error(index: DomainIndex) -> float:
        assert isinstance(index.coarse, Int8Matrix)
        approximate = index.coarse.scores(queries).numpy()
        return float(np.abs(approximate - queries @ index.matrix.T).max())

    assert error(before) < 0.03
    kept = before.coarse.scores(queries).numpy()
    changed = vectors(1, 3, dim)
    catalog.add("books", ["b1500"], [b"e" * 16], changed)  # in the second chunk
    after = catalog.index("books")
    assert after.coarse.chunks[0] is before.coarse.chunks[0]  # untouched: not packed again
    assert after.coarse.chunks[1] is not before.coarse.chunks[1]
    assert error(after) < 0.03
    np.testing.assert_array_equal(before.coarse.scores(queries).numpy(), kept)
    column = after.positions["b1500"]
    np.testing.assert_allclose(
        after.coarse.scores(queries).numpy()[:, column], queries @ changed[0], atol=0.03
    )
    catalog.close()
