"""The server backend: a Qdrant server or cluster through qdrant-client (Query API only).

`ServerStore.memory()` and `ServerStore.local(path)` use the client's local mode, which makes the
same client calls a server gets (the congruence tests run on it). Every `qdrant_client` import
lives here.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.faults import crash_point
from indexer.store.partitioned import LAYOUT, PartitionedStore
from indexer.store.base import (Store, _as_vector, _batched, _match_values, _merge_metadata,
                                _normalize_id, _search_params, _vectors_out)
from indexer.store.types import (DEFAULT_RRF_K, CollectionSpec, Filter, FilterValue, FusionKind, Hit,
                                 Point, PointId, Prefetch, Range, Record, StoreInfo, VectorLike)

if TYPE_CHECKING:  # pragma: no cover
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qm

log = logging.getLogger(__name__)

# Key under which ServerStore keeps the CollectionSpec inside the collection metadata;
# it is hidden from Store.metadata so users only see their own keys.
_SPEC_KEY = "__emergentbridge_store_spec__"


# ---------------------------------------------------------------------------
# Server backend: qdrant-client (Query API only)
# ---------------------------------------------------------------------------


def _client_models() -> Any:
    try:
        from qdrant_client.http import models
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise ImportError("the server store needs qdrant-client: pip install 'qdrant-client>=1.20'") from e
    return models


class ServerStore(Store):
    """A collection on a Qdrant server/cluster, or in qdrant-client's local mode.

    Sharding, replication and write consistency come from the :class:`CollectionSpec`
    at creation. Metadata lives in the collection's own metadata (Qdrant >= 1.16).

    Example::

        store = ServerStore("http://qdrant:6333", "emergentbridge")
        store.create(CollectionSpec(vectors={"bridged": 256}, shards=4, replication=2))

        test_store = ServerStore.memory()             # QdrantClient(":memory:")
        disk_store = ServerStore.local("/tmp/qd")     # QdrantClient(path=...)
    """

    def __init__(self, client: str | QdrantClient, collection: str = "emergentbridge", *,
                 api_key: str | None = None, timeout: int | None = None, prefer_grpc: bool = False) -> None:
        try:
            from qdrant_client import QdrantClient
        except ImportError as e:  # pragma: no cover
            raise ImportError("the server store needs qdrant-client: pip install 'qdrant-client>=1.20'") from e
        if isinstance(client, str):
            if client == ":memory:":
                client = QdrantClient(":memory:")
            else:
                client = QdrantClient(url=client, api_key=api_key, timeout=timeout, prefer_grpc=prefer_grpc)
        # Local mode ignores payload indexes and search params and warns each call; those
        # warnings are expected there (it is a test double for the server), so we mute them.
        self._is_local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"
        if self._is_local and not isinstance(client, _OneCallAtATime):
            client = _OneCallAtATime(client)
        self.client = client
        self.collection = collection
        self._warned_unindexed = set()
        self._meta_cache: dict[str, Any] | None = None
        if self.exists():
            self._load()

    @classmethod
    def memory(cls, collection: str = "emergentbridge") -> ServerStore:
        """A store in qdrant-client's in-memory local mode (tests)."""
        from qdrant_client import QdrantClient

        return cls(QdrantClient(":memory:"), collection)

    @classmethod
    def local(cls, path: str | os.PathLike[str], collection: str = "emergentbridge") -> ServerStore:
        """A store in qdrant-client's on-disk local mode (slow; small indexes only)."""
        from qdrant_client import QdrantClient

        return cls(QdrantClient(path=str(path)), collection)

    def __repr__(self) -> str:
        return f"ServerStore({self.collection!r})"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            if self._is_local:
                warnings.filterwarnings("ignore", message=".*[Ll]ocal (mode|Qdrant).*", category=UserWarning)
            return fn(*args, **kwargs)

    def exists(self) -> bool:
        return bool(self.client.collection_exists(self.collection))

    def _load(self) -> None:
        meta = dict(self.client.get_collection(self.collection).config.metadata or {})
        raw = meta.get(_SPEC_KEY)
        if raw is None:
            raise RuntimeError(
                f"collection {self.collection!r} was not created by EmergentBridge (no {_SPEC_KEY} in its "
                "metadata); pick another collection name"
            )
        self._spec = CollectionSpec.from_json(raw)
        self._meta_cache = {k: v for k, v in meta.items() if not k.startswith("__emergentbridge_")}

    def create(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        m = _client_models()
        if self.exists():
            if not recreate:
                raise FileExistsError(f"collection {self.collection!r} exists; open it or pass recreate=True")
            self.client.delete_collection(self.collection)
        quant = None
        if spec.quantization == "int8":
            quant = m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(
                type=m.ScalarType.INT8, quantile=0.99, always_ram=True))
        optimizers = None
        if any(v is not None for v in (spec.indexing_threshold_kb, spec.max_segment_size_kb,
                                        spec.default_segment_number)):
            # optimize_every[_kb] and hnsw_memory are the embedded store's; a server optimizes on its own.
            optimizers = m.OptimizersConfigDiff(indexing_threshold=spec.indexing_threshold_kb,
                                                max_segment_size=spec.max_segment_size_kb,
                                                default_segment_number=spec.default_segment_number)
        self._call(
            self.client.create_collection,
            self.collection,
            vectors_config={name: m.VectorParams(size=dim, distance=m.Distance.COSINE)
                            for name, dim in spec.vectors.items()},
            shard_number=spec.shards,
            replication_factor=spec.replication,
            write_consistency_factor=spec.write_consistency,
            hnsw_config=m.HnswConfigDiff(m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construct,
                                         full_scan_threshold=spec.full_scan_threshold_kb,
                                         payload_m=spec.payload_m),
            optimizers_config=optimizers,
            quantization_config=quant,
            metadata={**spec.metadata, _SPEC_KEY: spec.to_json()},
        )
        if "partition" in spec.metadata:  # a new partition of a per-modality store: collection made, no index yet
            crash_point("partition-folder")
        self._create_payload_indexes(spec, spec.payload_indexes)
        self._spec = dataclasses.replace(spec, metadata={})
        self._meta_cache = json.loads(json.dumps(spec.metadata))
        log.info("created collection %r: vectors=%s shards=%d replication=%d", self.collection,
                 spec.vectors, spec.shards, spec.replication)

    def _create_payload_indexes(self, spec: CollectionSpec, fields: Mapping[str, str]) -> None:
        for name, kind in fields.items():
            links = spec.hnsw_payload_fields is None or name in spec.hnsw_payload_fields
            self._call(self.client.create_payload_index, self.collection, name,
                       field_schema=_client_index_schema(kind, links), wait=True)

    def ensure_payload_indexes(self, spec: CollectionSpec) -> None:
        """Create the payload indexes of `spec` the collection lacks (a creation interrupted after the
        collection, before its indexes). qdrant-client's local mode keeps no index: it gets them all again."""
        have = set(self.client.get_collection(self.collection).payload_schema or {})
        missing = {k: v for k, v in spec.payload_indexes.items() if k not in have}
        if missing:
            log.info("collection %r: creating its missing payload indexes %s", self.collection, sorted(missing))
            self._create_payload_indexes(spec, missing)

    @property
    def metadata(self) -> dict[str, Any]:
        # Read through on every call: on a server another process may have updated it.
        self._load()
        return json.loads(json.dumps(self._meta_cache or {}))

    def update_metadata(self, patch: Mapping[str, Any]) -> None:
        patch = json.loads(json.dumps(dict(patch)))
        if _SPEC_KEY in patch:
            raise KeyError(f"{_SPEC_KEY!r} is reserved for the store's own spec")
        self._call(self.client.update_collection, self.collection, metadata=patch)
        self._meta_cache = _merge_metadata(dict(self._meta_cache or {}), patch)

    def flush(self) -> None:
        # Every write is sent with wait=True, so there is nothing buffered client-side.
        return None

    def close(self) -> None:
        self.client.close()

    def optimize(self, timeout_s: float = 3600.0) -> None:
        """Wait until the server has built its indexes (collection status green)."""
        m = _client_models()
        t0 = time.perf_counter()
        while True:
            status = self.client.get_collection(self.collection).status
            if status == m.CollectionStatus.GREEN:
                break
            if status == m.CollectionStatus.RED:
                raise RuntimeError(f"collection {self.collection!r} is red: check the Qdrant server logs")
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"collection {self.collection!r} still {status} after {timeout_s:.0f}s")
            time.sleep(0.5)
        log.info("collection %r optimized after %.1fs", self.collection, time.perf_counter() - t0)

    def upsert(self, points: Iterable[Point], batch: int = 256) -> int:
        m = _client_models()
        n = 0
        for chunk in _batched(self._prepare_points(points), batch):
            structs = [m.PointStruct(id=p.id, vector=p.vectors, payload=p.payload) for p in chunk]
            self._call(self.client.upsert, self.collection, points=structs, wait=True)
            n += len(chunk)
        return n

    def delete(self, ids: Iterable[PointId]) -> None:
        m = _client_models()
        id_list = [_normalize_id(i) for i in ids]
        if id_list:
            self._call(self.client.delete, self.collection,
                       points_selector=m.PointIdsList(points=id_list), wait=True)

    def retrieve(self, ids: Sequence[PointId], *, with_vectors: bool | Sequence[str] = False,
                 with_payload: bool = True) -> list[Record]:
        norm = [_normalize_id(i) for i in ids]
        wv = with_vectors if isinstance(with_vectors, bool) else list(with_vectors)
        recs = self._call(self.client.retrieve, self.collection, norm, with_payload=with_payload, with_vectors=wv)
        return self._order_records(norm, [_client_record(r) for r in recs])

    def count(self, filter: Filter | None = None) -> int:
        self._warn_unindexed(filter)
        return int(self._call(self.client.count, self.collection, count_filter=_client_filter(filter),
                              exact=True).count)

    def scroll(self, filter: Filter | None = None, *, with_payload: bool = True,
               with_vectors: bool | Sequence[str] = False, page: int = 1024) -> Iterator[Record]:
        self._warn_unindexed(filter)
        wv = with_vectors if isinstance(with_vectors, bool) else list(with_vectors)
        flt = _client_filter(filter)
        offset = None
        while True:
            recs, offset = self._call(self.client.scroll, self.collection, scroll_filter=flt, limit=page,
                                      offset=offset, with_payload=with_payload, with_vectors=wv)
            for r in recs:
                yield _client_record(r)
            if offset is None:
                return

    def info(self) -> StoreInfo:
        inf = self.client.get_collection(self.collection)
        indexes = {}
        for name, schema in (inf.payload_schema or {}).items():
            kind = str(getattr(schema.data_type, "value", schema.data_type))
            if kind == "keyword" and getattr(schema.params, "prefix", None):
                kind = "prefix"
            indexes[name] = kind
        return StoreInfo(int(inf.points_count or 0), int(inf.indexed_vectors_count or 0),
                         getattr(inf, "segments_count", None), indexes)

    def _params(self, exact: bool, ef: int | None) -> Any:
        return _search_params(_client_models(), self._require_spec(), exact, ef)

    def search_batch(self, vector_name: str, vectors: Sequence[VectorLike] | np.ndarray, k: int = 10,
                     filter: Filter | None = None, *, exact: bool = False, ef: int | None = None,
                     with_payload: bool = True, with_vectors: bool | Sequence[str] = False) -> list[list[Hit]]:
        m = _client_models()
        self._check_vector_name(vector_name)
        self._warn_unindexed(filter)
        flt = _client_filter(filter)
        params = self._params(exact, ef)
        wv = with_vectors if isinstance(with_vectors, bool) else list(with_vectors)
        vecs = [_as_vector(v).tolist() for v in vectors]
        if len(vecs) == 1:
            res = self._call(self.client.query_points, self.collection, query=vecs[0], using=vector_name,
                             limit=k, query_filter=flt, search_params=params, with_payload=with_payload,
                             with_vectors=wv)
            return [[_client_hit(p) for p in res.points]]
        reqs = [m.QueryRequest(query=v, using=vector_name, limit=k, filter=flt, params=params,
                               with_payload=with_payload, with_vector=wv) for v in vecs]
        res = self._call(self.client.query_batch_points, self.collection, requests=reqs)
        return [[_client_hit(p) for p in r.points] for r in res]

    def prefetch_batch(self, prefetches: Sequence[Prefetch], filter: Filter | None = None, *, exact: bool = False,
                       ef: int | None = None, with_payload: bool = True) -> list[list[Hit]]:
        m = _client_models()
        if not prefetches:
            return []
        flt = _client_filter(filter)
        params = self._params(exact, ef)
        reqs = [m.QueryRequest(query=_as_vector(p.vector).tolist(), using=p.vector_name, limit=p.limit, filter=flt,
                               params=params, with_payload=with_payload) for p in prefetches]
        res = self._call(self.client.query_batch_points, self.collection, requests=reqs)
        return [[_client_hit(p) for p in r.points] for r in res]

    def search_fused(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int = 10,
                     filter: Filter | None = None, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
                     exact: bool = False, ef: int | None = None, with_payload: bool = True) -> list[Hit]:
        m = _client_models()
        pfs, weights = self._fused_prefetches(prefetches, filter, fusion)
        flt = _client_filter(filter)
        params = self._params(exact, ef)
        if fusion == "dbsf":
            query: Any = m.FusionQuery(fusion=m.Fusion.DBSF)
        else:
            query = m.RrfQuery(rrf=m.Rrf(k=rrf_k, weights=weights))
        res = self._call(
            self.client.query_points, self.collection,
            prefetch=[m.Prefetch(query=_as_vector(p.vector).tolist(), using=p.vector_name, limit=p.limit,
                                 filter=flt, params=params) for p in pfs],
            query=query, query_filter=flt, limit=k, with_payload=with_payload,
        )
        return [_client_hit(p) for p in res.points]


def _client_index_schema(kind: str, hnsw_links: bool = True) -> Any:
    """The client's index schema; `hnsw_links` False keeps the field out of the payload_m links."""
    m = _client_models()
    enable = None if hnsw_links else False
    if kind == "prefix":
        return m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, prefix=True, enable_hnsw=enable)
    if enable is False:
        if kind == "keyword":
            return m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, enable_hnsw=False)
        if kind == "integer":
            return m.IntegerIndexParams(type=m.IntegerIndexType.INTEGER, lookup=True, range=True, enable_hnsw=False)
        return m.FloatIndexParams(type=m.FloatIndexType.FLOAT, enable_hnsw=False)
    return {"keyword": m.PayloadSchemaType.KEYWORD, "integer": m.PayloadSchemaType.INTEGER,
            "float": m.PayloadSchemaType.FLOAT}[kind]


def _client_condition(key: str, value: FilterValue) -> Any:
    m = _client_models()
    if isinstance(value, Range):
        return m.FieldCondition(key=key, range=m.Range(gte=value.gte, gt=value.gt, lte=value.lte, lt=value.lt))
    if isinstance(value, (str, int, bool)):
        return m.FieldCondition(key=key, match=m.MatchValue(value=value))
    if isinstance(value, Sequence):
        return m.FieldCondition(key=key, match=m.MatchAny(any=_match_values(key, value)))
    raise TypeError(f"filter on {key!r}: {value!r} is not a str/int/bool, a list of them or a Range "
                    "(floats only match through Range)")


def _client_filter(f: Filter | None) -> Any:
    if f is None:
        return None
    m = _client_models()
    must = [_client_condition(k, v) for k, v in f.must.items()]
    if f.path_prefix is not None:
        must.append(m.FieldCondition(key="path", match=m.MatchPrefix(prefix=f.path_prefix)))
    must_not = [_client_condition(k, v) for k, v in f.must_not.items()]
    if not must and not must_not:
        return None
    return m.Filter(must=must or None, must_not=must_not or None)


def _client_record(r: Any) -> Record:
    return Record(_normalize_id(r.id), dict(r.payload or {}), _vectors_out(r.vector))


def _client_hit(p: Any) -> Hit:
    return Hit(_normalize_id(p.id), float(p.score), dict(p.payload or {}), _vectors_out(p.vector))



# Key of the base collection's metadata that marks the per-modality layout and lists its partitions.
_LAYOUT_KEY = "__emergentbridge_layout__"


class _OneCallAtATime:
    """A qdrant-client in local mode, called from one thread at a time. Local mode is no server: a
    collection is numpy arrays that an upsert replaces while a search in another thread reads them (a
    served index whose folder is watched got "operands could not be broadcast together with shapes
    (4,) (3,)"). Every client of one local instance shares one lock; a server needs none."""

    _locks: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()

    def __init__(self, client: Any) -> None:
        self._raw = client
        self._lock = self._locks.setdefault(client, threading.RLock())  # gone with its client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._raw, name)
        if not callable(attr):
            return attr

        def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)
        return one_at_a_time


class PartitionedServerStore(PartitionedStore):
    """A store on a Qdrant server (or qdrant-client local mode) with a collection per modality.

    ``<collection>`` is the manifest: a collection with the spec's vectors that holds no point and
    keeps the spec, the metadata and the list of partitions in its metadata; ``<collection>-<modality>``
    holds that modality's points (each with the spec's shards and replication). A search of one
    modality is one request to one collection. All collections share one client.

    Example::

        store = PartitionedServerStore("http://qdrant:6333", "emergentbridge")
        store.create(CollectionSpec(vectors={"bridged": 256}, shards=4, replication=2))
    """

    def __init__(self, client: str | QdrantClient, collection: str = "emergentbridge", *,
                 api_key: str | None = None, timeout: int | None = None, prefer_grpc: bool = False) -> None:
        self._base = ServerStore(client, collection, api_key=api_key, timeout=timeout, prefer_grpc=prefer_grpc)
        self.client = self._base.client
        self.collection = collection
        self._init_partitions()

    @classmethod
    def memory(cls, collection: str = "emergentbridge") -> PartitionedServerStore:
        """A store in qdrant-client's in-memory local mode (tests)."""
        from qdrant_client import QdrantClient

        return cls(QdrantClient(":memory:"), collection)

    def __repr__(self) -> str:
        return f"PartitionedServerStore({self.collection!r})"

    def part_collection(self, name: str) -> str:
        """The collection that holds partition `name`."""
        return f"{self.collection}-{name}"

    def _read_manifest(self) -> dict[str, Any] | None:
        if not self.client.collection_exists(self.collection):
            return None
        meta = dict(self.client.get_collection(self.collection).config.metadata or {})
        layout = meta.pop(_LAYOUT_KEY, None)
        spec = meta.pop(_SPEC_KEY, None)
        if spec is None:
            raise RuntimeError(f"collection {self.collection!r} was not created by EmergentBridge (no {_SPEC_KEY} in its "
                               "metadata); pick another collection name")
        if not isinstance(layout, dict) or layout.get("layout") != LAYOUT:
            raise RuntimeError(f"collection {self.collection!r} holds a one-collection store; open it with "
                               "indexer.store.open_store, which reads either layout")
        return {**layout, "spec": spec, "metadata": meta}

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        if not self.client.collection_exists(self.collection):
            # The manifest collection holds no point; its spec is the store's, so a reader sees the same.
            # It is created with its layout key in the one call: a run killed right after leaves a
            # per-modality manifest, never what reads as a one-collection store.
            first = {k: v for k, v in manifest.items() if k not in ("spec", "metadata")}
            self._base.create(dataclasses.replace(CollectionSpec.from_json(manifest["spec"]),
                                                  metadata={**manifest["metadata"], _LAYOUT_KEY: first}))
        old = dict(self.client.get_collection(self.collection).config.metadata or {})
        # Several indexer pods write one store: keep the partitions the others recorded.
        theirs = old.get(_LAYOUT_KEY, {}).get("partitions", {}) if isinstance(old.get(_LAYOUT_KEY), dict) else {}
        for name, part in theirs.items():
            manifest.setdefault("partitions", {}).setdefault(name, part)
        layout = {k: v for k, v in manifest.items() if k not in ("spec", "metadata")}
        new = {**manifest["metadata"], _SPEC_KEY: manifest["spec"], _LAYOUT_KEY: layout}
        patch = {**{k: None for k in old if k not in new}, **new}  # the server merges: None removes a key
        self._base._call(self.client.update_collection, self.collection, metadata=patch)

    def _refresh_partitions(self) -> None:
        manifest = self._read_manifest()
        for name, part in (manifest or {}).get("partitions", {}).items():
            self._manifest.setdefault("partitions", {}).setdefault(name, part)

    @property
    def metadata(self) -> dict[str, Any]:
        # Read through on every call: on a server another process may have updated it.
        manifest = self._read_manifest()
        if manifest is not None:
            self._manifest["metadata"] = manifest["metadata"]
            for name, part in manifest.get("partitions", {}).items():  # partitions another writer added
                self._manifest.setdefault("partitions", {}).setdefault(name, part)
        return super().metadata

    def _part_store(self, name: str) -> Store:
        return ServerStore(self.client, self.part_collection(name))

    def _make_part(self, name: str, spec: CollectionSpec) -> Store:
        """Create the partition's collection. It is listed (and written) only once whole; one that a
        killed run left without its payload indexes is finished by `_adopt_part`."""
        store = self._part_store(name)
        try:
            store.create(spec)
        except FileExistsError:  # created by another writer meanwhile: use theirs
            return self._adopt_part(name, self._part_store(name), spec)
        crash_point("partition-collection")
        return store

    def _adopt_part(self, name: str, store: Store, spec: CollectionSpec) -> Store:
        """A partition collection made before the manifest listed it (a killed run, or another indexer
        pod about to list it): its spec is complete (it is set with the collection, in one call), so
        only payload indexes may be missing: create those (idempotent). Never dropped: another pod
        may be writing it."""
        assert isinstance(store, ServerStore)
        store.ensure_payload_indexes(spec)
        return super()._adopt_part(name, store, spec)

    def _close_part(self, store: Store) -> None:
        return None  # the partitions share this store's client, closed in close()

    def _drop_storage(self) -> None:
        names = set(self._manifest.get("partitions", {}))
        manifest = self._read_manifest() if self.client.collection_exists(self.collection) else None
        names |= set((manifest or {}).get("partitions", {}))
        for name in sorted(names):
            if self.client.collection_exists(self.part_collection(name)):
                self.client.delete_collection(self.part_collection(name))
        if self.client.collection_exists(self.collection):
            self.client.delete_collection(self.collection)

    def close(self) -> None:
        super().close()
        self.client.close()

    def drop(self) -> None:
        """Delete every collection of this store (tests, and `recreate`)."""
        self._close_parts()
        self._drop_storage()
        self._manifest = {}
        self._spec = None


def is_partitioned_collection(store: ServerStore) -> bool:
    """Whether `store`'s collection is the manifest of a per-modality store (not a one-collection store)."""
    meta = dict(store.client.get_collection(store.collection).config.metadata or {})
    layout = meta.get(_LAYOUT_KEY)
    return isinstance(layout, dict) and layout.get("layout") == LAYOUT
