"""Trains the transfer model: next-item prediction, InfoNCE over in-batch and sampled negatives.

Examples come from user sequences (from the event log or a dataset folder): for every event
after the first, the history before it predicts it. For a share of examples whose history
spans other domains, the target's own domain is removed from the history, so the model learns
what the zero-shot text space cannot: how one domain's behaviour predicts another's.
Seeded and reproducible on the CPU; uses the GPU with bf16 autocast when one is present.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from training.item_space import ItemSpace
from training.model import ModelConfig, TransferModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 512
    learning_rate: float = 2e-3
    sampled_negatives: int = 256
    cold_share: float = 0.5
    seed: int = 0
    device: str = "auto"
    max_examples: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Examples:
    """Right-aligned history windows (``-1`` pads) and the item each one predicts."""

    histories: np.ndarray  # (n, max_history) int64
    targets: np.ndarray  # (n,) int64


def build_examples(
    space: ItemSpace,
    sequences: Sequence[Sequence[tuple[str, str]]],
    max_history: int,
    cold_share: float,
    seed: int,
) -> Examples:
    """Examples from sequences of ``(domain, item_id)`` in time order."""
    rng = np.random.default_rng(seed)
    histories: list[list[int]] = []
    targets: list[int] = []
    for sequence in sequences:
        rows = [space.index.get(pair) for pair in sequence]
        domains = [pair[0] for pair in sequence]
        for t in range(1, len(rows)):
            if rows[t] is None:
                continue
            before = [(r, d) for r, d in zip(rows[:t], domains[:t], strict=True) if r is not None]
            if not before:
                continue
            history = [r for r, _ in before]
            others = [r for r, d in before if d != domains[t]]
            if others and len(others) < len(history) and rng.random() < cold_share:
                history = others
            histories.append(history[-max_history:])
            targets.append(rows[t])
    padded = np.full((len(histories), max_history), -1, dtype=np.int64)
    for row, history in enumerate(histories):
        padded[row, max_history - len(history) :] = history
    return Examples(padded, np.array(targets, dtype=np.int64))


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def history_tensors(
    histories: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded index matrix → (indices with pads at 0, mask True for real items)."""
    tensor = torch.as_tensor(histories, device=device)
    mask = tensor >= 0
    return tensor.clamp(min=0), mask


def new_model(space: ItemSpace, text: np.ndarray, config: ModelConfig) -> TransferModel:
    return TransferModel(
        config,
        torch.as_tensor(text),
        torch.as_tensor(space.domain_of()),
        len(space.domains),
    )


def train_model(
    space: ItemSpace,
    text: np.ndarray,
    examples: Examples,
    model_config: ModelConfig,
    config: TrainConfig,
    progress: bool = True,
) -> tuple[TransferModel, dict]:
    """Train from scratch; returns the model (in eval mode) and a summary."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    model = new_model(space, text, model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    count = len(examples.targets)
    if config.max_examples is not None and count > config.max_examples:
        chosen = rng.choice(count, config.max_examples, replace=False)
        examples = Examples(examples.histories[chosen], examples.targets[chosen])
        count = config.max_examples
    domain_rows = {
        n: np.arange(space.domain_slice(d).start, space.domain_slice(d).stop)
        for n, d in enumerate(space.domains)
    }
    item_domain = np.asarray(space.domain_of())
    started = time.perf_counter()
    losses: list[float] = []
    autocast = device.type == "cuda"
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(count)
        steps = range(0, count, config.batch_size)
        bar = tqdm(steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
        epoch_loss = 0.0
        for start in bar:
            batch = order[start : start + config.batch_size]
            history, mask = history_tensors(examples.histories[batch], device)
            targets = torch.as_tensor(examples.targets[batch], device=device)
            # Sampled negatives from each target's own domain: the ranking the model must win.
            target_domains = item_domain[examples.targets[batch]]
            negatives = np.concatenate(
                [
                    rng.choice(domain_rows[d], config.sampled_negatives)
                    for d in np.unique(target_domains)
                ]
            )
            negative_domain = item_domain[negatives]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                users = model.user_vectors(history, mask)
                positives = model.item_vectors(targets)
                sampled = model.item_vectors(torch.as_tensor(negatives, device=device))
                in_batch = model.logits(users, positives)
                against = model.logits(users, sampled)
            # A sampled negative of another domain is no competitor: mask it out.
            foreign = torch.as_tensor(
                target_domains[:, None] != negative_domain[None, :], device=device
            )
            against = against.float().masked_fill(foreign, float("-inf"))
            same_item = targets[:, None] == torch.as_tensor(negatives, device=device)[None, :]
            against = against.masked_fill(same_item, float("-inf"))
            logits = torch.cat([in_batch.float(), against], dim=1)
            duplicate = (targets[:, None] == targets[None, :]) & ~torch.eye(
                len(batch), dtype=torch.bool, device=device
            )
            logits[:, : len(batch)] = logits[:, : len(batch)].masked_fill(duplicate, float("-inf"))
            loss = F.cross_entropy(logits, torch.arange(len(batch), device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach()) * len(batch)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        losses.append(epoch_loss / count)
        log.info("epoch done epoch=%d loss=%.4f", epoch + 1, losses[-1])
    model.eval()
    summary = {
        "examples": int(count),
        "epochs": config.epochs,
        "loss_per_epoch": [round(loss, 5) for loss in losses],
        "seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
    }
    log.info("training done %s", summary)
    return model, summary
