"""What a response shows about an item: its id, title, topics, image and JSON fragment.

:class:`Catalogue` names every item a served run can return: the run's items
(``data/items.parquet``, indices ``0 .. n_items - 1``) and the items added at run time
(``added``, an :class:`~relrec.serve.runtime_items.ExtraItems` snapshot, replaced whole by
:class:`~relrec.serve.engine.ServedModel`; index ``n_items + j`` is its row j). Built once per
loaded bundle: the topic masks of the reasons (:class:`relrec.serve.render.TopicMasks`) and
each item's JSON fields (:func:`relrec.serve.render.item_fragment`). An image file is served
only from inside the image folder (``image_root``); an http(s) image link is handed to the
browser as is (never fetched).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relrec.data.media import inside_folder, is_http_url
from relrec.related import RelatedItems
from relrec.serve.errors import ServeError
from relrec.serve.render import TopicMasks, item_fragment
from relrec.serve.runtime_items import ExtraItems


class Catalogue:
    """Ids and display metadata of a served run's items, by item index."""

    def __init__(self, name: str, related: RelatedItems, *, image_root: Path | None):
        self.name = name  # the served run's name, part of its image URLs
        self.run = related.run
        self._known_indices = related.item_indices  # vectorised id -> index lookup
        self.n_items = self.run.n_items
        self.image_root = image_root
        self._image_cache: dict = {}
        items = self.run.items
        self.titles = items["title"].fillna("").astype(str).to_numpy(dtype=object)
        self.titles_lower = [title.lower() for title in self.titles]
        self.topics = [list(topics) if topics is not None else [] for topics in items["topics"]]
        self.images = items["image"].to_numpy(dtype=object) if "image" in items else \
            np.full(self.n_items, None, dtype=object)
        self.popularity = self.run.candidate_frequency.astype(np.int64)
        self.item_ids = self.run.item_ids.astype(str)
        self.added = ExtraItems()
        self.topic_masks = TopicMasks(self.topics)
        self.fragments = [item_fragment(self.item_ids[i], str(self.titles[i]), self.topics[i],
                                        self._image_url(i)) for i in range(self.n_items)]

    # -- ids -------------------------------------------------------------------------------
    def index_of(self, item_id: str) -> int | None:
        index = self.run.index_of_id.get(item_id)
        if index is not None:
            return index
        row = self.added.positions.get(item_id)
        return None if row is None else self.n_items + row

    def require_indices(self, item_ids: Sequence[str]) -> list[int]:
        indices, unknown = [], []
        for item_id in item_ids:
            index = self.index_of(item_id)
            (unknown.append(item_id) if index is None else indices.append(index))
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (" …" if len(unknown) > 5 else "")
            raise ServeError(404, "unknown_item", f"unknown item id(s): {shown}")
        return indices

    def exclusion_indices(self, item_ids) -> np.ndarray:
        """Sorted item indices of the known ids (unknown ids in an exclude list are ignored)."""
        item_ids = [str(item_id) for item_id in item_ids]
        found = self._known_indices(item_ids, missing="drop")
        if len(self.added):
            rows = [self.added.positions.get(item_id) for item_id in item_ids]
            found = np.concatenate([found, self.n_items + np.asarray(
                [row for row in rows if row is not None], np.int64)])
        return np.unique(found)

    def item_id(self, index: int) -> str:
        if index < self.n_items:
            return str(self.run.item_ids[index])
        return self.added.ids[index - self.n_items]

    # -- metadata --------------------------------------------------------------------------
    def title(self, index: int) -> str:
        if index < self.n_items:
            return str(self.titles[index])
        return str(self.added.records[index - self.n_items].get("title", ""))

    def item_topics(self, index: int) -> list[str]:
        if index < self.n_items:
            return self.topics[index]
        return list(self.added.records[index - self.n_items].get("topics") or [])

    def image_path(self, index: int) -> Path | None:
        """The item's image file, only when it lies inside the image folder (cached)."""
        if self.image_root is None or index >= self.n_items:
            return None
        key = (index, self.image_root)
        if key not in self._image_cache:
            self._image_cache[key] = self.resolve_image(index)
        return self._image_cache[key]

    def resolve_image(self, index: int) -> Path | None:
        """The item's image file resolved now (symlinks followed), when inside the folder."""
        if self.image_root is None or index >= self.n_items:
            return None
        path = inside_folder(self.images[index], self.image_root)
        try:
            return path if path is not None and path.is_file() else None
        except OSError:
            return None

    def image_link(self, index: int) -> str | None:
        """An http(s) image URL of the item, handed to the browser as is (never fetched)."""
        raw = self.images[index] if index < self.n_items else None
        return raw.strip() if is_http_url(raw) else None

    def _image_url(self, index: int) -> str | None:
        image = self.image_path(index)
        return f"/images/{self.name}/{self.item_id(index)}" if image else self.image_link(index)

    def describe(self, index: int) -> dict:
        return {"item_id": self.item_id(index), "title": self.title(index),
                "topics": self.item_topics(index), "image_url": self._image_url(index)}

    def fragment(self, index: int) -> bytes:
        """The item's JSON fields (see :func:`relrec.serve.render.item_fragment`)."""
        if index < self.n_items:
            return self.fragments[index]
        return item_fragment(self.item_id(index), self.title(index), self.item_topics(index),
                             None)

    def search_titles(self, query: str, limit: int) -> list[dict]:
        query = query.strip().lower()
        if not query:
            return []
        hits = [i for i, title in enumerate(self.titles_lower) if query in title]
        hits.sort(key=lambda i: (not self.titles_lower[i].startswith(query), -self.popularity[i]))
        return [self.describe(i) for i in hits[:limit]]
