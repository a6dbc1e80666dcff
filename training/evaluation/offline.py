"""Offline evaluation over a dataset folder: every method, cold and warm, full and sampled.

``full`` ranks every item of the target's domain with the user's history masked, as the worker
does (the headline); ``sampled`` ranks the target among ``negatives`` items drawn uniformly from
its domain, as the dataset's source paper does. The same negatives serve every method and group.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from stream.catalog.encoder import TextEncoder
from stream.data.dataset import Dataset
from stream.model.item_space import ItemSpace
from stream.model.prior import PopularityPrior
from stream.model.sasrec import SASRecConfig
from stream.model.transfer import ModelConfig
from stream.settings import Settings
from training.evaluation.cases import EVALUATION_SPLITS, GROUPS, EvalCase, EvalData, load_cases
from training.evaluation.methods import (
    ItemKNN,
    Method,
    Popularity,
    Trained,
    ZeroShotText,
    embed_catalog,
    interaction_matrix,
    item_counts,
    mask_history,
)
from training.evaluation.ranking import (
    diversity,
    id_order,
    ndcg_gains,
    novelty,
    rank_metrics,
    target_ranks,
    top_lists,
)
from training.evaluation.statistics import versus_best_other
from training.fusion import train_fused
from training.prior import fit_record, fit_weights, held_out_cases, prior_of
from training.train import TrainConfig, build_examples, train_model
from training.validation import Validation, build_validation, split_validation

log = logging.getLogger(__name__)

METHODS = ("popularity", "cooccurrence_knn", "zero_shot", "sasrec")
# Methods that are trained first: only evaluated when training is asked for.
TRAINED_METHODS = ("sasrec",)
TEXT_TOWER = "text_tower"  # the fused model's transfer tower alone
_CHUNK = 256


def sample_negatives(
    cases: list[EvalCase], space: ItemSpace, negatives: int, seed: int
) -> dict[str, np.ndarray]:
    """user_id → candidate positions (target first), drawn in sorted user order."""
    rng = random.Random(seed)
    candidates: dict[str, np.ndarray] = {}
    for case in sorted(cases, key=lambda c: c.user_id):
        target = space.local(case.domain, case.target.item_id)
        size = len(space.item_ids[case.domain])
        if target is None or case.user_id in candidates:
            continue
        drawn = [p for p in rng.sample(range(size), min(negatives + 1, size)) if p != target]
        candidates[case.user_id] = np.array([target, *drawn[:negatives]], dtype=np.int64)
    return candidates


class MethodResult(NamedTuple):
    """One method on one group: summaries with a per-domain breakdown, and each case's
    NDCG@10 per protocol for paired comparisons (cases in the same order for every method of
    the group: by target domain, then as given)."""

    full: dict
    sampled: dict
    gains: dict[str, np.ndarray]


def evaluate_method(
    method: Method,
    cases: list[EvalCase],
    space: ItemSpace,
    candidates: dict[str, np.ndarray],
    embeddings: dict[str, np.ndarray] | None,
    popularity: np.ndarray,
    users: int,
) -> MethodResult:
    """Metrics of one method on one group, full and sampled."""
    by_domain: dict[str, list[EvalCase]] = defaultdict(list)
    for case in cases:
        if space.local(case.domain, case.target.item_id) is not None:
            by_domain[case.domain].append(case)
    full_ranks: dict[str, list[np.ndarray]] = defaultdict(list)
    sampled_ranks: dict[str, list[np.ndarray]] = defaultdict(list)
    lists: dict[str, list[np.ndarray]] = defaultdict(list)
    for domain, domain_cases in by_domain.items():
        order = id_order(space.item_ids[domain])
        for start in range(0, len(domain_cases), _CHUNK):
            chunk = domain_cases[start : start + _CHUNK]
            scores = method.scores(chunk, domain)
            targets = np.array([space.local(domain, c.target.item_id) for c in chunk])
            picked = np.stack([candidates[c.user_id] for c in chunk])
            sampled = np.take_along_axis(scores, picked, axis=1)
            sampled_ranks[domain].append(
                target_ranks(sampled, np.zeros(len(chunk), dtype=int), order[picked])
            )
            mask_history(scores, chunk, space, domain)
            full_ranks[domain].append(target_ranks(scores, targets, order))
            lists[domain].append(top_lists(scores, 10))

    def summarize(ranks: dict[str, list[np.ndarray]], with_lists: bool) -> dict:
        result: dict = {"per_domain": {}}
        every = []
        covered, catalog_size = 0, 0
        diversities, novelties, weights = [], [], []
        for domain in sorted(ranks):
            joined = np.concatenate(ranks[domain])
            every.append(joined)
            entry = {**rank_metrics(joined), "users": int(len(joined))}
            if with_lists:
                top = np.concatenate(lists[domain])
                domain_size = len(space.item_ids[domain])
                entry["coverage@10"] = len(np.unique(top)) / domain_size
                covered += len(np.unique(top))
                catalog_size += domain_size
                offset = space.offsets[domain]
                entry["novelty@10"] = novelty(top + offset, popularity, users)
                novelties.append(entry["novelty@10"])
                if embeddings is not None:
                    entry["diversity@10"] = diversity(top, embeddings[domain])
                    diversities.append(entry["diversity@10"])
                weights.append(len(joined))
            result["per_domain"][domain] = entry
        joined = np.concatenate(every) if every else np.zeros(0)
        result.update(rank_metrics(joined))
        result["users"] = int(len(joined))
        if with_lists and weights:
            result["coverage@10"] = covered / catalog_size
            result["novelty@10"] = float(np.average(novelties, weights=weights))
            if diversities:
                result["diversity@10"] = float(np.average(diversities, weights=weights))
        return result

    def joined(ranks: dict[str, list[np.ndarray]]) -> np.ndarray:
        parts = [np.concatenate(ranks[domain]) for domain in by_domain if ranks[domain]]
        return np.concatenate(parts) if parts else np.zeros(0)

    return MethodResult(
        summarize(full_ranks, True),
        summarize(sampled_ranks, False),
        {"full": ndcg_gains(joined(full_ranks)), "sampled": ndcg_gains(joined(sampled_ranks))},
    )


def _validation_users(
    dataset: Dataset,
    space: ItemSpace,
    splits: tuple[str, ...],
    sequences: list[list[tuple[str, str]]],
    max_history: int,
    seed: int,
) -> tuple[list[list[tuple[str, str]]], Validation, str]:
    """The users that pick the training epoch: the ``valid`` split when it is not being
    evaluated (its targets are in no training signal), else a held-out share of training
    users' last events. Returns the training sequences, the validation set and its source."""
    if "valid" not in splits:
        valid = load_cases(dataset, ("valid",))
        held = [
            [(e.domain, e.item_id) for e in (*case.history, case.target)]
            for case in valid.cases["warm"]
        ]
        if held:
            return sequences, build_validation(space, held, max_history), "split valid"
    training, held = split_validation(sequences, seed=seed)
    return training, build_validation(space, held, max_history), "held-out training users"


def fit_zero_shot_prior(
    dataset: Dataset,
    space: ItemSpace,
    splits: tuple[str, ...],
    data: EvalData,
    embeddings: dict[str, np.ndarray],
    settings: Settings,
    seed: int,
) -> dict:
    """The weights of version 0's popularity prior, fitted as the trainer fits them, on the
    users that pick the training epoch (see :func:`_validation_users`): ``cold_weight``,
    ``warm_weight``, the NDCG@10 of each weight tried, and the users' source."""
    cases: dict[str, list[EvalCase]] = {}
    if "valid" not in splits:
        valid = load_cases(dataset, ("valid",))
        if valid.cases["warm"]:
            cases, source, training = valid.cases, "split valid", valid.training
    if not cases:
        remaining, cases = held_out_cases(data.training["warm"], seed)
        source, training = "held-out training users", {group: remaining for group in GROUPS}
    counts = {group: item_counts(space, training[group]) for group in GROUPS}
    cold, warm, curves = fit_weights(space, embeddings, settings, cases, counts)
    return {
        "cold_weight": cold,
        "warm_weight": warm,
        **fit_record(curves, cases),
        "fitted_on": source,
    }


def evaluate_offline(
    dataset_dir: Path,
    settings: Settings,
    *,
    splits: tuple[str, ...] = EVALUATION_SPLITS,
    methods: tuple[str, ...] = METHODS,
    max_users: int | None = None,
    negatives: int = 999,
    seed: int = 0,
    cache_dir: Path = Path(".xdrec/cache/item-embeddings"),
    model: torch.nn.Module | None = None,
    train: TrainConfig | None = None,
    progress: bool = True,
    priors: dict[str, PopularityPrior] | None = None,
) -> dict:
    """Evaluate ``methods`` (and ``model`` as "trained") on the dataset; returns the metrics
    document (see the CLI). With ``train``, a model is first trained on the training signal
    that contains no evaluation target and nothing of the removed cold-start events.
    ``priors``, when given, receives version 0's popularity prior of each group, which a
    streaming evaluation then serves (``zero_shot`` only)."""
    started = time.perf_counter()
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    dataset = Dataset(dataset_dir)
    data: EvalData = load_cases(dataset, splits, max_users)
    space = data.item_space()
    log.info(
        "evaluation cases loaded cold=%d warm=%d items=%d skipped=%s",
        len(data.cases["cold"]),
        len(data.cases["warm"]),
        space.size,
        data.skipped,
    )
    encoder_name = None
    embeddings = None
    if "zero_shot" in methods or train is not None:
        encoder = TextEncoder.from_settings(settings.encoder)
        encoder_name = encoder.name
        embeddings = embed_catalog(data, encoder, cache_dir, progress=progress)
    training_summary: dict | None = None
    peers: list[Method] = []
    components: list[Method] = []  # parts of the trained model: reported, not its rivals
    if train is not None and embeddings is not None:
        model_config = ModelConfig(text_dim=next(iter(embeddings.values())).shape[1])
        sequences = [[(e.domain, e.item_id) for e in seq] for seq in data.training["cold"]]
        sequences, validation, validation_source = _validation_users(
            dataset, space, splits, sequences, model_config.max_history, train.seed
        )
        examples = build_examples(
            space, sequences, model_config.max_history, train.cold_share, train.seed
        )
        text = np.concatenate([embeddings[domain] for domain in space.domains])
        if settings.trainer.sequence_tower:
            fused, summary = train_fused(
                space, text, examples, model_config, train, validation, progress
            )
            model = fused
            # The towers alone: the ID tower is the sasrec method, the text tower an ablation.
            components.append(Trained(fused.transfer, space, name=TEXT_TOWER))
            if "sasrec" in methods:
                peers.append(Trained(fused.sequence, space, name="sasrec"))
        else:
            model, summary = train_model(
                space, text, examples, model_config, train, progress, validation
            )
            if "sasrec" in methods:
                sasrec, summary["sasrec"] = train_model(
                    space,
                    text,
                    examples,
                    SASRecConfig(max_history=model_config.max_history),
                    train,
                    progress,
                    validation,
                )
                peers.append(Trained(sasrec, space, name="sasrec"))
        training_summary = {**summary, "validation_users": validation_source}
    elif any(name in TRAINED_METHODS for name in methods):
        log.info("methods %s need training: pass --train-epochs to evaluate them", TRAINED_METHODS)
    prior_fit: dict | None = None
    if "zero_shot" in methods and embeddings is not None:
        prior_fit = fit_zero_shot_prior(dataset, space, splits, data, embeddings, settings, seed)
    candidates = sample_negatives(data.cases["warm"], space, negatives, seed)

    full: dict[str, dict] = defaultdict(dict)
    sampled: dict[str, dict] = defaultdict(dict)
    # protocol -> group -> method -> per-case NDCG@10, cases in the same order for every method
    gains: dict[str, dict[str, dict[str, np.ndarray]]] = {
        "full": defaultdict(dict),
        "sampled": defaultdict(dict),
    }
    for group in GROUPS:
        training = interaction_matrix(space, data.training[group])
        popularity = np.asarray(training.sum(axis=0)).ravel()
        built: list[Method] = []
        for name in methods:
            if name == "popularity":
                built.append(Popularity(space, training))
            elif name == "cooccurrence_knn":
                built.append(ItemKNN(space, training))
            elif name == "zero_shot" and embeddings is not None and prior_fit is not None:
                prior = prior_of(
                    space, popularity, prior_fit["cold_weight"], prior_fit["warm_weight"]
                )
                if priors is not None:
                    priors[group] = prior
                built.append(ZeroShotText(space, embeddings, settings, prior))
        built.extend(peers)
        built.extend(components)
        if model is not None:
            built.append(Trained(model, space))
        for method in tqdm(built, desc=f"evaluating {group}", disable=not progress):
            result = evaluate_method(
                method,
                data.cases[group],
                space,
                candidates,
                embeddings,
                popularity,
                training.shape[0],
            )
            full[method.name][group], sampled[method.name][group] = result.full, result.sampled
            for protocol in ("full", "sampled"):
                gains[protocol][group][method.name] = result.gains[protocol]
        if "trained" in full:
            for protocol, summaries in (("full", full), ("sampled", sampled)):
                rivals = {
                    name: g
                    for name, g in gains[protocol][group].items()
                    if name not in {c.name for c in components}
                }
                comparison = versus_best_other(
                    rivals,
                    "trained",
                    {name: summaries[name][group]["ndcg@10"] for name in gains[protocol][group]},
                )
                if comparison is not None:
                    summaries["trained"][group]["vs_best_other"] = comparison
    return {
        "dataset": dataset.directory.name,
        "protocol": "full",
        "methods": dict(full),
        "sampled": {"protocol": "sampled", "negatives": negatives, "methods": dict(sampled)},
        "meta": {
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 2),
            "encoder": encoder_name,
            "splits": list(splits),
            "cases": {group: len(data.cases[group]) for group in GROUPS},
            "skipped": data.skipped,
            "seed": seed,
            "training": training_summary,
            "zero_shot_prior": prior_fit,
        },
    }
