"""Model artifacts: safetensors weights plus a JSON manifest, written atomically and validated
before anything serves from them.

An artifact folder holds ``model.safetensors`` (weights only: never a pickle), ``items.json``
(the item ids behind the ID-embedding rows, per domain) and ``manifest.json`` (kind, version,
parent, configs, data window, metrics and the sha256 of both files). A fused model
(``stream.model.fusion``) stores its transfer tower's weights under their own names, its
sequence tower's under ``sequence.`` and the fusion weights as ``fusion.weights``; its manifest
adds ``sequence_config``. A ``popularity_prior``
artifact (version 0 with a popularity prior, ``stream.model.prior``) has the same three files: its
tensors are each domain's item counts, in the order of ``items.json``. :func:`load_version`
refuses a folder for a named reason — a wrong checksum, a file that is not safetensors, a
wrong shape or dtype, a NaN — and never returns a half-valid model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stream.model.fusion import FusedModel
from stream.model.item_space import ItemSpace
from stream.model.prior import PRIOR_KIND, PopularityPrior
from stream.model.sasrec import SASRec, SASRecConfig
from stream.model.transfer import ModelConfig, TransferModel

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
ITEMS = "items.json"
FORMAT = 1
MODEL_KIND = "transfer_model"
SEQUENCE_PREFIX = "sequence."
FUSION_WEIGHTS = "fusion.weights"


class ArtifactRefused(ValueError):
    """The artifact must not serve; ``reason`` is a bounded label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"model artifact refused ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LoadedModel:
    version: str
    manifest: dict
    space: ItemSpace
    model: TransferModel | FusedModel


@dataclass(frozen=True)
class LoadedPrior:
    """Version 0 with a popularity prior (``stream.model.prior``): counts and weights, no model."""

    version: str
    manifest: dict
    prior: PopularityPrior


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_of(model: TransferModel | FusedModel) -> dict[str, torch.Tensor]:
    """The named tensors an artifact stores for ``model`` (see the module docstring)."""
    if not isinstance(model, FusedModel):
        return model.state_dict()
    return {
        **model.transfer.state_dict(),
        **{SEQUENCE_PREFIX + k: v for k, v in model.sequence.state_dict().items()},
        FUSION_WEIGHTS: model.weights,
    }


def _load_tensors(model: TransferModel | FusedModel, tensors: dict[str, torch.Tensor]) -> None:
    if not isinstance(model, FusedModel):
        model.load_state_dict(tensors)
        return
    model.transfer.load_state_dict(
        {
            k: v
            for k, v in tensors.items()
            if not k.startswith(SEQUENCE_PREFIX) and k != FUSION_WEIGHTS
        }
    )
    model.sequence.load_state_dict(
        {k[len(SEQUENCE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(SEQUENCE_PREFIX)}
    )
    model.weights.copy_(tensors[FUSION_WEIGHTS])


def save_artifact(
    model: TransferModel | FusedModel,
    space: ItemSpace,
    directory: Path,
    *,
    version: str,
    parent_version: str | None,
    train_config: dict,
    data_window: dict,
    metrics: dict[str, float],
) -> Path:
    """Write the artifact into ``directory`` (created; must not exist) and return it."""
    weights = {
        name: tensor.detach().cpu().contiguous() for name, tensor in tensors_of(model).items()
    }
    transfer = model.transfer if isinstance(model, FusedModel) else model
    manifest = {
        "kind": MODEL_KIND,
        "version": version,
        "parent_version": parent_version,
        "model_config": transfer.config.to_dict(),
        "train_config": train_config,
        "data_window": data_window,
        "metrics": metrics,
    }
    if isinstance(model, FusedModel):
        manifest["sequence_config"] = model.sequence.config.to_dict()
    return _write_atomically(directory, weights, space.item_ids, manifest)


def save_prior(
    prior: PopularityPrior,
    directory: Path,
    *,
    version: str,
    parent_version: str | None,
    data_window: dict,
    metrics: dict[str, float],
    fit: dict,
) -> Path:
    """Write a popularity-prior artifact into ``directory``: the counts of each domain as one
    safetensors tensor in the order of ``items.json``, the weights in the manifest."""
    domains = sorted(prior.counts)
    item_ids = {domain: sorted(prior.counts[domain]) for domain in domains}
    tensors = {
        f"counts.{domain}": torch.tensor(
            [prior.counts[domain][item] for item in item_ids[domain]], dtype=torch.float32
        )
        for domain in domains
    }
    manifest = {
        "kind": PRIOR_KIND,
        "version": version,
        "parent_version": parent_version,
        "prior": {"cold_weight": prior.cold_weight, "warm_weight": prior.warm_weight},
        "fit": fit,
        "data_window": data_window,
        "metrics": metrics,
    }
    return _write_atomically(directory, tensors, item_ids, manifest)


def _write_atomically(
    directory: Path, tensors: dict[str, torch.Tensor], item_ids: dict, manifest: dict
) -> Path:
    """Weights, item ids and manifest (with both files' sha256) into a scratch folder that is
    renamed to ``directory`` at once: readers never see a partial artifact."""
    if directory.exists():
        raise FileExistsError(f"artifact folder {directory} exists: versions are immutable")
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".incoming-", dir=directory.parent))
    try:
        save_file(tensors, str(scratch / WEIGHTS))
        (scratch / ITEMS).write_text(json.dumps(item_ids, sort_keys=True))
        document = {
            "format": FORMAT,
            "created_at": time.time(),
            **manifest,
            "sha256": {WEIGHTS: sha256_of(scratch / WEIGHTS), ITEMS: sha256_of(scratch / ITEMS)},
        }
        (scratch / MANIFEST).write_text(json.dumps(document, indent=2, sort_keys=True))
        os.replace(scratch, directory)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return directory


def _read_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactRefused("manifest_invalid", f"{directory / MANIFEST}: {exc}") from exc
    required = {"format", "version", "sha256"}
    if not isinstance(manifest, dict) or not required <= manifest.keys():
        raise ArtifactRefused("manifest_invalid", f"manifest lacks {sorted(required)}")
    if manifest["format"] != FORMAT:
        raise ArtifactRefused("manifest_invalid", f"unsupported format {manifest['format']!r}")
    # A manifest without a kind is a model's: the kind is optional in the format.
    kind = manifest.setdefault("kind", MODEL_KIND)
    if kind not in (MODEL_KIND, PRIOR_KIND):
        raise ArtifactRefused("manifest_invalid", f"unknown artifact kind {kind!r}")
    for name in (WEIGHTS, ITEMS):
        path = directory / name
        if not path.is_file():
            raise ArtifactRefused("manifest_invalid", f"{name} missing in {directory}")
        if sha256_of(path) != manifest["sha256"].get(name):
            raise ArtifactRefused("sha256_mismatch", f"{name} does not match the manifest")
    return manifest


def load_version(directory: Path) -> LoadedModel | LoadedPrior:
    """Validate and load an artifact of either kind: what serving a version needs."""
    manifest = _read_manifest(directory)
    if manifest["kind"] == PRIOR_KIND:
        return _load_prior(directory, manifest)
    return _load_model(directory, manifest)


def _load_prior(directory: Path, manifest: dict) -> LoadedPrior:
    try:
        item_ids = json.loads((directory / ITEMS).read_text())
        weights = manifest["prior"]
        cold, warm = float(weights["cold_weight"]), float(weights["warm_weight"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ArtifactRefused("manifest_invalid", f"popularity prior: {exc!r}") from exc
    try:
        tensors = load_file(str(directory / WEIGHTS))  # parses a header; never unpickles
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactRefused("not_safetensors", f"{WEIGHTS}: {exc}") from exc
    if not isinstance(item_ids, dict) or set(tensors) != {f"counts.{d}" for d in item_ids}:
        raise ArtifactRefused("shape_mismatch", "counts do not match the domains of items.json")
    counts: dict[str, dict[str, float]] = {}
    for domain, ids in item_ids.items():
        tensor = tensors[f"counts.{domain}"]
        if tensor.dtype != torch.float32:
            raise ArtifactRefused("dtype_mismatch", f"counts.{domain}: {tensor.dtype}")
        if tuple(tensor.shape) != (len(ids),):
            raise ArtifactRefused(
                "shape_mismatch", f"counts.{domain}: {tuple(tensor.shape)} for {len(ids)} items"
            )
        if not torch.isfinite(tensor).all() or bool((tensor < 0).any()):
            raise ArtifactRefused("non_finite", f"counts.{domain} holds NaN, infinity or < 0")
        counts[str(domain)] = dict(zip(map(str, ids), tensor.tolist(), strict=True))
    try:
        prior = PopularityPrior(counts, cold, warm)
    except ValueError as exc:
        raise ArtifactRefused("manifest_invalid", str(exc)) from exc
    return LoadedPrior(str(manifest["version"]), manifest, prior)


def load_artifact(directory: Path, text: np.ndarray | None = None) -> LoadedModel:
    """Validate and load a model artifact. ``text`` holds the item text embeddings in the
    artifact's item order; without it the model gets zeros (enough for checks, not for
    serving)."""
    return _load_model(directory, _read_manifest(directory), text)


def _load_model(directory: Path, manifest: dict, text: np.ndarray | None = None) -> LoadedModel:
    """The model of a folder whose manifest and file checksums were just verified."""
    if manifest["kind"] != MODEL_KIND or "model_config" not in manifest:
        raise ArtifactRefused(
            "manifest_invalid", f"{directory} holds a {manifest['kind']}, not a model"
        )
    try:
        config = ModelConfig(**manifest["model_config"])
        sequence = manifest.get("sequence_config")
        sequence_config = SASRecConfig(**sequence) if sequence is not None else None
        item_ids = json.loads((directory / ITEMS).read_text())
        space = ItemSpace.from_ids({str(d): [str(i) for i in ids] for d, ids in item_ids.items()})
    except (TypeError, ValueError, AttributeError) as exc:
        raise ArtifactRefused("manifest_invalid", str(exc)) from exc
    try:
        weights = load_file(str(directory / WEIGHTS))  # parses a header; never unpickles
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactRefused("not_safetensors", f"{WEIGHTS}: {exc}") from exc
    if text is None:
        text = np.zeros((space.size, config.text_dim), dtype=np.float32)
    if text.shape != (space.size, config.text_dim):
        raise ArtifactRefused(
            "shape_mismatch", f"text embeddings {text.shape} for {space.size} items"
        )
    model: TransferModel | FusedModel = TransferModel.for_space(config, space, text)
    if sequence_config is not None:
        try:
            model = FusedModel(
                model,
                SASRec(sequence_config, space.size),
                torch.zeros(len(space.domains), 2),
            )
        except ValueError as exc:
            raise ArtifactRefused("manifest_invalid", str(exc)) from exc
    expected = tensors_of(model)
    if set(weights) != set(expected):
        missing, extra = set(expected) - set(weights), set(weights) - set(expected)
        raise ArtifactRefused(
            "shape_mismatch", f"missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise ArtifactRefused(
                "shape_mismatch", f"{name}: {tuple(tensor.shape)} != {tuple(expected[name].shape)}"
            )
        if tensor.dtype != expected[name].dtype:
            raise ArtifactRefused("dtype_mismatch", f"{name}: {tensor.dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ArtifactRefused("non_finite", f"{name} holds NaN or infinity")
    _load_tensors(model, weights)
    model.eval()
    _smoke_query(model, space)
    return LoadedModel(str(manifest["version"]), manifest, space, model)


def _smoke_query(model: TransferModel | FusedModel, space: ItemSpace) -> None:
    """One user, one domain: finite scores or refuse."""
    first = space.domains[0]
    block = space.domain_slice(first)
    with torch.inference_mode():
        history = torch.tensor([[block.start]])
        user = model.queries(history, torch.ones_like(history, dtype=torch.bool), 0)
        scores = user @ model.item_vectors(torch.arange(block.start, block.stop)).T
    if not torch.isfinite(scores).all() or math.isnan(float(scores.sum())):
        raise ArtifactRefused("smoke_failed", "a smoke query gave non-finite scores")
