"""One writer, or any number of readers, per index folder: `flock` on `<index>/index.lock`.

An indexer holds the lock exclusively for its whole run; a reader of an embedded store
(`query.search.Index`) holds it shared while its store is open. The embedded engine cannot
share a shard between processes: a second process that merely *loads* the shard while an
indexer writes it damages the writer's files (its payload-index journals fail to flush). So:

* a reader never opens a store an indexer is writing: it is refused at once with
  `IndexBusyError` ("being written by pid N; try again when it finishes");
* an indexer that finds readers waits for them (a search holds the lock for a second or
  two), up to `reader_wait_s`, then refuses with `IndexLockedError`; it never runs beside one;
* `ebridge serve` holds the lock exclusively with role "server" for as long as it runs (it
  keeps the store open): indexers and cold searches are told to stop it or to search through it.
  A server started with `--watch DIR` is itself the index's writer (indexer/watch.py); an indexer
  is told that the server indexes DIR already.

The lock belongs to the open file description, so the kernel drops it when the
process dies in any way (SIGKILL included): a lock is never stale, and there is no
pid-file guessing. The file itself stays (unlinking it would let two processes lock
two different inodes); it only carries who holds it, for the refusal message.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from core.errors import EmergentBridgeError

log = logging.getLogger(__name__)

LOCK_FILE = "index.lock"


class IndexLockedError(EmergentBridgeError):
    """Another process holds the index folder's lock (an indexer is running on it)."""


class IndexBusyError(EmergentBridgeError):
    """A reader asked for an index an indexer is writing right now."""


class IndexLock:
    """Exclusive, non-blocking lock on an index folder.

    Example:
        >>> import tempfile
        >>> with IndexLock(tempfile.mkdtemp()) as lock:
        ...     lock.held
        True
    """

    def __init__(self, index_dir: str | Path, *, reader_wait_s: float = 30.0, role: str = "indexer",
                 watch: str | None = None):
        self.index_dir = Path(index_dir)
        self.role = role  # "indexer" or "server": the refusal message tells the next comer which
        self.watch = watch  # a server that keeps a folder indexed (serve --watch) names it here
        self.path = self.index_dir / LOCK_FILE
        self.reader_wait_s = reader_wait_s
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise IndexLockedError naming the holder."""
        import fcntl  # POSIX only; imported here so the module imports anywhere

        self.index_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.reader_wait_s
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                if not _only_readers(fd):
                    raise IndexLockedError(_locked_message(self.index_dir, _read_info(fd)))
                if time.monotonic() >= deadline:
                    from indexer.store import store_holders

                    pids = store_holders(self.index_dir)
                    who = f"pid {', '.join(map(str, pids))}" if pids else "pid unknown"
                    raise IndexLockedError(
                        f"{self.index_dir} is held open by a reader ({who}: an `ebridge search`, or a Python session "
                        f"with Index.open) and stayed so for {self.reader_wait_s:.0f}s; close that reader or try again "
                        "when it is done (--wait-for-readers sets how long to wait).")
                if not told:
                    log.info("%s is open for reading; waiting up to %.0fs for the reader to close it",
                             self.index_dir, self.reader_wait_s)
                    told = True
                time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "role": self.role}
        if self.watch is not None:
            info["watch"] = self.watch
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        log.debug("locked %s", self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
        log.debug("unlocked %s", self.path)

    def __enter__(self) -> "IndexLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class ReadLock:
    """Shared lock on an index folder, held by a reader while it has the index's store open.

    Refuses at once (IndexBusyError naming the indexer's pid) when an indexer holds the folder.
    A folder the reader cannot create the lock file in (read-only media, another user's index
    no indexer ever ran in) is read without a lock: no writer can be running there either.

    Example:
        >>> import tempfile
        >>> with ReadLock(tempfile.mkdtemp()) as lock:
        ...     lock.held
        True
    """

    def __init__(self, index_dir: str | Path):
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the shared lock, or raise IndexBusyError when an indexer is writing the index."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            log.debug("%s: no lock file (%s); reading without one", self.path, exc.strerror)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            os.close(fd)
            if info.get("role") == "server":
                raise IndexBusyError(f"index {self.index_dir} is held by a running server (ebridge serve, "
                                     f"{_holder(info)}); search through it with --server URL, or stop it") from None
            raise IndexBusyError(
                f"index {self.index_dir} is being written by an indexer ({_holder(info)}); try again when it finishes"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ReadLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _only_readers(fd: int) -> bool:
    """Whether the lock on `fd`'s file is held only shared (by readers): then a shared lock is granted."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _read_info(fd: int) -> dict:
    try:
        return dict(json.loads(os.pread(fd, 4096, 0).decode() or "{}"))
    except (OSError, ValueError, TypeError):
        return {}


def _holder(info: dict) -> str:
    try:
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except KeyError:
        return "holder unknown"


def _locked_message(index_dir: Path, info: dict) -> str:
    if info.get("role") == "server" and info.get("watch"):
        return (f"{index_dir} is kept up to date by a server that is indexing {info['watch']} already "
                f"(ebridge serve --watch, {_holder(info)}): add, change or remove files there and it indexes them.")
    if info.get("role") == "server":
        return (f"{index_dir} is in use by a server (ebridge serve, {_holder(info)}); stop that server to index, then "
                "start it again (meanwhile search through it: ebridge search --server URL). "
                "The lock is released automatically when that process exits.")
    return (f"{index_dir} is locked by another indexer ({_holder(info)}); wait for it to finish, "
            "or index into another folder. The lock is released automatically when that process exits.")


def recorded_holder(index_dir: str | Path) -> dict:
    """What `<index>/index.lock` says about its holder, read without locking ({} when nothing is
    recorded). The holder truncates the file on release, so this is who holds it now (or who
    held it when killed: the kernel lock is then gone, but the note stays until the next run).

    Example:
        >>> import tempfile
        >>> recorded_holder(tempfile.mkdtemp())
        {}
    """
    try:
        text = (Path(index_dir) / LOCK_FILE).read_text(encoding="utf-8")
        return dict(json.loads(text)) if text.strip() else {}
    except (OSError, ValueError, TypeError):
        return {}
