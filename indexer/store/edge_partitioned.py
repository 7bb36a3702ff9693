"""The embedded store laid out per modality: one `EdgeStore` (one qdrant-edge shard, one HNSW
graph) per modality under one folder, with one manifest (`indexer.store.partitioned` routes the
points and merges the searches; this module says where the folders and the manifest live).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from core.files import atomic_write_json, fsync_dir
from indexer.faults import crash_point
from indexer.store.base import Store, _batched
from indexer.store.edge import PARTS_DIR, EdgeStore, in_use_error
from indexer.store.partitioned import LAYOUT, PartitionedStore
from indexer.store.types import CollectionSpec, Point, StoreUnreadableError

log = logging.getLogger(__name__)


class PartitionedEdgeStore(PartitionedStore):
    """The embedded store, one shard (one HNSW graph) per modality, persisted under ``path``.

    Layout: ``<path>/collection.json`` (the manifest: spec, metadata, partitions) and
    ``<path>/modalities/<modality>/`` (an `EdgeStore` each: ``shard/`` + its own ``collection.json``).
    Partitions open on first use, so opening the index reads one small file.

    Example::

        with PartitionedEdgeStore("my-index") as store:
            if not store.exists():
                store.create(CollectionSpec(vectors={"bridged": 256}))
            store.upsert(points)            # routed by payload["modality"]
            store.search("bridged", q, filter=Filter(must={"modality": "audio"}))  # the audio graph only
    """

    META_FILE = EdgeStore.META_FILE
    PARTS_DIR = PARTS_DIR
    grows_vectors = True  # a partition is rebuilt with a vector it lacks (`_grow_part`)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._init_partitions()

    def __repr__(self) -> str:
        return f"PartitionedEdgeStore({str(self.path)!r})"

    def _read_manifest(self) -> dict[str, Any] | None:
        meta = self.path / self.META_FILE
        if not meta.is_file():
            return None
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StoreUnreadableError(f"{meta}: unreadable store description ({e})") from e
        if not isinstance(data, dict):
            raise StoreUnreadableError(f"{meta}: unreadable store description (not a JSON object)")
        layout = data.get("layout")
        if layout is None:  # a one-shard store's description (is_single_shard found no shard beside it)
            raise StoreUnreadableError(f"{meta}: describes a one-shard store, but its {EdgeStore.SHARD_DIR}/ is "
                                       "missing or incomplete")
        if layout != LAYOUT:
            from indexer.record import IndexFormatError

            raise IndexFormatError(f"{meta}: store layout {layout!r} is not one this version of EmergentBridge reads "
                                   f"({LAYOUT!r}); upgrade emergentbridge, or index into a fresh folder")
        return data

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / self.META_FILE, manifest)

    def _part_store(self, name: str) -> Store:
        self._finish_swap(name)
        try:
            return EdgeStore(self.path / self.PARTS_DIR / name)
        except Exception as exc:  # noqa: BLE001 - the engine raises plain Exception
            raise in_use_error(self.path, exc) from None

    def _make_part(self, name: str, spec: CollectionSpec) -> Store:
        """Build the partition in ``modalities/.<name>.tmp/`` and rename it into place, so
        ``modalities/<name>/`` appears whole (shard and collection.json) or not at all. A folder a
        run killed there left (before this, partitions were made in place: a shard without its
        collection.json) holds no point and is replaced."""
        parts = self.path / self.PARTS_DIR
        final, tmp = parts / name, parts / f".{name}.tmp"
        for leftover in parts.glob(".*.tmp"):  # of this or another partition, from a killed run
            shutil.rmtree(leftover, ignore_errors=True)
        built = EdgeStore(tmp)
        try:
            built.create(spec)
        finally:
            built.close()
        crash_point("partition-collection")
        if final.exists():
            log.warning("%s: partition %r was left half-made by an interrupted run (%s); it holds no point: "
                        "made anew", self.path, name, ", ".join(sorted(p.name for p in final.iterdir())) or "empty")
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(parts)
        return self._part_store(name)

    def _grow_part(self, name: str, spec: CollectionSpec) -> None:
        """Rebuild partition `name` with `spec`'s vectors (the engine cannot add a named vector to a built
        shard): its points are copied as they are into ``modalities/.<name>.tmp``, which then takes the
        place of the old folder (renamed to ``.<name>.old`` first, deleted after). Killed before the swap,
        the old partition stands; between its two renames, `_finish_swap` puts the old one back; after
        them, the new one stands. The store's manifest is written by the caller (`add_vectors`)."""
        parts = self.path / self.PARTS_DIR
        final, tmp, old = parts / name, parts / f".{name}.tmp", parts / f".{name}.old"
        source = self._part(name)
        assert source is not None
        shutil.rmtree(tmp, ignore_errors=True)
        built = EdgeStore(tmp)
        try:
            built.create(spec)
            for page in _batched(source.scroll(with_vectors=True), 512):
                built.upsert([Point(r.id, r.vectors or {}, r.payload) for r in page], batch=512)
        finally:
            built.close()  # flushes
        crash_point("partition-grow")
        self._close_part(self._parts.pop(name))
        os.rename(final, old)
        crash_point("partition-swap")
        os.rename(tmp, final)
        fsync_dir(parts)
        shutil.rmtree(old)
        self._manifest["partitions"][name]["vectors"] = dict(spec.vectors)
        log.info("%s: partition %r rebuilt with vectors %s", self.path, name, dict(spec.vectors))

    def _finish_swap(self, name: str) -> None:
        """A `_grow_part` killed in its swap: the old partition back if the new one is not in place yet,
        else the old one's leftover folder removed."""
        parts = self.path / self.PARTS_DIR
        final, old = parts / name, parts / f".{name}.old"
        if not old.exists():
            return
        if final.exists():
            shutil.rmtree(old)
        else:
            log.warning("%s: partition %r was being rebuilt when a run stopped; the old one is put back", self.path,
                        name)
            os.rename(old, final)
            fsync_dir(parts)

    def _adopt_part(self, name: str, store: Store, spec: CollectionSpec) -> Store:
        if dict(store.spec.vectors) != dict(spec.vectors):  # made for another spec; it holds no recorded point
            log.warning("%s: unlisted partition %r has vectors %s, not %s; made anew", self.path, name,
                        dict(store.spec.vectors), dict(spec.vectors))
            store.close()
            return self._make_part(name, spec)
        return super()._adopt_part(name, store, spec)

    def _drop_storage(self) -> None:
        shutil.rmtree(self.path / self.PARTS_DIR, ignore_errors=True)
        shutil.rmtree(self.path / EdgeStore.SHARD_DIR, ignore_errors=True)  # a single-shard store it replaces
        (self.path / self.META_FILE).unlink(missing_ok=True)

    def engine_config(self) -> dict[str, dict[str, Any]]:
        """Each partition's engine config (``shard/edge_config.json``), for checks and reports."""
        return {name: store.engine_config() for name, store in self._open_parts()}  # type: ignore[attr-defined]


def is_single_shard(path: str | os.PathLike[str]) -> bool:
    """Whether `path` holds a store of the layout before issue 22: one shard for every modality
    (``shard/`` beside a ``collection.json`` without a ``layout``). Such a store is read as it is."""
    path = Path(path)
    meta = path / EdgeStore.META_FILE
    if not (path / EdgeStore.SHARD_DIR / "edge_config.json").is_file() or not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("layout") is None
    except (OSError, ValueError, AttributeError):
        return True  # EdgeStore's own loader names the problem
