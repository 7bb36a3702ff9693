"""The reader stage: one file's bytes read once for its content hash, then decoded.

`read_file` is the unit: stat + hash from one open (in chunks, refusing what is not a regular
file), then `bridge.modalities.load` and, for a long recording or video, its moments. A file whose
hash equals its manifest row (a `touch`) is not decoded at all. Bad inputs become error results,
never `None`. `make_decode_pool` runs it in threads, or in forked processes with one torch thread
each for larger runs; `indexer.pipeline` submits batches of files to that pool ahead of the encoder.
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bridge.modalities import file_kind, load
from bridge.moments import Moment, cut_moments, embedded_part
from core.device import set_threads
from core.errors import EmergentBridgeError, InputError
from indexer.ledger import INDEXED, ManifestRow
from indexer.scan import FileEntry

log = logging.getLogger(__name__)

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
