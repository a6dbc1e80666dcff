"""The text-based transfer model: frozen LM item embeddings → learned, domain-aware space.

Item tower: the frozen text embedding goes through a whitening layer and a mixture of linear
experts (UniSRec-style adaptor), plus a domain embedding and a learned item-ID embedding that
is dropped out as a whole during training, so that items without collaborative signal still
get a text-only representation. User tower: one transformer layer over the user's recent
cross-domain items (adapted items + domain + position embeddings), masked mean pooling.
Score: dot product. Weights are plain tensors, saved as safetensors, never pickled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelConfig:
    text_dim: int = 384
    dim: int = 128
    experts: int = 4
    max_history: int = 20
    heads: int = 2
    id_dropout: float = 0.3
    dropout: float = 0.1
    temperature: float = 0.07

    def to_dict(self) -> dict:
        return asdict(self)


class TransferModel(nn.Module):
    """Scores items of any domain for a user described by recent cross-domain items."""

    def __init__(
        self,
        config: ModelConfig,
        text_embeddings: torch.Tensor,
        item_domains: torch.Tensor,
        domains: int,
    ) -> None:
        super().__init__()
        self.config = config
        items = text_embeddings.shape[0]
        # Frozen inputs, not saved: the serving side has the text embeddings in its item
        # store, and the item order comes with the artifact (items.json).
        self.register_buffer("text", text_embeddings.float(), persistent=False)
        self.register_buffer("item_domain", item_domains.long(), persistent=False)
        self.whiten_mean = nn.Parameter(text_embeddings.float().mean(dim=0))
        self.whiten = nn.Linear(config.text_dim, config.text_dim, bias=False)
        nn.init.eye_(self.whiten.weight)
        # No biases and a zero domain embedding at start: a component shared by every item
        # makes all items look alike and stalls the contrastive loss at chance.
        self.experts = nn.Linear(config.text_dim, config.dim * config.experts, bias=False)
        self.gate = nn.Linear(config.text_dim, config.experts)
        self.domain = nn.Embedding(domains, config.dim)
        self.item_id = nn.Embedding(items, config.dim)
        nn.init.normal_(self.item_id.weight, std=0.02)
        nn.init.zeros_(self.domain.weight)
        self.position = nn.Embedding(config.max_history, config.dim)
        self.encoder = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            dim_feedforward=2 * config.dim,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        # Residual head starting at zero: an untrained user is the mean of its items.
        self.user_out = nn.Linear(config.dim, config.dim)
        nn.init.zeros_(self.user_out.weight)
        nn.init.zeros_(self.user_out.bias)

    def adapt_text(self, items: torch.Tensor) -> torch.Tensor:
        """Text part of the item representation (no ID): what a new item gets."""
        return self.adapt_vectors(self.text[items], self.item_domain[items])

    def adapt_vectors(self, text: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """The adaptor applied to any text embeddings, e.g. of items newer than the model."""
        x = self.whiten(text - self.whiten_mean)
        experts = self.experts(x).view(*x.shape[:-1], self.config.experts, self.config.dim)
        weights = torch.softmax(self.gate(x), dim=-1).unsqueeze(-1)
        return (experts * weights).sum(dim=-2) + self.domain(domains)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Item representations; in training the ID part is dropped per item with id_dropout."""
        ids = self.item_id(items)
        if self.training and self.config.id_dropout > 0:
            keep = torch.rand(ids.shape[:-1], device=ids.device) >= self.config.id_dropout
            ids = ids * keep.unsqueeze(-1).to(ids.dtype)
        return F.normalize(self.adapt_text(items) + ids, dim=-1)

    def user_vectors(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``history``: (batch, max_history) item indices, right-aligned; ``mask`` True = real."""
        positions = torch.arange(history.shape[1], device=history.device)
        x = self.item_vectors(history) + self.position(positions)
        x = self.encoder(x, src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return F.normalize(pooled + self.user_out(pooled), dim=-1)

    def user_parts(
        self, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The user vector before normalization, split by input position: ``(parts, constant)``
        with ``user_vectors == normalize(parts.sum(1) + constant)``. The pooling and the head
        are linear, so a score is exactly a sum of one term per history item (explanations)."""
        positions = torch.arange(history.shape[1], device=history.device)
        x = self.item_vectors(history) + self.position(positions)
        x = self.encoder(x, src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).to(x.dtype)
        scaled = x * weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return scaled + scaled @ self.user_out.weight.T, self.user_out.bias

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T / self.config.temperature
