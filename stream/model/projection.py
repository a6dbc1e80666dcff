"""A model version's vectors for any list of items: learned vectors for the items it was
trained on, the text-only adaptor for items newer than the model.

The worker (serving) and the trainer's promotion gate (judging the serving model on a newer
window) both need this, and must get the same vectors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from stream.model.fusion import FusedModel
from stream.model.item_space import ItemSpace
from stream.model.transfer import TransferModel


def project_items(
    model: torch.nn.Module,
    space: ItemSpace,
    domain: str,
    item_ids: list[str],
    text: np.ndarray,
) -> np.ndarray:
    """(len(item_ids), dim) L2-normalized vectors; ``text`` holds the items' text embeddings
    (rows in ``item_ids`` order). Items of a domain the model never saw get zeros, and so do
    new items of a model without text (SASRec, the evaluator's ID-only peer); a fused model's
    new items get the text half only."""
    rows = [space.index.get((domain, item)) for item in item_ids]
    known = [i for i, row in enumerate(rows) if row is not None]
    new = [i for i, row in enumerate(rows) if row is None]
    matrix = np.zeros((len(rows), model.config.dim), dtype=np.float32)
    with torch.inference_mode():
        if known:
            matrix[known] = model.item_vectors(torch.as_tensor([rows[i] for i in known])).numpy()
        if new and domain in space.domains and isinstance(model, (TransferModel, FusedModel)):
            number = space.domains.index(domain)
            adapted = model.adapt_vectors(
                torch.as_tensor(text[new]), torch.full((len(new),), number)
            )
            matrix[new] = F.normalize(adapted, dim=-1).numpy()
    return matrix


def history_rows(space: ItemSpace, items: list[tuple[str, str]], limit: int) -> list[int]:
    """The model's rows of a user's recent (domain, item_id) pairs it knows, newest last."""
    rows = [space.index.get(pair) for pair in items]
    return [row for row in rows if row is not None][-limit:]
