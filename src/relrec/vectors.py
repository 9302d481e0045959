"""Small vector helpers shared by every stage (one definition each)."""

from __future__ import annotations

import numpy as np


def l2_normalize(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (no division by zero)."""
    vectors = np.asarray(vectors)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=axis, keepdims=True), 1e-12)
