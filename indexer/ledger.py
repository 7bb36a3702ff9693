"""The index ledger: what is in the index, file by file, and what could not go in.

The manifest is a Parquet table plus an append-only journal; the errors report lists the bad inputs.

`manifest.parquet` holds one row per file (path, size, mtime_ns, content hash, point
id, modality, status, reason, bridge version). During a run, changes go to
`manifest.journal.jsonl` instead, one fsync'ed line per file, written only *after*
the store has flushed the points they describe. At the end of a run the journal is
folded into a new Parquet file (written beside it and renamed, so a crash leaves the
old or the new one) and emptied.

So after a SIGKILL at any moment: a journal line means its point is durable; a point
written without its line is embedded again on the next run under the same
deterministic id (one point, not two); a torn last line is ignored.

Change detection follows rclip: equal size and mtime mean unchanged without reading
the file; otherwise the reader hashes the bytes, and an equal hash (a `touch`) is
still unchanged.

The errors report, `<index>/errors.jsonl`, one JSON object per line: `path` (relative to the
indexed folder), `abs_path`, `modality`, `reason`, `time` (ISO 8601, UTC). It is rewritten at
the end of each run from the manifest's error rows, so it lists exactly the files that are bad
*now*: a file fixed since is gone from it (and indexed), a file that broke is in it.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from core.files import atomic_path, atomic_write
from indexer.faults import crash_point
from indexer.scan import FileEntry, ShardSpec
from indexer.store.types import moment_id

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.parquet"
JOURNAL_FILE = "manifest.journal.jsonl"
ERRORS_FILE = "errors.jsonl"

INDEXED, ERROR = "indexed", "error"


@dataclass
class ManifestRow:
    """The manifest's record of one file."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    point_id: str
    modality: str
    status: str  # "indexed" (its point is in the store) or "error" (no point; see reason)
    reason: str = ""
    bridge_version: str = ""
    updated: float = 0.0  # unix time of this row
    moments: int = 0  # a long file's moment points (bridge.moments), besides its whole-file point

    def point_ids(self) -> list[str]:
        """Every point this row accounts for: the file's, then its moments' (one unit: written,
        carried and deleted together)."""
        return [self.point_id, *(moment_id(self.point_id, k) for k in range(self.moments))]


_COLUMNS = [f.name for f in fields(ManifestRow)]


def _row_dict(row: ManifestRow) -> dict[str, Any]:
    """`dataclasses.asdict` for a row, whose fields are all str, int and float: the same dict without
    asdict's recursive deep copy (most of the CPU of making a journal line)."""
    return {name: getattr(row, name) for name in _COLUMNS}


_REQUIRED = {"path": str, "size": int, "mtime_ns": int, "content_hash": str, "point_id": str, "modality": str,
             "status": str}


def _row_from(rec: Any) -> ManifestRow | None:
    """A row from a journal/Parquet record, or None when it is not one (a JSON array, a line
    missing fields, a field of the wrong type)."""
    if not isinstance(rec, dict):
        return None
    for key, kind in _REQUIRED.items():
        value = rec.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return None
    if rec["status"] not in (INDEXED, ERROR):
        return None
    extra = {k: rec[k] for k in ("reason", "bridge_version") if isinstance(rec.get(k), str)}
    updated = rec.get("updated")
    moments = rec.get("moments")  # absent from manifests written before moments
    return ManifestRow(**{k: rec[k] for k in _REQUIRED}, **extra,
                       updated=float(updated) if isinstance(updated, (int, float)) and not isinstance(updated, bool)
                       else 0.0, moments=moments if isinstance(moments, int) and not isinstance(moments, bool)
                       and moments > 0 else 0)


@dataclass
class Plan:
    """What a run has to do, decided from a scan and the manifest."""

    todo: list[FileEntry]  # new, changed (size/mtime differ), or bad last time: read them
    unchanged: list[FileEntry]  # same size and mtime as an indexed row: nothing to read
    deleted: list[ManifestRow]  # in the manifest (and in this shard), no longer on disk


class Manifest:
    """The manifest of one index folder: load, plan, commit in small increments, compact.

    Example:
        >>> import tempfile
        >>> m = Manifest(tempfile.mkdtemp())
        >>> m.commit([ManifestRow("a.png", 10, 1, "h", "id", "image", INDEXED)])
        >>> m.compact(); len(Manifest(m.index_dir).rows)
        1
    """

    def __init__(self, index_dir: str | Path):
        self.index_dir = Path(index_dir)
        self.parquet_path = self.index_dir / MANIFEST_FILE
        self.journal_path = self.index_dir / JOURNAL_FILE
        self.rows: dict[str, ManifestRow] = {}
        self._journal_fd: int | None = None
        self._load()

    # ------------------------------------------------------------------ reading

    def _load(self) -> None:
        # Why this can be damaged at all: a disk that lied about fsync, a user's copy, a bad backup.
        # A manifest is bookkeeping, not data: it can be rebuilt from the store (see rebuild_from).
        self.damaged: str | None = None  # why manifest.parquet could not be read, if it could not
        for stale in self.index_dir.glob(f".{MANIFEST_FILE}.*.tmp"):  # a compaction killed mid-write
            stale.unlink(missing_ok=True)
        if self.parquet_path.is_file():
            try:
                self._read_parquet()
            except Exception as exc:  # noqa: BLE001 - polars/arrow raise many kinds for a damaged file
                self.rows.clear()
                self.damaged = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
                kept = self.parquet_path.with_name(f"{MANIFEST_FILE}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(self.parquet_path, kept)
                log.warning("%s is unreadable (%s); moved aside to %s. The manifest will be rebuilt from the store's "
                            "payloads and the journal", self.parquet_path, self.damaged, kept.name)
        replayed = skipped = 0
        if self.journal_path.is_file():
            with open(self.journal_path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        # Only the last line can be torn (a kill mid-write); its point, if any,
                        # is simply embedded again.
                        log.warning("%s: ignoring a torn journal line (%d)", self.journal_path, number)
                        continue
                    if isinstance(rec, dict) and rec.get("deleted") and isinstance(rec.get("path"), str):
                        self.rows.pop(rec["path"], None)
                    else:
                        row = _row_from(rec)
                        if row is None:
                            skipped += 1
                            continue
                        self.rows[row.path] = row
                    replayed += 1
        if skipped:
            # Its file is read again on the next run: at worst one re-embedding, never a lost point.
            log.warning("%s: ignored %d malformed journal lines (not a JSON object with every manifest field); "
                        "their files are checked again", self.journal_path, skipped)
        if replayed:
            log.info("manifest: replayed %d journal entries from an earlier (interrupted) run", replayed)

    def _read_parquet(self) -> None:
        import polars as pl

        frame = pl.read_parquet(self.parquet_path)
        missing = [c for c in ("path", "size", "mtime_ns", "content_hash", "point_id", "status") if c not in frame.columns]
        if missing:
            raise ValueError(f"missing columns {missing}")
        for rec in frame.iter_rows(named=True):
            row = _row_from(rec)
            if row is None:
                raise ValueError(f"a row with missing or mistyped fields: {rec}")
            self.rows[row.path] = row

    def rebuild_from(self, records: Iterable[Any], *, owns: Any = None) -> int:
        """Rebuild the rows of a damaged manifest from the store's points (their payloads hold
        path, content hash, size and mtime), under what the journal already replayed (newer).
        `owns(path)` limits it to this run's files (a shard). Returns how many rows it added.

        Example:
            >>> manifest.rebuild_from(store.scroll(), owns=None)   # doctest: +SKIP
            1200
        """
        added = 0
        rows = []
        moments: dict[str, int] = {}  # file point id -> its moments found (a row claims them all)
        for rec in records:
            p = rec.payload or {}
            if p.get("moment") is True:
                number = p.get("segment")
                if isinstance(number, int):
                    moments[str(p.get("file_id"))] = max(moments.get(str(p.get("file_id")), 0), number + 1)
                continue
            path = p.get("path")
            if not isinstance(path, str) or path in self.rows or (owns is not None and not owns(path)):
                continue
            mtime_ns = p.get("mtime_ns")
            if not isinstance(mtime_ns, int):  # points written before mtime_ns was kept: the file is re-hashed
                mtime_ns = int(round(float(p.get("mtime") or 0) * 1e9))
            rows.append(ManifestRow(path, int(p.get("size") or 0), mtime_ns, str(p.get("content_hash") or ""),
                                    str(rec.id), str(p.get("modality") or ""), INDEXED, "",
                                    str(p.get("bridge_version") or ""), time.time()))
            added += 1
        for row in rows:  # a missing moment is found by the store check, and the file embedded again
            row.moments = moments.get(row.point_id, 0)
        self.commit(rows)
        self.damaged = None
        return added
    def indexed_count(self) -> int:
        return sum(r.status == INDEXED for r in self.rows.values())

    def indexed_ids(self) -> set[str]:
        """Every point the indexed rows account for (files and their moments)."""
        return {pid for r in self.rows.values() if r.status == INDEXED for pid in r.point_ids()}

    def errors(self) -> list[ManifestRow]:
        return sorted((r for r in self.rows.values() if r.status == ERROR), key=lambda r: r.path)

    def plan(self, files: Iterable[FileEntry], *, shard: ShardSpec | None = None, reembed: bool = False,
             bridge_version: str | None = None) -> Plan:
        """Split scanned files into todo / unchanged, and find the deleted ones.

        A row embedded by another bridge version is todo, so an interrupted `--reembed`
        finishes on the next plain run. Deleted means: in the manifest, not in the scan,
        and (when sharded) in this shard, so a shard run never removes other shards' files.
        """
        todo, unchanged, seen = [], [], set()
        for f in files:
            seen.add(f.rel_path)
            row = self.rows.get(f.rel_path)
            if (not reembed and row is not None and row.status == INDEXED and row.size == f.size
                    and row.mtime_ns == f.mtime_ns and row.modality == f.modality and f.problem is None
                    and (bridge_version is None or row.bridge_version == bridge_version)):
                unchanged.append(f)
            else:
                todo.append(f)
        deleted = [r for p, r in sorted(self.rows.items())
                   if p not in seen and (shard is None or shard.owns(p))]
        return Plan(todo, unchanged, deleted)

    # ------------------------------------------------------------------ writing

    def commit(self, rows: Iterable[ManifestRow] = (), deleted: Iterable[str] = ()) -> None:
        """Record rows and deletions durably (journal append + fsync).

        Call only after the store has flushed what these rows describe.
        """
        lines = []
        now = time.time()
        for row in rows:
            row.updated = row.updated or now
            self.rows[row.path] = row
            lines.append(json.dumps(_row_dict(row), separators=(",", ":")))
        for path in deleted:
            self.rows.pop(path, None)
            lines.append(json.dumps({"path": path, "deleted": True}, separators=(",", ":")))
        if not lines:
            return
        if self._journal_fd is None:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            self._journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # One write call per commit, so a kill leaves at most the last line torn.
        os.write(self._journal_fd, ("\n".join(lines) + "\n").encode("utf-8"))
        os.fsync(self._journal_fd)

    def compact(self) -> None:
        """Fold the journal into a new Parquet file (atomic rename), then empty the journal."""
        import polars as pl

        self.index_dir.mkdir(parents=True, exist_ok=True)
        ordered = [_row_dict(self.rows[p]) for p in sorted(self.rows)]
        schema = {"path": pl.String, "size": pl.Int64, "mtime_ns": pl.Int64, "content_hash": pl.String,
                  "point_id": pl.String, "modality": pl.String, "status": pl.String, "reason": pl.String,
                  "bridge_version": pl.String, "updated": pl.Float64, "moments": pl.Int64}
        df = pl.DataFrame(ordered, schema=schema)
        with atomic_path(self.parquet_path) as tmp:
            df.write_parquet(tmp)
            crash_point("compact")
        # A crash before this truncation only replays entries the Parquet file already has.
        self._close_journal()
        with open(self.journal_path, "w"):
            pass
        log.debug("manifest compacted: %d rows", len(ordered))

    def clear(self) -> None:
        """Forget every row (used when the store is rebuilt from scratch)."""
        self._close_journal()
        self.rows.clear()
        self.damaged = None
        self.parquet_path.unlink(missing_ok=True)
        self.journal_path.unlink(missing_ok=True)

    def close(self) -> None:
        self._close_journal()

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None


# ------------------------------------------------------------------------------ errors report


def write_errors_report(path: str | Path, rows: Iterable[ManifestRow], root: str | Path | None = None) -> Path:
    """Write the report atomically (a reader never sees half of it).

    Example:
        >>> write_errors_report("idx/errors.jsonl", manifest.errors(), root="data")   # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in rows:
        rec = {"path": r.path, "abs_path": str(Path(root) / r.path) if root is not None else None,
               "modality": r.modality, "reason": r.reason,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.updated or time.time()))}
        lines.append(json.dumps(rec, ensure_ascii=False))
    return atomic_write(path, "".join(line + "\n" for line in lines))


def read_errors_report(path: str | Path) -> list[dict[str, Any]]:
    """The report's entries (empty when there is no report yet).

    Example:
        >>> [e["reason"] for e in read_errors_report("idx/errors.jsonl")]   # doctest: +SKIP
        ['zero-length audio']
    """
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
