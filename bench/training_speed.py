"""Training speed: seconds per epoch of ``training.train.train_model``, the trainer's loop.

An epoch here is 50,000 examples (a training window capped the way ``TrainConfig
.max_examples`` caps one). A whole one takes minutes on a shared 2-core CPU, so a part of it
(``Sizes.train_examples``, whole batches drawn from the epoch's examples) is timed and scaled:
every batch costs the same, whichever examples it holds. Full runs use the shared food-kitchen
dataset when it is there (``../shared/data/food-kitchen`` beside the repository): its item
space and users' sequences, examples built with ``build_examples`` as the trainer builds them.
Quick runs, and machines without the dataset, use a synthetic one of the same shape. The item
text vectors are random unit vectors: the time of a batch depends on how many items and
dimensions there are, not on the values, and encoding the dataset's 36k item texts would take
minutes here. The peer is a plain PyTorch loop over the same model and batches with an
in-batch softmax only, so the ratio is what xdrec's sampled negatives and masking add.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from bench.harness import FULL, QUICK, REPO, Context, Outcome, RowSpec, failed_rows
from stream.model.item_space import ItemSpace
from stream.model.transfer import ModelConfig
from training.train import (
    Examples,
    TrainConfig,
    build_examples,
    history_tensors,
    new_model,
    train_model,
)

CPU = "training_seconds_per_epoch_cpu"
PLAIN = "plain_torch_seconds_per_epoch_cpu"
GPU = "training_seconds_per_epoch_gpu"
PLAIN_GPU = "plain_torch_seconds_per_epoch_gpu"
GPU_ROWS = (GPU, PLAIN_GPU)
NEEDS_BROKER = False
# A GPU machine is sent the dataset's ids and events alone, elsewhere than beside the repo.
DATASET = Path(
    os.environ.get("XDREC_BENCH_DATASET", REPO.parent / "shared" / "data" / "food-kitchen")
)
TEXT_DIM = 384
BATCH = 512
EPOCH = 50_000  # examples per epoch the rows are scaled to
ROUNDS = 3
_DATA = (
    f"one epoch = {EPOCH:,} examples; {FULL.train_examples:,} of them (quick: "
    f"{QUICK.train_examples:,}) timed, scaled by {EPOCH:,} / that; examples of the shared "
    "food-kitchen dataset (its item space and user sequences; synthetic of the same shape in "
    "quick runs or when absent), random 384-dim unit text vectors, `ModelConfig()` defaults "
    f"(dim 128, 4 experts, history 20), batch {BATCH}; after a one-batch warm-up, median of "
    f"{ROUNDS} rounds alternated with the peer's"
)
ROWS = (
    RowSpec(
        CPU,
        "s",
        PLAIN,
        "`training.train.train_model` (InfoNCE, in-batch and 256 sampled same-domain "
        f"negatives, AdamW) on the CPU, seconds per epoch: {_DATA}",
    ),
    RowSpec(
        PLAIN,
        "s",
        None,
        "a plain PyTorch loop over the same `TransferModel`, examples and batches: user and "
        "target vectors, in-batch softmax cross-entropy, AdamW; no sampled negatives, no "
        "masking; CPU, seconds per epoch, same data",
    ),
    RowSpec(
        GPU,
        "s",
        PLAIN_GPU,
        "`train_model` as the CPU row on the first CUDA device (bf16 autocast, as it runs "
        "there), the whole epoch timed; only where `torch.cuda.is_available()` (or measured on "
        "a GPU machine by `python -m bench.gpu` and merged with `--gpu-json`)",
    ),
    RowSpec(
        PLAIN_GPU,
        "s",
        None,
        "the plain PyTorch loop of the CPU peer on the same CUDA device, same epoch, float32",
    ),
)


def shared_data() -> tuple[ItemSpace, list[list[tuple[str, str]]]]:
    """The dataset's item space and every user's ``(domain, item_id)`` sequence in time order."""
    ids: dict[str, list[str]] = defaultdict(list)
    with (DATASET / "items.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                ids[str(row["domain"])].append(str(row["item_id"]))
    events: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    with gzip.open(DATASET / "interactions.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                events[row["user_id"]].append((row["ts"], row["domain"], str(row["item_id"])))
    sequences = [[(d, i) for _, d, i in sorted(events[user])] for user in sorted(events)]
    return ItemSpace.from_ids(dict(ids)), sequences


def synthetic_data(examples: int, seed: int = 0) -> tuple[ItemSpace, list[list[tuple[str, str]]]]:
    """Two domains (8,000 and 24,000 items, as food-kitchen's), users of 2-12 events, enough
    of them for ``examples`` examples."""
    rng = random.Random(seed)
    ids = {
        "food": [f"f{n:06d}" for n in range(8_000)],
        "kitchen": [f"k{n:06d}" for n in range(24_000)],
    }
    sequences: list[list[tuple[str, str]]] = []
    made = 0
    while made < examples:
        length = rng.randint(2, 12)
        sequence = []
        for _ in range(length):
            domain = "kitchen" if rng.random() < 0.75 else "food"
            sequence.append((domain, rng.choice(ids[domain])))
        sequences.append(sequence)
        made += length - 1
    return ItemSpace.from_ids(ids), sequences


def plain_seconds(
    space: ItemSpace,
    text: np.ndarray,
    examples: Examples,
    config: ModelConfig,
    seed: int = 0,
    device: str = "cpu",
) -> float:
    """The peer: one pass over ``examples`` with the same model, in-batch softmax only."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    on = torch.device(device)
    model = new_model(space, text, config).to(on)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=TrainConfig().learning_rate)
    count = len(examples.targets)
    started = time.perf_counter()
    order = rng.permutation(count)
    for start in range(0, count, BATCH):
        batch = order[start : start + BATCH]
        history, mask = history_tensors(examples.histories[batch], on)
        targets = torch.as_tensor(examples.targets[batch], device=on)
        logits = model.logits(model.user_vectors(history, mask), model.item_vectors(targets))
        loss = F.cross_entropy(logits, torch.arange(len(batch), device=on))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if on.type == "cuda":
        torch.cuda.synchronize(on)
    return time.perf_counter() - started


def epoch_data(quick: bool) -> tuple[ItemSpace, np.ndarray, Examples, str]:
    """The item space, random text vectors, one epoch's examples and where they came from."""
    if not quick and (DATASET / "items.jsonl").is_file():
        space, sequences = shared_data()
        source = f"{DATASET.name} ({len(sequences):,} users, {space.size:,} items)"
    else:
        space, sequences = synthetic_data(EPOCH)
        source = f"synthetic ({len(sequences):,} users, {space.size:,} items)"
    train = TrainConfig()
    examples = build_examples(
        space, sequences, ModelConfig().max_history, train.cold_share, train.seed
    )
    built = len(examples.targets)
    chosen = np.random.default_rng(train.seed).choice(built, min(EPOCH, built), replace=False)
    examples = Examples(examples.histories[chosen], examples.targets[chosen])
    text = np.random.default_rng(1).standard_normal((space.size, TEXT_DIM), dtype=np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return space, text, examples, f"{len(chosen):,} of {built:,} examples from {source}"


def run(ctx: Context) -> dict[str, Outcome]:
    started = time.perf_counter()
    space, text, epoch, source = epoch_data(ctx.quick)
    prepared = time.perf_counter() - started
    count = min(ctx.sizes.train_examples, len(epoch.targets))
    examples = Examples(epoch.histories[:count], epoch.targets[:count])
    scale = EPOCH / count
    ours, plain = median_seconds(space, text, examples, "cpu")
    detail = (
        f"{count:,} timed of {source}, median of {ROUNDS}: {{seconds:.1f}}s; "
        f"{torch.get_num_threads()} torch threads"
    )
    results = {
        CPU: Outcome(
            ours * scale,
            detail=detail.format(seconds=ours) + f"; data ready in {prepared:.0f}s",
        ),
        PLAIN: Outcome(plain * scale, detail=detail.format(seconds=plain)),
    }
    try:
        results.update(gpu_rows(space, text, epoch, source))
    except Exception as exc:  # the CPU rows stand
        results.update(failed_rows(GPU_ROWS, exc))
    return results


def gpu_rows(
    space: ItemSpace, text: np.ndarray, epoch: Examples, source: str
) -> dict[str, Outcome]:
    """``train_model`` and the plain loop over a whole epoch on the first CUDA device."""
    if not torch.cuda.is_available():
        return {name: Outcome.no_gpu() for name in GPU_ROWS}
    ours, plain = median_seconds(space, text, epoch, "cuda")
    scale = EPOCH / len(epoch.targets)
    detail = f"{torch.cuda.get_device_name(0)}; {source}, median of {ROUNDS}: {{:.2f}}s"
    return {
        GPU: Outcome(ours * scale, detail=detail.format(ours)),
        PLAIN_GPU: Outcome(plain * scale, detail=detail.format(plain)),
    }


def median_seconds(
    space: ItemSpace, text: np.ndarray, examples: Examples, device: str
) -> tuple[float, float]:
    """Median seconds of ``train_model`` and of the plain loop over ``examples`` on ``device``,
    after a one-batch warm-up of each (first-call allocations, a CUDA context and its kernels)
    and in alternated rounds, so drift on a shared machine hits both alike."""
    model_config = ModelConfig(text_dim=TEXT_DIM)
    # Batches of BATCH as the plain loop's: training's data-derived batch size
    # (training.train.batch_size_for) would halve it for a slice this small.
    train = TrainConfig(epochs=1, batch_size=BATCH, min_steps_per_epoch=0, device=device)
    few = Examples(examples.histories[:BATCH], examples.targets[:BATCH])
    train_model(space, text, few, model_config, train, progress=False)
    plain_seconds(space, text, few, model_config, device=device)
    ours: list[float] = []
    plain: list[float] = []
    for _ in range(ROUNDS):
        ours.append(
            train_model(space, text, examples, model_config, train, progress=False)[1]["seconds"]
        )
        plain.append(plain_seconds(space, text, examples, model_config, device=device))
    return statistics.median(ours), statistics.median(plain)
