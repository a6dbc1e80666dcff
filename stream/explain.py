"""Why an item was recommended: the user's interactions that contributed most to its score.

Version 0 (zero-shot) is a sum, so it decomposes exactly. The query is the normalized sum of
decayed, weighted item embeddings, so an item's score is one term per interaction:
``w_domain * w_event * 2^(-(t - t_e) / half_life) * (x_e . v) / |q|``. Each term divided by the
item's score is that interaction's share. Only the ``explain_history`` most recent interactions
are decomposed; the terms of older ones are the part of the score that no listed share covers.

Trained versions decompose over the positions of the model's input: mean pooling and the
residual head are linear, so the score is one term per history position plus a constant
(:meth:`training.model.TransferModel.user_parts`). A position's output also carries what
attention mixed in from other items, so the shares are checked by ablation (leaving out the
top-attributed item must hurt more than leaving out another); ``docs/explanations.md`` says how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from schemas import Contribution
from stream.scoring import DomainIndex
from stream.settings import Settings
from stream.state import SECONDS_PER_DAY, UserState, interest_sum, state_time


class Explainer(Protocol):
    """Built when a recommendation is due (the state as it was), used once it is ranked."""

    def explain(
        self, index: DomainIndex, items: list[tuple[str, float]], top: int
    ) -> list[list[Contribution]]: ...


class EmbeddingLookup(Protocol):
    def embedding(self, domain: str, item_id: str) -> np.ndarray | None: ...


def _top_contributions(
    pairs: list[tuple[str, str]], shares: np.ndarray, top: int
) -> list[Contribution]:
    """The ``top`` largest positive shares, one entry per (domain, item)."""
    merged: dict[tuple[str, str], float] = {}
    for pair, share in zip(pairs, shares.tolist(), strict=True):
        merged[pair] = merged.get(pair, 0.0) + share
    best = sorted(
        ((share, pair) for pair, share in merged.items() if share > 0),
        key=lambda entry: (-entry[0], entry[1]),
    )[:top]
    return [
        Contribution.model_construct(item_id=item, domain=domain, share=round(share, 4))
        for share, (domain, item) in best
    ]


@dataclass(slots=True)
class TermExplainer:
    """Version 0: each interaction's term of the normalized query, ``terms @ v`` per item."""

    pairs: list[tuple[str, str]]  # (domain, item_id) per term
    terms: np.ndarray  # (n, dim)

    def explain(
        self, index: DomainIndex, items: list[tuple[str, float]], top: int
    ) -> list[list[Contribution]]:
        vectors = index.matrix[[index.positions[item] for item, _ in items]]
        parts = self.terms @ vectors.T  # (n, k)
        explained = []
        for column, (_, score) in enumerate(items):
            if score <= 0 or not np.isfinite(score):
                explained.append([])
                continue
            explained.append(_top_contributions(self.pairs, parts[:, column] / score, top))
        return explained


def zero_shot_explainer(
    state: UserState,
    target: str,
    sources: list[str],
    items: EmbeddingLookup,
    settings: Settings,
) -> TermExplainer | None:
    """The decomposition of :func:`stream.state.interest_query` for the state as it is now."""
    config = settings.recommendations
    half_life = settings.interest.half_life_days * SECONDS_PER_DAY
    when = state_time(state)
    total = interest_sum(
        state,
        target,
        sources,
        when,
        settings.interest,
        source_weight=config.source_weight,
        target_weight=config.target_weight,
    )
    if total is None:
        return None
    norm = float(np.sqrt(np.dot(total, total)))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    pairs, vectors, weights = [], [], []
    feeding = [i for i in state.recent if i.domain == target or i.domain in sources]
    for interaction in feeding[-config.explain_history :]:
        vector = items.embedding(interaction.domain, interaction.item_id)
        if vector is None:
            continue
        domain_weight = (
            config.target_weight if interaction.domain == target else config.source_weight
        )
        decay = 2.0 ** (-max(0.0, when - interaction.timestamp) / half_life)
        pairs.append((interaction.domain, interaction.item_id))
        vectors.append(vector)
        weights.append(domain_weight * interaction.weight * decay / norm)
    if not pairs:
        return None
    terms = np.stack(vectors) * np.asarray(weights, dtype=np.float32)[:, None]
    return TermExplainer(pairs, terms)


@dataclass(slots=True)
class PositionExplainer:
    """Trained versions: the score split over the positions of the model's input.

    ``parts`` are the per-position parts of the user vector before normalization (real
    positions only) and ``norm`` its length, from the forward pass that made the query."""

    parts: np.ndarray  # (history, dim)
    norm: float
    pairs: list[tuple[str, str]]  # (domain, item_id) per position

    def explain(
        self, index: DomainIndex, items: list[tuple[str, float]], top: int
    ) -> list[list[Contribution]]:
        vectors = index.matrix[[index.positions[item] for item, _ in items]]
        terms = (self.parts @ vectors.T) / self.norm  # (history, k)
        explained = []
        for column, (_, score) in enumerate(items):
            if score <= 0 or not np.isfinite(score):
                explained.append([])
                continue
            explained.append(_top_contributions(self.pairs, terms[:, column] / score, top))
        return explained
