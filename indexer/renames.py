"""Moves and renames without embedding again: a new path whose bytes equal a deleted path's.

A point's id is derived from its path, so a renamed file needs a new point (and its moments new
ones, carried with it as one unit); its vectors do not change with the name. Before the pipeline runs, `carry_renames` pairs the plan's new files with
its deleted rows by (size, modality), hashes only those candidates, and for each equal hash
writes the old point's stored vectors under the new id with the new file's payload, deletes the
old point, flushes, and then journals both rows in one write. A kill before the journal line
leaves a point no row accounts for; the next run sees the same rename and writes the same id
again (or re-embeds, if the old point is gone), and the orphan sweep removes what is left.

Example:
    >>> carry_renames(store, manifest, plan, bridge.version)     # doctest: +SKIP
    3
"""
from __future__ import annotations

import logging
import time
from indexer.ledger import INDEXED, Manifest, ManifestRow, Plan
from indexer.pipeline import moment_payload, payload_for
from indexer.reader import ReadResult, hash_file
from indexer.store import Point, Store, moment_id, point_id
from indexer.verify import point_vectors

log = logging.getLogger(__name__)


def carry_renames(store: Store, manifest: Manifest, plan: Plan, bridge_version: str) -> int:
    """Move the points of renamed files to their new paths; takes them out of `plan`.

    Returns how many files were carried over (their vectors reused, nothing embedded)."""
    if not plan.deleted or not plan.todo:
        return 0
    gone: dict[tuple[int, str], list[ManifestRow]] = {}
    for row in plan.deleted:
        if row.status == INDEXED and row.content_hash and row.bridge_version == bridge_version:
            gone.setdefault((row.size, row.modality), []).append(row)
    if not gone:
        return 0
    pairs = []
    for entry in plan.todo:
        candidates = gone.get((entry.size, entry.modality))
        if not candidates or entry.problem or entry.rel_path in manifest.rows:
            continue  # a changed file keeps its own path: not a rename
        try:
            st, digest = hash_file(entry.abs_path)
        except OSError:
            continue  # the pipeline reports it
        match = next((r for r in candidates if r.content_hash == digest), None)
        if match is None:
            continue
        candidates.remove(match)
        pairs.append((entry, match, st, digest))
    if not pairs:
        return 0
    records = {str(r.id): r for r in store.retrieve([pid for _, old, _, _ in pairs for pid in old.point_ids()],
                                                     with_vectors=True)}
    points, rows, moved_from, carried = [], [], [], set()
    for entry, old, st, digest in pairs:
        olds = [records.get(pid) for pid in old.point_ids()]  # the file's point, then its moments'
        needed = set(point_vectors(store, entry.modality))
        if any(rec is None or not rec.vectors or not needed <= set(rec.vectors) for rec in olds):
            continue  # no usable stored vectors: the pipeline embeds the file
        result = ReadResult(entry, size=st.st_size, mtime_ns=st.st_mtime_ns, content_hash=digest)
        payload = payload_for(result, bridge_version)
        if "text" in (olds[0].payload or {}):
            payload["text"] = olds[0].payload["text"]  # the payload's excerpt of a text file is its content's
        pid = point_id(entry.rel_path)
        points.append(Point(pid, dict(olds[0].vectors), payload))
        for k, rec in enumerate(olds[1:]):
            points.append(Point(moment_id(pid, k), dict(rec.vectors),
                                moment_payload(payload, pid, k, rec.payload["start"], rec.payload["end"])))
        rows.append(ManifestRow(entry.rel_path, st.st_size, st.st_mtime_ns, digest, pid, entry.modality, INDEXED,
                                "", bridge_version, time.time(), moments=old.moments))
        moved_from.append(old)
        carried.add(entry.rel_path)
    if not points:
        return 0
    store.upsert(points)
    kept = {p.id for p in points}
    store.delete([pid for old in moved_from for pid in old.point_ids() if pid not in kept])
    store.flush()
    manifest.commit(rows, deleted=[old.path for old in moved_from])
    plan.todo[:] = [e for e in plan.todo if e.rel_path not in carried]
    gone_paths = {old.path for old in moved_from}
    plan.deleted[:] = [r for r in plan.deleted if r.path not in gone_paths]
    log.info("%d moved or renamed files keep their vectors (same bytes; nothing embedded)", len(rows))
    return len(rows)

