"""Serving a trained model version: user queries from recent items, re-projected item matrices.

Built off the hot path when a new version arrives: the artifact is validated, the model gets
the worker's own text embeddings for its items, and every catalog item of the target domains
is projected once (items newer than the model get the text-only adaptor), and a domain large
enough gets an approximate index over its projections. The runtime then swaps one reference
between batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from stream.catalog.store import ItemCatalog
from stream.core.ann import ApproximateConfig, ApproximateIndex
from stream.core.explain import TermExplainer
from stream.core.scoring import DomainIndex
from stream.core.state import Interaction, UserState
from stream.model.artifacts import LoadedModel
from stream.model.projection import project_items
from stream.model.transfer import history_tensors, right_aligned

log = logging.getLogger(__name__)


class Snapshot(NamedTuple):
    """What a due recommendation needs from the state: the model's rows of the user's recent
    items, the (domain, item) pairs to explain (None: no explanation) and the target's domain
    number in the model (-1: a domain it never saw)."""

    rows: list[int]
    pairs: list[tuple[str, str]] | None
    domain: int


class ModelScorer:
    """A trained version behind the processor's ``Scorer`` interface."""

    def __init__(self, loaded: LoadedModel, catalog: ItemCatalog, targets: list[str]) -> None:
        started = time.perf_counter()
        self.version = loaded.version
        self.created_at = float(loaded.manifest.get("created_at") or time.time())
        self.space = loaded.space
        self.model = loaded.model.eval()
        text = np.zeros((self.space.size, self.model.config.text_dim), dtype=np.float32)
        for (domain, item_id), row in self.space.index.items():
            vector = catalog.embedding(domain, item_id)
            if vector is not None and vector.shape[0] == text.shape[1]:
                text[row] = vector
        self.model.text.copy_(torch.as_tensor(text))
        self.indexes = {
            target: self._project(catalog.index(target), catalog.approximate) for target in targets
        }
        log.info(
            "model projected version=%s items=%s seconds=%.2f",
            self.version,
            {t: i.size for t, i in self.indexes.items()},
            time.perf_counter() - started,
        )

    def _project(self, catalog_index: DomainIndex, config: ApproximateConfig | None) -> DomainIndex:
        """The domain's items as the model scores them; a large domain gets its own
        approximate index over the projections."""
        ids = list(catalog_index.item_ids)
        matrix = project_items(
            self.model, self.space, catalog_index.domain, ids, catalog_index.matrix
        )
        approximate = (
            ApproximateIndex.build(matrix, catalog_index.active, config)
            if config is not None and len(ids) >= config.min_items
            else None
        )
        return DomainIndex(
            catalog_index.domain,
            ids,
            {item: i for i, item in enumerate(ids)},
            matrix,
            catalog_index.active,
            approximate=approximate,
        )

    def query(self, state: UserState, target: str, sources: list[str]) -> np.ndarray | None:
        """One user's query (tools and tests; the worker batches through prepare/finish)."""
        prepared = self.prepare(state, target, sources, explain=False)
        return None if prepared is None else self.finish([prepared])[0][0]

    def prepare(
        self, state: UserState, target: str, sources: list[str], explain: bool
    ) -> Snapshot | None:
        history = self._history(state, target, sources)
        if not history:
            return None
        rows = [self.space.index[(i.domain, i.item_id)] for i in history]
        domain = self.space.domains.index(target) if target in self.space.domains else -1
        return Snapshot(rows, [(i.domain, i.item_id) for i in history] if explain else None, domain)

    def finish(self, prepared: Sequence[object]) -> tuple[np.ndarray, list[TermExplainer | None]]:
        """All queries of one target in one forward pass, histories right-aligned and padded
        to ``max_history`` exactly as in training; the same pass yields the explanations."""
        snapshots: Sequence[Snapshot] = prepared  # type: ignore[assignment]
        length = self.model.config.max_history
        histories = right_aligned([snapshot.rows for snapshot in snapshots], length)
        tensor, mask = history_tensors(histories, torch.device("cpu"))
        with torch.inference_mode():
            queries, terms = self.model.explained_queries(tensor, mask, snapshots[0].domain)
        explainers: list[TermExplainer | None] = []
        for row, snapshot in enumerate(snapshots):
            if snapshot.pairs is None:
                explainers.append(None)
                continue
            positions = terms[row, length - len(snapshot.rows) :].numpy()
            explainers.append(TermExplainer.of(snapshot.pairs, positions))
        return queries.numpy(), explainers

    def index(self, target: str) -> DomainIndex:
        return self.indexes[target]

    def _history(self, state: UserState, target: str, sources: list[str]) -> list[Interaction]:
        """The user's recent items the model knows, in the domains that feed ``target``."""
        wanted = set(sources) | {target}
        known = [
            i
            for i in state.recent
            if i.domain in wanted and (i.domain, i.item_id) in self.space.index
        ]
        return known[-self.model.config.max_history :]
