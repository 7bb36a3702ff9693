"""Crash-safe file writes: every file the project writes goes through `atomic_path`.

A writer fills a temporary file in the target's own folder; on success it is flushed to disk,
renamed over the target and the folder is fsynced, so a crash at any moment leaves either the
old file or the new one, never half of one. Temporary files get the umask's mode (not mkstemp's
0600), so an index built by one user stays readable by another.
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it replaces `path`.

    Works for any writer that takes a file name (Parquet, safetensors, PIL, a whole folder).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if tmp.is_file():
            # Some writers create their file private whatever the umask (safetensors: 0600).
            os.chmod(tmp, 0o666 & ~_umask())
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (text as UTF-8) to `path` atomically.

    Example:
        >>> import tempfile
        >>> atomic_write(Path(tempfile.mkdtemp()) / "x.bin", b"1").read_bytes()
        b'1'
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def user_cache_dir(kind: str) -> Path:
    """Where derived files of `kind` are kept for this user (`$EBRIDGE_CACHE`, else
    `$XDG_CACHE_HOME/emergentbridge`, else `~/.cache/emergentbridge`): made again if deleted.

    Example:
        >>> user_cache_dir("onnx").name
        'onnx'
    """
    root = os.environ.get("EBRIDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "emergentbridge")
    return Path(root) / kind


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented, key-sorted JSON atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False))
