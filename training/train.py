"""Trains the transfer model: next-item prediction, InfoNCE over in-batch and sampled negatives.

Examples come from user sequences (from the event log or a dataset folder): for every event
after the first, the history before it predicts it. For a share of examples whose history
spans other domains, the target's own domain is removed from the history, so the model learns
what the zero-shot text space cannot: how one domain's behaviour predicts another's.
The learning rate warms up linearly, then follows a cosine to a tenth of its peak; after each
epoch the model is scored on held-out users (NDCG@10, full ranking, cold and warm) and the best
epoch is kept, so the epoch count adapts to the data. Each epoch's loss is reported beside its
chance level (the loss of scoring every candidate alike): a run that ends near it is flagged.
Seeded and reproducible on the CPU; uses the GPU with bf16 autocast when one is present.
Under torch.distributed (see training.distributed) each process trains a shard of every batch
and the result matches one process's, so training scales past one GPU.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_gather
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from stream.catalog.encoder import resolve_device
from stream.model.item_space import ItemSpace
from stream.model.sasrec import SASRec, SASRecConfig
from stream.model.transfer import ModelConfig, TransferModel, history_tensors, right_aligned
from training.validation import Validation, validation_scores

if TYPE_CHECKING:
    from stream.settings import TrainerSettings

log = logging.getLogger(__name__)


# A run whose final loss is above this share of its chance level has learned next to nothing.
NEAR_CHANCE = 0.95


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2  # the most epochs; with validation, early stopping may end sooner
    batch_size: int = 512  # the largest batch: smaller data gets smaller ones, see batch_size_for
    min_batch_size: int = 128
    min_steps_per_epoch: int = 500  # 0: every run uses batch_size
    learning_rate: float = 2e-3
    warmup_share: float = 0.05  # share of all steps with a linear warm-up
    final_lr_share: float = 0.1  # the cosine ends at this share of the peak learning rate
    patience: int = 2  # epochs without a better validation score before stopping
    popularity_correction: bool = True  # logQ: see sampling_correction
    sampled_negatives: int = 256
    cold_share: float = 0.5
    seed: int = 0
    device: str = "auto"
    max_examples: int | None = None
    # torch.compile the towers on a GPU; the CPU path (CI, the tests) stays eager. Off by
    # default: turn it on where a measurement on the target GPU shows that it pays.
    compile: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of_trainer(cls, trainer: TrainerSettings, **overrides: object) -> TrainConfig:
        """The run the trainer service makes: ``xdrec evaluate`` trains the same way."""
        fields = {
            "epochs": trainer.epochs,
            "batch_size": trainer.batch_size,
            "min_batch_size": trainer.min_batch_size,
            "min_steps_per_epoch": trainer.min_steps_per_epoch,
            "learning_rate": trainer.learning_rate,
            "patience": trainer.patience,
            "seed": trainer.seed,
            "device": trainer.device,
            "compile": trainer.compile,
        }
        return cls(**{**fields, **overrides})  # type: ignore[arg-type]


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
    return Examples(right_aligned(histories, max_history), np.array(targets, dtype=np.int64))


def batch_size_for(examples: int, config: TrainConfig) -> int:
    """The batch size for ``examples``: ``config.batch_size``, halved (down to
    ``config.min_batch_size``) while an epoch would have fewer than
    ``config.min_steps_per_epoch`` steps.

    A contrastive loss learns from both the number of updates and the negatives each batch
    brings; what a fixed batch size balances on one dataset starves another. On a
    10,000-user subsample of food-kitchen (68k examples, 133 steps per epoch at 512) two
    epochs at 128 ranked held-out users' cold targets 46% better (NDCG@10 0.0337 against
    0.0231) and the ID tower 10% better; 64 gained nothing more; the full dataset (710 steps
    per epoch at 512) keeps 512."""
    size = config.batch_size
    while size // 2 >= config.min_batch_size and -(-examples // size) < config.min_steps_per_epoch:
        size //= 2
    return size


def learning_rate_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup_share`` of the steps, then a cosine down to
    ``final_lr_share`` of the peak: large steps early on data that it cannot yet fit
    stall in-batch contrastive losses near chance, a constant rate never settles."""
    warmup = max(1, int(total * config.warmup_share))
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = config.final_lr_share
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress)))


def new_model(
    space: ItemSpace, text: np.ndarray, config: ModelConfig | SASRecConfig
) -> TransferModel | SASRec:
    """A fresh model of the kind ``config`` describes (SASRec only as the evaluator's peer)."""
    if isinstance(config, SASRecConfig):
        return SASRec(config, space.size)
    return TransferModel.for_space(config, space, text)


class Towers(nn.Module):
    """User vectors, positive and sampled item vectors in one forward pass: the call that
    DistributedDataParallel needs to see to synchronise gradients."""

    def __init__(self, model: TransferModel | SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        history: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users = self.model.user_vectors(history, mask)
        positives = self.model.item_vectors(targets)
        sampled = self.model.item_vectors(negatives)
        return users, positives, sampled


def process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_rows(size: int, rank: int, world: int) -> slice:
    """This rank's contiguous rows of a global batch; the first ``size % world`` get one more."""
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def _gather_rows(local: torch.Tensor, size: int, world: int) -> torch.Tensor:
    """Every rank's (padded) shard, unpadded and concatenated; gradients flow back to the owner."""
    with warnings.catch_warnings():
        # Deprecated in favour of a private module; still the public differentiable gather.
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(local)
    shards = [shard_rows(size, r, world) for r in range(world)]
    return torch.cat([part[: s.stop - s.start] for part, s in zip(parts, shards, strict=True)])


def batch_loss(
    model: TransferModel | SASRec,
    net: nn.Module,
    examples: Examples,
    batch: np.ndarray,
    negatives: np.ndarray,
    item_domain: np.ndarray,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    correction: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, float, float]:
    """InfoNCE over one global batch: the loss to backpropagate, the batch's mean loss and
    its chance level (the loss of scoring every candidate alike: without a correction, the mean
    log of the number of candidates each row is scored against).

    ``net`` is ``Towers(model)``, or that wrapped in DistributedDataParallel when ``world > 1``.
    Then this rank scores its shard of ``batch`` against the positives of the whole batch
    (gathered), and its loss is ``sum of its row losses * world / len(batch)``: the gather sums
    the positives' gradients back to their owner and DDP averages over ranks, so the result
    is the one-process gradient of the batch's mean loss.

    ``correction`` holds, per item row, the log of how often it is expected among a row's
    in-batch and among its sampled candidates (see :func:`sampling_correction`); it is
    subtracted from the logits so that popular items are not pushed down for being drawn
    as negatives more often.
    """
    size = len(batch)
    rows = shard_rows(size, rank, world)
    local = batch[rows]
    width = -(-size // world)  # the gather needs equal shapes: pad every shard to this
    padded = np.concatenate([local, np.full(width - len(local), batch[0], dtype=batch.dtype)])
    history, mask = history_tensors(examples.histories[padded], device)
    targets = torch.as_tensor(examples.targets[padded], device=device)
    all_targets = torch.as_tensor(examples.targets[batch], device=device)
    negative_rows = torch.as_tensor(negatives, device=device)
    autocast = device.type == "cuda"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        users, positives, sampled = net(history, mask, targets, negative_rows)
        if world > 1:
            positives = _gather_rows(positives, size, world)
        users, targets = users[: len(local)], targets[: len(local)]
        in_batch = model.logits(users, positives)
        against = model.logits(users, sampled)
    # Subtracted from the logits, and what a model scoring every candidate alike would score.
    shift = (
        torch.cat([correction[0][all_targets], correction[1][negative_rows]])
        if correction is not None
        else None
    )
    if shift is not None:
        in_batch = in_batch.float() - shift[:size][None, :]
        against = against.float() - shift[size:][None, :]
    # A sampled negative of another domain is no competitor: mask it out.
    target_domains = item_domain[examples.targets[local]]
    foreign = torch.as_tensor(
        target_domains[:, None] != item_domain[negatives][None, :], device=device
    )
    against = against.float().masked_fill(foreign, float("-inf"))
    same_item = targets[:, None] == negative_rows[None, :]
    against = against.masked_fill(same_item, float("-inf"))
    logits = torch.cat([in_batch.float(), against], dim=1)
    labels = torch.arange(rows.start, rows.start + len(local), device=device)
    duplicate = (targets[:, None] == all_targets[None, :]) & (
        labels[:, None] != torch.arange(size, device=device)[None, :]
    )
    logits[:, :size] = logits[:, :size].masked_fill(duplicate, float("-inf"))
    # Chance: the loss of a model that scores every candidate alike (after the correction).
    offsets = torch.zeros_like(logits)
    if shift is not None:
        offsets = offsets - shift.to(offsets.dtype)
    offsets = offsets.masked_fill(~torch.isfinite(logits), float("-inf"))
    chance = F.cross_entropy(offsets, labels, reduction="sum").detach()
    if world == 1:
        loss = F.cross_entropy(logits, labels)
        return loss, float(loss.detach()), float(chance) / size
    total = F.cross_entropy(logits, labels, reduction="sum")
    batch_total = torch.stack([total.detach(), chance])
    dist.all_reduce(batch_total)
    return total * (world / size), float(batch_total[0]) / size, float(batch_total[1]) / size


def sampling_correction(
    space: ItemSpace, target_counts: np.ndarray, config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log expected count of each item among a row's candidates: in-batch candidates are other
    examples' targets (so as frequent as the item is a target: ``target_counts`` per item
    row), sampled ones are uniform over the target's domain. The logQ correction of sampled
    softmax (Yi et al., RecSys 2019)."""
    counts = target_counts.astype(np.float64)
    total = max(1.0, float(counts.sum()))
    in_batch = np.log(np.maximum(counts, 0.5) / total * config.batch_size)
    sizes = np.zeros(space.size)
    for domain in space.domains:
        block = space.domain_slice(domain)
        sizes[block] = block.stop - block.start
    sampled = np.log(config.sampled_negatives / np.maximum(sizes, 1))
    return (
        torch.as_tensor(in_batch, dtype=torch.float32, device=device),
        torch.as_tensor(sampled, dtype=torch.float32, device=device),
    )


def train_model(
    space: ItemSpace,
    text: np.ndarray,
    examples: Examples,
    model_config: ModelConfig | SASRecConfig,
    config: TrainConfig,
    progress: bool = True,
    validation: Validation | None = None,
) -> tuple[TransferModel | SASRec, dict]:
    """Train from scratch; returns the model (in eval mode) and a summary.

    With ``validation`` the model is scored after each epoch, training stops after
    ``config.patience`` epochs without a better score, and the best epoch's weights are
    returned. Under an initialised torch.distributed group every rank must call this with
    the same inputs: all draw the same batches and negatives, each trains its shard of every
    batch with DistributedDataParallel, and the result is the one-process model up to float
    rounding (exactly so only without dropout, whose masks depend on the shard). Only rank 0
    shows progress and logs.
    """
    rank, world = process_group()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    model = new_model(space, text, model_config).to(device)
    net: nn.Module = Towers(model)
    if world > 1:
        net = DistributedDataParallel(
            net,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # the buffers are the fixed text embeddings
        )
    if config.compile and device.type == "cuda":
        net = torch.compile(net)  # type: ignore[assignment]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    count = len(examples.targets)
    if config.max_examples is not None and count > config.max_examples:
        chosen = rng.choice(count, config.max_examples, replace=False)
        examples = Examples(examples.histories[chosen], examples.targets[chosen])
        count = config.max_examples
    config = replace(config, batch_size=batch_size_for(count, config))
    domain_rows = {
        n: np.arange(space.domain_slice(d).start, space.domain_slice(d).stop)
        for n, d in enumerate(space.domains)
    }
    item_domain = np.asarray(space.domain_of())
    # How often each item is a target: the popularity baseline and the in-batch correction.
    popularity = np.bincount(examples.targets, minlength=space.size).astype(np.float32)
    correction = (
        sampling_correction(space, popularity, config, device)
        if config.popularity_correction
        else None
    )
    validating = validation is not None and len(validation) > 0
    reference = (
        validation_scores(model, space, validation, device, baseline=popularity)
        if validating
        else None
    )
    steps_per_epoch = -(-count // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    started = time.perf_counter()
    losses: list[float] = []
    chances: list[float] = []
    scores: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -1.0, 0, None
    step = 0
    for epoch in range(config.epochs):
        net.train()
        order = rng.permutation(count)
        steps = range(0, count, config.batch_size)
        bar = tqdm(
            steps,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not progress or rank != 0,
        )
        epoch_loss, epoch_chance = 0.0, 0.0
        for start in bar:
            batch = order[start : start + config.batch_size]
            # Sampled negatives from each target's own domain: the ranking the model must win.
            negatives = np.concatenate(
                [
                    rng.choice(domain_rows[d], config.sampled_negatives)
                    for d in np.unique(item_domain[examples.targets[batch]])
                ]
            )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, total_steps, config)
            loss, batch_mean, batch_chance = batch_loss(
                model,
                net,
                examples,
                batch,
                negatives,
                item_domain,
                device,
                rank,
                world,
                correction,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            epoch_loss += batch_mean * len(batch)
            epoch_chance += batch_chance * len(batch)
            bar.set_postfix(loss=f"{batch_mean:.3f}", chance=f"{batch_chance:.3f}")
        losses.append(epoch_loss / count)
        chances.append(epoch_chance / count)
        line = f"epoch={epoch + 1} loss={losses[-1]:.4f} chance={chances[-1]:.4f}"
        if validating:
            scores.append(validation_scores(model, space, validation, device))
            current = scores[-1]["score"]
            line += " validation_ndcg@10 cold={cold:.4f} warm={warm:.4f}".format(**scores[-1])
            if current > best_score:
                best_score, best_epoch = current, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if rank == 0:
            log.info("epoch done %s", line)
        if scores and epoch + 1 - best_epoch >= config.patience:
            if rank == 0:
                log.info("early stop epoch=%d best_epoch=%d", epoch + 1, best_epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    kept = best_epoch or len(losses)
    # Whether optimization left chance: the last epoch's loss (an early epoch's mean is mostly
    # warm-up); whether the kept model is any good is the validation's question.
    ratio = losses[-1] / chances[-1] if chances[-1] > 0 else 1.0
    summary = {
        "examples": int(count),
        "batch_size": config.batch_size,
        "epochs": len(losses),
        "best_epoch": kept,
        "loss_per_epoch": [round(loss, 5) for loss in losses],
        "chance_loss_per_epoch": [round(chance, 5) for chance in chances],
        "loss_to_chance": round(ratio, 4),
        "near_chance": ratio > NEAR_CHANCE,
        "seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
    }
    if scores:
        summary["validation"] = {
            "users": len(validation or []),
            "ndcg@10_per_epoch": [{k: round(v, 5) for k, v in s.items()} for s in scores],
            "best": {k: round(v, 5) for k, v in scores[kept - 1].items()},
            "popularity": {k: round(v, 5) for k, v in (reference or {}).items()},
        }
    if rank == 0:
        if summary["near_chance"]:
            log.warning(
                "training ended near chance loss=%.4f chance=%.4f ratio=%.3f: the model has "
                "learned next to nothing from %d examples; the data may be too few or too "
                "sparse (check that users come back and that event item ids match the "
                "catalog), or trainer.learning_rate too high or too low",
                losses[-1],
                chances[-1],
                ratio,
                count,
            )
        if reference is not None and scores and scores[kept - 1]["score"] <= reference["score"]:
            log.warning(
                "trained model does not beat popularity on validation users model=%.4f "
                "popularity=%.4f",
                scores[kept - 1]["score"],
                reference["score"],
            )
        log.info("training done %s", summary)
    return model, summary
