"""Artifacts: a saved model loads back equal; every hostile artifact is refused by name."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from stream.model.artifacts import (
    ITEMS,
    MANIFEST,
    WEIGHTS,
    ArtifactRefused,
    LoadedModel,
    LoadedPrior,
    load_artifact,
    load_version,
    save_artifact,
    save_prior,
    sha256_of,
)
from stream.model.item_space import ItemSpace
from stream.model.prior import PopularityPrior
from stream.model.store import ModelStore
from stream.model.transfer import ModelConfig
from training.train import new_model

CONFIG = ModelConfig(text_dim=16, dim=8, max_history=4)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    space = ItemSpace.from_ids({"books": ["b1", "b2", "b3"], "movies": ["m1", "m2"]})
    text = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    model = new_model(space, text, CONFIG)
    return save_artifact(
        model,
        space,
        tmp_path / "store" / "v1",
        version="v1",
        parent_version=None,
        train_config={"epochs": 1},
        data_window={"start": 0.0, "end": 1.0},
        metrics={"ndcg@10": 0.1},
    )


PRIOR = PopularityPrior({"books": {"b1": 3.0, "b2": 1.0}, "movies": {"m1": 2.0}}, 100.0, 0.5)


@pytest.fixture
def prior_artifact(tmp_path: Path) -> Path:
    return save_prior(
        PRIOR,
        tmp_path / "store" / "p1",
        version="p1",
        parent_version=None,
        data_window={"events": 6},
        metrics={"cold.ndcg@10": 0.1},
        fit={},
    )


def _rewrite_weights(folder: Path, change) -> None:
    weights = load_file(str(folder / WEIGHTS))
    change(weights)
    save_file(weights, str(folder / WEIGHTS))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["sha256"][WEIGHTS] = sha256_of(folder / WEIGHTS)  # a consistent but bad artifact
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_saved_artifact_loads_back(artifact: Path) -> None:
    loaded = load_artifact(artifact)
    assert loaded.version == "v1"
    assert loaded.space.item_ids == {"books": ["b1", "b2", "b3"], "movies": ["m1", "m2"]}
    saved = load_file(str(artifact / WEIGHTS))
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, saved[name])


def test_sha256_mismatch_is_refused(artifact: Path) -> None:
    weights = load_file(str(artifact / WEIGHTS))
    weights["item_id.weight"] += 1.0
    save_file(weights, str(artifact / WEIGHTS))
    with pytest.raises(ArtifactRefused) as refused:
        load_artifact(artifact)
    assert refused.value.reason == "sha256_mismatch"


def test_pickle_named_safetensors_is_refused_without_running_it(artifact: Path) -> None:
    marker = artifact / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (artifact / WEIGHTS).write_bytes(pickle.dumps(Payload()))
    _rewrite_manifest_sha(artifact)
    with pytest.raises(ArtifactRefused) as refused:
        load_artifact(artifact)
    assert refused.value.reason == "not_safetensors"
    assert not marker.exists()


def _rewrite_manifest_sha(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["sha256"][WEIGHTS] = sha256_of(folder / WEIGHTS)
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("which", "change", "reason"),
    [
        (
            "artifact",
            lambda w: w.__setitem__("item_id.weight", torch.full((5, 8), float("nan"))),
            "non_finite",
        ),
        (
            "artifact",
            lambda w: w.__setitem__("item_id.weight", torch.zeros((6, 8))),
            "shape_mismatch",
        ),
        (
            "artifact",
            lambda w: w.__setitem__("item_id.weight", torch.zeros((5, 8), dtype=torch.float16)),
            "dtype_mismatch",
        ),
        ("artifact", lambda w: w.pop("gate.weight"), "shape_mismatch"),
        (
            "artifact",
            lambda w: w.__setitem__(
                "experts.weight", torch.full_like(w["experts.weight"], float("inf"))
            ),
            "non_finite",
        ),
        (
            "prior_artifact",
            lambda w: w.__setitem__("counts.books", torch.tensor([3.0, -1.0])),
            "non_finite",
        ),
        (
            "prior_artifact",
            lambda w: w.__setitem__("counts.books", torch.tensor([3.0, float("nan")])),
            "non_finite",
        ),
        (
            "prior_artifact",
            lambda w: w.__setitem__("counts.books", torch.tensor([3.0])),
            "shape_mismatch",
        ),
        (
            "prior_artifact",
            lambda w: w.__setitem__("counts.music", torch.tensor([1.0])),
            "shape_mismatch",
        ),
        (
            "prior_artifact",
            lambda w: w.__setitem__("counts.movies", torch.tensor([2], dtype=torch.int64)),
            "dtype_mismatch",
        ),
    ],
)
def test_bad_weights_are_refused(
    request: pytest.FixtureRequest, which: str, change, reason: str
) -> None:
    """Model weights and prior counts alike, through the loader that serving uses."""
    folder: Path = request.getfixturevalue(which)
    _rewrite_weights(folder, change)
    with pytest.raises(ArtifactRefused) as refused:
        load_version(folder)
    assert refused.value.reason == reason


def test_truncated_weights_are_refused(artifact: Path) -> None:
    data = (artifact / WEIGHTS).read_bytes()
    (artifact / WEIGHTS).write_bytes(data[: len(data) // 2])
    _rewrite_manifest_sha(artifact)
    with pytest.raises(ArtifactRefused) as refused:
        load_artifact(artifact)
    assert refused.value.reason == "not_safetensors"


def test_missing_or_broken_manifest_is_refused(artifact: Path) -> None:
    (artifact / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactRefused) as refused:
        load_artifact(artifact)
    assert refused.value.reason == "manifest_invalid"
    (artifact / ITEMS).unlink()
    with pytest.raises(ArtifactRefused):
        load_artifact(artifact)


@pytest.mark.parametrize("name", ["../v1", "v1/../../etc", "/etc/passwd", "..", "x1", "v1/"])
def test_version_names_cannot_escape_the_store(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtifactRefused) as refused:
        ModelStore(tmp_path).path_of(name)
    assert refused.value.reason == "path_escape"


def test_artifact_uri_outside_the_store_is_refused(tmp_path: Path, artifact: Path) -> None:
    store = ModelStore(artifact.parent.as_uri())
    assert store.resolve_uri(artifact.as_uri()) == artifact
    elsewhere = tmp_path / "other" / "v1"
    shutil.copytree(artifact, elsewhere)
    with pytest.raises(ArtifactRefused):
        store.resolve_uri(elsewhere.as_uri())
    assert [m["version"] for m in store.versions()] == ["v1"]


def test_prior_artifact_loads_back_and_is_not_taken_for_a_model(
    prior_artifact: Path, artifact: Path
) -> None:
    loaded = load_version(prior_artifact)
    assert isinstance(loaded, LoadedPrior) and loaded.version == "p1"
    assert loaded.prior == PRIOR
    assert isinstance(load_version(artifact), LoadedModel)
    with pytest.raises(ArtifactRefused, match="not a model") as refused:
        load_artifact(prior_artifact)
    assert refused.value.reason == "manifest_invalid"


@pytest.mark.parametrize("weights", [{"cold_weight": 0.0, "warm_weight": 1.0}, {"cold": 1.0}])
def test_bad_prior_weights_are_refused(prior_artifact: Path, weights: dict) -> None:
    manifest = json.loads((prior_artifact / MANIFEST).read_text())
    manifest["prior"] = weights
    (prior_artifact / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactRefused) as refused:
        load_version(prior_artifact)
    assert refused.value.reason == "manifest_invalid"


def test_unknown_artifact_kind_is_refused(prior_artifact: Path) -> None:
    manifest = json.loads((prior_artifact / MANIFEST).read_text())
    manifest["kind"] = "pickle_jar"
    (prior_artifact / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactRefused, match="unknown artifact kind"):
        load_version(prior_artifact)
