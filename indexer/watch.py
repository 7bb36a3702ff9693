"""Keep an index up to date with a folder while a server searches it (`ebridge serve --watch DIR`).

The serving process is the index's writer: the embedded engine opens a store in one process at a
time, so the server lends the store it searches, and its loaded bridge, to ordinary indexing runs
(`index_directory` with `indexer.hooks.RunHooks`). Every change therefore goes through the path
`ebridge index` takes: plan (new, changed, deleted, renamed), manifest journal after each flushed
batch, errors report, crash points. A kill at any moment leaves what a killed `ebridge index`
leaves, and the next start's catch-up run finishes it.

How changes are found:

* at start, one catch-up run (what changed while the server was down);
* then inotify through `watchdog`: any create/modify/move/delete marks the folder dirty, and a run
  starts once events have been quiet for `debounce_s`;
* a periodic rescan (`rescan_s`) as the fallback for missed events, or the only way where inotify
  is unavailable (watch limit reached, some network file systems).

A file still being written is left for a later run (`RunHooks.defer`): while a writer has it open
(inotify saw a write and no close yet), or while its mtime is younger than `settle_s`. A file
that merely appears (created empty, or moved in whole with its folder) is only held by its mtime. A renamed
or moved file keeps its vectors (indexer/renames.py). Whole folders added or removed are ordinary
runs: the scan sees their files appear or go.

Searches are never blocked for long: points are upserted in batches (the engine answers reads from
other threads meanwhile), and the HNSW graph build, which holds the GIL for its whole native call,
runs only when no request has come for `quiet_s` seconds. Until then new points are searched
exactly (brute force over the small unindexed segment).

Example:
    >>> watcher = FolderWatcher("photos", "photos-index", store=index.store, bridge=index.bridge)  # doctest: +SKIP
    >>> watcher.start(); watcher.wait_idle(60); watcher.status()["done"]                         # doctest: +SKIP
    12
"""
from __future__ import annotations

import logging
import threading
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.errors import EmergentBridgeError
from indexer.hooks import RunHooks
from indexer.ledger import ERROR, INDEXED, ManifestRow, Plan
from indexer.options import IndexOptions
from indexer.record import read_record, update_record

log = logging.getLogger(__name__)

# Event kinds that can change what the folder holds. Opens, closes without a write and attribute
# changes are left out: the indexer's own reads make them, and would start a run after every run.
_CHANGES = {"created", "modified", "moved", "deleted", "closed"}


class WatchStopped(EmergentBridgeError):
    """Raised inside a run to stop it after a durable batch (the server is shutting down)."""


@dataclass
class WatchSettings:
    """How a watching server finds changes and when it indexes them."""

    settle_s: float = 1.0  # a file's mtime must be this old (and no writer hold it) before it is read
    debounce_s: float = 0.3  # a run starts once events have been quiet this long
    rescan_s: float = 30.0  # full rescan: events inotify missed, or the only way without inotify
    # files per pipeline batch. Each batch ends in a store flush, and the engine holds the GIL through its
    # fsyncs (~150 ms on a busy disk): searches wait that long, so fewer, larger batches serve better.
    batch_size: int = 32
    # While searches come in (one in the last second), indexing takes at most this share of the time:
    # after each batch it pauses (1/share - 1) times as long as the batch took. 1: never pause.
    busy_share: float = 0.5
    workers: int = 2  # reader threads (threads, not processes: the server runs threads already)
    open_write_max_s: float = 600.0  # a writer that never closes: index its file after this anyway
    quiet_s: float = 10.0  # build the HNSW graph only after this long without a request
    use_inotify: bool = True  # False: rescans only (tests of the fallback, exotic file systems)
    # what to index (exclude, label_from_folder, sidecar...): an IndexOptions, or a dict of its fields
    index_options: IndexOptions | dict[str, Any] = field(default_factory=IndexOptions)

    def run_options(self, qdrant_url: Any, collection: str | None) -> IndexOptions:
        """The options of each indexing run: `index_options` with the watcher's own throughput settings
        (reader threads, no progress bar, the graph built when the server is quiet) and the server's store."""
        given = self.index_options
        base = given if isinstance(given, IndexOptions) else IndexOptions.build(**given)
        return dataclasses.replace(base, qdrant_url=qdrant_url, collection=collection, batch_size=self.batch_size,
                                   workers=self.workers, decode="threads", optimize=False, progress=False)


class FolderWatcher:
    """A background thread that indexes `root` into `index_dir` through the server's open store.

    The caller holds the index folder's lock (role "server", with `watch` set) for as long as the
    watcher runs. `last_request()` says when the server last answered a request (monotonic).
    """

    def __init__(self, root: str | Path, index_dir: str | Path, *, store: Any, bridge: Any,
                 settings: WatchSettings | None = None, last_request: Callable[[], float] | None = None,
                 qdrant_url: Any = None, collection: str | None = None):
        self.root = Path(root).resolve()
        self.index_dir = Path(index_dir).resolve()
        self.store = store
        self.bridge = bridge
        self.settings = settings or WatchSettings()
        self.last_request = last_request or (lambda: 0.0)
        self.qdrant_url = qdrant_url
        self.collection = collection
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._dirty = False
        self._last_event = 0.0
        self._writing: dict[str, float] = {}  # abs path -> when a write was seen without its close
        self._recheck_at: float | None = None  # deferred files: look again then
        self._running = False  # a run is in progress
        self._status: dict[str, Any] = {
            "folder": str(self.root), "state": "starting", "mode": None, "queued": 0, "done": 0, "indexed": 0,
            "removed": 0, "moved": 0, "errors": 0, "deferred": 0, "runs": 0, "last_error": None, "last_run": None,
            "graph_pending": False,
        }
        self._batch_started = time.monotonic()
        self._planned = 0  # files the current run planned to read...
        self._committed = 0  # ...and those of them already durable

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Catch up and watch in a background thread; returns at once (searches go on meanwhile)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"--watch {self.root}: not a folder; give the folder the index was built from")
        recorded = (read_record(self.index_dir) or {}).get("root")
        if recorded is not None and Path(recorded).resolve() != self.root:
            raise EmergentBridgeError(
                f"{self.index_dir} is the index of {recorded}, not of {self.root}: watch {recorded}, or build an index "
                f"of {self.root} first (ebridge index {self.root} --index NEW_INDEX)")
        self._thread = threading.Thread(target=self._main, name="ebridge-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        """Stop watching; a run in progress stops after its current batch is durable."""
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except Exception:  # noqa: BLE001 - shutting down: nothing to do about it
                log.debug("watchdog observer did not stop cleanly", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the watcher's run did not stop within %.0fs; its work so far is journaled", timeout)
        self._set(state="stopped")

    def status(self) -> dict[str, Any]:
        """Progress for /stats and the page: state, queued, done, errors, last_error..."""
        with self._lock:
            out = dict(self._status)
            out["queued"] = max(0, self._planned - self._committed) + out["deferred"] + (1 if self._dirty else 0)
            out["writing"] = len(self._writing)
            return out

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is queued, deferred or running (tests and the load script); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = self._running or self._dirty or self._status["deferred"] or self._status["state"] == "starting"
            if not busy:
                return True
            time.sleep(0.05)
        return False

    def poke(self) -> None:
        """Rescan now (as if an event came): for file systems without events, and for tests."""
        with self._lock:
            self._dirty = True
            self._last_event = 0.0
        self._wake.set()

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        s = self.settings
        _lower_priority()
        self._start_observer()  # first, so that a change made during the catch-up run is seen
        self._run_once("catching up")
        rescan_s = s.rescan_s if self._observer is not None else min(s.rescan_s, 5.0)
        next_rescan = time.monotonic() + rescan_s
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                dirty, quiet_for = self._dirty, now - self._last_event
            waits = [next_rescan - now]
            if dirty:
                waits.append(s.debounce_s - quiet_for)
            if self._recheck_at is not None:
                waits.append(self._recheck_at - now)
            if self._status["graph_pending"]:
                waits.append(1.0)
            self._wake.wait(max(0.02, min(waits)))
            self._wake.clear()
            if self._stop.is_set():
                break
            now = time.monotonic()
            with self._lock:
                dirty, quiet_for = self._dirty, now - self._last_event
            if dirty and quiet_for < s.debounce_s:
                continue  # a burst of events (a copy, an unpacked archive) is still going on
            if dirty or now >= next_rescan or (self._recheck_at is not None and now >= self._recheck_at):
                self._run_once("indexing")
                next_rescan = time.monotonic() + rescan_s
            self._maybe_build_graph()

    def _run_once(self, state: str) -> None:
        """One indexing run over the whole folder (the plan finds what changed)."""
        from indexer.index import index_directory

        with self._lock:
            self._dirty = False
            self._running = True
            self._planned = self._committed = 0
            self._status["state"] = state
        self._recheck_at = None
        hooks = RunHooks(store=self.store, bridge=self.bridge, defer=self._defer, on_plan=self._on_plan,
                         on_commit=self._on_commit)
        options = self.settings.run_options(self.qdrant_url, self.collection)
        t0 = time.perf_counter()
        try:
            summary = index_directory(self.root, self.index_dir, options=options, hooks=hooks)
        except WatchStopped:
            log.info("watcher stopped after a durable batch; the next start finishes the run")
            return
        except Exception as exc:  # noqa: BLE001 - the server must keep serving; the reason is shown
            log.exception("indexing %s failed; retrying at the next change or rescan", self.root)
            self._set(state="failed", last_error={"path": None, "reason": f"{type(exc).__name__}: {exc}"[:500],
                                                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
            return
        finally:
            with self._lock:
                self._running = False
                self._planned = self._committed = 0
        with self._lock:
            st = self._status
            st["removed"] += summary.removed
            st["moved"] += summary.moved
            st["done"] += summary.removed + summary.moved
            st["deferred"] = summary.deferred
            st["runs"] += 1
            # the run leaves the record's `optimized` false when it changed points (or found it so)
            st["graph_pending"] = (read_record(self.index_dir) or {}).get("optimized") is False
            st["last_run"] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.perf_counter() - t0, 3),
                              "indexed": summary.indexed, "removed": summary.removed, "moved": summary.moved,
                              "errors": summary.errors, "deferred": summary.deferred, "points": summary.points}
            st["state"] = "waiting for files to settle" if summary.deferred else "watching"
        if summary.deferred:
            self._recheck_at = time.monotonic() + max(self.settings.settle_s, 0.5)
        if summary.indexed or summary.removed or summary.moved:
            log.info("watch: %d indexed, %d removed, %d moved, %d errors, %d left to settle",
                     summary.indexed, summary.removed, summary.moved, summary.errors, summary.deferred)

    def _on_plan(self, plan: Plan) -> None:
        self._batch_started = time.monotonic()
        with self._lock:
            self._planned = len(plan.todo)
            self._status["deferred"] = 0

    def _on_commit(self, rows: list[ManifestRow]) -> None:
        with self._lock:
            st = self._status
            self._committed += len(rows)
            st["done"] += len(rows)
            st["indexed"] += sum(r.status == INDEXED for r in rows)
            bad = [r for r in rows if r.status == ERROR]
            st["errors"] += len(bad)
            if bad:
                st["last_error"] = {"path": bad[-1].path, "reason": bad[-1].reason,
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if self._stop.is_set():
            raise WatchStopped("the server is stopping")
        self._yield_to_searches()

    def _yield_to_searches(self) -> None:
        """Pause between batches while searches come in, so they keep most of the machine (and the GIL:
        decoding, encoding and the store's flush all hold it part of the time)."""
        share = self.settings.busy_share
        now = time.monotonic()
        spent, self._batch_started = now - self._batch_started, now
        if share >= 1 or now - self.last_request() > 1.0:
            return
        self._stop.wait(min(spent * (1 / max(share, 0.05) - 1), 10.0))
        self._batch_started = time.monotonic()

    def _defer(self, entry: Any) -> bool:
        """Whether a file is still being written: leave it for a later run."""
        now = time.time()
        with self._lock:
            since = self._writing.get(str(entry.abs_path))
        if since is not None and now - since < self.settings.open_write_max_s:
            return True
        return now - entry.mtime_ns / 1e9 < self.settings.settle_s

    def _maybe_build_graph(self) -> None:
        """Build the HNSW graph of the new points once the server has been quiet for `quiet_s`."""
        if not self._status["graph_pending"] or self._stop.is_set():
            return
        if time.monotonic() - self.last_request() < self.settings.quiet_s:
            return
        t0 = time.perf_counter()
        self._set(state="building the search graph")
        try:
            self.store.optimize()
            update_record(self.index_dir, optimized=True)
        except Exception as exc:  # noqa: BLE001 - searches still work exactly without the graph
            log.warning("building the search graph failed (%s); the next `ebridge index` builds it", exc)
        self._set(state="watching", graph_pending=False)
        log.info("search graph built in %.1fs", time.perf_counter() - t0)

    # ------------------------------------------------------------------ events

    def _start_observer(self) -> None:
        if not self.settings.use_inotify:
            self._set(mode=f"rescan every {min(self.settings.rescan_s, 5.0):g}s")
            return
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.warning("watchdog is not installed (pip install 'emergentbridge[serve]'); finding changes by "
                        "rescanning %s every few seconds", self.root)
            self._set(mode="rescan every 5s")
            return
        watcher = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                watcher._event(event)

        observer = Observer()
        try:
            observer.schedule(_Handler(), str(self.root), recursive=True)
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit (fs.inotify.max_user_watches)
            log.warning("cannot watch %s for changes (%s); rescanning it every few seconds instead", self.root, exc)
            self._set(mode="rescan every 5s")
            return
        self._observer = observer
        self._set(mode=f"events ({type(observer).__name__}) + rescan every {self.settings.rescan_s:g}s")

    def _event(self, event: Any) -> None:
        kind = event.event_type
        if kind not in _CHANGES:
            return
        paths = [Path(str(event.src_path))]
        if kind == "moved":
            paths.append(Path(str(event.dest_path)))
        if all(p == self.index_dir or self.index_dir in p.parents for p in paths):
            return  # the index's own files (an index kept inside the folder it indexes)
        now = time.time()
        with self._lock:
            if not event.is_directory:
                src = str(paths[0])
                if kind == "modified":  # bytes written: the file is whole when its writer closes it
                    self._writing.setdefault(src, now)
                elif kind in ("closed", "deleted"):
                    self._writing.pop(src, None)
                elif kind == "moved":  # a rename is whole at once: the file under its new name is complete
                    self._writing.pop(src, None)
                    self._writing.pop(str(paths[1]), None)
            self._dirty = True
            self._last_event = time.monotonic()
        self._wake.set()

    def _set(self, **fields: Any) -> None:
        with self._lock:
            self._status.update(fields)


def _lower_priority(nice: int = 10) -> None:
    """Run this thread, and the reader and writer threads it starts (Linux threads inherit it), at a
    lower CPU priority than the threads that answer searches: indexing takes the spare cycles."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: indexing at normal priority
        log.debug("could not lower the watcher's priority (%s)", exc)

