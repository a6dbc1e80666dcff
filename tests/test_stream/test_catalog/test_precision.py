"""``encoder.precision = "fastest"`` on a CPU: a candidate is kept only when it measured faster
and close enough to float32, and the choice is remembered so the fingerprint stays put;
``auto`` measures nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from stream.catalog import precision as precision_module
from stream.catalog.encoder import TextEncoder, measured_candidates
from stream.catalog.precision import (
    choose_precision,
    read_remembered_precision,
    remember_precision,
)

TEXTS = ["a", "b", "c", "d"]


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


REFERENCE = _unit(np.random.default_rng(0).standard_normal((4, 8)))


def _fake(runs: dict[str, tuple[float, float]]):
    """``encode`` whose vectors lie ``noise`` from the reference, taking ``seconds``."""

    def encode(precision: str, texts: Sequence[str]) -> tuple[np.ndarray, float]:
        noise, seconds = runs[precision]
        shift = np.random.default_rng(1).standard_normal(REFERENCE.shape) * noise
        return _unit(REFERENCE + shift), seconds

    return encode


def test_a_candidate_must_be_both_faster_and_close() -> None:
    float32 = (0.0, 1.0)
    fast_close = _fake({"float32": float32, "int8": (0.01, 0.4)})
    assert choose_precision(fast_close, ["int8"], TEXTS)[0] == "int8"
    fast_far = _fake({"float32": float32, "int8": (0.5, 0.4)})
    chosen, trials = choose_precision(fast_far, ["int8"], TEXTS)
    assert chosen == "float32" and trials[0].mean_cosine < 0.99
    slow_close = _fake({"float32": float32, "int8": (0.01, 0.9)})
    chosen, trials = choose_precision(slow_close, ["int8"], TEXTS)
    assert chosen == "float32" and trials[0].speedup == pytest.approx(1 / 0.9)
    two = _fake({"float32": float32, "int8": (0.01, 0.5), "bfloat16": (0.001, 0.3)})
    assert choose_precision(two, ["int8", "bfloat16"], TEXTS)[0] == "bfloat16"


def test_the_choice_is_remembered_and_a_bad_memory_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "choice.json"
    assert read_remembered_precision(path, ["int8"]) is None
    remember_precision(path, "int8")
    assert read_remembered_precision(path, ["int8"]) == "int8"
    assert read_remembered_precision(path, []) is None  # not a candidate here any more
    path.write_text("{not json")
    assert read_remembered_precision(path, ["int8"]) is None


def test_fastest_measures_once_on_this_cpu_then_reads_its_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDREC_CACHE_DIR", str(tmp_path))
    device = TextEncoder(precision="float32").device
    assert measured_candidates("auto", device) == ()
    candidates = measured_candidates("fastest", device)
    caplog.set_level("INFO", logger=precision_module.__name__)
    first = TextEncoder(device="cpu", precision="fastest")
    assert first.precision in (*candidates, "float32", "bfloat16")
    if not candidates:
        pytest.skip("this CPU offers no precision to measure (AMX, or neither VNNI nor AVX2)")
    assert "encoder precision trial" in caplog.text
    assert len(list(tmp_path.glob("encoder-precision-*.json"))) == 1
    caplog.clear()
    second = TextEncoder(device="cpu", precision="fastest")
    assert "encoder precision trial" not in caplog.text
    assert (second.precision, second.fingerprint) == (first.precision, first.fingerprint)
    vectors = second.encode(["A slow-cooked stew of beans.", "A cast-iron pan."])
    reference = TextEncoder(device="cpu", precision="float32").encode(
        ["A slow-cooked stew of beans.", "A cast-iron pan."]
    )
    assert np.sum(vectors * reference, axis=1).min() > 0.98
