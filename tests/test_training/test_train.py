"""Training: the model learns a cross-domain mapping the text cannot show, reproducibly."""

from __future__ import annotations

import numpy as np
import torch

from training.item_space import ItemSpace
from training.model import ModelConfig
from training.train import TrainConfig, build_examples, history_tensors, train_model

ITEMS = 60


def _world() -> tuple[ItemSpace, np.ndarray, list[list[tuple[str, str]]]]:
    """Buying a{i} predicts b{i}; texts are random, so only training can find the link."""
    rng = np.random.default_rng(0)
    space = ItemSpace.from_ids(
        {"a": [f"a{i}" for i in range(ITEMS)], "b": [f"b{i}" for i in range(ITEMS)]}
    )
    text = rng.standard_normal((2 * ITEMS, 32)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    sequences = [[("a", f"a{i}"), ("b", f"b{i}")] for i in rng.integers(0, ITEMS, 3_000)]
    return space, text, sequences


def _train(seed: int) -> tuple[torch.nn.Module, dict, ItemSpace]:
    space, text, sequences = _world()
    config = ModelConfig(text_dim=32, dim=32, max_history=4, id_dropout=0.0)
    examples = build_examples(space, sequences, config.max_history, cold_share=0.5, seed=seed)
    train = TrainConfig(epochs=6, batch_size=128, sampled_negatives=32, seed=seed, device="cpu")
    model, summary = train_model(space, text, examples, config, train, progress=False)
    return model, summary, space


def test_examples_predict_each_event_from_the_events_before_it() -> None:
    space = ItemSpace.from_ids({"a": ["x", "y"], "b": ["z"]})
    examples = build_examples(space, [[("a", "x"), ("a", "y"), ("b", "z")]], 3, 0.0, 0)
    assert examples.targets.tolist() == [1, 2]
    assert examples.histories.tolist() == [[-1, -1, 0], [-1, 0, 1]]


def test_trained_model_ranks_the_linked_item_first_and_is_reproducible() -> None:
    model, summary, space = _train(seed=3)
    assert summary["loss_per_epoch"][-1] < 0.5 * summary["loss_per_epoch"][0]
    history = np.full((ITEMS, 4), -1, dtype=np.int64)
    history[:, -1] = np.arange(ITEMS)  # a{i}
    tensor, mask = history_tensors(history, torch.device("cpu"))
    with torch.inference_mode():
        users = model.user_vectors(tensor, mask)
        items = model.item_vectors(torch.arange(ITEMS, 2 * ITEMS))
        best = (users @ items.T).argmax(dim=1).numpy()
    assert (best == np.arange(ITEMS)).mean() > 0.9

    _, again, _ = _train(seed=3)
    assert again["loss_per_epoch"] == summary["loss_per_epoch"]
