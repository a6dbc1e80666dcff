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

Both reduce to the same form, a term vector per (domain, item) whose dot product with an
item's vector is that interaction's part of the score, so one :class:`TermExplainer` serves
both, vectorized over the recommended items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream.scoring import DomainIndex
from stream.settings import Settings
from stream.state import SECONDS_PER_DAY, UserState, state_time

# (item_id, domain, share) of one interaction behind a recommended item, largest share first.
Contributions = list[tuple[str, str, float]]


class Explainer(Protocol):
    """Built when a recommendation is due (the state as it was), used once it is ranked."""

    def explain(
        self, index: DomainIndex, items: list[tuple[str, float]], top: int
    ) -> list[Contributions]: ...


class EmbeddingLookup(Protocol):
    def embeddings(self, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[bool]]: ...


@dataclass(slots=True)
class TermExplainer:
    """Each (domain, item)'s term of the query: ``terms @ v`` is its part of item ``v``'s score.

    Build it with :meth:`of`, which sums the terms of an item the user met more than once (the
    decomposition is linear, so the item's share is the sum of its terms) and orders the pairs,
    so that equal shares are listed by (domain, item) whatever the history's order.
    """

    pairs: list[tuple[str, str]]  # (domain, item_id), sorted and unique
    terms: np.ndarray  # (len(pairs), dim)

    @classmethod
    def of(cls, pairs: list[tuple[str, str]], terms: np.ndarray) -> TermExplainer:
        unique = sorted(set(pairs))
        if unique == pairs:
            return cls(pairs, terms)
        row_of = {pair: row for row, pair in enumerate(unique)}
        merged = np.zeros((len(unique), terms.shape[1]), dtype=terms.dtype)
        np.add.at(merged, [row_of[pair] for pair in pairs], terms)
        return cls(unique, merged)

    def explain(
        self, index: DomainIndex, items: list[tuple[str, float]], top: int
    ) -> list[Contributions]:
        """The ``top`` largest positive shares of each item's score; [] for a score <= 0."""
        vectors = index.matrix[[index.positions[item] for item, _ in items]]
        scores = np.array([score for _, score in items], dtype=np.float64)
        valid = (scores > 0) & np.isfinite(scores)
        shares = (self.terms @ vectors.T) / np.where(valid, scores, 1.0)  # (pairs, items)
        order = np.argsort(-shares, axis=0, kind="stable")[:top].T.tolist()
        shares_by_item = shares.T.tolist()
        pairs = self.pairs
        explained: list[Contributions] = []
        for column, rows in enumerate(order):
            contributions: Contributions = []
            if valid[column]:
                item_shares = shares_by_item[column]
                for row in rows:
                    share = item_shares[row]
                    if share <= 0:
                        break
                    domain, item_id = pairs[row]
                    contributions.append((item_id, domain, round(share, 4)))
            explained.append(contributions)
        return explained


def zero_shot_explainer(
    state: UserState,
    target: str,
    sources: list[str],
    norm: float,
    items: EmbeddingLookup,
    settings: Settings,
) -> TermExplainer | None:
    """The decomposition of :func:`stream.state.interest_query` for the state as it is now;
    ``norm`` is the length of the query's unnormalized sum."""
    config = settings.recommendations
    half_life = settings.interest.half_life_days * SECONDS_PER_DAY
    when = state_time(state)
    feeding = [i for i in state.recent if i.domain == target or i.domain in sources]
    feeding = feeding[-config.explain_history :]
    if not feeding:
        return None
    vectors, found = items.embeddings([(i.domain, i.item_id) for i in feeding])
    pairs, weights = [], []
    for interaction, known in zip(feeding, found, strict=True):
        if not known:
            continue
        domain_weight = (
            config.target_weight if interaction.domain == target else config.source_weight
        )
        decay = 2.0 ** (-max(0.0, when - interaction.timestamp) / half_life)
        pairs.append((interaction.domain, interaction.item_id))
        weights.append(domain_weight * interaction.weight * decay / norm)
    if not pairs:
        return None
    return TermExplainer.of(pairs, vectors * np.asarray(weights, dtype=np.float32)[:, None])
