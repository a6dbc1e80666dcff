"""A synthetic catalog of any size, with item texts and vectors that agree, for load tests.

A million real item texts cannot be shipped, and encoding a million texts takes more than an
hour on two CPU cores, so the large-catalog benchmarks need items whose vectors come without
the encoder yet behave like an encoder's: items that share words lie close. Each item is built
from the sample dataset's word lists: a genre, title words, a describing adjective, a subject,
a setting and a theme of that genre, plus a brand and a model number drawn from a large pool
(what makes real product texts distinct). Its text names exactly those parts, and its vector is
the normalized sum of one fixed random vector per part, so two items' cosine grows with the
parts they share, as an encoder's does with shared meaning.

The vectors stand in for the encoder's: a worker gets them through ``xdrec catalog import``
(``stream.catalog.bulk``), the documented path for embeddings computed elsewhere, and then
encodes nothing when the same texts arrive on the catalog topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.data.dataset import write_jsonl
from stream.data.sample import GENRE_WORDS, GENRES

# The word lists an item's parts come from, in text order.
_PARTS = ("title_adj", "title_noun", "title_place", "adj", "subjects", "settings", "themes")
BRANDS = 5_000
MODELS = 50_000


@dataclass(frozen=True)
class SyntheticCatalog:
    """``count`` items: ids, domains, titles, texts, and the parts each is made of."""

    item_ids: list[str]
    domains: list[str]
    titles: list[str]
    texts: list[str]
    parts: np.ndarray  # (count, parts) int64: row of each part in the part vector table
    part_count: int

    def vectors(self, dimension: int, seed: int = 0) -> np.ndarray:
        """Unit vectors, the normalized sum of each item's part vectors (float32)."""
        table = np.random.default_rng(seed).standard_normal(
            (self.part_count, dimension), dtype=np.float32
        )
        out = np.zeros((len(self.parts), dimension), dtype=np.float32)
        for start in range(0, len(self.parts), 65_536):
            block = self.parts[start : start + 65_536]
            summed = table[block].sum(axis=1)
            summed /= np.linalg.norm(summed, axis=1, keepdims=True)
            out[start : start + len(block)] = summed
        return out


def synthetic_catalog(
    count: int, domains: tuple[str, ...] = ("books",), seed: int = 0
) -> SyntheticCatalog:
    """``count`` items spread evenly over ``domains``; the same arguments give the same catalog."""
    rng = np.random.default_rng(seed)
    genres = list(GENRES)
    words = {part: [GENRE_WORDS[genre][part] for genre in genres] for part in _PARTS}
    # Every (genre, part, word) and every brand and model number gets its own part row.
    offsets: dict[tuple[int, str], int] = {}
    rows = 0
    for number, _ in enumerate(genres):
        for part in _PARTS:
            offsets[(number, part)] = rows
            rows += len(words[part][number])
    brand_offset, model_offset = rows, rows + BRANDS
    part_count = rows + BRANDS + MODELS

    genre = rng.integers(0, len(genres), count)
    picks = {}
    for part in _PARTS:
        lengths = np.array([len(choices) for choices in words[part]])
        picks[part] = (rng.random(count) * lengths[genre]).astype(np.int64)
    brand = rng.integers(0, BRANDS, count)
    model = rng.integers(0, MODELS, count)
    parts = np.empty((count, len(_PARTS) + 2), dtype=np.int64)
    base = np.array([[offsets[(g, part)] for part in _PARTS] for g in range(len(genres))])
    for column, part in enumerate(_PARTS):
        parts[:, column] = base[genre, column] + picks[part]
    parts[:, -2] = brand_offset + brand
    parts[:, -1] = model_offset + model

    item_ids, item_domains, titles, texts = [], [], [], []
    for n in range(count):
        g = int(genre[n])
        chosen = {part: words[part][g][int(picks[part][n])] for part in _PARTS}
        domain = domains[n % len(domains)]
        title = f"{chosen['title_adj']} {chosen['title_noun']} of {chosen['title_place']}"
        text = (
            f"A {chosen['adj']} story of {chosen['subjects']} {chosen['settings']}, about "
            f"{chosen['themes']}. Brand B{int(brand[n]):04d}, model M{int(model[n]):05d}."
        )
        item_ids.append(f"{domain}-s{n:07d}")
        item_domains.append(domain)
        titles.append(title)
        texts.append(text)
    return SyntheticCatalog(item_ids, item_domains, titles, texts, parts, part_count)


def write_synthetic_dataset(catalog: SyntheticCatalog, directory: Path) -> Path:
    """The catalog as a dataset folder without interactions (``xdrec replay --dataset DIR
    --no-events`` publishes it to the catalog topics)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(
        directory / "items.jsonl",
        (
            {"item_id": item_id, "domain": domain, "title": title, "text": text}
            for item_id, domain, title, text in zip(
                catalog.item_ids, catalog.domains, catalog.titles, catalog.texts, strict=True
            )
        ),
    )
    (directory / "interactions.jsonl").write_text("")
    (directory / "splits.json").write_text("{}")
    return directory
