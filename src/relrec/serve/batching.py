"""Requests that arrive together, answered together: one batched index search per event-loop turn.

An index-path list costs one search over every item embedding (memory- then compute-bound: the
whole table is read for one query) plus NumPy calls whose fixed cost dwarfs one row's work. When
several requests are in flight (a busy server), the ones the event loop has read in the same turn
are answered by one call over all their triggers: the table is read once, each NumPy call runs
once. Nothing waits for a timer: the batch is flushed on the next turn of the loop
(``loop.call_soon``), so a lone request is answered as soon as before, and a busy server forms
larger batches by itself (requests pile up while the previous batch is computed).

Only requests that differ by their trigger share a batch (same key: model, k, options); the
answer of each is exactly what it would get alone (tested against the unbatched path). The
batch is capped at 16 by default: FAISS's flat index scores fewer than 20 queries with its
per-query scan, as it scores a lone request, and switches to BLAS from 20 on, whose rounding
of the last bits differs — a larger batch could change a score's last digit or a near-tie.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any


class RequestBatcher:
    """``await batcher.submit(key, item)`` → ``answer(key, items)[position of item]``.

    ``answer(key, items)`` computes the results of one batch (a list as long as ``items``); an
    exception it raises is every request of that batch's exception. ``max_batch`` bounds one
    call (a flush splits larger groups)."""

    def __init__(self, answer: Callable[[Hashable, Sequence[Any]], Sequence[Any]], *,
                 max_batch: int = 16):
        self.answer = answer
        self.max_batch = max_batch
        # per event loop (an embedded app may see several): key -> [(item, future)]; an entry
        # exists while that loop's flush is scheduled
        self._pending: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.batches = 0   # calls of ``answer`` and the requests they served (for /metrics
        self.requests = 0  # and the tests: mean batch size = requests / batches)

    async def submit(self, key: Hashable, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = {}
            loop.call_soon(self._flush, loop)
        pending.setdefault(key, []).append((item, future))
        return await future

    def _flush(self, loop) -> None:
        pending = self._pending.pop(loop, {})
        for key, waiting in pending.items():
            for start in range(0, len(waiting), self.max_batch):
                self._answer(key, waiting[start:start + self.max_batch])

    def _answer(self, key: Hashable, waiting: list[tuple[Any, asyncio.Future]]) -> None:
        waiting = [(item, future) for item, future in waiting if not future.cancelled()]
        if not waiting:  # every client of this group went away
            return
        self.batches += 1
        self.requests += len(waiting)
        try:
            results = self.answer(key, [item for item, _ in waiting])
        except Exception as error:  # each request fails as it would have alone
            for _, future in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(waiting, results):
            if not future.done():
                future.set_result(result)
