"""Distributed training: two gloo processes on the CPU train the model one process would.

Both tests switch dropout and ID dropout off (``ModelConfig(dropout=0, id_dropout=0)``): their
masks are drawn per shard, so with them on two processes train a different (equally valid)
model. Run as a script under torchrun, this file is the worker of the gradient test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from stream.model.item_space import ItemSpace
from stream.model.transfer import ModelConfig, TransferModel
from training.distributed import train_with_torchrun
from training.train import (
    Examples,
    Towers,
    TrainConfig,
    batch_loss,
    build_examples,
    history_tensors,
    new_model,
    train_model,
)

ITEMS = 60
CONFIG = ModelConfig(text_dim=16, dim=16, max_history=4, id_dropout=0.0, dropout=0.0)
# 301 examples in batches of 32: the last batch (13) splits unevenly over two processes.
TRAIN = TrainConfig(
    epochs=2, batch_size=32, sampled_negatives=16, seed=7, device="cpu", max_examples=301
)
GRADIENT_BATCHES = (32, 13, 1)  # even shards, uneven shards, a process with no rows
REPO = Path(__file__).resolve().parents[2]


def _world() -> tuple[ItemSpace, np.ndarray, Examples]:
    """Two domains; buying a{i} predicts b{i}, which predicts a{i+1}; random unit texts."""
    rng = np.random.default_rng(0)
    space = ItemSpace.from_ids(
        {"a": [f"a{i}" for i in range(ITEMS)], "b": [f"b{i}" for i in range(ITEMS)]}
    )
    text = rng.standard_normal((2 * ITEMS, CONFIG.text_dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    sequences = [
        [("a", f"a{i}"), ("b", f"b{i}"), ("a", f"a{(i + 1) % ITEMS}")]
        for i in rng.integers(0, ITEMS, 160)
    ]
    examples = build_examples(space, sequences, CONFIG.max_history, cold_share=0.5, seed=0)
    return space, text, examples


def _gradients(world: int, rank: int = 0) -> dict[str, torch.Tensor]:
    """One backward pass per batch in GRADIENT_BATCHES: every parameter's gradient and the loss."""
    space, text, examples = _world()
    item_domain = np.asarray(space.domain_of())
    torch.manual_seed(0)
    model = new_model(space, text, CONFIG)
    net: torch.nn.Module = Towers(model)
    if world > 1:
        net = DistributedDataParallel(net, forward_sync_buffers=False)
    net.train()
    found: dict[str, torch.Tensor] = {}
    for size in GRADIENT_BATCHES:
        rng = np.random.default_rng(size)
        batch = rng.permutation(len(examples.targets))[:size]
        negatives = rng.integers(0, space.size, 24)
        model.zero_grad(set_to_none=True)
        loss, mean, _ = batch_loss(
            model, net, examples, batch, negatives, item_domain, torch.device("cpu"), rank, world
        )
        loss.backward()
        found[f"{size}/loss"] = torch.tensor(mean)
        for name, parameter in model.named_parameters():
            found[f"{size}/{name}"] = parameter.grad.detach().clone()
    return found


def _gradient_worker(output: Path) -> None:
    """Under torchrun: the gradients of GRADIENT_BATCHES, averaged by DDP; rank 0 saves them."""
    dist.init_process_group("gloo")
    try:
        found = _gradients(dist.get_world_size(), dist.get_rank())
        if dist.get_rank() == 0:
            save_file(found, str(output))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _parameters(model: TransferModel) -> dict[str, torch.Tensor]:
    """Every parameter, the attention's key bias zeroed: its exact gradient is zero (softmax
    ignores a shift shared by all keys), so AdamW turns float noise into steps of about the
    learning rate there, in one process as in two, and no score depends on it."""
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["encoder.self_attn.in_proj_bias"][CONFIG.dim : 2 * CONFIG.dim] = 0
    return state


def _scores(model: TransferModel, examples: Examples) -> torch.Tensor:
    history, mask = history_tensors(examples.histories, torch.device("cpu"))
    with torch.inference_mode():
        users = model.user_vectors(history, mask)
        return users @ model.item_vectors(torch.arange(2 * ITEMS)).T


def test_two_processes_train_the_same_model_as_one(tmp_path: Path) -> None:
    space, text, examples = _world()
    single, single_summary = train_model(space, text, examples, CONFIG, TRAIN, progress=False)
    double, summary = train_with_torchrun(
        space, text, examples, CONFIG, TRAIN, nproc=2, work_dir=tmp_path
    )
    assert summary["processes"] == 2
    assert summary["examples"] == single_summary["examples"] == 301
    assert single_summary["loss_per_epoch"][-1] < single_summary["loss_per_epoch"][0]
    np.testing.assert_allclose(
        summary["loss_per_epoch"], single_summary["loss_per_epoch"], rtol=0, atol=1e-5
    )
    expected, got = _parameters(single), _parameters(double)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(
        _scores(double, examples), _scores(single, examples), rtol=0, atol=1e-5
    )


def test_two_processes_compute_the_one_process_gradient(tmp_path: Path) -> None:
    """Adam is blind to a constant gradient scale, so the parameter test alone would miss a
    wrongly scaled loss; here the gradients DDP leaves on rank 0 are compared directly."""
    output = tmp_path / "gradients.safetensors"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", __file__, str(output)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3_000:]
    distributed = load_file(str(output))
    expected = _gradients(world=1)
    assert distributed.keys() == expected.keys()
    for name, tensor in expected.items():
        # Float32 sums in another order (two processes, all-reduce) differ by a few ulps of the
        # tensor's largest entries, also where an entry itself is near zero: the absolute
        # tolerance scales with the tensor. A wrongly scaled loss is off by a factor, far above.
        atol = 1e-6 * max(1.0, float(tensor.abs().max()))
        torch.testing.assert_close(distributed[name], tensor, rtol=1e-5, atol=atol, msg=name)


if __name__ == "__main__":
    _gradient_worker(Path(sys.argv[1]))
