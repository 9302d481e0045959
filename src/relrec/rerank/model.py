"""The CAViaR contextual engagement model (CAViaR §3.2) and its point-wise baseline.

Both are small MLPs (dense + ReLU, one logit) trained with binary cross-entropy on the same
slates (:mod:`relrec.rerank.slates`); the point-wise model sees only the point-wise features,
the contextual one also the contextual features (:mod:`relrec.rerank.features`). Saved under
``RUN_DIR/rerank/``: ``config.json`` and ``weights.safetensors`` (both models, the feature
standardisation and the item space) — no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from relrec.manifest import atomic_path, atomic_write_bytes
from relrec.rerank.features import ItemSpace, contextual_features, n_contextual, n_pointwise, \
    pointwise_features


def reranker_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "rerank"


def _mlp(width: int, hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class EngagementMLP(nn.Module):
    """Standardised features → MLP → logit of P(engaged later in the session)."""

    def __init__(self, width: int, hidden: list[int]):
        super().__init__()
        self.net = _mlp(width, hidden)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std).squeeze(-1)


class ContextualReranker:
    def __init__(self, space: ItemSpace, context_size: int = 5, hidden: list[int] | None = None,
                 meta: dict | None = None):
        self.space = space
        self.context_size = context_size
        self.hidden = hidden or [64, 32]
        self.pointwise_width = n_pointwise(space.dim)
        self.contextual_width = self.pointwise_width + n_contextual(space.dim, context_size)
        self.contextual = EngagementMLP(self.contextual_width, self.hidden)
        self.pointwise = EngagementMLP(self.pointwise_width, self.hidden)
        self.meta = meta or {}

    # -- features ---------------------------------------------------------------------------
    def features(self, triggers, candidates, scores, top_scores, ranks, list_length, context,
                 position) -> tuple[np.ndarray, np.ndarray]:
        """(point-wise features, contextual model features) for rows of candidates."""
        point = pointwise_features(self.space, triggers, candidates, scores, top_scores, ranks,
                                   list_length)
        contextual = contextual_features(self.space, candidates, context, position)
        return point, np.concatenate([point, contextual], axis=1)

    @torch.no_grad()
    def predict(self, features: np.ndarray, contextual: bool = True) -> np.ndarray:
        model = self.contextual if contextual else self.pointwise
        model.eval()
        logits = model(torch.as_tensor(features, dtype=torch.float32))
        return torch.sigmoid(logits).numpy()

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"contextual.{k}": v.detach().contiguous()
                   for k, v in self.contextual.state_dict().items()}
        tensors.update({f"pointwise.{k}": v.detach().contiguous()
                        for k, v in self.pointwise.state_dict().items()})
        tensors["space.vectors"] = torch.as_tensor(self.space.vectors)
        tensors["space.topics"] = torch.as_tensor(self.space.topics)
        tensors["space.popularity"] = torch.as_tensor(self.space.popularity)
        with atomic_path(directory / "weights.safetensors") as temporary:
            save_file(tensors, str(temporary))
        atomic_write_bytes(directory / "config.json", json.dumps({
            "context_size": self.context_size, "hidden": self.hidden, "dim": self.space.dim,
            "meta": self.meta}, indent=2).encode())

    @classmethod
    def load(cls, directory: str | Path) -> "ContextualReranker":
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        tensors = load_file(str(directory / "weights.safetensors"))
        space = ItemSpace(tensors["space.vectors"].numpy(), tensors["space.topics"].numpy(),
                          tensors["space.popularity"].numpy())
        reranker = cls(space, config["context_size"], config["hidden"], config.get("meta"))
        reranker.contextual.load_state_dict(
            {k[len("contextual."):]: v for k, v in tensors.items() if k.startswith("contextual.")})
        reranker.pointwise.load_state_dict(
            {k[len("pointwise."):]: v for k, v in tensors.items() if k.startswith("pointwise.")})
        return reranker
