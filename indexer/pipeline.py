"""reader -> embed -> writer: three overlapping stages that turn files into stored points.

* **reader** (`indexer.reader`: `workers` threads, or forked processes with one torch
  thread each for larger runs): read each file's bytes once for its content hash, then
  decode it. A file whose hash equals its manifest row (a `touch`) is not decoded at all.
  Bad inputs become error results, never `None`. Batches are submitted `prefetch` ahead
  of the encoder.
* **embed** (the calling thread): the preset's frozen encoder on a batch of decoded
  items, the expensive forward pass. Nothing else runs here, so the encoder is never
  waiting on bookkeeping. On a GPU (`Bridge.to("cuda")`) each batch reaches the device
  through pinned memory with a non-blocking copy (`core.device.to_device`) while the
  readers, at most `prefetch` batches ahead, decode the next ones.
* **writer** (one thread): the bridge's head and proxy view (small) and points to the
  store for each batch (`stage`); then, at most every `COMMIT_SECONDS` and at the end,
  *one* flush for everything staged, then the manifest journal (`commit`). The journal
  is written after the flush: that ordering is what makes a killed run resumable without
  losing or duplicating a point. Why not a flush per batch: the embedded engine's flush
  holds the GIL while it waits on the disk, and a fast encoder (YAMNet: about 1 ms a
  recording) spent most of its time in the pipeline waiting for it.

Each stage can be used alone (`indexer.reader.read_file`, `Pipeline.embed_batch`, `Pipeline.write`),
which is how the tests build and check them one by one.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from bridge.modalities import text_part
from core.errors import InputError
from indexer.faults import crash_point
from indexer.ledger import ERROR, INDEXED, Manifest, ManifestRow
from indexer.reader import DECODE_MODES, PROCESS_DECODE_MIN_FILES, ReadResult, make_decode_pool, read_files
from indexer.scan import FileEntry, display_path
from indexer.store import Point, Store, moment_id, point_id

log = logging.getLogger(__name__)

TEXT_PAYLOAD_CHARS = 2000  # enough to show a hit's text; the file stays the source of truth
# The writer makes its points durable (store flush, then journal) at most this often. The embedded
# engine's flush holds the GIL while it waits on the disk, so every flush stalls the encoder too.
COMMIT_SECONDS = 2.0


@dataclass
class RunCounts:
    indexed: int = 0
    unchanged: int = 0  # touched files (mtime changed, same bytes)
    errors: int = 0
    by_modality: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # per modality: files the space cannot place
    cut: int = 0  # files longer than the part of them that is embedded and cut into moments
    stages: Counter = field(default_factory=Counter)  # wall and CPU seconds per stage (see `stage_seconds`)

    @property
    def encode_seconds(self) -> float:
        """Time inside the encoder's forward passes (the `encode` stage's wall time)."""
        return self.stages["encode"]

    def stage_seconds(self) -> dict[str, float]:
        """Where a run's time went: `run` / `run_cpu` (the whole pipeline: wall, and CPU of this process
        and its reader processes), `encode` / `encode_cpu` (the calling thread inside the encoder),
        `read_wait` (it waiting for the readers), `write` / `write_cpu` (the writer thread staging and
        committing), `commits`; `*_runqueue`: the part of a stage's wall time its thread waited for a core.
        The rest of a stage's wall time beyond CPU and run queue is time blocked (the GIL, the disk)."""
        return {k: round(v, 3) for k, v in sorted(self.stages.items())}


def runqueue_seconds() -> float:
    """Seconds the calling thread has spent runnable but waiting for a core (Linux schedstat; 0 elsewhere):
    with its CPU time, it splits a stage's wall time into working, waiting for a core, and blocked
    (the GIL, a lock, the disk)."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


@contextmanager
def thread_stage(stages: Counter, name: str) -> Iterator[None]:
    """The calling thread's wall, CPU and run-queue seconds in a block, added to `stages` as `name`,
    `name_cpu` and `name_runqueue`."""
    t0, cpu0, queued0 = time.perf_counter(), time.thread_time(), runqueue_seconds()
    try:
        yield
    finally:
        stages[name] += time.perf_counter() - t0
        stages[f"{name}_cpu"] += time.thread_time() - cpu0
        stages[f"{name}_runqueue"] += runqueue_seconds() - queued0


def process_cpu() -> float:
    """CPU seconds of this process and of its children that have ended (reader processes, once shut down)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# What an encoder raises on an item it cannot take (odd shape, size, dtype); a missing package or a
# broken checkpoint is not among them and still stops the run.
_ITEM_ERRORS = (InputError, ValueError, TypeError, IndexError, RuntimeError)


@dataclass
class _Batch:
    results: list[ReadResult]
    features: np.ndarray | None = None  # encoder features of the results that have an item
    moment_features: dict[str, np.ndarray] = field(default_factory=dict)  # path -> one row per moment


@dataclass
class _Staged:
    """What the writer has upserted since its last commit: rows to journal once the store has flushed."""

    rows: list[ManifestRow] = field(default_factory=list)
    changed: bool = False  # points upserted or deleted: the commit must flush


class Pipeline:
    """Runs the three stages over a list of files; one instance per indexing run.

    Example:
        >>> counts = Pipeline(bridge, store, manifest, batch_size=64).run(plan.todo)  # doctest: +SKIP
    """

    def __init__(self, bridge: Any, store: Store, manifest: Manifest, *, batch_size: int = 64, workers: int = 4,
                 prefetch: int = 2, progress: bool = True, reuse_known: bool = True, decode: str = "auto",
                 on_commit: Any = None, commit_seconds: float | None = None):
        if batch_size < 1 or workers < 1:
            raise ValueError("batch_size and workers must be >= 1")
        self.bridge = bridge
        self.store = store
        self.manifest = manifest
        self.batch_size = batch_size
        self.workers = workers
        self.prefetch = max(1, prefetch)
        self.progress = progress
        if decode not in DECODE_MODES:
            raise ValueError(f"decode={decode!r}: choose one of {', '.join(DECODE_MODES)}")
        self.decode = decode
        self.reuse_known = reuse_known  # False for --reembed: equal bytes are embedded again anyway
        self.counts = RunCounts()
        self.commit_seconds = COMMIT_SECONDS if commit_seconds is None else commit_seconds
        self._staged = _Staged()
        self._bar: Any = None
        self.on_commit = on_commit  # called with each batch's rows once they are durable (a server's progress)

    # ----------------------------------------------------------------- the run

    def batches(self, todo: Sequence[FileEntry]) -> list[list[FileEntry]]:
        """One modality per batch (an encoder call takes one modality), in path order."""
        by_mod: dict[str, list[FileEntry]] = {}
        for e in sorted(todo, key=lambda e: e.rel_path):
            by_mod.setdefault(e.modality, []).append(e)
        return [files[i:i + self.batch_size] for _, files in sorted(by_mod.items())
                for i in range(0, len(files), self.batch_size)]

    def run(self, todo: Sequence[FileEntry]) -> RunCounts:
        """Read, embed and write `todo`; returns the counts. Re-raises the first stage failure."""
        batches = self.batches(todo)
        if not batches:
            return self.counts
        from tqdm.auto import tqdm

        version = self.bridge.version
        # Only a row made by this bridge may stand in for a file with the same bytes.
        known = {p: r for p, r in self.manifest.rows.items() if r.bridge_version == version} \
            if self.reuse_known else {}
        modalities = list(self.bridge.modalities)
        t_run, cpu_run = time.perf_counter(), process_cpu()
        # The pool first: with processes, it forks before our own threads exist.
        pool = make_decode_pool(self.decode_mode(len(todo)), self.workers)
        self._bar = tqdm(total=len(todo), unit="item", desc="indexing", disable=not self.progress,
                         dynamic_ncols=True, smoothing=0.1)
        writer_q: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        failure: list[BaseException] = []
        writer = threading.Thread(target=self._writer_loop, args=(writer_q, failure), name="indexer-writer",
                                  daemon=True)
        writer.start()
        pending: deque[list[Future[list[ReadResult]]]] = deque()
        next_batch = 0

        def submit_ahead() -> None:
            nonlocal next_batch
            while next_batch < len(batches) and len(pending) < self.prefetch + 1:
                files = batches[next_batch]
                # A few chunks per batch, one per worker: less task traffic than one per file.
                step = -(-len(files) // self.workers)
                pending.append([pool.submit(read_files, chunk, [known.get(e.rel_path) for e in chunk], modalities)
                                for chunk in (files[i:i + step] for i in range(0, len(files), step))])
                next_batch += 1

        try:
            submit_ahead()
            while pending and not failure:
                futures = pending.popleft()
                submit_ahead()  # keep the readers busy while this batch encodes
                t0 = time.perf_counter()
                results = [r for f in futures for r in f.result()]
                self.counts.stages["read_wait"] += time.perf_counter() - t0
                batch = self.embed_batch(results)
                while not failure:
                    try:
                        writer_q.put(batch, timeout=0.5)
                        break
                    except queue.Full:
                        continue
        finally:
            for futures in pending:
                for f in futures:
                    f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            writer_q.put(None)
            writer.join()
            self._bar.close()
            self.counts.stages["run"] += time.perf_counter() - t_run
            self.counts.stages["run_cpu"] += process_cpu() - cpu_run
        if failure:
            raise failure[0]
        return self.counts

    def decode_mode(self, n_files: int) -> str:
        if self.decode != "auto":
            return self.decode
        # Worker processes cost a fork each; they pay off on real runs, not on a handful of files.
        return "processes" if n_files >= PROCESS_DECODE_MIN_FILES and self.workers > 1 else "threads"

    # ----------------------------------------------------------------- embed stage

    def embed_batch(self, results: list[ReadResult]) -> _Batch:
        """Encoder forward pass over the decoded items of one batch (one modality)."""
        batch = _Batch(results)
        with thread_stage(self.counts.stages, "encode"):
            self._embed_moments(batch)
            self._embed_items(batch)
        return batch

    def _embed_items(self, batch: _Batch) -> None:
        """The batch's whole-file features, in one encoder call; an item the encoder rejects is reported."""
        good = [r for r in batch.results if r.item is not None]
        if not good:
            return
        modality = good[0].entry.modality
        try:
            batch.features = self.bridge.encode(modality, [r.item for r in good])
        except _ITEM_ERRORS:
            # One item the encoder rejects must not sink its batch: find it, keep the rest.
            rows = []
            for r in good:
                try:
                    rows.append(self.bridge.encode(modality, [r.item])[0])
                except InputError as exc:
                    r.item, r.error = None, exc.reason
                except _ITEM_ERRORS as exc:
                    log.debug("encoder failed on %s", r.entry.abs_path, exc_info=True)
                    r.item, r.error = None, f"the {modality} encoder cannot take it ({type(exc).__name__}: {exc})"[:300]
            batch.features = np.stack(rows) if rows else None

    def _embed_moments(self, batch: _Batch) -> None:
        """Each long file's moments, one encoder call per file; a file whose moments the encoder
        rejects is reported as a whole (its moments and its whole-file point are one unit). The
        moments' items are dropped once embedded: the writer needs only their times."""
        for r in batch.results:
            if r.item is None or not r.moments:
                continue
            try:
                batch.moment_features[r.entry.rel_path] = self.bridge.encode(r.entry.modality,
                                                                             [m.item for m in r.moments])
            except _ITEM_ERRORS as exc:
                log.debug("encoder failed on the moments of %s", r.entry.abs_path, exc_info=True)
                reason = exc.reason if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
                r.item, r.error = None, f"the {r.entry.modality} encoder cannot take its moments ({reason})"[:300]
            for m in r.moments:
                m.item = None

    # ----------------------------------------------------------------- writer stage

    def _writer_loop(self, q: queue.Queue[_Batch | None], failure: list[BaseException]) -> None:
        """Stage each batch as it comes; commit when `commit_seconds` have passed since the last commit
        (the first batch at once, so a partial index is searchable early), and at the end."""
        last_commit = float("-inf")
        while True:
            wait = max(0.0, last_commit + self.commit_seconds - time.monotonic()) if self._staged.rows else None
            try:
                item: _Batch | None | str = q.get(timeout=wait)
            except queue.Empty:
                item = "due"
            with thread_stage(self.counts.stages, "write"):
                if not failure:
                    try:
                        if isinstance(item, _Batch):
                            self.stage([item])
                        if item is None or time.monotonic() - last_commit >= self.commit_seconds:
                            self.commit()
                            last_commit = time.monotonic()
                    except BaseException as exc:  # surfaced in the calling thread by run()
                        failure.append(exc)
            if item is None:
                return

    def write(self, batches: list[_Batch]) -> None:
        """Writer stage for `batches` alone: head + proxy view, upsert, flush, then journal (in that order)."""
        self.stage(batches)
        self.commit()

    def stage(self, batches: list[_Batch]) -> None:
        """Head + proxy view and upsert now; the rows wait in `_staged` for the next `commit`."""
        points: list[Point] = []
        rows: list[ManifestRow] = []
        stale: list[str] = []  # points of files that were fine before and are bad now
        for batch in batches:
            self._stage_embedded(batch, points, rows, stale)
            self._stage_unembedded(batch, rows, stale)
        if points:
            self.store.upsert(points, batch=max(256, len(points)))
        if stale:
            self.store.delete(stale)
        self._staged.rows.extend(rows)
        self._staged.changed = self._staged.changed or bool(points or stale)
        if self._bar is not None:
            self._bar.update(sum(len(b.results) for b in batches))

    def commit(self) -> None:
        """Make what `stage` wrote durable: one flush, then the journal of its rows (in that order:
        a killed run never journals a point the store may have lost), then progress."""
        staged, self._staged = self._staged, _Staged()
        if not staged.rows:
            return
        self.counts.stages["commits"] += 1
        if staged.changed:
            self.store.flush()
        if any(row.moments for row in staged.rows):
            crash_point("moments")  # a long file's points durable, its journal line not yet written
        self.manifest.commit(staged.rows)
        crash_point("batch")
        if self.on_commit is not None:
            self.on_commit(staged.rows)  # may raise to stop the run here: everything so far is durable

    def _stage_embedded(self, batch: _Batch, points: list[Point], rows: list[ManifestRow], stale: list[str]) -> None:
        """Points and rows of the batch's embedded files (and their moments)."""
        good = [r for r in batch.results if r.item is not None]
        if not good or batch.features is None:
            return
        version = self.bridge.version
        modality = good[0].entry.modality
        for r, vectors in zip(good, self.vectors(modality, batch.features)):
            pid = point_id(r.entry.rel_path)
            payload = payload_for(r, version)
            points.append(Point(pid, vectors, payload))
            row = _row(r, pid, INDEXED, "", version)
            row.moments = self._moment_points(r, pid, payload, batch.moment_features, points)
            old = self.manifest.rows.get(r.entry.rel_path)
            if old is not None and old.status == INDEXED:  # a changed file: its moments past the new last
                stale.extend(old.point_ids()[1 + row.moments:])
            rows.append(row)
            self.counts.by_modality[modality] += 1
            if r.part:
                self.counts.cut += 1
                log.debug("%s: %s", r.entry.rel_path, r.part)
        self.counts.indexed += len(good)

    def _stage_unembedded(self, batch: _Batch, rows: list[ManifestRow], stale: list[str]) -> None:
        """Rows of the batch's touched files (same bytes: the old row stands) and of its errors."""
        for r in batch.results:
            if r.touched:
                old = self.manifest.rows[r.entry.rel_path]
                row = _row(r, old.point_id, INDEXED, "", old.bridge_version)
                row.moments = old.moments
                rows.append(row)
                self.counts.unchanged += 1
            elif r.error is not None:
                pid = point_id(r.entry.rel_path)
                old = self.manifest.rows.get(r.entry.rel_path)
                if old is not None and old.status == INDEXED:
                    stale.extend(old.point_ids())
                rows.append(_row(r, pid, ERROR, r.error, self.bridge.version))
                if r.skipped:
                    self.counts.skipped[r.entry.modality] += 1
                else:
                    self.counts.errors += 1
                log.debug("skipped %s: %s", r.entry.rel_path, r.error)

    def vectors(self, modality: str, features: np.ndarray) -> list[dict[str, list[float]]]:
        """The named vectors of encoder features: bridged, G's view (where the bridge has G) and the
        features themselves as `raw_<modality>` (where the collection stores them), one dict per row.

        Each is a plain float list made by one `tolist()` per matrix: the form both backends take
        fastest (`Store._prepare_points` passes lists through), with the float32 values unchanged."""
        z = self.bridge.embed_features(modality, features)
        named = {"bridged": z}
        if self.bridge.has_proxy:
            named["proxy"] = self.bridge.proxy_view(z)
        raw = f"raw_{modality}"
        if raw in self.store.spec.vectors:
            # Unit rows, as the engine stores cosine vectors (qdrant-client's local mode does not normalise).
            named[raw] = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        rows = [np.asarray(m, dtype=np.float32).tolist() for m in named.values()]
        return [dict(zip(named, row)) for row in zip(*rows)]

    def _moment_points(self, r: ReadResult, pid: str, payload: dict[str, Any],
                       moment_features: dict[str, np.ndarray], points: list[Point]) -> int:
        """Append the points of a long file's moments (ids from its own: `moment_id`); how many."""
        feats = moment_features.get(r.entry.rel_path)
        if feats is None or not r.moments:
            return 0
        for k, (m, vectors) in enumerate(zip(r.moments, self.vectors(r.entry.modality, feats))):
            points.append(Point(moment_id(pid, k), vectors, moment_payload(payload, pid, k, m.start, m.end)))
        return len(r.moments)


def moment_payload(file_payload: dict[str, Any], file_id: str, number: int, start: float,
                   end: float) -> dict[str, Any]:
    """A moment's payload: its file's (so every filter and hit reads as for the file), which file,
    which window and its times in seconds. `moment: true` is what search filters on."""
    return {**file_payload, "moment": True, "file_id": file_id, "segment": number,
            "start": round(float(start), 3), "end": round(float(end), 3)}


def payload_for(r: ReadResult, bridge_version: str) -> dict[str, Any]:
    """A point's payload: identity, provenance, label and the sidecar's fields."""
    e = r.entry
    payload: dict[str, Any] = dict(e.meta)  # sidecar fields first, so ours win on a clash
    payload.update({
        "path": e.rel_path,
        "abs_path": display_path(str(e.abs_path)),  # a name that is not UTF-8 shows its odd bytes as \xNN
        "folder": e.folder,
        "modality": e.modality,
        "content_hash": r.content_hash,
        "bridge_version": bridge_version,
        "size": r.size,
        "mtime": r.mtime_ns / 1e9,
        "mtime_ns": r.mtime_ns,  # exact, so a damaged manifest can be rebuilt from the payloads
    })
    if e.label is not None:
        payload["label"] = e.label
    if r.moments:
        payload["moments"] = len(r.moments)  # how many moment points stand beside this whole-file one
    if r.part:
        payload["media_embedded"] = r.part  # a very long file: what of it the points stand for
    if payload["abs_path"] != str(e.abs_path):
        payload["name_escaped"] = True  # the file's real name has bytes that are not UTF-8
    if e.modality == "text" and isinstance(r.item, str):
        payload["text"] = r.item[:TEXT_PAYLOAD_CHARS]
        part = text_part(r.size)
        if part:  # a long document: say which part the vector stands for
            payload["text_embedded"] = part
    return payload


def _row(r: ReadResult, pid: str, status: str, reason: str, version: str) -> ManifestRow:
    size = r.size if r.size or r.mtime_ns else r.entry.size
    mtime = r.mtime_ns or r.entry.mtime_ns
    return ManifestRow(r.entry.rel_path, size, mtime, r.content_hash, pid, r.entry.modality, status, reason,
                       version, time.time())
