"""reader -> embed -> writer: three overlapping stages that turn files into stored points.

* **reader** (`workers` threads, or forked processes with one torch thread each for
  larger runs, see `make_decode_pool`): read each file's bytes once for its content
  hash, then decode it with `bridge.modalities.load`. A file whose hash equals its
  manifest row (a `touch`) is not decoded at all. Bad inputs become error results,
  never `None`. Batches are submitted `prefetch` ahead of the encoder.
* **embed** (the calling thread): the preset's frozen encoder on a batch of decoded
  items, the expensive forward pass. Nothing else runs here, so the encoder is never
  waiting on bookkeeping. On a GPU (`Bridge.to("cuda")`) each batch reaches the device
  through pinned memory with a non-blocking copy (`core.device.to_device`) while the
  readers, at most `prefetch` batches ahead, decode the next ones.
* **writer** (one thread): the bridge's head and proxy view (small), points to the
  store, *one* flush for everything queued, then the manifest journal and the progress
  bar. The journal is written after the flush: that ordering is what makes a killed
  run resumable without losing or duplicating a point.

Each stage can be used alone (`read_file`, `Pipeline.embed_batch`, `Pipeline.write`),
which is how the tests build and check them one by one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import stat
import threading
import time
from collections import Counter, deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bridge.modalities import file_kind, load, text_part
from bridge.moments import Moment, cut_moments, embedded_part
from core.device import set_threads
from core.errors import EmergentBridgeError, InputError
from indexer.faults import crash_point
from indexer.ledger import ERROR, INDEXED, Manifest, ManifestRow
from indexer.scan import FileEntry, display_path
from indexer.store import Point, Store, moment_id, point_id

log = logging.getLogger(__name__)

TEXT_PAYLOAD_CHARS = 2000  # enough to show a hit's text; the file stays the source of truth
DECODE_MODES = ("auto", "threads", "processes")
# Forked readers cost the parent copy-on-write faults on its large heap (models, arenas) for a
# while after the fork; they pay off only on longer runs. Measured (2 cores, FSDD audio,
# pipeline / encoder-only): 384 files 0.80-0.82 with processes vs 0.97 with threads;
# 1,024 files 0.92-0.93 vs 0.89.
PROCESS_DECODE_MIN_FILES = 1000
MAX_FILE_BYTES = 64 * 2**30  # a single item larger than this is refused, not hashed for minutes
HASH_CHUNK = 4 * 2**20  # the reader hashes in chunks: memory stays flat for a file of any size


@dataclass
class ReadResult:
    """What the reader made of one file."""

    entry: FileEntry
    size: int = 0
    mtime_ns: int = 0
    content_hash: str = ""
    item: Any = None  # canonical form (see bridge.modalities), None when touched or bad
    error: str | None = None
    touched: bool = False  # same bytes as the manifest's row: nothing to embed
    skipped: bool = False  # a modality this bridge's space cannot place (the reason says how to bind it)
    moments: list[Moment] = field(default_factory=list)  # a long file's windows (bridge.moments), each a point
    part: str | None = None  # what of a very long recording or video is covered (bridge.moments.embedded_part)


@dataclass
class RunCounts:
    indexed: int = 0
    unchanged: int = 0  # touched files (mtime changed, same bytes)
    errors: int = 0
    by_modality: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # per modality: files the space cannot place
    cut: int = 0  # files longer than the part of them that is embedded and cut into moments
    encode_seconds: float = 0.0  # time inside the encoder's forward passes


def file_hash(data: bytes) -> str:
    """Content hash recorded in the manifest and payload (blake2b, 128 bits).

    Example:
        >>> file_hash(b"abc")[:8]
        'cf4ab791'
    """
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def skip_reason(modality: str, modalities: Sequence[str]) -> str:
    """Why a file of `modality` is not embedded, and how to bind that modality to the space."""
    return (f"skipped: this index's space cannot place {modality} (it embeds {', '.join(modalities)}); bind "
            f"{modality} to it from a few pairs with `ebridge train PAIRS.csv --preset PRESET --out runs/bridge`, "
            "then `ebridge index DIR --index INDEX --bridge runs/bridge` adds these files")


def read_file(entry: FileEntry, known: ManifestRow | None = None, modalities: Sequence[str] | None = None) -> ReadResult:
    """Reader stage for one file: stat + hash from one open, then decode.

    `known` is the manifest's row for the file: equal bytes mean a touch, not a change.
    `modalities` are those the bridge has heads for; others are reported, not decoded.

    Example:
        >>> read_file(entry).item.shape            # doctest: +SKIP
        (32, 32, 3)
    """
    res = ReadResult(entry)
    if entry.problem:
        res.error = entry.problem
        return res
    if modalities is not None and entry.modality not in modalities:
        res.error, res.skipped = skip_reason(entry.modality, modalities), True
        return res
    try:
        st, res.content_hash = hash_file(entry.abs_path)
    except _NotRegular as exc:
        res.error = str(exc)
        return res
    except OSError as exc:
        res.error = f"cannot read file ({exc.strerror or exc})"
        return res
    res.size, res.mtime_ns = st.st_size, st.st_mtime_ns
    if known is not None and known.status == INDEXED and known.content_hash == res.content_hash:
        res.touched = True
        return res
    try:
        res.item = load(entry.modality, Path(entry.abs_path))
        res.moments = cut_moments(entry.modality, Path(entry.abs_path), res.item)
        if res.moments:
            res.part = embedded_part(entry.modality, Path(entry.abs_path), res.item)
    except InputError as exc:
        res.error = exc.reason
    except EmergentBridgeError as exc:  # e.g. a missing optional decoder (av for video)
        res.error = str(exc)
    except (MemoryError, RecursionError) as exc:
        res.error = f"decoder ran out of resources ({type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001 - one file must never stop the run; it is reported
        # A decoder failing in a way its loader does not know yet: report the file, keep going,
        # and keep the traceback in the debug log for whoever fixes the loader.
        log.debug("unexpected decoder failure on %s", entry.abs_path, exc_info=True)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        res.error = f"cannot decode ({type(exc).__name__}: {first})"
    return res


# What an encoder raises on an item it cannot take (odd shape, size, dtype); a missing package or a
# broken checkpoint is not among them and still stops the run.
_ITEM_ERRORS = (InputError, ValueError, TypeError, IndexError, RuntimeError)


class _NotRegular(OSError):
    pass


def hash_file(path: str | Path) -> tuple[os.stat_result, str]:
    """(stat, content hash) from one open, in chunks. Opened non-blocking and checked to be a
    regular file first, so a named pipe or a device (even one swapped in after the scan) is
    refused at once instead of blocking the reader or filling memory.

    Example:
        >>> hash_file("/dev/zero")                 # doctest: +SKIP
        Traceback (most recent call last):
        _NotRegular: not a regular file (a character device)
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)  # the stat of the bytes we hash, not of an earlier scan
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(f"not a regular file (a {file_kind(st.st_mode)})")
        if st.st_size > MAX_FILE_BYTES:
            raise _NotRegular(f"too large ({st.st_size} bytes; the limit is {MAX_FILE_BYTES})")
        h = hashlib.blake2b(digest_size=16)
        remaining = st.st_size + 1  # a file growing while read is hashed as far as it was
        while remaining > 0:
            chunk = os.read(fd, min(HASH_CHUNK, remaining))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
        return st, h.hexdigest()
    finally:
        os.close(fd)


def read_files(entries: Sequence[FileEntry], known: Sequence[ManifestRow | None],
               modalities: Sequence[str] | None = None) -> list[ReadResult]:
    """`read_file` over a chunk of files: the unit of work sent to a reader thread or process."""
    return [read_file(e, k, modalities) for e, k in zip(entries, known)]


def make_decode_pool(mode: str, workers: int) -> Executor:
    """Reader pool: threads, or forked processes with one torch/OpenMP thread each.

    Why processes: decoders that call torch (audio resampling) open an OpenMP team per
    calling thread; reader threads plus the encoder's own team oversubscribe the cores,
    and on a busy machine each tiny parallel region can wait a whole scheduler slice
    (measured here: 24 ms for a resample that takes 0.1 ms on one thread). Forked
    workers limited to one thread each avoid that, as torch's DataLoader workers do.
    """
    if mode == "threads":
        return ThreadPoolExecutor(workers, thread_name_prefix="indexer-reader")
    if mode != "processes":
        raise ValueError(f"decode mode {mode!r}: use threads or processes")
    import multiprocessing as mp

    # fork: the workers inherit the imported decoders (no re-import of torch per worker)
    # and need no importable __main__; they never touch the store or the encoder.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),))
    pool.submit(int).result()  # start the workers now, before this process starts its own threads
    return pool


def _init_worker(parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    set_threads(1, import_torch=False)  # only a torch the fork inherited; decoding never needs it


def _die_with_parent(parent_pid: int) -> None:
    """A SIGKILLed indexer cannot shut its pool down, and a worker blocked on the task
    queue would wait forever (it holds the queue's write end itself): ask Linux to kill
    the worker when its parent dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker lingers until the queue breaks
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@dataclass
class _Batch:
    results: list[ReadResult]
    features: np.ndarray | None = None  # encoder features of the results that have an item
    moment_features: dict[str, np.ndarray] = field(default_factory=dict)  # path -> one row per moment


class Pipeline:
    """Runs the three stages over a list of files; one instance per indexing run.

    Example:
        >>> counts = Pipeline(bridge, store, manifest, batch_size=64).run(plan.todo)  # doctest: +SKIP
    """

    def __init__(self, bridge: Any, store: Store, manifest: Manifest, *, batch_size: int = 64, workers: int = 4,
                 prefetch: int = 2, progress: bool = True, reuse_known: bool = True, decode: str = "auto",
                 on_commit: Any = None):
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
                batch = self.embed_batch([r for f in futures for r in f.result()])
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
        t0 = time.perf_counter()
        self._embed_moments(batch)
        good = [r for r in results if r.item is not None]
        if not good:
            return batch
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
        self.counts.encode_seconds += time.perf_counter() - t0
        return batch

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
        done = False
        while not done:
            item = q.get()
            group = []
            if item is None:
                break
            group.append(item)
            # Take everything already queued: one flush + one journal write for all of it.
            while True:
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                group.append(more)
            if failure:
                continue  # drain only; the run is stopping
            try:
                self.write(group)
            except BaseException as exc:  # surfaced in the calling thread by run()
                failure.append(exc)

    def write(self, batches: list[_Batch]) -> None:
        """Writer stage: head + proxy view, upsert, flush, then journal (in that order)."""
        points: list[Point] = []
        rows: list[ManifestRow] = []
        stale: list[str] = []  # points of files that were fine before and are bad now
        version = self.bridge.version
        for batch in batches:
            good = [r for r in batch.results if r.item is not None]
            if good and batch.features is not None:
                modality = good[0].entry.modality
                for i, (r, vectors) in enumerate(zip(good, self.vectors(modality, batch.features))):
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
                    rows.append(_row(r, pid, ERROR, r.error, version))
                    if r.skipped:
                        self.counts.skipped[r.entry.modality] += 1
                    else:
                        self.counts.errors += 1
                    log.debug("skipped %s: %s", r.entry.rel_path, r.error)
        if points:
            self.store.upsert(points, batch=max(256, len(points)))
        if stale:
            self.store.delete(stale)
        if points or stale:
            self.store.flush()
        if any(row.moments for row in rows):
            crash_point("moments")  # a long file's points durable, its journal line not yet written
        self.manifest.commit(rows)
        crash_point("batch")
        if self.on_commit is not None:
            self.on_commit(rows)  # may raise to stop the run here: everything so far is durable
        if self._bar is not None:
            self._bar.update(sum(len(b.results) for b in batches))


    def vectors(self, modality: str, features: np.ndarray) -> list[dict[str, np.ndarray]]:
        """The named vectors of encoder features: bridged, G's view (where the bridge has G) and the
        features themselves as `raw_<modality>` (where the collection stores them)."""
        z = self.bridge.embed_features(modality, features)
        proxy = self.bridge.proxy_view(z) if self.bridge.has_proxy else None
        raw = f"raw_{modality}" if f"raw_{modality}" in self.store.spec.vectors else None
        # Unit rows, as the engine stores cosine vectors (qdrant-client's local mode does not normalise).
        feats = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        out = []
        for i, zb in enumerate(z):
            named = {"bridged": zb}
            if proxy is not None:
                named["proxy"] = proxy[i]
            if raw is not None:
                named[raw] = feats[i]
            out.append(named)
        return out

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
