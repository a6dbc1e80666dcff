"""A real trained model version of the bundled sample, for the tests and benchmarks that need
one to announce (hot swap, explanations)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from stream.catalog.encoder import TextEncoder
from stream.core.items import item_text
from stream.data.sample import sample_interactions, sample_items
from stream.model.artifacts import save_artifact
from stream.model.item_space import ItemSpace
from stream.model.transfer import ModelConfig
from training.fusion import train_fused
from training.train import TrainConfig, build_examples, train_model
from training.validation import build_validation, split_validation


def train_sample_artifact(
    store: Path,
    version: str,
    *,
    encoder: TextEncoder | None = None,
    text: np.ndarray | None = None,
    epochs: int = 2,
    fused: bool = True,
) -> Path:
    """A small trained model of the bundled sample catalog, saved as an artifact in ``store``.

    The hot-swap test and this benchmark both need a real version to announce. ``text``: the
    sample items' text vectors in item-space order (:func:`space_text`); without it they are
    encoded with ``encoder`` (default: the bundled one). ``fused``: the text and ID towers,
    as the trainer makes; else the text tower alone (an artifact of the earlier kind).
    """
    items = sample_items()
    by_domain: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_domain[item["domain"]].append(item["item_id"])
    space = ItemSpace.from_ids(dict(by_domain))
    if text is None:
        texts = {(i["domain"], i["item_id"]): item_text(i["title"], i["text"]) for i in items}
        ordered = [texts[(d, item)] for d in space.domains for item in space.item_ids[d]]
        text = (encoder or TextEncoder()).encode(ordered)
    per_user: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in sample_interactions():
        per_user[row["user_id"]].append((row["domain"], row["item_id"]))
    config = ModelConfig(dim=32, max_history=8)
    sequences, held = split_validation(list(per_user.values()), seed=0)
    examples = build_examples(space, sequences, 8, 0.5, 0)
    train = TrainConfig(epochs=epochs, batch_size=128)
    model: torch.nn.Module
    if fused:  # what the trainer serves (stream.model.fusion)
        validation = build_validation(space, held, 8)
        model, _ = train_fused(space, text, examples, config, train, validation, progress=False)
    else:
        model, _ = train_model(space, text, examples, config, train, progress=False)
    return save_artifact(
        model,
        space,
        store / version,
        version=version,
        parent_version=None,
        train_config={"epochs": epochs},
        data_window={"source": "sample"},
        metrics={"loss": 0.0},
    )


def space_text(vectors: dict[tuple[str, str], np.ndarray]) -> np.ndarray:
    """The sample vectors in the order of the item space ``train_sample_artifact`` builds."""
    by_domain: dict[str, list[str]] = defaultdict(list)
    for item in sample_items():
        by_domain[item["domain"]].append(item["item_id"])
    space = ItemSpace.from_ids(dict(by_domain))
    return np.stack([vectors[(d, item)] for d in space.domains for item in space.item_ids[d]])
