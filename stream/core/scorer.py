"""What the batch pipeline scores with: the catalog it reads, the model-version interface and
version 0 (zero-shot text similarity)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from schemas import ZERO_SHOT_VERSION
from stream.core.explain import Explainer, zero_shot_explainer
from stream.core.scoring import DomainIndex
from stream.core.state import UserState, interest_sum, normalize, scale_query, state_time
from stream.settings import Settings


class ItemEmbeddings(Protocol):
    """What the processor needs from the item catalog."""

    def embedding(self, domain: str, item_id: str) -> np.ndarray | None: ...
    def embeddings(self, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[bool]]: ...
    def add(
        self, domain: str, item_ids: list[str], digests: list[bytes], vectors: np.ndarray
    ) -> None: ...
    def index(self, domain: str) -> DomainIndex: ...


class Scorer(Protocol):
    """A model version: how a user's state becomes a query, and the items it is scored on.

    ``prepare`` runs when a recommendation is due and snapshots what the query needs (the
    state changes as the batch goes on); ``finish`` turns the snapshots of one target into
    queries at once (one forward pass for a trained model) and, when asked, explainers.
    """

    version: str

    def prepare(
        self, state: UserState, target: str, sources: list[str], explain: bool
    ) -> object | None: ...
    def finish(self, prepared: Sequence[object]) -> tuple[np.ndarray, list[Explainer | None]]: ...
    def index(self, target: str) -> DomainIndex: ...


class ZeroShotScorer:
    """Model version 0: the decayed interest in the encoder's text space, cosine to items."""

    version = ZERO_SHOT_VERSION

    def __init__(self, settings: Settings, items: ItemEmbeddings) -> None:
        self.settings = settings
        self.items = items

    def query(self, state: UserState, target: str, sources: list[str]) -> np.ndarray | None:
        prepared = self.prepare(state, target, sources, explain=False)
        return None if prepared is None else prepared[0]

    def index(self, target: str) -> DomainIndex:
        return self.items.index(target)

    def prepare(
        self, state: UserState, target: str, sources: list[str], explain: bool
    ) -> tuple[np.ndarray, Explainer | None] | None:
        """The normalized decayed interest (as :func:`stream.core.state.interest_query`) and, when
        asked, its exact decomposition, from one sum."""
        config = self.settings.recommendations
        when = state_time(state)
        total = interest_sum(
            state,
            target,
            sources,
            when,
            self.settings.interest,
            source_weight=config.source_weight,
            target_weight=config.target_weight,
        )
        normalized = normalize(total) if total is not None else None
        if normalized is None:
            return None
        query, norm = normalized
        # A subclass may scale the query (and so its decomposition) per user; x / 1 is x.
        weight = self.weight(state, target)
        explainer = (
            zero_shot_explainer(
                state, target, sources, norm * weight, self.items, self.settings, when
            )
            if explain
            else None
        )
        return scale_query(query, weight), explainer

    def weight(self, state: UserState, target: str) -> float:
        """What the user's cosine query is divided by: 1 here (see ``stream.model.prior``)."""
        return 1.0

    def finish(self, prepared: Sequence[object]) -> tuple[np.ndarray, list[Explainer | None]]:
        pairs: Sequence[tuple[np.ndarray, Explainer | None]] = prepared  # type: ignore[assignment]
        return np.stack([query for query, _ in pairs]), [explainer for _, explainer in pairs]
