"""The errors report: every input the index could not take, with the reason and when.

`<index>/errors.jsonl`, one JSON object per line: `path` (relative to the indexed
folder), `abs_path`, `modality`, `reason`, `time` (ISO 8601, UTC). It is rewritten at
the end of each run from the manifest's error rows, so it lists exactly the files that
are bad *now*: a file fixed since is gone from it (and indexed), a file that broke is in it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from indexer.manifest import ManifestRow

ERRORS_FILE = "errors.jsonl"


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
    fd, tmp = tempfile.mkstemp(prefix=".errors.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)
    return path


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
