"""Keep full garbage collections of the long-lived heap off the request path.

TensorFlow and the loaded graphs leave ~300k long-lived Python objects. Under load, the
objects of requests in flight survive young collections, and every few seconds that
triggers a full collection, which scans all of them with the event loop stopped: ~150 ms
(wrk at 64 connections saw p99 125 ms against a p50 of 2.4 ms; benchmarks/serve_load.py).
`gc.freeze()` moves what exists once the models are loaded into the permanent generation,
which collections skip. When the loaded versions change, the heap is collected once and
frozen again, so a retired version's objects are freed and the new one's are not rescanned.
"""

from __future__ import annotations

import gc
from typing import Protocol

from rlplat.serving.errors import ServingError

_SETTLED = ("AVAILABLE", "END")  # no load or unload under way


class _Manager(Protocol):
    def names(self) -> list[str]: ...
    def status(self, name: str) -> list: ...


class HeapFreezer:
    def __init__(self, manager: _Manager) -> None:
        self.manager = manager
        self._frozen: frozenset | None = None

    def _loaded(self) -> frozenset | None:
        items = set()
        for name in self.manager.names():
            try:
                items.update((name, v, s.state) for v, s in self.manager.status(name))
            except ServingError:  # (removed since the listing: the next check sees it)
                return None
        if any(state not in _SETTLED for _, _, state in items):
            return None
        return frozenset(items)

    def check(self) -> bool:
        """Freeze the heap if the loaded versions changed since the last freeze (and no
        load is under way); whether it did. Call it from the event loop's thread."""
        loaded = self._loaded()
        if loaded is None or loaded == self._frozen:
            return False
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._frozen = loaded
        return True
