"""What a serving process hands `index_directory` so it can index into the store it is searching.

`ebridge serve --watch` (indexer/watch.py) runs the very same indexing run as `ebridge index`
(manifest, journal, errors report, crash points), with four differences that `RunHooks` carries:

* `store`: the store the server has open. The embedded engine opens a shard in one process at a
  time, so the server cannot let the run open a second handle; it lends its own (the engine
  takes reads from other threads while a batch is upserted: see docs/serve.md for the figures).
  The run neither closes it nor takes the index lock, which the server holds already.
* `bridge`: the server's loaded bridge, used as it is (a second `Bridge.load` would load every
  encoder a second time); it must be the version of the index's bridge copy.
* `defer(entry)`: files to leave for a later run (still being written), neither indexed nor
  counted as deleted.
* `on_plan(plan)` / `on_commit(rows)`: progress. `on_commit` runs after each journal write (the
  batch is durable) and may raise to stop the run there, which is as safe as a kill.

Example:
    >>> hooks = RunHooks(store=None, bridge=None, defer=lambda entry: False)
    >>> hooks.deferred
    0
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class RunHooks:
    """A serving process's handles and callbacks for one `index_directory` run."""

    store: Any = None  # an open Store (left open by the run)
    bridge: Any = None  # a loaded Bridge of the index copy's version
    defer: Callable[[Any], bool] | None = None  # FileEntry -> leave it for a later run
    on_plan: Callable[[Any], None] | None = None  # Plan (after renames and deferrals are taken out)
    on_commit: Callable[[list[Any]], None] | None = None  # ManifestRows just made durable
    deferred: int = 0  # set by the run: files `defer` held back
