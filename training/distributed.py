"""Training under torchrun, so that it scales past one GPU.

Every process trains its shard of each batch with DistributedDataParallel (see
:func:`training.train.train_model`) and rank 0 writes the weights. Launch it as::

    torchrun --nproc-per-node N -m training.distributed --input DIR --output FILE.safetensors

``DIR`` is written by :func:`save_training_inputs`: arrays as ``.npy``/``.npz`` read with
``allow_pickle=False``, configs and item ids as JSON, weights as safetensors; nothing is ever
pickled. :func:`train_with_torchrun` does all of it from Python and returns the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.elastic.multiprocessing.errors import record

from stream.catalog.encoder import resolve_device
from stream.model.item_space import ItemSpace
from stream.model.transfer import ModelConfig, TransferModel
from training.train import Examples, TrainConfig, new_model, train_model
from training.validation import Validation

log = logging.getLogger(__name__)

ITEMS = "items.json"
TEXT = "text.npy"
EXAMPLES = "examples.npz"
VALIDATION = "validation.npz"
CONFIG = "config.json"
OUTPUT_TAIL = 4_000


@dataclass(frozen=True)
class TrainingInputs:
    space: ItemSpace
    text: np.ndarray
    examples: Examples
    model_config: ModelConfig
    train_config: TrainConfig
    validation: Validation | None = None


def save_training_inputs(
    directory: Path,
    space: ItemSpace,
    text: np.ndarray,
    examples: Examples,
    model_config: ModelConfig,
    train_config: TrainConfig,
    validation: Validation | None = None,
) -> Path:
    """Write everything :func:`train_model` takes into ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ITEMS).write_text(json.dumps(space.item_ids))
    np.save(directory / TEXT, np.asarray(text, dtype=np.float32), allow_pickle=False)
    np.savez(directory / EXAMPLES, histories=examples.histories, targets=examples.targets)
    if validation is not None:
        np.savez(
            directory / VALIDATION,
            warm=validation.warm,
            cold=validation.cold,
            targets=validation.targets,
            seen=validation.seen,
        )
    configs = {"model_config": model_config.to_dict(), "train_config": train_config.to_dict()}
    (directory / CONFIG).write_text(json.dumps(configs, indent=2))
    return directory


def load_training_inputs(directory: Path) -> TrainingInputs:
    """Read what :func:`save_training_inputs` wrote."""
    item_ids = json.loads((directory / ITEMS).read_text())
    space = ItemSpace.from_ids({str(d): [str(i) for i in ids] for d, ids in item_ids.items()})
    text = np.load(directory / TEXT, allow_pickle=False)
    with np.load(directory / EXAMPLES, allow_pickle=False) as arrays:
        examples = Examples(arrays["histories"], arrays["targets"])
    configs = json.loads((directory / CONFIG).read_text())
    validation = None
    if (directory / VALIDATION).exists():
        with np.load(directory / VALIDATION, allow_pickle=False) as arrays:
            validation = Validation(
                arrays["warm"], arrays["cold"], arrays["targets"], arrays["seen"]
            )
    return TrainingInputs(
        space,
        text,
        examples,
        ModelConfig(**configs["model_config"]),
        TrainConfig(**configs["train_config"]),
        validation,
    )


def save_weights(model: TransferModel, path: Path) -> None:
    """The state dict as safetensors, replaced atomically."""
    weights = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    scratch = path.with_name(f".{path.name}.partial")
    save_file(weights, str(scratch))
    os.replace(scratch, path)


def train_process(input_dir: Path, output: Path, summary_path: Path, progress: bool) -> None:
    """One torchrun process: join the group, train, rank 0 writes weights and summary."""
    inputs = load_training_inputs(input_dir)
    device = resolve_device(inputs.train_config.device)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        rank = dist.get_rank()
        if rank == 0:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        model, summary = train_model(
            inputs.space,
            inputs.text,
            inputs.examples,
            inputs.model_config,
            inputs.train_config,
            progress=progress,
            validation=inputs.validation,
        )
        if rank == 0:
            output.parent.mkdir(parents=True, exist_ok=True)
            save_weights(model, output)
            summary = {**summary, "processes": dist.get_world_size()}
            summary_path.write_text(json.dumps(summary, indent=2))
            log.info("weights written to %s", output)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def train_with_torchrun(
    space: ItemSpace,
    text: np.ndarray,
    examples: Examples,
    model_config: ModelConfig,
    train_config: TrainConfig,
    nproc: int,
    work_dir: Path,
    validation: Validation | None = None,
) -> tuple[TransferModel, dict]:
    """Train with ``nproc`` torchrun processes on this machine; the model and a summary.

    ``work_dir`` receives the inputs, the weights, the summary and ``torchrun.log``.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    if nproc == 1:
        model, summary = train_model(
            space, text, examples, model_config, train_config, progress=False, validation=validation
        )
        return model, {**summary, "processes": 1}
    inputs = save_training_inputs(
        work_dir / "inputs", space, text, examples, model_config, train_config, validation
    )
    weights, summary_path, log_path = (
        work_dir / "model.safetensors",
        work_dir / "summary.json",
        work_dir / "torchrun.log",
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "training.distributed",
        "--input",
        str(inputs),
        "--output",
        str(weights),
        "--summary",
        str(summary_path),
        "--no-progress",
    ]
    root = str(Path(__file__).resolve().parents[1])  # the children import this very package
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    with log_path.open("wb") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")[-OUTPUT_TAIL:]
        raise RuntimeError(
            f"torchrun with {nproc} processes exited with {result.returncode} "
            f"(full output in {log_path}):\n{tail}"
        )
    model = new_model(space, text, model_config)
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    return model, json.loads(summary_path.read_text())


@record  # torchrun then reports the failing rank's traceback as the root cause
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.distributed",
        description="One process of distributed training; launch with torchrun.",
    )
    parser.add_argument("--input", type=Path, required=True, help="save_training_inputs folder")
    parser.add_argument("--output", type=Path, required=True, help="weights (.safetensors)")
    parser.add_argument("--summary", type=Path, help="summary JSON (default: next to output)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = args.summary or args.output.with_suffix(".json")
    train_process(args.input, args.output, summary, progress=not args.no_progress)


if __name__ == "__main__":
    main()
