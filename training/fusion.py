"""Fit how much the ID-sequence tower counts beside the text-transfer tower, per target domain.

Which tower ranks better depends on the data, the target domain and whether the user already
has history there, so nothing here is a constant: for each (target domain, cold or warm) each
weight of :data:`WEIGHTS` ranks the held-out users (NDCG@10, full ranking, seen items masked,
as the evaluator ranks) and the best one is kept. A slot with fewer than
:data:`MIN_SLOT_USERS` held-out users is fitted on the users of its group (cold or warm) in
every target domain, and there the weight kept is the one nearest the plain sum (weight 1)
whose NDCG@10 is within one standard error of the best weight's: on a few hundred users the
best of nine noisy means is partly luck, and fitted combination weights rarely beat the
equal-weight combination out of sample (the forecast-combination puzzle). A group without
held-out users keeps the plain sum.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from stream.model.fusion import COLD, WARM, FusedModel
from stream.model.item_space import ItemSpace
from stream.model.sasrec import SASRec, SASRecConfig
from stream.model.transfer import ModelConfig, TransferModel, history_tensors
from training.evaluation.statistics import (
    best_setting,
    one_standard_error_choice,
    paired_standard_error,
)
from training.train import Examples, TrainConfig, train_model
from training.validation import Validation, mask_seen, ndcg_at_10, validation_scores

log = logging.getLogger(__name__)

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)  # the sequence score's weights tried
UNFITTED = 1.0  # a group (cold or warm) without held-out users
# The equal-weight sum first, then weights ever further from it: in a slot fitted on its group,
# a weight replaces the plain sum only when it ranks those users better by more than the noise.
PREFERRED = (1.0, 0.75, 1.5, 0.5, 2.0, 0.25, 3.0, 5.0, 0.0)
# Below this many held-out users a slot borrows its group's users from every target domain
# (docs/training.md): at 100-odd users a slot's NDCG@10 differs between weights by less than
# its standard error. On food-kitchen every slot has 363 or more and fits on its own users.
MIN_SLOT_USERS = 200
_CHUNK = 1024


def fit_fusion(
    transfer: TransferModel,
    sequence: SASRec,
    space: ItemSpace,
    validation: Validation,
    device: torch.device | None = None,
) -> tuple[FusedModel, dict]:
    """The fused model with the best weight per slot, and a record of the fit: per domain and
    slot the weight, the number of held-out users, whether the weight was fitted on them
    (``slot``) or on their group's users in every domain (``group``), and the NDCG@10 of
    every weight tried."""
    device = device or torch.device("cpu")
    transfer, sequence = transfer.eval().to(device), sequence.eval().to(device)
    item_domain = np.asarray(space.domain_of())
    weights = torch.full((len(space.domains), 2), UNFITTED)
    record: dict[str, dict] = {domain: {} for domain in space.domains}
    for slot, name in ((COLD, "cold"), (WARM, "warm")):
        histories = validation.cold if slot == COLD else validation.warm
        has_history = (histories >= 0).any(axis=1)
        gains: dict[str, dict[float, np.ndarray]] = {}
        for number, domain in enumerate(space.domains):
            in_domain = (histories >= 0) & (item_domain[np.maximum(histories, 0)] == number)
            has_target = in_domain.any(axis=1)
            rows = np.flatnonzero(
                (item_domain[validation.targets] == number)
                & has_history
                & (has_target if slot == WARM else ~has_target)
            )
            block = space.domain_slice(domain)
            gains[domain] = _gains_per_weight(
                transfer, sequence, validation, rows, block, slot, device
            )
        pooled = {w: np.concatenate([g[w] for g in gains.values()]) for w in WEIGHTS}
        for number, domain in enumerate(space.domains):
            users = len(gains[domain][WEIGHTS[0]])
            own = users >= MIN_SLOT_USERS
            source = gains[domain] if own else pooled
            curve = {w: float(g.mean()) for w, g in source.items() if len(g)}
            best = best_setting(source, PREFERRED) if curve else UNFITTED
            # Too few users of its own: the weight nearest the plain sum within the noise.
            thin = bool(curve) and not own
            chosen = one_standard_error_choice(source, PREFERRED) if thin else best
            weights[number, slot] = chosen
            record[domain][name] = {
                "weight": chosen,
                "rule": "one_standard_error" if thin else "best",
                "best_weight": best,
                "standard_error": round(
                    paired_standard_error(source[best], source[chosen]) if curve else 0.0, 5
                ),
                "users": users,
                "fitted_on": "slot" if own else "group",
                "ndcg@10": {str(w): round(v, 5) for w, v in curve.items()},
            }
    log.info(
        "fusion fitted weights=%s",
        {d: {s: r["weight"] for s, r in slots.items()} for d, slots in record.items()},
    )
    return FusedModel(transfer.cpu(), sequence.cpu(), weights), {"weights": record}


def _gains_per_weight(
    transfer: TransferModel,
    sequence: SASRec,
    validation: Validation,
    rows: np.ndarray,
    block: slice,
    slot: int,
    device: torch.device,
) -> dict[float, np.ndarray]:
    """Each weight's NDCG@10 of the held-out ``rows`` (chunked: one matrix per tower)."""
    histories = validation.cold if slot == COLD else validation.warm
    gains: dict[float, list[np.ndarray]] = {w: [] for w in WEIGHTS}
    with torch.inference_mode():
        items = torch.arange(block.start, block.stop, device=device)
        text_items, id_items = transfer.item_vectors(items), sequence.item_vectors(items)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            tensor, mask = history_tensors(histories[chunk], device)
            text = (transfer.user_vectors(tensor, mask) @ text_items.T).float()
            ids = (sequence.user_vectors(tensor, mask) @ id_items.T).float()
            targets = torch.as_tensor(validation.targets[chunk] - block.start, device=device)
            for weight in WEIGHTS:
                scores = text + weight * ids
                if slot == WARM:
                    mask_seen(scores, chunk, validation.seen, block.start)
                gains[weight].append(ndcg_at_10(scores, targets).cpu().numpy())
    return {w: np.concatenate(g) if g else np.zeros(0) for w, g in gains.items()}


def train_fused(
    space: ItemSpace,
    text: np.ndarray,
    examples: Examples,
    model_config: ModelConfig,
    train_config: TrainConfig,
    validation: Validation,
    progress: bool = True,
) -> tuple[FusedModel, dict]:
    """Both towers on the same examples, loss, negatives and budget, each stopped early on
    ``validation``, then fused on it. The summary is the transfer tower's, with the sequence
    tower's under ``sasrec`` and the fit under ``fusion``."""
    transfer, summary = train_model(
        space, text, examples, model_config, train_config, progress, validation
    )
    assert isinstance(transfer, TransferModel)
    return fuse_with_sequence(
        transfer, summary, space, text, examples, train_config, validation, progress
    )


def fuse_with_sequence(
    transfer: TransferModel,
    summary: dict,
    space: ItemSpace,
    text: np.ndarray,
    examples: Examples,
    train_config: TrainConfig,
    validation: Validation,
    progress: bool = True,
) -> tuple[FusedModel, dict]:
    """Train the sequence tower for a trained ``transfer`` tower and fuse the two."""
    sequence_config = SASRecConfig(max_history=transfer.config.max_history)
    sequence, sequence_summary = train_model(
        space, text, examples, sequence_config, train_config, progress, validation
    )
    assert isinstance(sequence, SASRec)
    fused, fit = fit_fusion(transfer, sequence, space, validation)
    fit["validation"] = validation_scores(fused, space, validation, torch.device("cpu"))
    return fused, {**summary, "sasrec": sequence_summary, "fusion": fit}
