"""The index record (`<index>/index.json`): the format version (`format`), the versions of the
code that wrote it (`written_by`), the indexed folder, where the store is, the bridge version and
the last run's summary.

It is the one place that says where an index's points live, so every reader (search, serve,
bench) opens the store the indexer wrote, and an index written by a newer format is refused with
a clear message instead of being misread.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import EmergentBridgeError
from core.files import atomic_write_json

INDEX_FILE = "index.json"
INDEX_FORMAT = 1


class IndexFormatError(EmergentBridgeError):
    """`index.json` is unreadable or was written by an incompatible version."""


def read_record(index_dir: str | Path) -> dict[str, Any] | None:
    """The index's record, or None for a folder no indexer has finished a run in.

    Example:
        >>> read_record("/nonexistent") is None
        True
    """
    path = Path(index_dir) / INDEX_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path}: not a readable index record ({exc}); re-run `ebridge index` on the "
                               "folder to rewrite it") from None
    if not isinstance(record, dict):
        raise IndexFormatError(f"{path}: not an index record (a JSON object was expected); re-run `ebridge index`")
    fmt = record.get("format", INDEX_FORMAT)
    if not isinstance(fmt, int) or fmt > INDEX_FORMAT:
        raise IndexFormatError(f"{path}: index format {fmt!r} is newer than this version of EmergentBridge reads "
                               f"({INDEX_FORMAT}); upgrade emergentbridge or rebuild the index")
    return record


def write_record(index_dir: str | Path, **fields: Any) -> Path:
    """Write the record atomically with the current format version and the versions writing it
    (records written before `written_by` existed simply lack it)."""
    from bridge.provenance import written_by

    return atomic_write_json(Path(index_dir) / INDEX_FILE, {"format": INDEX_FORMAT, "written_by": written_by(),
                                                            **fields})


def update_record(index_dir: str | Path, **changes: Any) -> Path:
    """Change some fields of the record and keep the rest; the record is then one this code wrote
    (current `format` and `written_by`), as any write of it is.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = write_record(folder, root="/photos")
        >>> _ = update_record(folder, optimized=True)
        >>> read_record(folder)["root"], read_record(folder)["optimized"]
        ('/photos', True)
    """
    kept = {k: v for k, v in (read_record(index_dir) or {}).items() if k not in ("format", "written_by")}
    return write_record(index_dir, **{**kept, **changes})


def unfinished_first_run(index_dir: str | Path) -> str | None:
    """What to tell a reader of a folder where no `ebridge index` run has finished yet, or None.

    A first run that failed (a missing package, a bad preset) or was interrupted leaves the folder
    with its lock file and perhaps a bridge copy and part of the store, but no record of a finished
    run (`last_run`). A reader is then told that, and the command that completes the index (the
    indexer resumes: files already embedded are kept), not asked for a checkpoint it never had.

    Example:
        >>> import tempfile
        >>> "never finished" in unfinished_first_run(tempfile.mkdtemp())
        True
    """
    index_dir = Path(index_dir)
    record = read_record(index_dir) or {}
    if record.get("last_run"):
        return None
    if record.get("root"):
        return (f"index {index_dir} was never finished: its first `ebridge index {record['root']}` run was interrupted "
                f"or failed. Complete it with `ebridge index {record['root']} --index {index_dir}` (with the --preset "
                "or --bridge that run had; what it embedded is kept)")
    return (f"index {index_dir} was never finished: no `ebridge index` run has completed in it (a first run that was "
            f"interrupted or failed, e.g. by a missing package, leaves it so). Complete it with `ebridge index DIR "
            f"--index {index_dir}` (DIR: the folder you are indexing, with the --preset or --bridge that run had)")
