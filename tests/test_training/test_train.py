"""Training: the model learns a cross-domain mapping the text cannot show, reproducibly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stream.model.item_space import ItemSpace
from stream.model.sasrec import SASRec, SASRecConfig
from stream.model.transfer import ModelConfig
from training.train import (
    TrainConfig,
    batch_size_for,
    build_examples,
    history_tensors,
    learning_rate_at,
    train_model,
)
from training.validation import (
    build_validation,
    ndcg_at_10,
    split_validation,
    validation_scores,
)

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


def linked_share(model: torch.nn.Module) -> float:
    """Share of a{i} histories whose best b item is b{i}."""
    history = np.full((ITEMS, 4), -1, dtype=np.int64)
    history[:, -1] = np.arange(ITEMS)  # a{i}
    tensor, mask = history_tensors(history, torch.device("cpu"))
    with torch.inference_mode():
        users = model.user_vectors(tensor, mask)
        items = model.item_vectors(torch.arange(ITEMS, 2 * ITEMS))
        best = (users @ items.T).argmax(dim=1).numpy()
    return float((best == np.arange(ITEMS)).mean())


def test_examples_predict_each_event_from_the_events_before_it() -> None:
    space = ItemSpace.from_ids({"a": ["x", "y"], "b": ["z"]})
    examples = build_examples(space, [[("a", "x"), ("a", "y"), ("b", "z")]], 3, 0.0, 0)
    assert examples.targets.tolist() == [1, 2]
    assert examples.histories.tolist() == [[-1, -1, 0], [-1, 0, 1]]


def test_trained_model_ranks_the_linked_item_first_and_is_reproducible() -> None:
    model, summary, space = _train(seed=3)
    assert summary["loss_per_epoch"][-1] < 0.5 * summary["loss_per_epoch"][0]
    assert linked_share(model) > 0.9

    _, again, _ = _train(seed=3)
    assert again["loss_per_epoch"] == summary["loss_per_epoch"]


def test_learning_rate_warms_up_then_decays_to_its_floor() -> None:
    config = TrainConfig(learning_rate=1e-3, warmup_share=0.1, final_lr_share=0.1)
    rates = [learning_rate_at(step, 100, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4)
    assert rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))
    assert rates[-1] == pytest.approx(1e-4, rel=0.01)


def test_smaller_data_trains_in_smaller_batches_down_to_the_floor() -> None:
    config = TrainConfig(batch_size=512, min_batch_size=128, min_steps_per_epoch=500)
    assert batch_size_for(363_489, config) == 512  # food-kitchen: 710 steps per epoch
    assert batch_size_for(187_862, config) == 256  # 367 steps at 512, 734 at 256
    assert batch_size_for(67_768, config) == 128  # 133 at 512, 530 at 128
    assert batch_size_for(1_000, config) == 128  # never below the floor
    assert batch_size_for(1_000, TrainConfig(min_steps_per_epoch=0)) == 512


def test_loss_is_reported_against_chance_and_a_run_that_learns_nothing_is_flagged() -> None:
    space, text, sequences = _world()
    config = ModelConfig(text_dim=32, dim=32, max_history=4, id_dropout=0.0)
    examples = build_examples(space, sequences, config.max_history, cold_share=0.5, seed=0)
    common = dict(epochs=2, batch_size=128, sampled_negatives=32, device="cpu")
    _, learned = train_model(space, text, examples, config, TrainConfig(**common), progress=False)
    _, stuck = train_model(
        space, text, examples, config, TrainConfig(learning_rate=1e-9, **common), progress=False
    )
    assert stuck["near_chance"] and stuck["loss_to_chance"] > 0.95
    assert not learned["near_chance"] and learned["loss_to_chance"] < 0.5
    _, plain = train_model(
        space,
        text,
        examples,
        config,
        TrainConfig(learning_rate=1e-9, popularity_correction=False, **common),
        progress=False,
    )
    # Uncorrected, chance is the log of the candidates: 128 in the batch and the 32 sampled
    # ones of the target's domain, less repeats of the target.
    assert 4.5 < plain["chance_loss_per_epoch"][0] <= math.log(128 + 32)


def test_validation_keeps_the_best_epoch_and_stops_when_it_no_longer_improves() -> None:
    space, text, sequences = _world()
    config = ModelConfig(text_dim=32, dim=32, max_history=4, id_dropout=0.0)
    training, held = split_validation(sequences, share=0.1, max_users=200, seed=0)
    assert len(held) == 200 and sum(len(s) for s in training) == 2 * 3_000 - 200
    validation = build_validation(space, held, config.max_history)
    examples = build_examples(space, training, config.max_history, cold_share=0.5, seed=0)
    train = TrainConfig(epochs=30, batch_size=128, sampled_negatives=32, patience=2, device="cpu")
    model, summary = train_model(
        space, text, examples, config, train, progress=False, validation=validation
    )
    per_epoch = [entry["score"] for entry in summary["validation"]["ndcg@10_per_epoch"]]
    best = summary["best_epoch"]
    assert per_epoch[best - 1] == max(per_epoch)
    assert summary["epochs"] < 30 and summary["epochs"] - best == 2  # stopped by patience
    again = validation_scores(model, space, validation, torch.device("cpu"))
    assert again["score"] == pytest.approx(per_epoch[best - 1], abs=1e-6)
    # Buying a{i} names b{i}: a learned model beats the popularity ranking by far.
    assert summary["validation"]["best"]["cold"] > 0.8
    assert summary["validation"]["popularity"]["cold"] < 0.2


def test_ndcg_ranks_ties_at_their_midpoint() -> None:
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    gains = ndcg_at_10(scores, torch.tensor([0, 0, 0]))
    assert gains.tolist() == pytest.approx([1.0, 1 / math.log2(3), 0.5])


def test_sasrec_learns_the_world_from_item_ids_alone() -> None:
    space, text, sequences = _world()
    config = SASRecConfig(dim=32, max_history=4, dropout=0.0)
    examples = build_examples(space, sequences, config.max_history, cold_share=0.5, seed=0)
    train = TrainConfig(epochs=6, batch_size=128, sampled_negatives=32, device="cpu")
    model, summary = train_model(space, text, examples, config, train, progress=False)
    assert isinstance(model, SASRec)
    assert summary["loss_per_epoch"][-1] < 0.5 * summary["loss_per_epoch"][0]
    assert linked_share(model) > 0.9
