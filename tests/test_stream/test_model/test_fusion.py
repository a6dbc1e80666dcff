"""The fused model: a score is the text tower's plus the weighed ID tower's, for the weight of
the target domain and of whether the user has history there; it survives an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from stream.model.artifacts import (
    MANIFEST,
    WEIGHTS,
    ArtifactRefused,
    load_artifact,
    save_artifact,
    sha256_of,
)
from stream.model.fusion import COLD, WARM, FusedModel
from stream.model.item_space import ItemSpace
from stream.model.projection import project_items
from stream.model.sasrec import SASRec, SASRecConfig
from stream.model.transfer import ModelConfig, TransferModel, history_tensors, right_aligned

SPACE = ItemSpace.from_ids({"books": ["b1", "b2", "b3"], "movies": ["m1", "m2", "m3", "m4"]})
WEIGHTS_BY_SLOT = torch.tensor([[0.5, 2.0], [3.0, 0.0]])  # books cold/warm, movies cold/warm


TEXT = np.random.default_rng(0).standard_normal((SPACE.size, 16)).astype(np.float32)


def fused_model() -> FusedModel:
    torch.manual_seed(0)
    text = TEXT
    transfer = TransferModel.for_space(ModelConfig(text_dim=16, dim=8, max_history=4), SPACE, text)
    # A trained head, so that the transfer tower's user is more than the mean of its items.
    torch.nn.init.normal_(transfer.user_out.weight, std=0.3)
    sequence = SASRec(SASRecConfig(dim=6, max_history=4), SPACE.size)
    return FusedModel(transfer, sequence, WEIGHTS_BY_SLOT).eval()


def test_a_score_adds_the_id_tower_weighed_by_domain_and_history() -> None:
    model = fused_model()
    book, movie = SPACE.index[("books", "b1")], SPACE.index[("movies", "m2")]
    histories = right_aligned([[book], [book, movie], [movie]], 4)
    tensor, mask = history_tensors(histories, torch.device("cpu"))
    movies = torch.arange(SPACE.domain_slice("movies").start, SPACE.domain_slice("movies").stop)
    with torch.inference_mode():
        fused = (
            model.queries(tensor, mask, SPACE.domains.index("movies"))
            @ model.item_vectors(movies).T
        )
        text = model.transfer.user_vectors(tensor, mask) @ model.transfer.item_vectors(movies).T
        ids = model.sequence.user_vectors(tensor, mask) @ model.sequence.item_vectors(movies).T
    movies_number = SPACE.domains.index("movies")
    # The first user has no movie history (cold), the others have some (warm).
    cold, warm = WEIGHTS_BY_SLOT[movies_number, COLD], WEIGHTS_BY_SLOT[movies_number, WARM]
    expected = text + torch.stack([cold, warm, warm]).unsqueeze(-1) * ids
    assert torch.allclose(fused, expected, atol=1e-6)
    assert not torch.allclose(fused[0], text[0], atol=1e-3)  # the ID tower did count
    assert torch.allclose(fused[1:], text[1:], atol=1e-6)  # warm movies weight is 0


def test_a_domain_the_model_never_saw_gets_the_text_tower_alone() -> None:
    model = fused_model()
    tensor, mask = history_tensors(right_aligned([[0, 4]], 4), torch.device("cpu"))
    with torch.inference_mode():
        queries = model.queries(tensor, mask, -1)
    assert torch.all(queries[:, model.transfer.config.dim :] == 0)


def test_new_items_get_the_text_half_only() -> None:
    model = fused_model()
    text = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    matrix = project_items(model, SPACE, "movies", ["m1", "m-new"], text)
    assert matrix.shape == (2, 8 + 6)
    with torch.inference_mode():
        known = model.item_vectors(torch.tensor([SPACE.index[("movies", "m1")]])).numpy()
    np.testing.assert_allclose(matrix[0], known[0], atol=1e-6)
    assert np.all(matrix[1, 8:] == 0) and np.linalg.norm(matrix[1]) == pytest.approx(1.0)


def test_explained_queries_decompose_the_text_half_and_leave_the_id_half_unattributed() -> None:
    model = fused_model()
    tensor, mask = history_tensors(right_aligned([[0, 4, 1]], 4), torch.device("cpu"))
    number = SPACE.domains.index("books")
    with torch.inference_mode():
        queries, terms = model.explained_queries(tensor, mask, number)
        parts, constant = model.transfer.user_parts(tensor, mask)
        norm = (parts.sum(dim=1) + constant).norm(dim=-1)
        text = model.transfer.user_vectors(tensor, mask)
        again = model.queries(tensor, mask, number)
    assert torch.allclose(queries, again, atol=1e-6)
    dim = model.transfer.config.dim
    assert torch.all(terms[..., dim:] == 0)
    # Each position's term is its part of the text query: parts / |parts summed + constant|.
    assert torch.allclose(terms[..., :dim], parts / norm[:, None, None], atol=1e-6)
    assert torch.allclose(queries[:, :dim], text, atol=1e-6)


@pytest.fixture
def fused_artifact(tmp_path: Path) -> Path:
    return save_artifact(
        fused_model(),
        SPACE,
        tmp_path / "store" / "f1",
        version="f1",
        parent_version=None,
        train_config={"epochs": 1},
        data_window={},
        metrics={},
    )


def test_a_fused_artifact_loads_back_with_its_weights(fused_artifact: Path) -> None:
    manifest = json.loads((fused_artifact / MANIFEST).read_text())
    assert manifest["sequence_config"]["dim"] == 6
    loaded = load_artifact(fused_artifact, TEXT)
    assert isinstance(loaded.model, FusedModel)
    assert torch.equal(loaded.model.weights, WEIGHTS_BY_SLOT)
    original = fused_model()
    tensor, mask = history_tensors(right_aligned([[0, 5]], 4), torch.device("cpu"))
    with torch.inference_mode():
        for number in range(len(SPACE.domains)):
            assert torch.allclose(
                loaded.model.queries(tensor, mask, number)
                @ loaded.model.item_vectors(torch.arange(SPACE.size)).T,
                original.queries(tensor, mask, number)
                @ original.item_vectors(torch.arange(SPACE.size)).T,
                atol=1e-6,
            )


def _rewrite(folder: Path, change) -> None:
    weights = load_file(str(folder / WEIGHTS))
    change(weights)
    save_file(weights, str(folder / WEIGHTS))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["sha256"][WEIGHTS] = sha256_of(folder / WEIGHTS)
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda w: w.__setitem__("fusion.weights", torch.full((2, 2), float("nan"))), "non_finite"),
        (lambda w: w.__setitem__("fusion.weights", torch.ones(3, 2)), "shape_mismatch"),
        (lambda w: w.pop("sequence.item_id.weight"), "shape_mismatch"),
    ],
)
def test_bad_fused_weights_are_refused(fused_artifact: Path, change, reason: str) -> None:
    _rewrite(fused_artifact, change)
    with pytest.raises(ArtifactRefused) as refused:
        load_artifact(fused_artifact)
    assert refused.value.reason == reason
