"""Version 0 with a popularity prior: what a deployment serves before its first trained model.

Text similarity alone ranks a domain's items by how much their text resembles what the user
did; on real data that loses to a plain popularity chart, most of all for users new to the
target domain. The prior adds each item's normalized log popularity, counted by the trainer
over the event log (so every worker serves the same numbers, and a replay reproduces them),
with one weight for users new to the target domain and one for users who know it, both fitted
on held-out users (``training.prior``).

An item's score is ``cosine / weight + log(1 + count) / log(1 + top count)``: the same order
as ``cosine + weight * popularity``, but the query carries the user's weight and the index one
shared bias, so top-K stays one matrix product plus one vector (its bfloat16 pass too).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.core.ann import favoured_rows, shortlist_width
from stream.core.scorer import ItemEmbeddings, ZeroShotScorer
from stream.core.scoring import DomainIndex
from stream.core.state import UserState
from stream.settings import Settings

PRIOR_KIND = "popularity_prior"


@dataclass(frozen=True)
class PopularityPrior:
    """Per-domain item counts and the two weights of the popularity term."""

    counts: dict[str, dict[str, float]]  # domain -> item_id -> interactions counted
    cold_weight: float  # for a user with no interaction in the target domain
    warm_weight: float  # for a user with some

    def __post_init__(self) -> None:
        for name in ("cold_weight", "warm_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, not {value!r}")

    def weight(self, state: UserState, target: str) -> float:
        return self.warm_weight if target in state.interests else self.cold_weight

    def bias(self, domain: str, item_ids: Sequence[str]) -> np.ndarray:
        """``log(1 + count) / log(1 + top count)`` of each item (0 for an uncounted one)."""
        counts = self.counts.get(domain, {})
        raw = np.fromiter((counts.get(item, 0.0) for item in item_ids), np.float64, len(item_ids))
        top = max(counts.values(), default=0.0)
        if top <= 0:
            return np.zeros(len(item_ids), dtype=np.float32)
        return (np.log1p(raw) / math.log1p(top)).astype(np.float32)


class PriorScorer(ZeroShotScorer):
    """Zero-shot similarity plus the popularity prior, behind the processor's Scorer interface.

    The bias of a domain's catalog rows is computed once per row and extended as the catalog
    grows (rows are only ever appended; a removed item is masked by the index itself)."""

    def __init__(
        self, settings: Settings, items: ItemEmbeddings, prior: PopularityPrior, version: str
    ) -> None:
        super().__init__(settings, items)
        self.prior = prior
        self.version = version
        self._bias: dict[str, np.ndarray] = {}
        self._bias_order: dict[str, np.ndarray] = {}  # the largest biases' rows, large domains

    def index(self, target: str) -> DomainIndex:
        index = self.items.index(target)
        bias = self._bias.get(target)
        if bias is None or len(bias) < index.size:
            done = 0 if bias is None else len(bias)
            fresh = self.prior.bias(target, index.item_ids[done : index.size])
            bias = fresh if bias is None else np.concatenate([bias, fresh])
            self._bias[target] = bias
            self._bias_order.pop(target, None)
        if index.approximate is not None and target not in self._bias_order:
            width = shortlist_width(self.settings.recommendations.top_k) * 4
            self._bias_order[target] = favoured_rows(bias, width)
        return dataclasses.replace(
            index, bias=bias[: index.size], bias_order=self._bias_order.get(target)
        )

    def weight(self, state: UserState, target: str) -> float:
        return self.prior.weight(state, target)
