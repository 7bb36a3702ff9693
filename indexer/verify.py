"""Is the store whole? Check points against the manifest, so damage is never silent.

A garbled payload page or vector chunk under `<index>/shard/` does not stop the engine from
opening the shard: the count is right, an incremental run finds every file "unchanged", and
only a search that reaches a damaged point fails (LZ4 decode error) or ranks garbage (a
non-finite vector). So every indexing run checks its points (all of them up to
`FULL_CHECK_LIMIT`, else a random sample) and repairs what it finds (see
`indexer.index`); a reader checks one page of points when it opens the index and turns an
engine failure during a search into `StoreDamagedError`, which says how to repair.

What is checked, per point: it can be read at all (payload and vectors decode); its payload
names the file the manifest says the id belongs to; each vector is finite and unit-norm
(the store normalises cosine vectors, so anything else is garbage bytes).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexer.ledger import INDEXED, ManifestRow
from indexer.store import Point, Record, Store, StoreInUseError
from indexer.store.types import StoreDamagedError, StoreUnreadableError  # noqa: F401  (raised by readers)

log = logging.getLogger(__name__)

FULL_CHECK_LIMIT = 20_000  # up to this many points every point is checked; above, a random sample
SAMPLE_SIZE = 4_096
NORM_TOLERANCE = 1e-3
_BATCH = 256


@dataclass
class StoreCheck:
    """The outcome of a check: how many points were looked at, and which are damaged (id -> why)."""

    checked: int = 0
    damaged: dict[Any, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.damaged

    def summary(self, limit: int = 3) -> str:
        reasons = sorted(set(self.damaged.values()))
        if "?" in self.damaged:  # a whole page failed to decode
            return f"its points cannot be read: {self.damaged['?']}"
        return f"{len(self.damaged)} of {self.checked} checked points damaged ({'; '.join(reasons[:limit])})"


def vector_problem(vectors: dict[str, np.ndarray] | None, names: Iterable[str]) -> str | None:
    """Why a point's vectors are garbage, or None when each named one is finite and unit-norm.

    Example:
        >>> vector_problem({"bridged": np.array([0.6, 0.8], np.float32)}, ["bridged"]) is None
        True
        >>> vector_problem({"bridged": np.array([np.nan, 1.0], np.float32)}, ["bridged"])
        "vector 'bridged' is not finite"
    """
    for name in names:
        v = None if vectors is None else vectors.get(name)
        if v is None:
            return f"vector {name!r} missing"
        if not np.isfinite(v).all():
            return f"vector {name!r} is not finite"
        norm = float(np.linalg.norm(v))
        if abs(norm - 1.0) > NORM_TOLERANCE:
            return f"vector {name!r} has norm {norm:.4g}, not 1"
    return None


def point_vectors(store: Store, modality: str | None) -> list[str]:
    """The named vectors a point of `modality` must carry: `bridged`; `proxy` when the index's bridge
    has G (its metadata lists the vectors it writes); `raw_<modality>` where the collection has it."""
    spec = store.spec.vectors
    written = store.metadata.get("vectors") or {"bridged": None, "proxy": None}
    names = [n for n in ("bridged", "proxy") if n in written and n in spec]
    if modality is not None and f"raw_{modality}" in spec:
        names.append(f"raw_{modality}")
    return names


def check_points(store: Store, rows: Sequence[ManifestRow], *, full_limit: int = FULL_CHECK_LIMIT,
                 sample: int = SAMPLE_SIZE, seed: int | None = None) -> StoreCheck:
    """Check the points of the manifest's indexed rows (all, or a random sample when there are many).

    Example:
        >>> check = check_points(store, list(manifest.rows.values()))   # doctest: +SKIP
        >>> check.ok                                                    # doctest: +SKIP
        True
    """
    indexed = [r for r in rows if r.status == INDEXED]
    if len(indexed) > full_limit:
        indexed = random.Random(seed).sample(indexed, sample)
    check = StoreCheck()
    for i in range(0, len(indexed), _BATCH):
        chunk = indexed[i:i + _BATCH]
        try:
            records = {r.id: r for r in store.retrieve([row.point_id for row in chunk], with_vectors=True)}
            failed: dict[Any, str] = {}
        except Exception:  # the engine cannot decode something in this batch: find which points
            records, failed = {}, {}
            for row in chunk:
                try:
                    got = store.retrieve([row.point_id], with_vectors=True)
                except Exception as exc:
                    failed[row.point_id] = f"unreadable ({_first_line(exc)})"
                    continue
                if got:
                    records[got[0].id] = got[0]
        for row in chunk:
            check.checked += 1
            problem = failed.get(row.point_id) or _record_problem(records.get(row.point_id), row,
                                                                  point_vectors(store, row.modality))
            if problem:
                check.damaged[row.point_id] = problem
    return check


def check_page(store: Store, limit: int = 256) -> StoreCheck:
    """Check one page of points, without a manifest (what a reader does when it opens an index)."""
    check = StoreCheck()
    try:
        records = []
        for rec in store.scroll(with_vectors=True, page=limit):
            records.append(rec)
            if len(records) >= limit:
                break
    except (StoreInUseError, StoreUnreadableError):
        raise  # in use by another process (not damage), or a store the engine cannot load: its own sentence
    except Exception as exc:
        check.damaged["?"] = f"unreadable ({_first_line(exc)})"
        return check
    for rec in records:
        check.checked += 1
        problem = vector_problem(rec.vectors, point_vectors(store, rec.payload.get("modality"))) or (
            None if "path" in rec.payload else "payload has no path")
        if problem:
            check.damaged[rec.id] = problem
    return check


def remove_points(store: Store, ids: Sequence[Any], modalities: dict[Any, str] | None = None) -> None:
    """Delete damaged points. The engine reads a point's old payload to delete it, which fails when
    that payload is garbled; overwriting the point first (which needs no read) makes it deletable.
    `modalities` (point id -> modality) keeps each filler to the vectors its modality's partition has
    (`raw_<modality>` only there) and routes it to that partition."""
    if not ids:
        return
    dims = store.spec.vectors
    own = {n for n in dims if not n.startswith("raw_")}

    def filler(pid: Any) -> dict[str, np.ndarray]:
        m = (modalities or {}).get(pid)
        names = [n for n in dims if n in own or m is None or n == f"raw_{m}"]
        return {n: np.full(dims[n], 1.0 / np.sqrt(dims[n]), dtype=np.float32) for n in names}

    store.upsert([Point(pid, filler(pid), {"damaged": True, **({"modality": modalities[pid]}
                                                                 if modalities and pid in modalities else {})})
                  for pid in ids])
    store.delete(ids)
    store.flush()


def _record_problem(rec: Record | None, row: ManifestRow, names: list[str]) -> str | None:
    if rec is None:
        return "missing from the store"
    if rec.payload.get("path") != row.path:
        return f"payload names {rec.payload.get('path')!r}, the manifest {row.path!r}"
    return vector_problem(rec.vectors, names)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
