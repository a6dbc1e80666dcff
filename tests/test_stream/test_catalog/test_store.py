"""The item catalog's in-memory views: batched lookups and the low-precision scoring copy stay
in step with the float32 matrix through inserts, updates, growth, removals and a reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stream.catalog.store import ItemCatalog


def vectors(count: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((count, 8)).astype(np.float32)
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
