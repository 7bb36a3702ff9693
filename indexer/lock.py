"""One indexer at a time per index folder: an exclusive `flock` on `<index>/index.lock`.

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

from bridge.errors import EmergentBridgeError

log = logging.getLogger(__name__)

LOCK_FILE = "index.lock"


class IndexLockedError(EmergentBridgeError):
    """Another process holds the index folder's lock (an indexer is running on it)."""


class IndexLock:
    """Exclusive, non-blocking lock on an index folder.

    Example:
        >>> import tempfile
        >>> with IndexLock(tempfile.mkdtemp()) as lock:
        ...     lock.held
        True
    """

    def __init__(self, index_dir: str | Path, role: str = "indexer"):
        self.index_dir = Path(index_dir)
        self.role = role  # "indexer" or "server": the refusal message tells the next comer which
        self.path = self.index_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise IndexLockedError naming the holder."""
        import fcntl  # POSIX only; imported here so the module imports anywhere

        self.index_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            os.close(fd)
            raise IndexLockedError(_locked_message(self.index_dir, info)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "role": self.role}
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


def _read_info(fd: int) -> dict:
    try:
        return dict(json.loads(os.pread(fd, 4096, 0).decode() or "{}"))
    except (OSError, ValueError, TypeError):
        return {}


def _locked_message(index_dir: Path, info: dict) -> str:
    try:
        holder = f"pid {info['pid']} on {info['host']} since {info['since']}"
    except KeyError:
        holder = "holder unknown"
    if info.get("role") == "server":
        return (f"{index_dir} is in use by a server (ebridge serve, {holder}); stop that server to index, then "
                "start it again (meanwhile search through it: ebridge search --server URL). "
                "The lock is released automatically when that process exits.")
    return (f"{index_dir} is locked by another indexer ({holder}); wait for it to finish, "
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
