"""Response bodies as ready JSON bytes: item fragments, vectorised reasons, the precomputed table.

The routes never build a dict per recommended item nor validate a response model per request:
each catalogue item's ``"item_id", "title", "topics", "image_url"`` fragment is serialised once
per loaded bundle, reasons are computed for a whole (rows × k) grid with NumPy, and a list body
is the concatenation of those pieces. In precomputed mode every trigger's body is built once at
load (:class:`PrecomputedBodies`): a request is a lookup and a slice.
"""

from __future__ import annotations

import json

import numpy as np


def dumps(value) -> bytes:
    """Compact JSON bytes (the stdlib encoder; orjson is not in the lock file)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


SCORE_DIGITS, SIMILARITY_DIGITS = 6, 4  # what the dict-based bodies held


def rounded_text(value: float, digits: int) -> bytes:
    """``value`` as the JSON number ``round(value, digits)``."""
    return b"%a" % round(float(value), digits)


def item_fragment(item_id: str, title: str, topics: list[str], image_url: str | None) -> bytes:
    """``"item_id":…,"title":…,"topics":[…],"image_url":…`` without braces (joined into
    entries and item bodies)."""
    return dumps({"item_id": item_id, "title": title, "topics": list(topics),
                  "image_url": image_url})[1:-1]


class TopicMasks:
    """Topics as bit masks (Python ints) so shared topics are one ``&`` per entry; the JSON
    list of a mask is cached."""

    def __init__(self, topics: list[list[str]]):
        self.bits: dict[str, int] = {}
        self.masks = [self.mask(row) for row in topics]
        self._lists: dict[int, bytes] = {0: b"[]"}

    def mask(self, topics) -> int:
        out = 0
        for topic in topics or ():
            bit = self.bits.get(topic)
            if bit is None:
                bit = self.bits.setdefault(topic, len(self.bits))
            out |= 1 << bit
        return out

    def json_list(self, mask: int) -> bytes:
        cached = self._lists.get(mask)
        if cached is None:
            names = sorted(topic for topic, bit in list(self.bits.items()) if mask >> bit & 1)
            cached = self._lists[mask] = dumps(names)
        return cached


# one list entry: rank, score text, the item's fragment, shared topics (JSON list),
# text similarity (text or null), co-engagement count
ENTRY = (b'{"rank":%d,"score":%s,%s,"reasons":{"shared_topics":%s,"text_similarity":%s,'
         b'"co_engagement_count":%d}}')


def list_body(head: dict, entries: bytes, k: int, notes: list[str] | None = None) -> bytes:
    """``{…head…,"k":k,"items":[entries],"notes":[…]}``."""
    return b"{%s,\"k\":%d,\"items\":[%s],\"notes\":%s}" % (dumps(head)[1:-1], k, entries,
                                                            dumps(list(notes or [])))


class PrecomputedBodies:
    """Every exported trigger's list as JSON bytes: ``head`` (the fields before ``items``),
    the entries joined by commas, and each prefix's byte length; ``body(trigger, k)`` slices.

    ``length[t]`` entries exist for trigger t; a list shorter than the export's K held every
    candidate (``complete``), so it answers any k."""

    def __init__(self, heads: list[bytes | None], blobs: list[bytes], ends: list[np.ndarray],
                 length: np.ndarray, k: int):
        self.heads, self.blobs, self.ends, self.length, self.k = heads, blobs, ends, length, k

    def body(self, trigger: int, k: int) -> bytes | None:
        head = self.heads[trigger]
        if head is None:
            return None
        length = int(self.length[trigger])
        if k > length >= self.k:  # more asked than stored, and more exist
            return None
        used = min(k, length)
        entries = self.blobs[trigger][:self.ends[trigger][used]] if used else b""
        return b'%s,"k":%d,"items":[%s],"notes":[]}' % (head, k, entries)
