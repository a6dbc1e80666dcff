"""Fitting the fusion: the ID tower gets weight where it ranks held-out users better, none
where it is noise, and the fused model ranks them at least as well as its text tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream.model.fusion import COLD, WARM
from stream.model.item_space import ItemSpace
from stream.model.sasrec import SASRec, SASRecConfig
from stream.model.transfer import ModelConfig, TransferModel
from training import fusion
from training.fusion import fit_fusion, train_fused
from training.train import TrainConfig, build_examples, train_model
from training.validation import build_validation, split_validation, validation_scores

ITEMS = 40


def _world() -> tuple[ItemSpace, np.ndarray, list[list[tuple[str, str]]]]:
    """Buying a{i} predicts b{i}, and b{i} predicts a{i+1}; texts are random."""
    rng = np.random.default_rng(0)
    space = ItemSpace.from_ids(
        {"a": [f"a{i}" for i in range(ITEMS)], "b": [f"b{i}" for i in range(ITEMS)]}
    )
    text = rng.standard_normal((2 * ITEMS, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    sequences = [
        [("a", f"a{i}"), ("b", f"b{i}"), ("a", f"a{(i + 1) % ITEMS}")]
        for i in rng.integers(0, ITEMS, 2_000)
    ]
    return space, text, sequences


TRAIN = TrainConfig(epochs=4, batch_size=128, sampled_negatives=16, device="cpu")
MODEL = ModelConfig(text_dim=16, dim=16, max_history=4, id_dropout=0.0)
SEQUENCE = SASRecConfig(dim=16, max_history=4, dropout=0.0)


@pytest.fixture(scope="module")
def world():
    space, text, sequences = _world()
    training, held = split_validation(sequences, share=0.1, seed=0)
    validation = build_validation(space, held, 4)
    examples = build_examples(space, training, 4, cold_share=0.5, seed=0)
    return space, text, examples, validation


def _fitted_weights(fit: dict) -> dict[tuple[str, str], float]:
    return {
        (domain, slot): record["weight"]
        for domain, slots in fit["weights"].items()
        for slot, record in slots.items()
        if record["users"] > 0
    }


def test_an_untrained_id_tower_gets_no_weight(world) -> None:
    space, text, examples, validation = world
    transfer, _ = train_model(space, text, examples, MODEL, TRAIN, progress=False)
    assert isinstance(transfer, TransferModel)
    torch.manual_seed(0)
    noise = SASRec(SEQUENCE, space.size).eval()
    fused, fit = fit_fusion(transfer, noise, space, validation)
    weights = _fitted_weights(fit)
    assert weights and set(weights.values()) == {0.0}
    assert torch.all(fused.weights[fused.weights != 1.0] == 0.0)


def test_an_id_tower_beside_an_untrained_text_tower_gets_the_most_weight(world) -> None:
    space, text, examples, validation = world
    sequence, _ = train_model(space, text, examples, SEQUENCE, TRAIN, progress=False)
    assert isinstance(sequence, SASRec)
    torch.manual_seed(0)
    untrained = TransferModel.for_space(MODEL, space, text).eval()
    fused, fit = fit_fusion(untrained, sequence, space, validation)
    weights = _fitted_weights(fit)
    # The text tower is noise: the ID tower dominates (large weights rank alike here).
    assert weights and min(weights.values()) >= 2.0
    for slots in fit["weights"].values():
        for record in slots.values():
            if record["users"]:
                curve = record["ndcg@10"]
                assert curve[str(record["best_weight"])] == max(curve.values())
                if record["fitted_on"] == "slot":  # enough users of its own: the best
                    assert record["rule"] == "best"
                    assert record["weight"] == record["best_weight"]
    # Held-out users' last events are all in "a": "b" has no one of its own and takes the
    # weights fitted on its group (cold or warm) across domains, here a's users.
    assert fit["weights"]["b"]["cold"]["users"] == 0
    assert fit["weights"]["a"]["cold"]["fitted_on"] == "slot"
    assert fit["weights"]["b"]["cold"]["fitted_on"] == "group"
    number = space.domains.index("a")
    assert fused.weights[number, COLD] == weights[("a", "cold")]
    assert fused.weights[number, WARM] == weights[("a", "warm")]
    assert torch.equal(fused.weights[space.domains.index("b")], fused.weights[number])


def test_slots_with_few_held_out_users_fit_on_their_group(world, monkeypatch) -> None:
    space, text, examples, validation = world
    sequence, _ = train_model(space, text, examples, SEQUENCE, TRAIN, progress=False)
    transfer, _ = train_model(space, text, examples, MODEL, TRAIN, progress=False)
    assert isinstance(sequence, SASRec) and isinstance(transfer, TransferModel)
    _, own = fit_fusion(transfer, sequence, space, validation)
    monkeypatch.setattr(fusion, "MIN_SLOT_USERS", 10**9)
    fused, borrowed = fit_fusion(transfer, sequence, space, validation)
    for domain, slots in borrowed["weights"].items():
        for name, record in slots.items():
            assert record["fitted_on"] == "group"
            assert record["users"] == own["weights"][domain][name]["users"]
    # Every domain of a group gets the one weight fitted on all the group's users.
    for slot, name in ((COLD, "cold"), (WARM, "warm")):
        assert len(set(fused.weights[:, slot].tolist())) == 1
        assert fused.weights[0, slot] == borrowed["weights"]["a"][name]["weight"]
        record = borrowed["weights"]["a"][name]
        curve = record["ndcg@10"]
        assert curve[str(record["best_weight"])] == max(curve.values())
        # Fitted on a group: the weight kept trails the best by at most one standard error.
        assert record["rule"] == "one_standard_error"
        lag = curve[str(record["best_weight"])] - curve[str(record["weight"])]
        assert lag <= record["standard_error"] + 1e-5


def test_trained_fusion_ranks_at_least_as_well_as_its_text_tower(world) -> None:
    space, text, examples, validation = world
    fused, summary = train_fused(space, text, examples, MODEL, TRAIN, validation, progress=False)
    text_alone = validation_scores(fused.transfer, space, validation, torch.device("cpu"))
    assert summary["fusion"]["validation"]["score"] >= text_alone["score"] - 1e-9
    assert summary["sasrec"]["examples"] == summary["examples"]
    assert summary["fusion"]["validation"]["score"] > summary["validation"]["popularity"]["score"]


def test_the_preferred_order_tries_every_weight_from_the_plain_sum_outwards() -> None:
    assert sorted(fusion.PREFERRED) == sorted(fusion.WEIGHTS)
    assert fusion.PREFERRED[0] == 1.0
