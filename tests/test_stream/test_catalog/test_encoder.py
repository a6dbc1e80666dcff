"""The encoder's CPU precisions: lower precisions stay close to float32, never share a
fingerprint with it (stored item embeddings are keyed by it), and ``auto`` picks bfloat16 only
on CPUs that run it natively. No timings here: bench/encoder_speed.py measures speed."""

from __future__ import annotations

import hashlib
from itertools import combinations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from bench import encoder_speed
from stream.catalog import encoder as encoder_module
from stream.catalog.encoder import TextEncoder, measured_candidates, resolve_precision
from stream.core.items import item_text
from stream.data.sample import sample_items
from stream.settings import EncoderSettings

CPU = torch.device("cpu")
LOWER = ("bfloat16", "int8")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """A handful of real item texts of different lengths (one batch pads, another does not)."""
    items = sample_items()[::6]
    return [item_text(item["title"], item["text"]) for item in items]


@pytest.fixture(scope="module")
def encoders() -> dict[str, TextEncoder]:
    """One encoder per explicit precision, loaded once for the module."""
    return {
        mode: TextEncoder(device="cpu", precision=mode, batch_size=8)
        for mode in ("float32", *LOWER)
    }


@pytest.fixture(scope="module")
def reference(encoders: dict[str, TextEncoder], texts: list[str]) -> np.ndarray:
    return encoders["float32"].encode(texts)


@pytest.mark.parametrize("mode", LOWER)
def test_lower_precisions_stay_close_to_float32(
    mode: str, encoders: dict[str, TextEncoder], texts: list[str], reference: np.ndarray
) -> None:
    vectors = encoders[mode].encode(texts)
    assert vectors.dtype == np.float32
    assert vectors.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * reference, axis=1)
    assert float(np.mean(cosines)) >= 0.99
    assert float(np.min(cosines)) >= 0.97


def test_each_precision_has_its_own_fingerprint(encoders: dict[str, TextEncoder]) -> None:
    assert encoders["bfloat16"].precision == "bfloat16"
    # A mode this CPU cannot run falls back (int8 without VNNI or AVX2 runs float32) and then
    # rightly shares float32's key: the fingerprint names the precision that really ran.
    for first, second in combinations(encoders.values(), 2):
        same_space = first.precision == second.precision
        assert (first.fingerprint == second.fingerprint) == same_space


def test_float32_keeps_the_fingerprint_stored_items_already_have(
    encoders: dict[str, TextEncoder],
) -> None:
    encoder = encoders["float32"]
    config = (encoder.model_path / "config.json").read_bytes()
    before = hashlib.sha256(config + f"|max_length={encoder.max_length}".encode()).hexdigest()
    assert encoder.fingerprint == before[:16]


@pytest.fixture
def cpu_without(monkeypatch: pytest.MonkeyPatch) -> None:
    """An x86 CPU before AVX2: neither AMX, VNNI nor AVX2."""
    capabilities = {"avx": True, "amx_bf16": False, "avx512_vnni": False, "avx2": False}
    monkeypatch.setattr(encoder_module.torch.cpu, "get_capabilities", lambda: capabilities)


def test_auto_is_float32_and_fastest_bfloat16_only_with_amx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoder_module.torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    assert resolve_precision("auto", CPU) == "float32"  # exact: a vector depends on its text
    assert resolve_precision("fastest", CPU) == "bfloat16"
    monkeypatch.setattr(encoder_module.torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    assert resolve_precision("fastest", CPU) == "float32"


@pytest.mark.usefixtures("cpu_without")
def test_modes_a_cpu_cannot_run_well() -> None:
    assert resolve_precision("int8", CPU) == "float32"  # no int8 kernels to run it
    assert resolve_precision("bfloat16", CPU) == "bfloat16"  # asked for: slow, but honoured


@pytest.mark.parametrize(
    "features", [{"avx2": True}, {"avx512_vnni": True}, {"avx_vnni": True, "avx2": True}]
)
def test_int8_runs_on_avx2_as_on_vnni(monkeypatch: pytest.MonkeyPatch, features: dict) -> None:
    monkeypatch.setattr(encoder_module.torch.cpu, "get_capabilities", lambda: features)
    assert resolve_precision("int8", CPU) == "int8"
    assert resolve_precision("auto", CPU) == "float32"  # int8 only when asked or measured
    assert measured_candidates("fastest", CPU) == ("int8",)


def test_a_gpu_runs_half_precision_unless_asked_otherwise() -> None:
    gpu = torch.device("cuda")
    assert resolve_precision("auto", gpu) == "float16"
    for mode in ("float32", "bfloat16", "float16"):
        assert resolve_precision(mode, gpu) == mode
    assert resolve_precision("int8", gpu) == "float32"  # a CPU kernel


def test_float16_is_not_run_on_a_cpu() -> None:
    assert resolve_precision("float16", CPU) == "float32"


def test_order_and_padding_do_not_change_a_texts_vector(
    encoders: dict[str, TextEncoder], texts: list[str], reference: np.ndarray
) -> None:
    """Texts are regrouped by token count into batches: each must come back in its own place,
    and equal to its vector encoded alone (padding is masked out of the pooling)."""
    encoder = encoders["float32"]
    shuffled = list(reversed(texts)) + [""]
    vectors = encoder.encode(shuffled)
    np.testing.assert_allclose(vectors[:-1], reference[::-1], atol=1e-5)
    alone = np.vstack([encoder.encode([text]) for text in texts[:3]])
    np.testing.assert_allclose(alone, reference[:3], atol=1e-5)


def test_unknown_precisions_are_refused() -> None:
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValidationError):
        EncoderSettings(precision="fp16")  # type: ignore[arg-type]
    assert EncoderSettings().precision == "auto"


@pytest.mark.usefixtures("cpu_without")
def test_the_benchmark_reports_modes_this_cpu_lacks(encoders: dict[str, TextEncoder]) -> None:
    found, missing = encoder_speed.mode_encoders(encoders["float32"])
    assert found == {"float32": encoders["float32"]}
    for mode in LOWER:
        for row in (encoder_speed.speed_row(mode), encoder_speed.cosine_row(mode)):
            assert missing[row].value is None and missing[row].error
    names = {spec.name for spec in encoder_speed.ROWS}
    assert set(missing) <= names


def test_tokenizing_in_threads_gives_the_same_vectors(
    monkeypatch: pytest.MonkeyPatch,
    encoders: dict[str, TextEncoder],
    texts: list[str],
    reference: np.ndarray,
) -> None:
    encoder = encoders["float32"]
    assert len(texts) > 2 * encoder.batch_size  # several batches, so a thread pool
    monkeypatch.setattr(encoder, "_tokenize_threads", 1)
    inline = encoder.encode(texts)
    monkeypatch.setattr(encoder, "_tokenize_threads", 3)
    np.testing.assert_allclose(encoder.encode(texts), inline, atol=1e-6)
    np.testing.assert_allclose(inline, reference, atol=1e-5)


def test_an_unset_batch_size_suits_the_device() -> None:
    assert EncoderSettings().batch_size is None
    assert TextEncoder(device="cpu", precision="float32").batch_size == 32
    assert TextEncoder(device="cpu", precision="float32", batch_size=8).batch_size == 8


def test_a_python_only_tokenizer_gives_the_same_vectors(
    monkeypatch: pytest.MonkeyPatch,
    encoders: dict[str, TextEncoder],
    texts: list[str],
    reference: np.ndarray,
) -> None:
    """Folders without a Rust tokenizer go through transformers' wrapper, padded alike."""
    encoder = encoders["float32"]
    monkeypatch.setattr(encoder, "_backend", None)
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5)
