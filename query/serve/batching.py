"""Query embedding for the server: a batcher per modality that runs whatever queries wait in one
pass of encoder, head and G, and an LRU cache of text query vectors."""
from __future__ import annotations

import logging
import queue
import sys
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np

from query.serve.errors import as_api_error

log = logging.getLogger(__name__)


class LruCache:
    """A small thread-safe LRU map (text query -> its vector and proxy view)."""

    def __init__(self, size: int):
        from collections import OrderedDict

        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key not in self.data:
                return None
            self.data.move_to_end(key)
            return self.data[key]

    def put(self, key: Any, value: Any) -> None:
        if self.size <= 0:
            return
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


class Batcher:
    """Concurrent queries of one modality embedded together: encoder, head and G each run once per
    batch instead of once per query. Each of `threads` threads takes whatever is waiting (up to
    `max_batch`) as one batch, so a lone query waits for nobody and a crowd shares the passes.

    Example::

        z, view, features = Batcher(bridge, "text", threads=2).submit("seven", need_view=True).result()
    """

    def __init__(self, bridge: Any, modality: str, threads: int = 2, max_batch: int = 32):
        self.bridge, self.modality, self.max_batch = bridge, modality, max_batch
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._loop, name=f"ebridge-{modality}-{i}", daemon=True)
                        for i in range(max(1, threads))]
        for t in self.threads:
            t.start()

    def submit(self, item: Any, need_view: bool) -> Future:
        """Future of (bridged vector, its proxy view or None, encoder features) for one canonical item."""
        fut: Future = Future()
        self.queue.put((item, need_view, fut))
        return fut

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:  # closing: finish this batch, then stop
                    self.queue.put(None)
                    break
                batch.append(nxt)
            self._run(batch)

    def _run(self, batch: list[tuple[Any, bool, Future]]) -> None:
        live = [b for b in batch if b[2].set_running_or_notify_cancel()]
        if not live:
            return
        try:
            z, views, feats = self._embed([b[0] for b in live], any(b[1] for b in live))
        except Exception:
            if len(live) > 1:  # find the culprit: each query on its own, each gets its own answer
                for one in live:
                    self._run_one(one)
                return
            live[0][2].set_exception(as_api_error(sys.exc_info()[1]))
            return
        for j, (_, need_view, fut) in enumerate(live):
            fut.set_result((z[j], views[j] if views is not None and need_view else None, feats[j]))

    def _run_one(self, one: tuple[Any, bool, Future]) -> None:
        try:
            z, views, feats = self._embed([one[0]], one[1])
            one[2].set_result((z[0], views[0] if views is not None else None, feats[0]))
        except Exception as exc:
            one[2].set_exception(as_api_error(exc))

    def _embed(self, items: list[Any], need_view: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(bridged vectors, their proxy views if needed, the encoder's features: the raw route's query)."""
        b = self.bridge
        features = b.encode(self.modality, items)
        z = b.embed_features(self.modality, features)
        return z, (b.proxy_view(z) if need_view and b.has_proxy else None), features


