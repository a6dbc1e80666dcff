"""Held-out users that pick the training epoch: who they are and how a model ranks them.

Scored after every epoch, so it must be cheap: one matrix product per target domain, full
ranking with the users' seen items masked, as the evaluator and the worker rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from stream.model.item_space import ItemSpace
from stream.model.transfer import history_tensors, right_aligned

T = TypeVar("T")


@dataclass(frozen=True)
class Validation:
    """Held-out users' last events, scored after each epoch to pick the best one.

    ``warm`` holds each user's history before the target, ``cold`` the same without the
    target's domain (a row of pads when nothing is left); ``seen`` marks (row, item) pairs
    of the target's domain that the full ranking masks, as the evaluator does."""

    warm: np.ndarray  # (n, max_history) int64, right-aligned, -1 pads
    cold: np.ndarray  # (n, max_history) int64
    targets: np.ndarray  # (n,) int64
    seen: np.ndarray  # (m, 2) int64: row, item

    def __len__(self) -> int:
        return len(self.targets)


def build_validation(
    space: ItemSpace, sequences: Sequence[Sequence[tuple[str, str]]], max_history: int
) -> Validation:
    """Each sequence's last known event is its target, everything before it the history."""
    warm_rows: list[list[int]] = []
    cold_rows: list[list[int]] = []
    targets: list[int] = []
    seen: list[tuple[int, int]] = []
    for sequence in sequences:
        pairs = [(space.index.get(pair), pair[0]) for pair in sequence]
        pairs = [(row, domain) for row, domain in pairs if row is not None]
        if len(pairs) < 2:
            continue
        (target, domain), history = pairs[-1], pairs[:-1]
        number = len(targets)
        targets.append(target)
        warm_rows.append([row for row, _ in history][-max_history:])
        cold_rows.append([row for row, d in history if d != domain][-max_history:])
        seen.extend((number, row) for row, d in history if d == domain)
    return Validation(
        right_aligned(warm_rows, max_history),
        right_aligned(cold_rows, max_history),
        np.array(targets, dtype=np.int64),
        np.array(seen, dtype=np.int64).reshape(-1, 2),
    )


def split_validation(
    sequences: Sequence[Sequence[T]],
    share: float = 0.05,
    max_users: int = 2_000,
    seed: int = 0,
    domain: Callable[[T], str] = itemgetter(0),
) -> tuple[list[Sequence[T]], list[Sequence[T]]]:
    """Hold out the last event of a random share of sequences (2+ events) for validation:
    ``(training sequences, validation sequences)``; a held-out user keeps its history in
    training, as the evaluation users do, and only its last event is withheld. Users active
    in two or more domains are picked first: only they can be scored cold. ``domain`` gives
    an event's domain (the first element of a ``(domain, item)`` pair by default)."""
    rng = np.random.default_rng(seed)
    eligible = [n for n, sequence in enumerate(sequences) if len(sequence) >= 2]
    count = min(max_users, int(round(len(eligible) * share)))
    spanning = [n for n in eligible if len({domain(event) for event in sequences[n]}) > 1]
    others = [n for n in eligible if len({domain(event) for event in sequences[n]}) == 1]
    ranked = [*rng.permutation(spanning).tolist(), *rng.permutation(others).tolist()]
    chosen = set(ranked[:count])
    training = [s[:-1] if n in chosen else s for n, s in enumerate(sequences)]
    return training, [sequences[n] for n in sorted(chosen)]


def ndcg_at_10(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """NDCG@10 of each row's target column, ties ranked at their midpoint."""
    target = scores.gather(1, targets[:, None])
    rank = 1 + (scores > target).sum(1) + ((scores == target).sum(1) - 1) / 2
    return torch.where(rank <= 10, 1 / torch.log2(rank.float() + 1), torch.zeros_like(rank))


def mask_seen(scores: torch.Tensor, rows: np.ndarray, seen: np.ndarray, offset: int) -> None:
    """Set to -inf the items each of ``rows`` (sorted validation rows, one per score row) has
    seen; ``offset`` is the first item row of the scored domain."""
    hits = np.isin(seen[:, 0], rows)
    if hits.any():
        at = torch.as_tensor(np.searchsorted(rows, seen[hits, 0]), device=scores.device)
        columns = torch.as_tensor(seen[hits, 1] - offset, device=scores.device)
        scores[at, columns] = -torch.inf


def validation_scores(
    model: nn.Module,
    space: ItemSpace,
    validation: Validation,
    device: torch.device,
    baseline: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean NDCG@10 (full ranking within the target's domain, seen items masked) of the cold
    and the warm histories, and their average ``score``; ``baseline`` (an item score vector,
    e.g. popularity) is ranked the same way instead of the model when given."""
    item_domain = np.asarray(space.domain_of())
    result: dict[str, float] = {}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for group, histories in (("cold", validation.cold), ("warm", validation.warm)):
            total, count = 0.0, 0
            for number, domain in enumerate(space.domains):
                block = space.domain_slice(domain)
                rows = np.flatnonzero(
                    (item_domain[validation.targets] == number) & (histories >= 0).any(axis=1)
                )
                if len(rows) == 0:
                    continue
                if baseline is None:
                    items = model.item_vectors(torch.arange(block.start, block.stop, device=device))
                for start in range(0, len(rows), 1024):
                    chunk = rows[start : start + 1024]
                    if baseline is None:
                        tensor, mask = history_tensors(histories[chunk], device)
                        scores = (model.queries(tensor, mask, number) @ items.T).float()
                    else:
                        scores = torch.as_tensor(baseline[block], device=device).float()
                        scores = scores.expand(len(chunk), -1).clone()
                    if group == "warm":  # cold histories hold none of the target's domain
                        mask_seen(scores, chunk, validation.seen, block.start)
                    targets = torch.as_tensor(
                        validation.targets[chunk] - block.start, device=device
                    )
                    total += float(ndcg_at_10(scores, targets).sum())
                    count += len(chunk)
            result[group] = total / count if count else 0.0
    model.train(was_training)
    result["score"] = (result["cold"] + result["warm"]) / 2
    return result
