"""Fitting the popularity prior of version 0 (``stream.model.prior``) to an event log.

The counts are the number of users who met each item, as the popularity baseline counts them.
The two weights are chosen on held-out users, each group on its own cases, by how each weight
of a grid from text alone to popularity alone ranks their last event (NDCG@10, full ranking,
seen items masked, exactly as the worker ranks): the weight nearest popularity within one
standard error of the best, so that text takes over only when it beats the chart by more
than the noise. Nothing in it is tuned to a dataset: a catalog whose texts predict well keeps
a small weight, one whose texts do not gets a popularity chart, and the held-out users decide
which.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from stream.data.dataset import DatasetInteraction
from stream.model.item_space import ItemSpace
from stream.model.prior import PopularityPrior
from stream.settings import Settings
from training.evaluation.cases import GROUPS, EvalCase
from training.evaluation.methods import ZeroShotText, mask_history
from training.evaluation.ranking import id_order, ndcg_gains, target_ranks
from training.evaluation.statistics import one_standard_error_choice
from training.validation import split_validation

log = logging.getLogger(__name__)

# From text with popularity as a tie-break (0.01) to popularity with text as one (100).
WEIGHT_GRID = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 100.0)
FIT_SPLIT = "held_out"


def prior_of(space: ItemSpace, counts: np.ndarray, cold: float, warm: float) -> PopularityPrior:
    """A prior from per-item counts in ``space`` order (items never met are left out)."""
    by_domain: dict[str, dict[str, float]] = {}
    for domain in space.domains:
        block = counts[space.domain_slice(domain)]
        by_domain[domain] = {
            space.item_ids[domain][position]: float(block[position])
            for position in np.flatnonzero(block > 0).tolist()
        }
    return PopularityPrior(by_domain, cold, warm)


def held_out_cases(
    sequences: Sequence[Sequence[DatasetInteraction]], seed: int = 0
) -> tuple[list[Sequence[DatasetInteraction]], dict[str, list[EvalCase]]]:
    """Hold out the last event of some users (as :func:`training.validation.split_validation`
    picks them) and make them cases: ``(the remaining sequences, cases per group)``."""
    remaining, held = split_validation(sequences, seed=seed, domain=lambda event: event.domain)
    cases: dict[str, list[EvalCase]] = {group: [] for group in GROUPS}
    for sequence in held:
        target, history = sequence[-1], tuple(sequence[:-1])
        cold = tuple(event for event in history if event.domain != target.domain)
        cases["warm"].append(EvalCase(target.user_id, FIT_SPLIT, target, history))
        if cold:
            cases["cold"].append(EvalCase(target.user_id, FIT_SPLIT, target, cold))
    return remaining, cases


def fit_weights(
    space: ItemSpace,
    embeddings: dict[str, np.ndarray],
    settings: Settings,
    cases: dict[str, list[EvalCase]],
    counts: dict[str, np.ndarray],
) -> tuple[float, float, dict[str, dict[float, float]]]:
    """The cold and warm weights, and NDCG@10 per weight per group. ``counts`` holds each
    group's item counts (what its users' targets were not part of). A group without cases
    keeps the middle of the grid."""
    text = ZeroShotText(space, embeddings, settings)
    chosen: dict[str, float] = {}
    curves: dict[str, dict[float, float]] = {}
    for group in GROUPS:
        prior = prior_of(space, counts[group], 1.0, 1.0)
        by_domain: dict[str, list[EvalCase]] = defaultdict(list)
        for case in cases.get(group, []):
            if space.local(case.domain, case.target.item_id) is not None:
                by_domain[case.domain].append(case)
        gains: dict[float, list[np.ndarray]] = {weight: [] for weight in WEIGHT_GRID}
        for domain, domain_cases in by_domain.items():
            ids = space.item_ids[domain]
            order = id_order(ids)
            bias = prior.bias(domain, ids)
            cosine = text.scores(domain_cases, domain)
            mask_history(cosine, domain_cases, space, domain)
            targets = np.array([space.local(domain, c.target.item_id) for c in domain_cases])
            for weight in WEIGHT_GRID:
                scores = (cosine / np.float32(weight)).astype(np.float32) + bias
                gains[weight].append(ndcg_gains(target_ranks(scores, targets, order)))
        per_user = {weight: np.concatenate(parts) for weight, parts in gains.items() if parts}
        curves[group] = {
            weight: float(per_user[weight].mean()) if per_user else 0.0 for weight in WEIGHT_GRID
        }
        if per_user:
            # Popularity first: text must beat it by more than the noise to take over.
            chosen[group] = one_standard_error_choice(per_user, sorted(WEIGHT_GRID, reverse=True))
        else:
            chosen[group] = WEIGHT_GRID[len(WEIGHT_GRID) // 2]
        log.info(
            "popularity prior fitted group=%s cases=%d weight=%s ndcg@10=%.4f",
            group,
            sum(len(c) for c in by_domain.values()),
            chosen[group],
            curves[group][chosen[group]],
        )
    return chosen["cold"], chosen["warm"], curves


def fit_record(curves: dict[str, dict[float, float]], cases: dict[str, list[EvalCase]]) -> dict:
    """What a fit tried and on how many users, for a manifest or a metrics document."""
    return {
        "ndcg@10_by_weight": {
            group: {str(weight): value for weight, value in curve.items()}
            for group, curve in curves.items()
        },
        "users": {group: len(cases.get(group, [])) for group in GROUPS},
    }
