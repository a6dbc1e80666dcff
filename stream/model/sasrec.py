"""SASRec: the field's standard ID-only sequential recommender.

Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018): learned item-ID
embeddings plus positions, causal self-attention blocks, the user is the output at the last
position, scores are dot products with the same item embeddings. It sees no text, so it cannot
rank items without interactions, and it knows nothing of domains beyond the items themselves.

It has the transfer model's interface (``item_vectors``, ``user_vectors``, ``logits``) so that
:func:`training.train.train_model` trains both on the same examples, loss, negatives and
budget, and the evaluator scores both the same way. Alone it is the evaluator's peer; served,
it is the ID-sequence tower of :class:`stream.model.fusion.FusedModel`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class SASRecConfig:
    dim: int = 128
    blocks: int = 2
    heads: int = 2
    max_history: int = 20
    dropout: float = 0.2
    temperature: float = 0.07

    def to_dict(self) -> dict:
        return asdict(self)


class SASRec(nn.Module):
    """Item-ID embeddings and a causal transformer over the user's recent items."""

    def __init__(self, config: SASRecConfig, items: int) -> None:
        super().__init__()
        self.config = config
        self.item_id = nn.Embedding(items, config.dim)
        nn.init.normal_(self.item_id.weight, std=0.02)
        self.position = nn.Embedding(config.max_history, config.dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            dim_feedforward=config.dim,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        causal = torch.triu(torch.ones(config.max_history, config.max_history), diagonal=1)
        self.register_buffer("causal", causal.bool(), persistent=False)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_id(items), dim=-1)

    def user_vectors(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``history``: (batch, max_history) item indices, right-aligned; ``mask`` True = real.

        Pads are zero vectors attended to like any earlier position (the original's
        timeline mask), so no attention row is empty; the newest position is the user."""
        length = history.shape[1]
        keep = mask.unsqueeze(-1).to(self.item_id.weight.dtype)
        positions = torch.arange(length, device=history.device)
        x = self.dropout(self.item_id(history) * keep + self.position(positions)) * keep
        x = self.blocks(x, mask=self.causal[:length, :length])
        return F.normalize(self.norm(x[:, -1]), dim=-1)

    def queries(self, history: torch.Tensor, mask: torch.Tensor, domain: int) -> torch.Tensor:
        """The user vectors that rank items of domain number ``domain`` (the same for all)."""
        return self.user_vectors(history, mask)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T / self.config.temperature
