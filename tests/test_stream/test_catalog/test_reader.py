"""The catalog reader on a real broker and a real RocksDB item store: every valid item gets a
vector once, changed text is encoded again, a tombstone withdraws an item, a bad record goes
to the dead letters, and a restart encodes nothing twice."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from schemas import SCHEMA_VERSION, CatalogItem, DeadLetter, EventValidator
from stream.catalog.reader import CatalogReader
from stream.catalog.store import ItemCatalog
from stream.kafka.transport import OutgoingMessage
from stream.settings import Settings
from testkit.deployment import produce


class CountingEncoder:
    """Deterministic vectors from a text's hash, and a record of what was encoded: what the
    reader asks of an encoder, without the language model's start-up time."""

    fingerprint = "counting-v1"
    dimension = 8

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded.extend(texts)
        rows = [
            np.frombuffer(hashlib.sha256(text.encode()).digest()[:32], dtype=np.int32)
            for text in texts
        ]
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimension)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _item(settings: Settings, item_id: str, title: str, domain: str = "books") -> OutgoingMessage:
    item = CatalogItem(
        schema_version=SCHEMA_VERSION, item_id=item_id, domain=domain, title=title, text=""
    )
    return OutgoingMessage(
        settings.topics.catalog(domain), item_id.encode(), item.model_dump_json().encode()
    )


def _read(settings: Settings, store: Path, encoder: CountingEncoder) -> tuple[ItemCatalog, list]:
    letters: list[DeadLetter] = []
    catalog = ItemCatalog(store, encoder.fingerprint, encoder.dimension)
    catalog.load()
    reader = CatalogReader(
        settings,
        catalog,
        encoder,
        EventValidator(settings.domains),
        letters.extend,  # type: ignore[arg-type]
    )
    try:
        reader.assign()
        reader.catch_up(timeout=60.0)
    finally:
        reader.close()
    return catalog, letters


def test_the_catalog_is_read_once_and_kept_current(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    produce(
        settings,
        [
            _item(settings, "b1", "A space opera"),
            _item(settings, "b2", "A cookbook"),
            _item(settings, "m1", "A heist film", domain="movies"),
            OutgoingMessage(settings.topics.catalog("books"), b"bad", b"{not json"),
        ],
    )
    encoder = CountingEncoder()
    catalog, letters = _read(settings, tmp_path / "items", encoder)
    assert catalog.counts() == {"books": 2, "movies": 1}
    assert sorted(encoder.encoded) == ["A cookbook", "A heist film", "A space opera"]
    assert [letter.reason for letter in letters] == ["invalid_json"]
    catalog.close()

    produce(
        settings,
        [
            _item(settings, "b2", "A cookbook of soups"),  # changed text
            OutgoingMessage(settings.topics.catalog("books"), b"b1", None),  # withdrawn
        ],
    )
    restarted = CountingEncoder()
    catalog, _ = _read(settings, tmp_path / "items", restarted)
    assert restarted.encoded == ["A cookbook of soups"], "a restart encodes only what changed"
    books = catalog.index("books")
    active = [item for item, on in zip(books.item_ids, books.active, strict=True) if on]
    assert active == ["b2"], "a withdrawn item is never recommended again"
    assert catalog.counts() == {"books": 1, "movies": 1}
    catalog.close()
