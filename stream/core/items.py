"""What the pipeline knows of an item's text: the one string encoded per item, and its digest."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

DIGEST_BYTES = 16


class Encoder(Protocol):
    """Texts in, one unit vector per text out: stream.catalog.encoder.TextEncoder or a stand-in."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def item_text(title: str | None, text: str | None) -> str:
    """The one string encoded per item: title and body, so both carry meaning."""
    title = (title or "").strip()
    text = (text or "").strip()
    if title and text:
        return f"{title}. {text}"
    return title or text


def text_digest(text: str) -> bytes:
    """A short digest of an item's text: a changed text means a new embedding."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:DIGEST_BYTES]
