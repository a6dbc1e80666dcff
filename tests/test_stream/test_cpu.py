"""CPU features are detected once, from torch's capability table, for the encoder and the
scorer alike."""

from __future__ import annotations

import pytest
import torch

from stream.catalog.encoder import resolve_precision
from stream.core.scoring import coarse_dtype

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("features", "scoring", "encoding"),
    [
        ({"amx_tile": True, "amx_bf16": True, "avx512_bf16": True}, torch.bfloat16, "bfloat16"),
        ({"avx512_bf16": True}, torch.bfloat16, "float32"),
        ({"avx512_f": True, "avx2": True}, torch.qint8, "float32"),
        ({"avx2": True}, torch.qint8, "float32"),
        ({}, None, "float32"),
    ],
)
def test_scoring_and_encoding_read_the_same_capabilities(
    monkeypatch: pytest.MonkeyPatch, features: dict, scoring: torch.dtype | None, encoding: str
) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: features)
    assert coarse_dtype("auto") is scoring
    assert resolve_precision("fastest", CPU) == encoding  # auto is float32 on every CPU
