"""ID embeddings for catalogues too large for one table row per item: the hashing trick
(see docs/SCALING.md).

:class:`HashedIdEmbedding` maps an item index to ``num_hashes`` rows of a shared table of
``num_buckets`` rows with independent 64-bit mixing hashes (splitmix64) and sums them ("hash embeddings", Svenstrup et al. 2017; Weinberger et al.
2009). With one hash, two ids sharing a bucket are indistinguishable; with two, only ids that
share *both* buckets are (a fraction ≈ 1 - exp(-n / B²) instead of 1 - exp(-n / B)). It has the
interface of ``nn.Embedding`` for the forward pass, so it can stand in for the tower's ID table.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def hash_parameters(num_hashes: int, seed: int = 0) -> np.ndarray:
    """(num_hashes,) int64 per-hash offsets (a fresh splitmix64 stream per hash)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**62, num_hashes, dtype=np.int64)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def hash_ids(ids: np.ndarray | torch.Tensor, num_buckets: int, parameters: np.ndarray
             ) -> np.ndarray | torch.Tensor:
    """Bucket of every id under every hash, shape ``ids.shape + (num_hashes,)``: the splitmix64
    finaliser of ``id + (j+1)·golden + offset_j`` (wrapping 64-bit arithmetic), top 63 bits
    modulo ``num_buckets``. NumPy and torch give identical buckets."""
    if isinstance(ids, torch.Tensor):
        offsets = torch.as_tensor(np.asarray(parameters), device=ids.device)
        golden = torch.arange(1, len(offsets) + 1, device=ids.device) * _signed(_GOLDEN)
        z = ids.to(torch.int64).unsqueeze(-1) + golden + offsets

        def shift(x, bits):  # logical right shift on int64
            return (x >> bits) & ((1 << (64 - bits)) - 1)

        z = (z ^ shift(z, 30)) * _signed(_MIX1)
        z = (z ^ shift(z, 27)) * _signed(_MIX2)
        z = z ^ shift(z, 31)
        return torch.remainder(shift(z, 1), num_buckets)
    with np.errstate(over="ignore"):
        offsets = np.asarray(parameters, dtype=np.int64).astype(np.uint64)
        golden = np.arange(1, len(offsets) + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
        z = np.asarray(ids, dtype=np.int64).astype(np.uint64)[..., None] + golden + offsets
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z = z ^ (z >> np.uint64(31))
        return ((z >> np.uint64(1)) % np.uint64(num_buckets)).astype(np.int64)


class HashedIdEmbedding(nn.Module):
    def __init__(self, num_buckets: int, dim: int, num_hashes: int = 2, seed: int = 0,
                 init_std: float = 0.1):
        super().__init__()
        self.num_buckets, self.dim, self.num_hashes = num_buckets, dim, num_hashes
        self.weight = nn.Parameter(torch.randn(num_buckets, dim) * init_std / num_hashes**0.5)
        self.register_buffer("hash_parameters",
                             torch.as_tensor(hash_parameters(num_hashes, seed)),
                             persistent=True)

    def buckets(self, ids: torch.Tensor) -> torch.Tensor:
        return hash_ids(ids, self.num_buckets, self.hash_parameters.cpu().numpy())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[self.buckets(ids)].sum(dim=-2)

    def bytes_per_item(self, n_items: int, bytes_per_value: int = 4) -> float:
        return self.num_buckets * self.dim * bytes_per_value / n_items
