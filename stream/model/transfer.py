"""The text-based transfer model: frozen LM item embeddings → learned, domain-aware space.

Item tower: the frozen text embedding goes through a whitening layer and a mixture of linear
experts (UniSRec-style adaptor), plus a domain embedding and a learned item-ID embedding that
is dropped out as a whole during training, so that items without collaborative signal still
get a text-only representation. User tower: one transformer layer over the user's recent
cross-domain items (adapted items + domain + position embeddings), masked mean or learned
position-weighted pooling.
Score: dot product. Weights are plain tensors, saved as safetensors, never pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stream.model.item_space import ItemSpace


def right_aligned(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """Item rows per history (each at most ``width`` long, oldest first) as the model's input:
    right-aligned in ``width`` columns, ``-1`` pads on the left."""
    padded = np.full((len(rows), width), -1, dtype=np.int64)
    for row, history in enumerate(rows):
        padded[row, width - len(history) :] = history
    return padded


def history_tensors(
    histories: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded index matrix → (indices with pads at 0, mask True for real items)."""
    tensor = torch.as_tensor(histories, device=device)
    mask = tensor >= 0
    return tensor.clamp(min=0), mask


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
    # "mean" pools the encoder's outputs evenly; "learned" weighs each position by a learned
    # softmax (masked to real items), so the newest items can count more. Both are linear in
    # the outputs, which is what explanations rely on.
    pooling: str = "mean"
    # Self-attention blocks over the history, and whether each position sees only the items
    # before it (SASRec's causal attention; pads are then zero inputs instead of masked keys).
    layers: int = 1
    causal: bool = False

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
        # Small, like the item vectors (unit length over ``dim``): torch's default N(0, 1) rows
        # are ~11 long and drown every item, so all users of one history length look alike.
        self.position = nn.Embedding(config.max_history, config.dim)
        nn.init.normal_(self.position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            dim_feedforward=2 * config.dim,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        # One layer is stored under ``encoder.*`` directly, the names every one-layer artifact
        # in a store has; more layers nest under ``encoder.layers.N``.
        self.encoder: nn.Module = (
            layer
            if config.layers == 1
            else nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        )
        causal = torch.triu(torch.ones(config.max_history, config.max_history), diagonal=1)
        self.register_buffer("causal_mask", causal.bool(), persistent=False)
        # Zero logits: learned pooling starts as the mean. Only learned pooling has them, so
        # artifacts of mean-pooling models keep their weights' names.
        self.pool_logits: nn.Parameter | None = None
        if config.pooling == "learned":
            self.pool_logits = nn.Parameter(torch.zeros(config.max_history))
        # Residual head starting at zero: an untrained user is the mean of its items.
        self.user_out = nn.Linear(config.dim, config.dim)
        nn.init.zeros_(self.user_out.weight)
        nn.init.zeros_(self.user_out.bias)

    @classmethod
    def for_space(cls, config: ModelConfig, space: ItemSpace, text: np.ndarray) -> TransferModel:
        """A model over ``space``'s rows; ``text`` holds their text embeddings in row order."""
        return cls(
            config,
            torch.as_tensor(text),
            torch.as_tensor(space.domain_of()),
            len(space.domains),
        )

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

    def encode(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch, positions, dim) outputs of the self-attention over the history."""
        positions = torch.arange(history.shape[1], device=history.device)
        if not self.config.causal:
            x = self.item_vectors(history) + self.position(positions)
            return self.encoder(x, src_key_padding_mask=~mask)
        keep = mask.unsqueeze(-1).to(self.position.weight.dtype)
        x = (self.item_vectors(history) * keep + self.position(positions)) * keep
        length = history.shape[1]
        return self.encoder(x, mask=self.causal_mask[:length, :length]) * keep

    def user_vectors(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``history``: (batch, max_history) item indices, right-aligned; ``mask`` True = real."""
        x = self.encode(history, mask)
        pooled = (x * self.pool_weights(mask)).sum(dim=1)
        return F.normalize(pooled + self.user_out(pooled), dim=-1)

    def pool_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """(batch, positions, 1) pooling weights over the real items, summing to 1 (0 for a
        history with none)."""
        if self.pool_logits is not None:
            logits = self.pool_logits[-mask.shape[1] :].expand(mask.shape[0], -1)
            weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
            weights = torch.nan_to_num(weights, nan=0.0)
        else:
            weights = mask.to(self.position.weight.dtype)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return weights.unsqueeze(-1).to(self.position.weight.dtype)

    def user_parts(
        self, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The user vector before normalization, split by input position: ``(parts, constant)``
        with ``user_vectors == normalize(parts.sum(1) + constant)``. The pooling and the head
        are linear, so a score is exactly a sum of one term per history item (explanations)."""
        x = self.encode(history, mask)
        scaled = x * self.pool_weights(mask).to(x.dtype)
        return scaled + scaled @ self.user_out.weight.T, self.user_out.bias

    def queries(self, history: torch.Tensor, mask: torch.Tensor, domain: int) -> torch.Tensor:
        """The user vectors that rank items of domain number ``domain`` (the same for all)."""
        return self.user_vectors(history, mask)

    def explained_queries(
        self, history: torch.Tensor, mask: torch.Tensor, domain: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(queries, terms)``: the normalized user vectors and each input position's part of
        them, ``(batch, positions, dim)``; ``terms @ v`` summed over positions is item ``v``'s
        score less the head's constant (see :meth:`user_parts`)."""
        parts, constant = self.user_parts(history, mask)
        raw = parts.sum(dim=1) + constant
        norms = raw.norm(dim=-1).clamp(min=1e-12).unsqueeze(-1)
        return raw / norms, parts / norms.unsqueeze(1)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T / self.config.temperature
