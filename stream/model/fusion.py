"""The served model: the text-transfer tower and an ID-sequence tower, scores added.

The transfer model (:mod:`stream.model.transfer`) carries what item text says and transfers
it across domains; SASRec (:mod:`stream.model.sasrec`) carries what item IDs say about the
order of a user's items, which text does not. Each is trained on its own, with its own early
stopping, and neither is the better one everywhere: on food-kitchen the text tower ranks
kitchen items for users with only food history worse than the ID tower, and food items better.
So a score is ``transfer + w · sequence``, with one weight per (target domain, whether the user
has history in it) fitted on held-out users (:func:`training.fusion.fit_fusion`).

The sum is a dot product of concatenated vectors: items are ``[transfer, sequence]``, the
query is ``[transfer, w · sequence]``, so top-K, the item index and the projection of new
items work unchanged. A new item has no ID vector: its sequence half is zero, and it is
ranked by its text alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stream.model.sasrec import SASRec
from stream.model.transfer import TransferModel

COLD, WARM = 0, 1  # columns of the weights: the user has no history in the target / has some


@dataclass(frozen=True)
class FusedShape:
    """What callers read from a served model's ``config``: the input window, the text width
    and the width of its item vectors."""

    max_history: int
    text_dim: int
    dim: int


class FusedModel(nn.Module):
    """``transfer`` and ``sequence`` over the same item rows; ``weights`` is (domains, 2)."""

    def __init__(self, transfer: TransferModel, sequence: SASRec, weights: torch.Tensor) -> None:
        super().__init__()
        domains = transfer.domain.num_embeddings
        if tuple(weights.shape) != (domains, 2):
            raise ValueError(f"fusion weights {tuple(weights.shape)} for {domains} domains")
        if transfer.item_id.num_embeddings != sequence.item_id.num_embeddings:
            raise ValueError("the two towers must share one item space")
        if transfer.config.max_history != sequence.config.max_history:
            raise ValueError("the two towers must read the same history window")
        self.transfer = transfer
        self.sequence = sequence
        self.register_buffer("weights", weights.float().clone())
        self.config = FusedShape(
            transfer.config.max_history,
            transfer.config.text_dim,
            transfer.config.dim + sequence.config.dim,
        )

    @property
    def text(self) -> torch.Tensor:
        """The transfer tower's text embeddings (the worker fills them from its catalog)."""
        return self.transfer.text

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.transfer.item_vectors(items), self.sequence.item_vectors(items)], dim=-1
        )

    def adapt_vectors(self, text: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Items newer than the model: the text adaptor, and no ID half."""
        adapted = self.transfer.adapt_vectors(text, domains)
        return torch.cat(
            [adapted, adapted.new_zeros(*adapted.shape[:-1], self.sequence.config.dim)], -1
        )

    def sequence_weights(
        self, history: torch.Tensor, mask: torch.Tensor, domain: int
    ) -> torch.Tensor:
        """(batch, 1): each user's weight of the sequence score for domain number ``domain``
        (0 for a domain the model never saw)."""
        if not 0 <= domain < self.weights.shape[0]:
            return torch.zeros(history.shape[0], 1, device=history.device)
        warm = ((self.transfer.item_domain[history] == domain) & mask).any(dim=1)
        return self.weights[domain][warm.long()].unsqueeze(-1)

    def queries(self, history: torch.Tensor, mask: torch.Tensor, domain: int) -> torch.Tensor:
        weight = self.sequence_weights(history, mask, domain)
        text = self.transfer.user_vectors(history, mask)
        return torch.cat([text, weight * self.sequence.user_vectors(history, mask)], dim=-1)

    def explained_queries(
        self, history: torch.Tensor, mask: torch.Tensor, domain: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The transfer half decomposes over positions (see ``TransferModel.user_parts``); the
        sequence half does not (its user is one causal position), so its terms are zero and its
        part of a score is left to the share no interaction covers."""
        text, terms = self.transfer.explained_queries(history, mask, domain)
        weight = self.sequence_weights(history, mask, domain)
        sequence = weight * self.sequence.user_vectors(history, mask)
        padding = terms.new_zeros(*terms.shape[:-1], self.sequence.config.dim)
        return torch.cat([text, sequence], dim=-1), torch.cat([terms, padding], dim=-1)
