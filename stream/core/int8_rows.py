"""An int8 copy of a domain's item matrix for top-K's first pass on CPUs without bfloat16.

Most CPUs this runs on (AVX2, or AVX-512 without AMX) have no native bfloat16 products, but
fbgemm's int8 kernels run on all of them: a batch of queries against a packed int8 matrix
(one scale per item row, queries quantized per call) costs about a fifth of the float32
product on one core at 10k items and 384 dimensions, because the matrix is a quarter of the
bytes and the product runs in 8-bit lanes. Like the bfloat16 pass it only shortlists: the
scorer rescores the shortlist in float32 (``stream.core.scoring``).

fbgemm packs a whole matrix at once, so rows are packed in chunks of ``CHUNK_ROWS``: an item
added or changed repacks only its chunk, at the next scoring snapshot, not the catalog.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

CHUNK_ROWS = 8_192  # about 20 ms to pack at 384 dimensions on a 2-core EPYC


def _pack(rows: np.ndarray) -> object:
    """fbgemm's packed int8 weight for ``rows`` (float32, one scale per row)."""
    weights = torch.from_numpy(np.ascontiguousarray(rows))
    scales = weights.abs().amax(dim=1).clamp(min=1e-12).double() / 127.0
    with warnings.catch_warnings():
        # Deprecated with the rest of torch's quantized tensors, still the only way into
        # fbgemm's packed int8 product; the encoder's int8 path uses the same kernels.
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_channel(
            weights, scales, torch.zeros(len(rows), dtype=torch.long), 0, torch.qint8
        )
    return torch.ops.quantized.linear_prepack(quantized, None)


@dataclass(frozen=True, slots=True)
class Int8Matrix:
    """A read-only snapshot of the first ``rows`` rows, packed chunk by chunk."""

    chunks: tuple[object, ...]
    rows: int

    def scores(self, queries: np.ndarray) -> torch.Tensor:
        """(queries, rows) approximate float32 scores. Activations use 7 bits
        (``reduce_range``): without VNNI, 8-bit products can saturate fbgemm's 16-bit sums."""
        inputs = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        parts = [torch.ops.quantized.linear_dynamic(inputs, chunk, True) for chunk in self.chunks]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class Int8Rows:
    """The packed chunks of one domain's growing matrix; a chunk is packed again when one of
    its rows was written or it has gained rows since its last packing."""

    def __init__(self) -> None:
        self._packed: list[tuple[int, object]] = []  # (rows in the chunk, packed weight)
        self._stale: set[int] = set()

    def written(self, position: int) -> None:
        self._stale.add(position // CHUNK_ROWS)

    def snapshot(self, matrix: np.ndarray) -> Int8Matrix:
        """The packed form of ``matrix`` (the domain's rows so far)."""
        rows = len(matrix)
        chunks = -(-rows // CHUNK_ROWS)
        del self._packed[chunks:]
        for chunk in range(chunks):
            block = matrix[chunk * CHUNK_ROWS : (chunk + 1) * CHUNK_ROWS]
            if (
                chunk >= len(self._packed)
                or chunk in self._stale
                or self._packed[chunk][0] != len(block)
            ):
                packed = (len(block), _pack(block))
                if chunk < len(self._packed):
                    self._packed[chunk] = packed
                else:
                    self._packed.append(packed)
        self._stale.clear()
        return Int8Matrix(tuple(weight for _, weight in self._packed), rows)
