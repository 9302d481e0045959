"""The item tower shared by trigger and candidate (paper Fig. 1-2).

features = ID embedding ⊕ projected text ⊕ projected visual → shared dense layers → one or more
heads → L2-normalised item embedding. Each modality is a switch. The ID table has one extra
row, the out-of-vocabulary (cold) row; with ID dropout an item's ID is replaced by that row
during training, so the content path learns to stand alone for items never seen in training.
Content vectors are frozen inputs (buffers); their projections train jointly with the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file

from relrec.errors import RunDirError
from relrec.manifest import atomic_path, atomic_write_bytes


#: in a model folder: which items' ID rows the model trained (bool per item_index)
KNOWN_ITEMS = "known_items.npy"


class TowerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_items: int
    id_dim: int = 64
    embedding_dim: int = 64
    hidden_dims: list[int] = [128]
    use_id: bool = True
    text_dim: int = 0  # 0 = text modality off
    visual_dim: int = 0  # 0 = visual modality off
    content_projection_dim: int = 64
    id_dropout: float = 0.0
    heads: list[str] = ["main"]
    # unit vectors score by cosine; raw vectors let a candidate's norm carry its popularity
    # (a trigger's norm scales its whole row, so it never changes that trigger's ranking)
    normalize: bool = True
    # a learned scale per content modality, 2·sigmoid(g) (1 at the start, in (0, 2)): with
    # content that carries no signal the tower can turn that modality down as a whole
    modality_gates: bool = False


class ItemTower(nn.Module):
    def __init__(self, config: TowerConfig):
        super().__init__()
        self.config = config
        width = 0
        if config.use_id:
            self.id_embedding = nn.Embedding(config.n_items + 1, config.id_dim)
            nn.init.normal_(self.id_embedding.weight, std=0.1)
            width += config.id_dim
        if config.text_dim:
            self.text_projection = nn.Linear(config.text_dim, config.content_projection_dim)
            self.register_buffer("text_vectors", torch.zeros(config.n_items + 1, config.text_dim),
                                 persistent=False)
            self.text_missing = nn.Parameter(torch.zeros(config.content_projection_dim))
            self.register_buffer("text_ok", torch.zeros(config.n_items + 1, dtype=torch.bool),
                                 persistent=False)
            width += config.content_projection_dim
        if config.visual_dim:
            self.visual_projection = nn.Linear(config.visual_dim, config.content_projection_dim)
            self.register_buffer("visual_vectors",
                                 torch.zeros(config.n_items + 1, config.visual_dim),
                                 persistent=False)
            # items without an image get a learned default, flagged, never a garbage vector
            self.visual_missing = nn.Parameter(torch.zeros(config.content_projection_dim))
            self.register_buffer("visual_ok", torch.zeros(config.n_items + 1, dtype=torch.bool),
                                 persistent=False)
            width += config.content_projection_dim
        if width == 0:
            raise ValueError("the tower needs at least one of ID, text or visual inputs")
        if config.modality_gates:
            self.gates = nn.ParameterDict({modality: nn.Parameter(torch.zeros(()))
                                           for modality in self.content_modalities})
        layers: list[nn.Module] = []
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.shared = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(width, config.embedding_dim) for name in config.heads})

    @property
    def out_of_vocabulary_row(self) -> int:
        return self.config.n_items

    def set_content(self, modality: str, vectors: np.ndarray, ok: np.ndarray) -> None:
        """Attach frozen content vectors (n_items, dim) and their availability mask."""
        buffer = getattr(self, f"{modality}_vectors")
        flags = getattr(self, f"{modality}_ok")
        buffer[: len(vectors)] = torch.as_tensor(vectors, dtype=torch.float32)
        flags[: len(ok)] = torch.as_tensor(ok, dtype=torch.bool)

    @property
    def content_modalities(self) -> tuple[str, ...]:
        """The content inputs this tower reads ("text", "visual")."""
        return tuple(m for m in ("text", "visual") if getattr(self.config, f"{m}_dim"))

    def attach_content(self, content: dict[str, tuple[np.ndarray, np.ndarray]]) -> "ItemTower":
        """Attach every modality of ``content`` (modality → (vectors, ok)); see
        :func:`relrec.content.store.required_content`."""
        for modality, (vectors, ok) in content.items():
            self.set_content(modality, vectors, ok)
        return self

    @torch.no_grad()
    def item_embeddings(self, known: np.ndarray, head: str | None = None,
                        batch_size: int = 65536) -> np.ndarray:
        """(n_items, embedding_dim) float32 of every item; items with ``known`` False take
        the cold ID row (their content path alone)."""
        self.eval()
        device = next(self.parameters()).device
        n_items = len(known)
        out = []
        for start in range(0, n_items, batch_size):
            items = torch.arange(start, min(start + batch_size, n_items), device=device)
            flags = torch.as_tensor(np.array(known[start:start + len(items)]), device=device)
            out.append(self(items, head=head, known=flags).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def _project(self, modality: str, items: torch.Tensor) -> torch.Tensor:
        projection = getattr(self, f"{modality}_projection")
        projected = projection(getattr(self, f"{modality}_vectors")[items])
        ok = getattr(self, f"{modality}_ok")[items].unsqueeze(-1)
        return self._gated(modality, torch.where(
            ok, projected, getattr(self, f"{modality}_missing").expand_as(projected)))

    def _gated(self, modality: str, projected: torch.Tensor) -> torch.Tensor:
        if not self.config.modality_gates:
            return projected
        return projected * (2 * torch.sigmoid(self.gates[modality]))

    def modality_scales(self) -> dict[str, float]:
        """How much of each content modality the tower lets through (1 = as projected)."""
        if not self.config.modality_gates:
            return {}
        return {m: float(2 * torch.sigmoid(g.detach())) for m, g in self.gates.items()}

    def id_dropout_mask(self, shape) -> torch.Tensor | None:
        """Which rows train through the cold ID row this step (None: no ID dropout). Drawn by
        the trainer for the *global* batch so data-parallel ranks share one draw."""
        if not (self.training and self.config.use_id and self.config.id_dropout > 0):
            return None
        return torch.rand(shape, device=self.id_embedding.weight.device) < self.config.id_dropout

    def features(self, items: torch.Tensor, known: torch.Tensor | None = None,
                 id_dropped: torch.Tensor | None = None) -> torch.Tensor:
        """Shared representation; ``known`` False routes an item to the cold ID row, and so
        does ``id_dropped`` True (ID dropout; drawn here when not given)."""
        parts = []
        if self.config.use_id:
            id_rows = items
            if known is not None:
                id_rows = torch.where(known, items, torch.full_like(items, self.out_of_vocabulary_row))
            if id_dropped is None:
                id_dropped = self.id_dropout_mask(items.shape)
            if id_dropped is not None:
                id_rows = torch.where(id_dropped, torch.full_like(items, self.out_of_vocabulary_row),
                                      id_rows)
            parts.append(self.id_embedding(id_rows))
        if self.config.text_dim:
            parts.append(self._project("text", items))
        if self.config.visual_dim:
            parts.append(self._project("visual", items))
        return self.shared(torch.cat(parts, dim=-1))

    @torch.no_grad()
    def new_item_embeddings(self, n: int, content: dict[str, np.ndarray | None] | None = None,
                            head: str | None = None) -> np.ndarray:
        """(n, embedding_dim) of ``n`` items outside the catalogue: the cold ID row plus the
        given content vectors per modality ((n, dim) arrays; a modality left out, or None,
        takes its learned missing vector) — what :meth:`forward` gives a cold item."""
        content = content or {}
        parts = []
        if self.config.use_id:
            parts.append(self.id_embedding(torch.full((n,), self.out_of_vocabulary_row,
                                                      dtype=torch.long)))
        for modality in self.content_modalities:
            vectors = content.get(modality)
            if vectors is None:
                projected = getattr(self, f"{modality}_missing")[None, :].expand(n, -1)
            else:
                projected = getattr(self, f"{modality}_projection")(
                    torch.as_tensor(np.asarray(vectors), dtype=torch.float32))
            parts.append(self._gated(modality, projected))
        shared = self.shared(torch.cat(parts, dim=-1))
        head = head or self.config.heads[0]
        return self._finish(self.heads[head](shared)).float().cpu().numpy()

    def forward(self, items: torch.Tensor, head: str | None = None,
                known: torch.Tensor | None = None,
                id_dropped: torch.Tensor | None = None) -> torch.Tensor:
        head = head or self.config.heads[0]
        return self._finish(self.heads[head](self.features(items, known, id_dropped)))

    def _finish(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors, dim=-1) if self.config.normalize else vectors

    def all_heads(self, items: torch.Tensor, known: torch.Tensor | None = None,
                  id_dropped: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        shared = self.features(items, known, id_dropped)
        return {name: self._finish(layer(shared)) for name, layer in self.heads.items()}

    # -- persistence: config JSON + safetensors, one call each ------------------------------
    def save(self, directory: str | Path, name: str = "weights") -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / "tower_config.json",
                           self.config.model_dump_json(indent=2).encode())
        with atomic_path(directory / f"{name}.safetensors") as temporary:
            save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()},
                      str(temporary))

    @classmethod
    def load(cls, directory: str | Path, name: str = "weights") -> "ItemTower":
        directory = Path(directory)
        try:
            config = TowerConfig.model_validate_json((directory / "tower_config.json").read_text())
            state = load_file(str(directory / f"{name}.safetensors"))
        except FileNotFoundError as error:
            raise RunDirError(f"{directory}: no trained model ({error.filename}); "
                              "run `relrec train` first") from error
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise RunDirError(f"{directory}: cannot load model weights: {error}") from error
        tower = cls(config)
        tower.load_state_dict(state)
        tower.eval()
        return tower

