"""Storage layer: one small typed interface (`Store`) over two real Qdrant backends.

* `EdgeStore` (embedded, the default, `edge.py`): the Qdrant engine in-process through
  qdrant-edge-py, persisted under the index folder.
* `ServerStore` (`server.py`): a Qdrant server or cluster through qdrant-client; its local mode
  (`:memory:` or a folder) makes the same client calls a server gets.
* `PartitionedEdgeStore` / `PartitionedServerStore` (`partitioned.py`): what new indexes get, one
  of the above per modality (one HNSW graph each) behind the same interface, so a search of one
  modality walks that modality's graph only (issue 22). Stores built before keep their one-shard /
  one-collection layout and are read as they are.

`open_store` is the one way in: given an index folder it opens the store the index's own record
(`index.json`) says its points are in, so an index built on a server or in local mode is searched
where it was built. Callers see only the plain types of `types.py`.

Example::

    from indexer.store import CollectionSpec, Filter, Point, open_store, point_id

    spec = CollectionSpec(vectors={"bridged": 256, "proxy": 256})
    with open_store("my-index", spec=spec) as store:
        store.upsert([Point(point_id("a.png"), {"bridged": v, "proxy": p}, {"modality": "image"})])
        store.optimize()
        hits = store.search("bridged", query, k=10, filter=Filter(must={"modality": "depth"}))
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from indexer.record import read_record
from indexer.store.base import Store
from indexer.store.edge import EdgeStore, StoreInUseError, in_use_error, store_holders
from indexer.store.edge_partitioned import PartitionedEdgeStore, is_single_shard
from indexer.store.partitioned import PartitionedStore, partition_vectors
from indexer.store.server import PartitionedServerStore, ServerStore, is_partitioned_collection
from indexer.store.types import (BUILD_SETTINGS, DEFAULT_RRF_K, ID_NAMESPACE, CollectionSpec, Filter, Hit, Point,
                                 PointId, Prefetch, Range, RankedIds, Record, StoreInfo, moment_id, point_id)

__all__ = ["Store", "EdgeStore", "ServerStore", "PartitionedStore", "PartitionedEdgeStore", "PartitionedServerStore",
           "partition_vectors", "migrate_to_per_modality", "is_single_shard", "store_holders", "CollectionSpec", "Filter", "Hit", "Point", "PointId", "Prefetch",
           "Range", "RankedIds", "Record", "StoreInfo", "point_id", "moment_id", "open_store", "open_edge", "resolve_location", "store_in_folder", "store_location", "ID_NAMESPACE",
           "DEFAULT_RRF_K", "StoreInUseError", "BUILD_SETTINGS"]

DEFAULT_COLLECTION = "emergentbridge"


def open_edge(index_dir: str | os.PathLike[str]) -> Store:
    """The embedded store of an index folder: per modality (`PartitionedEdgeStore`, what new
    indexes get; its partitions open on first use), or one shard for every modality (`EdgeStore`)
    for a store built before issue 22, which is read as it is. Another process holding the store (the
    engine's "failed to open WAL ... WouldBlock" for a store with a WAL, the store's lock file for
    one without) becomes a `StoreInUseError` that says who and what to do."""
    if is_single_shard(index_dir):
        try:
            return EdgeStore(index_dir)
        except Exception as exc:  # noqa: BLE001 - the engine raises plain Exception
            raise in_use_error(index_dir, exc) from None
    return PartitionedEdgeStore(index_dir)


def migrate_to_per_modality(index_dir: str | os.PathLike[str], batch: int = 1024) -> PartitionedEdgeStore:
    """Rewrite an embedded store of the one-shard layout (before issue 22) as one shard per modality,
    in place; returns the new store, open. The points, vectors, payloads, spec and metadata are copied
    (the graphs are built anew), then swapped in: the new layout takes effect when its manifest
    replaces `collection.json`, so a run killed before that leaves the old store as it was (and is
    simply started over), and one killed after leaves the new store. Needs room for a second copy.

    Example::

        if is_single_shard("my-index"):
            migrate_to_per_modality("my-index").close()
    """
    import shutil

    root = Path(index_dir)
    if not is_single_shard(root):
        raise ValueError(f"{root}: not an embedded store of the one-shard layout; nothing to migrate")
    tmp = root / ".migrate.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root / PartitionedEdgeStore.PARTS_DIR, ignore_errors=True)  # left by a killed migration
    with EdgeStore(root) as old:
        spec = old.spec
        with PartitionedEdgeStore(tmp) as new:
            new.create(spec)
            new.upsert((Point(r.id, r.vectors or {}, r.payload) for r in old.scroll(with_vectors=True, page=batch)),
                       batch=batch)
            new.optimize()
            count = new.count()
        if count != old.count():
            raise RuntimeError(f"{root}: migration copied {count} of {old.count()} points; the old store is untouched")
    (tmp / PartitionedEdgeStore.PARTS_DIR).rename(root / PartitionedEdgeStore.PARTS_DIR)
    os.replace(tmp / EdgeStore.META_FILE, root / EdgeStore.META_FILE)  # the switch
    shutil.rmtree(root / EdgeStore.SHARD_DIR, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return PartitionedEdgeStore(root)


def _server_layout(base: ServerStore) -> Store:
    """The store whose manifest (or only) collection is `base`: a collection per modality, unless
    `base` is a one-collection store built before issue 22 (read as it is)."""
    if base.exists() and not is_partitioned_collection(base):
        return base
    return PartitionedServerStore(base.client, base.collection)


def store_location(url: Any = None, collection: str | None = None) -> dict[str, Any]:
    """What `index.json` records about where the store is, for a `--qdrant-url` value.

    Example:
        >>> store_location(None)
        {'kind': 'embedded'}
        >>> store_location("http://qdrant:6333", "digits")
        {'kind': 'server', 'url': 'http://qdrant:6333', 'collection': 'digits'}
    """
    collection = collection or DEFAULT_COLLECTION
    if url is None:
        return {"kind": "embedded"}
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"kind": "server", "url": url, "collection": collection}
    if url == ":memory:":
        return {"kind": "memory", "collection": collection}
    if isinstance(url, (str, os.PathLike)):
        return {"kind": "local", "path": str(Path(url).resolve()), "collection": collection}
    return {"kind": "client", "collection": collection}


def describe(location: dict[str, Any]) -> str:
    """The location in words, for logs and messages."""
    kind = location["kind"]
    if kind == "embedded":
        return "embedded"
    where = {"server": location.get("url"), "local": f"local:{location.get('path')}", "memory": ":memory:",
             "client": "client"}[kind]
    return f"{where} [{location.get('collection', DEFAULT_COLLECTION)}]"


def resolve_location(index_dir: str | os.PathLike[str], url: Any = None, collection: str | None = None) -> dict[str, Any]:
    """Where an index's store is: `url` when given (see `store_location`), else what the index's
    record says (embedded when there is no record); `collection` overrides the recorded one."""
    if url is not None:
        return store_location(url, collection)
    location = dict((read_record(index_dir) or {}).get("store") or {"kind": "embedded"})
    if collection is not None and location["kind"] != "embedded":
        location["collection"] = collection
    return location


def store_in_folder(index_dir: str | os.PathLike[str]) -> bool:
    """Whether the index's store lives on this machine (embedded, or qdrant-client local mode),
    so that readers and writers must take turns through the folder's lock; a Qdrant server
    takes concurrent readers and writers itself."""
    return resolve_location(index_dir)["kind"] in ("embedded", "local")


def open_store(index_dir: str | os.PathLike[str], url: Any = None, collection: str | None = None,
               spec: CollectionSpec | None = None, *, api_key: str | None = None,
               missing_ok: bool = False) -> Store:
    """Open the store of an index.

    `url` overrides the record: an http(s) URL (server), ":memory:" or a folder (qdrant-client
    local mode) or a `QdrantClient`. Without it the index's record says where the store is
    (embedded under `index_dir` when there is no record). With `spec`, a missing collection is
    created and an existing one is checked against it; without, a missing one raises
    FileNotFoundError unless `missing_ok`.

    Example::

        store = open_store("my-index", spec=CollectionSpec(vectors={"bridged": 256}))
        store = open_store("my-index")        # wherever my-index's record says
    """
    location = resolve_location(index_dir, url, collection)
    kind, collection = location["kind"], location.get("collection", DEFAULT_COLLECTION)
    store: Store
    if kind == "server":
        if api_key is None and url is None:  # a recorded server: the key is never written down
            api_key = os.environ.get("QDRANT_API_KEY")
        store = _server_layout(ServerStore(location["url"], collection, api_key=api_key))
    elif kind == "memory":
        store = _server_layout(ServerStore.memory(collection))
    elif kind == "local":
        store = _server_layout(ServerStore.local(location["path"], collection))
    elif kind == "client" and url is not None:
        store = _server_layout(ServerStore(url, collection))
    else:  # embedded (a recorded client object cannot be reopened: look for an embedded store)
        store = open_edge(index_dir)
    where = f"{index_dir}" if kind == "embedded" or url is None and kind == "client" else describe(location)
    if store.exists():
        if spec is not None and store.spec.vectors != spec.vectors:
            raise ValueError(f"{where}: stored vectors {store.spec.vectors} differ from the requested "
                             f"{spec.vectors}; index into a fresh folder/collection or recreate it")
    elif spec is not None:
        store.create(spec)
    elif not missing_ok:
        raise FileNotFoundError(f"{where}: no store there; build the index with `ebridge index DIR --index {index_dir}`")
    return store
