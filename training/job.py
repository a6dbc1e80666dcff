"""One training job: read a window of the event log, train a candidate, judge it against the
serving model on held-out later interactions, and publish it only if it wins by the margin.

While no trained model serves, the job first refreshes version 0's popularity prior from the
window (``training.prior``) and publishes it at once: training takes minutes to hours, the
counts and two weights take seconds. The candidate is then judged against that prior.

The judgement uses the offline evaluator's cases and metrics (``training.evaluation``): each
held-out user's last event in the window is the target, cold (other domains only) and warm.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from schemas import ZERO_SHOT_VERSION, ModelUpdate
from stream.catalog.encoder import TextEncoder
from stream.data.dataset import Dataset
from stream.model.artifacts import (
    MANIFEST,
    ArtifactRefused,
    LoadedModel,
    LoadedPrior,
    load_version,
    save_artifact,
    save_prior,
)
from stream.model.fusion import FusedModel
from stream.model.item_space import ItemSpace
from stream.model.store import ModelStore
from stream.model.transfer import ModelConfig, TransferModel
from stream.settings import Settings, TrainerSettings
from training.evaluation.cases import GROUPS, EvalData, load_cases
from training.evaluation.methods import (
    Method,
    Trained,
    ZeroShotText,
    embed_catalog,
    interaction_matrix,
    item_counts,
)
from training.evaluation.offline import evaluate_method, sample_negatives
from training.event_log import HELD_OUT, Window, snapshot_window
from training.fusion import fuse_with_sequence
from training.prior import fit_record, fit_weights, prior_of
from training.publisher import (
    CANDIDATE_KEY,
    UPDATE_KEY,
    model_update_for,
    publish_update,
    serving_update,
)
from training.train import TrainConfig, build_examples, train_model
from training.validation import build_validation, split_validation

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """A job that could not produce a judgement; ``reason`` is a bounded metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class JobResult:
    """What a job decided and why; ``metrics`` holds ``candidate.*`` and ``serving.*``."""

    outcome: str  # "promoted" | "rejected"
    reason: str
    candidate_version: str
    serving_version: str
    metrics: dict[str, float] = field(default_factory=dict)
    window: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    seconds: float = 0.0
    update: ModelUpdate | None = None
    prior_update: ModelUpdate | None = None  # version 0's refreshed popularity prior


def new_version() -> str:
    return f"v{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def gate_metrics(full: dict[str, dict]) -> dict[str, float]:
    """``group.metric`` → value from the evaluator's full-protocol results per group."""
    return {
        f"{group}.{name}": float(value)
        for group, result in full.items()
        for name, value in result.items()
        if isinstance(value, int | float) and ("@" in name or name == "mrr")
    }


def decide(
    ours: float, theirs: float, serving_version: str, config: TrainerSettings, candidate: bool
) -> tuple[str, str]:
    """``(outcome, reason)`` of the gate: a candidate of an online comparison is stored
    whatever its figures; otherwise the new model must beat the serving one by the margin."""
    metric = config.gate_metric
    if candidate:
        return "candidate", (
            f"stored for an online comparison ({metric} {ours:.4f} offline vs "
            f"the serving {serving_version} {theirs:.4f})"
        )
    if ours <= theirs + config.gate_margin:
        return "rejected", (
            f"{metric} {ours:.4f} does not beat the serving {serving_version} "
            f"{theirs:.4f} by the margin {config.gate_margin}"
        )
    return "promoted", (
        f"{metric} {ours:.4f} beats the serving {serving_version} "
        f"{theirs:.4f} by more than {config.gate_margin}"
    )


def run_job(
    settings: Settings,
    window: Window,
    *,
    reasons: list[str] | None = None,
    progress: bool = True,
    publish: bool = True,
    candidate: bool = False,
) -> JobResult:
    """Run one job to its decision. Raises :class:`JobFailed` when it cannot decide.

    With ``candidate`` the gate's figures are recorded but the artifact is stored whatever
    they say, and announced (when ``publish``) as the candidate of an online comparison."""
    started = time.perf_counter()
    config = settings.trainer
    store = ModelStore(settings.models.store)
    version = new_version()
    work = config.work_dir / version
    try:
        data_dir = work / "window"
        stats = snapshot_window(
            settings,
            window,
            data_dir,
            holdout_share=config.holdout_share,
            max_holdout_users=config.max_holdout_users,
            seed=config.seed,
            progress=progress,
        )
        if stats.events == 0:
            raise JobFailed("no_data", f"the window {window} holds no valid events")
        data = load_cases(Dataset(data_dir), (HELD_OUT,))
        if not data.cases["warm"]:
            raise JobFailed(
                "no_holdout",
                f"no held-out user has 2+ events in the window ({stats.users} users): widen the "
                "window or raise trainer.holdout_share",
            )
        space = data.item_space()
        encoder = TextEncoder.from_settings(settings.encoder)
        embeddings = embed_catalog(data, encoder, config.cache_dir, progress=progress)
        text = np.concatenate([embeddings[domain] for domain in space.domains])
        serving = serving_update(settings)
        serving_version = serving.version if serving else ZERO_SHOT_VERSION
        serving_loaded = _load_serving(store, serving)
        prior_update = None
        if (
            config.popularity_prior
            and not candidate
            and not isinstance(serving_loaded, LoadedModel)
        ):
            # No trained model serves yet: refresh version 0's popularity prior before training,
            # so that a deployment serves better than a popularity chart within minutes.
            serving_loaded = _fit_prior(settings, store, data, space, embeddings, stats.to_dict())
            serving_version = serving_loaded.version
            prior_update = model_update_for(store.path_of(serving_version))
            if publish:
                publish_update(settings, prior_update, key=UPDATE_KEY)
        candidate_model, summary = _train(settings, data, space, text, work, progress)
        methods: list[Method] = [Trained(candidate_model, space, name="candidate")]
        methods.append(_serving_method(settings, serving_loaded, space, embeddings))
        results = _judge(data, space, embeddings, methods)
        metrics = {
            f"{who}.{name}": value
            for who, result in results.items()
            for name, value in gate_metrics(result).items()
        }
        ours = metrics.get(f"candidate.{config.gate_metric}", 0.0)
        theirs = metrics.get(f"serving.{config.gate_metric}", 0.0)
        result = JobResult(
            outcome="rejected",
            reason="",
            candidate_version=version,
            serving_version=serving_version,
            metrics=metrics,
            window=stats.to_dict(),
            training=summary,
            prior_update=prior_update,
        )
        result.outcome, result.reason = decide(ours, theirs, serving_version, config, candidate)
        if result.outcome in ("promoted", "candidate"):
            # One stored artifact either way; only the key it is announced under differs.
            folder = save_artifact(
                candidate_model,
                space,
                store.path_of(version),
                version=version,
                parent_version=serving_version,
                train_config=summary.get("config", {}),
                data_window={**stats.to_dict(), "requests": reasons or []},
                metrics=metrics,
            )
            result.update = model_update_for(folder)
            if publish:
                publish_update(
                    settings, result.update, key=CANDIDATE_KEY if candidate else UPDATE_KEY
                )
        result.seconds = round(time.perf_counter() - started, 2)
        log.info(
            "training job decided outcome=%s version=%s serving=%s reason=%r seconds=%.1f",
            result.outcome,
            version,
            serving_version,
            result.reason,
            result.seconds,
        )
        (config.work_dir / f"{version}.json").write_text(
            json.dumps(
                {k: v for k, v in result.__dict__.items() if k not in ("update", "prior_update")},
                indent=2,
                default=str,
            )
        )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _train(
    settings: Settings,
    data: EvalData,
    space: ItemSpace,
    text: np.ndarray,
    work: Path,
    progress: bool,
) -> tuple[TransferModel | FusedModel, dict]:
    """The candidate: the transfer model, fused with an ID-sequence tower unless
    ``trainer.sequence_tower`` is off (the sequence tower trains in this process)."""
    config = settings.trainer
    model_config = ModelConfig(text_dim=text.shape[1])
    train_config = TrainConfig.of_trainer(config)
    # The held-out users' targets are not in the training signal; their histories are. Some
    # training users' last events are held out too, to pick the epoch.
    sequences = [[(e.domain, e.item_id) for e in seq] for seq in data.training["warm"]]
    sequences, held = split_validation(sequences, seed=train_config.seed)
    validation = build_validation(space, held, model_config.max_history)
    examples = build_examples(
        space, sequences, model_config.max_history, train_config.cold_share, train_config.seed
    )
    if len(examples.targets) == 0:
        raise JobFailed("no_data", "the window yields no training examples")
    if config.processes > 1:
        from training.distributed import train_with_torchrun

        model, summary = train_with_torchrun(
            space,
            text,
            examples,
            model_config,
            train_config,
            config.processes,
            work / "ddp",
            validation=validation,
        )
    else:
        model, summary = train_model(
            space,
            text,
            examples,
            model_config,
            train_config,
            progress=progress,
            validation=validation,
        )
    assert isinstance(model, TransferModel)
    served: TransferModel | FusedModel = model
    if config.sequence_tower:
        served, summary = fuse_with_sequence(
            model, summary, space, text, examples, train_config, validation, progress
        )
    summary["config"] = {**train_config.to_dict(), "model": model_config.to_dict()}
    return served, summary


def _load_serving(
    store: ModelStore, serving: ModelUpdate | None
) -> LoadedModel | LoadedPrior | None:
    """The serving version's artifact (None for version 0 without a prior)."""
    if serving is None or serving.version == ZERO_SHOT_VERSION:
        return None
    try:
        return load_version(store.resolve_uri(serving.artifact_uri or ""))
    except ArtifactRefused as exc:
        raise JobFailed(
            "serving_unreadable",
            f"the serving version {serving.version} cannot be loaded ({exc.reason}: {exc.detail});"
            " roll back with `xdrec model rollback` or publish a valid version",
        ) from exc


def _fit_prior(
    settings: Settings,
    store: ModelStore,
    data: EvalData,
    space: ItemSpace,
    embeddings: dict[str, np.ndarray],
    window: dict,
) -> LoadedPrior:
    """Count the window, fit the prior's weights on the held-out users, store the version."""
    started = time.perf_counter()
    counts = {group: item_counts(space, data.training[group]) for group in GROUPS}
    cold, warm, curves = fit_weights(space, embeddings, settings, data.cases, counts)
    prior = prior_of(space, counts["warm"], cold, warm)
    version = new_version()
    metrics = {f"{group}.ndcg@10": max(curves[group].values()) for group in GROUPS}
    folder = save_prior(
        prior,
        store.path_of(version),
        version=version,
        parent_version=ZERO_SHOT_VERSION,
        data_window=window,
        metrics=metrics,
        fit=fit_record(curves, data.cases),
    )
    log.info(
        "popularity prior stored version=%s cold_weight=%s warm_weight=%s seconds=%.1f path=%s",
        version,
        cold,
        warm,
        time.perf_counter() - started,
        folder,
    )
    return LoadedPrior(version, json.loads((folder / MANIFEST).read_text()), prior)


def _serving_method(
    settings: Settings,
    serving: LoadedModel | LoadedPrior | None,
    space: ItemSpace,
    embeddings: dict[str, np.ndarray],
) -> Method:
    """The serving version as the evaluator's method named "serving"."""
    if not isinstance(serving, LoadedModel):
        prior = serving.prior if serving is not None else None
        method = ZeroShotText(space, embeddings, settings, prior)
        method.name = "serving"
        return method
    rows = space.index
    text = np.zeros((serving.space.size, serving.model.config.text_dim), dtype=np.float32)
    flat = np.concatenate([embeddings[domain] for domain in space.domains])
    for pair, row in serving.space.index.items():
        if pair in rows:
            text[row] = flat[rows[pair]]
    serving.model.text.copy_(torch.as_tensor(text))
    return Trained(serving.model, space, serving.space, embeddings, name="serving")


def _judge(
    data: EvalData,
    space: ItemSpace,
    embeddings: dict[str, np.ndarray],
    methods: list[Method],
) -> dict[str, dict[str, dict]]:
    """Full-protocol results per method and group."""
    candidates = sample_negatives(data.cases["warm"], space, 99, 0)
    results: dict[str, dict[str, dict]] = {method.name: {} for method in methods}
    for group in GROUPS:
        training = interaction_matrix(space, data.training[group])
        popularity = np.asarray(training.sum(axis=0)).ravel()
        for method in methods:
            if not data.cases[group]:
                continue
            full = evaluate_method(
                method,
                data.cases[group],
                space,
                candidates,
                embeddings,
                popularity,
                training.shape[0],
            ).full
            results[method.name][group] = full
    return results
