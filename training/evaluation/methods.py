"""The methods compared by the evaluator, each scoring every item of a target domain per case.

- ``popularity``: how often each target-domain item occurs in the training signal;
- ``cooccurrence_knn``: collaborative item kNN: the sum over history items of the number of
  users who have both, divided by sqrt(candidate popularity); crosses domains through users;
- ``zero_shot``: what the worker serves before its first trained model, exactly as it runs:
  the same state update (:func:`stream.core.state.apply_event`), the same query
  (:func:`stream.core.state.interest_query`) and the same scorer
  (:func:`stream.core.scoring.score_items`) over the same item embeddings, with the popularity
  prior the trainer would publish (``stream.model.prior``, fitted by ``training.prior``) when
  one is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from scipy import sparse
from tqdm import tqdm

from stream.catalog.encoder import TextEncoder
from stream.catalog.store import ItemCatalog
from stream.core.items import item_text, text_digest
from stream.core.scoring import DomainIndex, score_items
from stream.core.state import (
    AppliedEvent,
    UserState,
    apply_event,
    interest_query,
    scale_query,
    state_time,
)
from stream.data.replay import event_type_of
from stream.model.item_space import ItemSpace
from stream.model.prior import PopularityPrior
from stream.model.projection import history_rows, project_items
from stream.model.transfer import history_tensors, right_aligned
from stream.settings import Settings
from training.evaluation.cases import EvalCase, EvalData


def interaction_matrix(space: ItemSpace, sequences: list[list]) -> sparse.csr_matrix:
    """Binary sequences × items matrix of the known items in ``sequences``."""
    rows, columns = [], []
    for row, sequence in enumerate(sequences):
        seen = {space.index.get((event.domain, event.item_id)) for event in sequence}
        seen.discard(None)
        rows.extend([row] * len(seen))
        columns.extend(seen)
    values = np.ones(len(rows), dtype=np.float32)
    return sparse.csr_matrix((values, (rows, columns)), shape=(len(sequences), space.size))


def item_counts(space: ItemSpace, sequences: list[list]) -> np.ndarray:
    """How many of ``sequences`` met each item, in ``space`` order (the popularity count)."""
    return np.asarray(interaction_matrix(space, sequences).sum(axis=0)).ravel()


def mask_history(scores: np.ndarray, cases: list[EvalCase], space: ItemSpace, domain: str) -> None:
    """Set to -inf each case's history items of ``domain`` (the full protocol never
    recommends them, as the worker masks seen items)."""
    for row, case in enumerate(cases):
        seen = [space.local(domain, e.item_id) for e in case.history if e.domain == domain]
        scores[row, [p for p in seen if p is not None]] = -np.inf


class Method(Protocol):
    name: str

    def scores(self, cases: list[EvalCase], domain: str) -> np.ndarray: ...


class Popularity:
    name = "popularity"

    def __init__(self, space: ItemSpace, training: sparse.csr_matrix) -> None:
        self.space = space
        self.counts = np.asarray(training.sum(axis=0)).ravel().astype(np.float32)

    def scores(self, cases: list[EvalCase], domain: str) -> np.ndarray:
        row = self.counts[self.space.domain_slice(domain)]
        return np.broadcast_to(row, (len(cases), row.size)).copy()


class ItemKNN:
    name = "cooccurrence_knn"

    def __init__(self, space: ItemSpace, training: sparse.csr_matrix) -> None:
        self.space = space
        cooccurrence = (training.T @ training).tocsr()
        cooccurrence.setdiag(0)
        cooccurrence.eliminate_zeros()
        self.cooccurrence = cooccurrence
        self.popularity = np.asarray(training.sum(axis=0)).ravel().astype(np.float32)

    def scores(self, cases: list[EvalCase], domain: str) -> np.ndarray:
        history = interaction_matrix(self.space, [case.history for case in cases])
        block = self.space.domain_slice(domain)
        summed = (history @ self.cooccurrence[:, block]).toarray().astype(np.float32)
        return summed / np.sqrt(np.maximum(self.popularity[block], 1.0))


class ZeroShotText:
    """Version 0 as the worker serves it: with ``prior``, the popularity prior's version
    (``stream.model.prior``), whose index bias and per-user query scale are applied the same way."""

    name = "zero_shot"

    def __init__(
        self,
        space: ItemSpace,
        embeddings: dict[str, np.ndarray],
        settings: Settings,
        prior: PopularityPrior | None = None,
    ) -> None:
        self.space = space
        self.embeddings = embeddings
        self.settings = settings
        self.prior = prior
        self.indexes = {
            domain: DomainIndex(
                domain,
                space.item_ids[domain],
                {item: i for i, item in enumerate(space.item_ids[domain])},
                matrix,
                np.ones(len(matrix), dtype=bool),
                bias=prior.bias(domain, space.item_ids[domain]) if prior is not None else None,
            )
            for domain, matrix in embeddings.items()
        }

    def state(self, case: EvalCase) -> UserState:
        """The worker's state after the user's last history event."""
        state = UserState(case.user_id)
        interest = self.settings.interest
        for offset, event in enumerate(case.history):
            position = self.space.local(event.domain, event.item_id)
            if position is None:
                continue
            apply_event(
                state,
                AppliedEvent(
                    event_id=str(offset),
                    domain=event.domain,
                    item_id=event.item_id,
                    event_type=event_type_of(event.event_type),
                    timestamp=event.ts,
                    rating=event.rating,
                    source="history:0",
                    offset=offset,
                ),
                self.embeddings[event.domain][position],
                interest,
            )
        return state

    def query(self, case: EvalCase) -> np.ndarray | None:
        """The worker's query after the user's last history event: the recommendation the
        running system would have shown just before the target event."""
        state = self.state(case)
        recs = self.settings.recommendations
        sources = [domain for domain in self.space.domains if domain != case.domain]
        query = interest_query(
            state,
            case.domain,
            sources,
            state_time(state),
            self.settings.interest,
            source_weight=recs.source_weight,
            target_weight=recs.target_weight,
        )
        if query is None or self.prior is None:
            return query
        return scale_query(query, self.prior.weight(state, case.domain))

    def scores(self, cases: list[EvalCase], domain: str) -> np.ndarray:
        dimension = self.embeddings[domain].shape[1]
        queries = np.zeros((len(cases), dimension), dtype=np.float32)
        for row, case in enumerate(cases):
            query = self.query(case)
            if query is not None:
                queries[row] = query
        return score_items(self.indexes[domain], queries)


def embed_catalog(
    data: EvalData, encoder: TextEncoder, cache_dir: Path, progress: bool = True
) -> dict[str, np.ndarray]:
    """Item embeddings per domain in dataset order; each text is encoded once and cached in
    the same RocksDB item store the worker uses."""
    catalog = ItemCatalog(cache_dir, encoder.fingerprint, encoder.dimension)
    try:
        catalog.load()
        for domain in data.domains:
            todo = []
            for item in data.items[domain]:
                text = item_text(item.title, item.text)
                if catalog.needs_encoding(domain, item.item_id, text_digest(text)):
                    todo.append((item.item_id, text))
            chunk = 1024
            bar = tqdm(
                total=len(todo), desc=f"encoding {domain}", unit="item", disable=not progress
            )
            for start in range(0, len(todo), chunk):
                rows = todo[start : start + chunk]
                vectors = encoder.encode([text for _, text in rows])
                catalog.add(
                    domain,
                    [item_id for item_id, _ in rows],
                    [text_digest(text) for _, text in rows],
                    vectors,
                )
                bar.update(len(rows))
            bar.close()
        embeddings = {}
        for domain in data.domains:
            vectors = [catalog.embedding(domain, item.item_id) for item in data.items[domain]]
            embeddings[domain] = np.stack(vectors).astype(np.float32)
        return embeddings
    finally:
        catalog.close()


class Trained:
    """A transfer model: the user's recent items (all domains) → user vector, dot products with
    the target domain's items. ``model_space`` is the model's own item space: a stored version
    judged on newer data gets text-only vectors for items it has never seen, exactly as the
    worker serves it (see stream.model.projection); ``embeddings`` are needed only for those."""

    def __init__(
        self,
        model: torch.nn.Module,
        space: ItemSpace,
        model_space: ItemSpace | None = None,
        embeddings: dict[str, np.ndarray] | None = None,
        name: str = "trained",
    ) -> None:
        model_space = model_space or space
        self.name = name
        self.model = model.eval()
        self.model_space = model_space
        self.space = space
        self.max_history = model.config.max_history
        self.items = {
            domain: torch.as_tensor(
                project_items(
                    model,
                    model_space,
                    domain,
                    space.item_ids[domain],
                    embeddings[domain]
                    if embeddings is not None
                    else _no_text(model, space, domain),
                )
            )
            for domain in space.domains
        }

    def scores(self, cases: list[EvalCase], domain: str) -> np.ndarray:
        histories = right_aligned(
            [
                history_rows(
                    self.model_space,
                    [(e.domain, e.item_id) for e in case.history],
                    self.max_history,
                )
                for case in cases
            ],
            self.max_history,
        )
        tensor, mask = history_tensors(histories, torch.device("cpu"))
        empty = ~mask.any(dim=1)
        mask[empty, -1] = True
        domains = self.model_space.domains
        number = domains.index(domain) if domain in domains else -1
        with torch.inference_mode():
            users = self.model.queries(tensor, mask, number)
            scores = (users @ self.items[domain].T).numpy()
        scores[empty.numpy()] = 0.0
        return scores


def _no_text(model: torch.nn.Module, space: ItemSpace, domain: str) -> np.ndarray:
    """Placeholder text rows for a model judged on its own item space (every item is known);
    an ID-only model (SASRec) has no text width."""
    width = getattr(model.config, "text_dim", 0)
    return np.zeros((len(space.item_ids[domain]), width), dtype=np.float32)
