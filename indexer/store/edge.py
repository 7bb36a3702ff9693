"""The embedded backend: the Qdrant engine in-process through qdrant-edge-py.

Every `qdrant_edge` import lives here, so an engine release that renames things touches only
this file.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.errors import EmergentBridgeError
from core.files import atomic_write_json
from indexer.faults import crash_point
from indexer.store.base import (Store, _as_vector, _batched, _match_values, _merge_metadata,
                                _normalize_id, _search_params, _vectors_out)
from indexer.store.types import (DEFAULT_RRF_K, CollectionSpec, Filter, FilterValue, FusionKind, Hit,
                                 Point, PointId, Prefetch, Range, RankedIds, Record, StoreInfo, StoreUnreadableError,
                                 VectorLike)

log = logging.getLogger(__name__)

# The folder of a per-modality store's partitions (`indexer.store.edge_partitioned`), named here
# because the helpers below that move or find a store's files need it too.
PARTS_DIR = "modalities"


# ---------------------------------------------------------------------------
# Embedded backend: qdrant-edge-py
# ---------------------------------------------------------------------------


def _edge() -> Any:
    try:
        import qdrant_edge
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise ImportError("the embedded store needs qdrant-edge-py: pip install 'qdrant-edge-py==0.9.0'") from e
    return qdrant_edge


class _StoreLocked(Exception):
    """Another handle (another process, or another open store object) holds this store's lock."""


def _lock_store(path: Path) -> IO[bytes] | None:
    """Take the store's lock file (``<path>/store.lock``, exclusive, not waiting); returns it open.

    The engine locks a shard only through its write-ahead log, and stores have none since issue 22
    (``CollectionSpec.wal``), so this lock is what keeps a second process from opening a store
    another one has open (two writers would corrupt it). Like the WAL's lock it is an ``flock``:
    released by closing the file (``close``; also when the store object is collected or the
    process ends). Not taken where ``fcntl`` is missing (Windows)."""
    if sys.platform == "win32":  # pragma: no cover - no fcntl; the engine's WAL lock is all there is
        return None
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    fh = open(path / EdgeStore.LOCK_FILE, "ab")  # noqa: SIM115 - held open while the store is
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise _StoreLocked(f"{path} is open in another process or store object (WouldBlock)") from None
    return fh


class EdgeStore(Store):
    """The embedded store: the Qdrant engine in-process, persisted under ``path``.

    Layout: ``<path>/shard/`` (the engine's segments and WAL) and
    ``<path>/collection.json`` (spec + metadata; the engine has no collection metadata).
    Opening a folder that already holds a shard loads it.

    Example::

        with EdgeStore("my-index") as store:
            if not store.exists():
                store.create(CollectionSpec(vectors={"bridged": 256}))
            store.upsert(points)
    """

    SHARD_DIR = "shard"
    META_FILE = "collection.json"
    LOCK_FILE = "store.lock"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._shard: Any = None
        self._meta: dict[str, Any] = {}
        self._warned_unindexed = set()
        self._since_optimize = 0  # points upserted since the optimizer last ran (spec.optimize_every[_kb])
        self._lock_file: IO[bytes] | None = None
        if self.exists():
            self._lock()
            try:
                self._load()
            except BaseException:
                self._unlock()
                raise

    def _lock(self) -> None:
        if self._lock_file is None:
            self._lock_file = _lock_store(self.path)

    def _unlock(self) -> None:
        fh, self._lock_file = self._lock_file, None
        if fh is not None:
            fh.close()  # releases the flock

    def __repr__(self) -> str:
        return f"EdgeStore({str(self.path)!r})"

    @property
    def _shard_path(self) -> Path:
        return self.path / self.SHARD_DIR

    @property
    def _meta_path(self) -> Path:
        return self.path / self.META_FILE

    def exists(self) -> bool:
        return self._meta_path.is_file() and (self._shard_path / "edge_config.json").is_file()

    def _load(self) -> None:
        qe = _edge()
        try:
            data = json.loads(self._meta_path.read_text(encoding="utf-8"))
            self._spec = CollectionSpec.from_json(data["spec"])
            self._meta = dict(data.get("metadata", {}))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreUnreadableError(f"{self._meta_path}: unreadable store description ({e})") from e
        try:
            self._shard = qe.EdgeShard.load(str(self._shard_path))
        except Exception as e:  # a garbled WAL header, segment.json or id tracker: the engine refuses the shard
            text = (str(e).strip().splitlines() or [type(e).__name__])[0]
            text = text.replace("Service runtime error: ", "").replace(f"{self._shard_path}/", "")
            raise StoreUnreadableError(f"{self._shard_path}: the engine cannot load it ({text[:300]})") from e
        log.info("opened embedded store %s (%d points)", self.path, self._shard.info().points_count)

    def _edge_config(self, spec: CollectionSpec) -> Any:
        """The engine's shard config for `spec`; the engine persists it in ``shard/edge_config.json``."""
        qe = _edge()
        quant = None
        if spec.quantization == "int8":
            # Pinned: quantized vectors stay in RAM, the originals (for rescoring) may page.
            quant = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
        optimizers = None
        if any(v is not None for v in (spec.indexing_threshold_kb, spec.max_segment_size_kb,
                                        spec.default_segment_number)):
            optimizers = qe.EdgeOptimizersConfig(
                indexing_threshold=spec.indexing_threshold_kb,
                max_segment_size=spec.max_segment_size_kb,
                default_segment_number=spec.default_segment_number,
            )
        return qe.EdgeConfig(
            vectors={name: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine,
                                               memory=_edge_memory(spec.vectors_memory))
                     for name, dim in spec.vectors.items()},
            hnsw_config=qe.HnswIndexConfig(
                m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construct,
                full_scan_threshold=spec.full_scan_threshold_kb,
                max_indexing_threads=spec.indexing_threads,
                payload_m=spec.payload_m,
                memory=_edge_memory(spec.hnsw_memory),
            ),
            quantization_config=quant,
            optimizers=optimizers,
            max_search_threads=spec.search_threads,
            wal_enabled=spec.wal,
        )

    def engine_config(self) -> dict[str, Any]:
        """The shard config the engine recorded (``shard/edge_config.json``), for checks and reports."""
        return json.loads((self._shard_path / "edge_config.json").read_text(encoding="utf-8"))

    def create(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        qe = _edge()
        self._lock()
        if self._shard_path.exists() and any(self._shard_path.iterdir()):
            if not recreate:
                raise FileExistsError(
                    f"{self._shard_path} already holds a shard; open it with EdgeStore({str(self.path)!r}) "
                    "or pass recreate=True to drop it"
                )
            self._drop()
        self._shard = qe.EdgeShard.create(str(self._shard_path), self._edge_config(spec))
        for name, kind in spec.payload_indexes.items():
            links = spec.hnsw_payload_fields is None or name in spec.hnsw_payload_fields
            schema = _edge_index_schema(kind, links, spec.payload_index_memory.get(name))
            self._shard.update(qe.UpdateOperation.create_field_index(name, schema))
        if "partition" in spec.metadata:  # a new partition of a per-modality store: shard made, not described
            crash_point("partition-folder")
        self._since_optimize = 0
        self._spec = dataclasses.replace(spec, metadata={})
        self._meta = dict(spec.metadata)
        self._save_meta()
        log.info("created embedded store %s: vectors=%s quantization=%s payload_m=%s max_segment_size_kb=%s "
                 "optimize_every=%s optimize_every_kb=%s", self.path, spec.vectors, spec.quantization, spec.payload_m,
                 spec.max_segment_size_kb, spec.optimize_every, spec.optimize_every_kb)

    def _drop(self) -> None:
        import shutil

        if self._shard is not None:
            self._shard.close()
            self._shard = None
        shutil.rmtree(self._shard_path)
        self._meta_path.unlink(missing_ok=True)

    def _save_meta(self) -> None:
        atomic_write_json(self._meta_path, {"spec": self._require_spec().to_json(), "metadata": self._meta})

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._meta))  # deep copy: callers cannot mutate ours

    def update_metadata(self, patch: Mapping[str, Any]) -> None:
        _merge_metadata(self._meta, json.loads(json.dumps(dict(patch))))
        self._save_meta()

    def _live(self) -> Any:
        if self._shard is None:
            raise RuntimeError(f"{self!r} is closed or has no collection; call create(spec) first")
        return self._shard

    def flush(self) -> None:
        self._live().flush()

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
        self._unlock()

    def pending(self) -> int:
        return self._since_optimize

    def optimize_pending(self) -> None:
        t0 = time.perf_counter()
        changed = self._live().optimize()
        self._shard.flush()
        self._since_optimize = 0
        log.info("optimized %s in %.1fs (changed=%s)", self.path, time.perf_counter() - t0, changed)

    def optimize(self) -> None:
        """Index what is pending, then (``spec.merge_segments_kb``) the final merge pass."""
        self.optimize_pending()
        spec = self._require_spec()
        if spec.merge_segments_kb is not None and (self._live().info().segments_count or 0) > 2:
            self.merge_segments(spec.merge_segments_kb)

    def merge_segments(self, max_segment_size_kb: int) -> None:
        """Merge the segments into as few as fit `max_segment_size_kb` each (the final merge pass of
        a bounded build), then put the spec's own cap back so later runs stay bounded.

        The engine reads its optimizer settings from the shard's config, which only `load` may
        change: reload with the larger cap, optimize, reload with the spec's."""
        qe = _edge()
        spec = self._require_spec()
        t0 = time.perf_counter()
        before = self._live().info().segments_count
        merged = dataclasses.replace(spec, max_segment_size_kb=max_segment_size_kb, default_segment_number=1)
        self._shard.flush()
        self._shard.close()
        self._shard = qe.EdgeShard.load(str(self._shard_path), self._edge_config(merged))
        try:
            self._shard.optimize()
            self._shard.flush()
        finally:
            self._shard.close()
            self._shard = qe.EdgeShard.load(str(self._shard_path), self._edge_config(spec))
        log.info("merged %s: %s -> %s segments in %.1fs", self.path, before, self._shard.info().segments_count,
                 time.perf_counter() - t0)

    def upsert(self, points: Iterable[Point], batch: int = 256) -> int:
        """Write points in calls of `batch`; with ``spec.optimize_every`` (points) or
        ``spec.optimize_every_kb`` (their vectors) set, run the optimizer each time that much has
        arrived, so no unindexed segment outgrows one chunk and each graph build is bounded (the
        build's peak memory follows the largest segment built)."""
        qe = _edge()
        shard = self._live()
        spec = self._require_spec()
        n = 0
        for chunk in _batched(self._prepare_points(points), batch):
            ops = [qe.Point(p.id, p.vectors, p.payload) for p in chunk]
            shard.update(qe.UpdateOperation.upsert_points(ops))
            n += len(chunk)
            self._since_optimize += len(chunk)
            if spec.chunk_is_full(self._since_optimize, self._since_optimize * spec.point_bytes()):
                log.info("%s: %d points since the last optimizer run; optimizing", self.path, self._since_optimize)
                self.optimize_pending()
        return n

    def delete(self, ids: Iterable[PointId]) -> None:
        qe = _edge()
        id_list = [_normalize_id(i) for i in ids]
        if id_list:
            self._live().update(qe.UpdateOperation.delete_points(id_list))

    def retrieve(self, ids: Sequence[PointId], *, with_vectors: bool | Sequence[str] = False,
                 with_payload: bool = True) -> list[Record]:
        norm = [_normalize_id(i) for i in ids]
        wv = with_vectors if isinstance(with_vectors, bool) else list(with_vectors)
        recs = self._live().retrieve(norm, with_payload, wv)
        return self._order_records(norm, [_edge_record(r) for r in recs])

    def present_ids(self, ids: Sequence[PointId]) -> list[PointId]:
        # Straight to the engine: no second id check, no records, no reordering. Measured at 100k
        # points per modality, retrieve() here was a third of the per-modality store's write time.
        return [_edge_id(r.id) for r in self._live().retrieve(list(ids), False, False)]

    def count(self, filter: Filter | None = None) -> int:
        qe = _edge()
        self._warn_unindexed(filter)
        return self._live().count(qe.CountRequest(exact=True, filter=_edge_filter(filter)))

    def scroll(self, filter: Filter | None = None, *, with_payload: bool = True,
               with_vectors: bool | Sequence[str] = False, page: int = 1024) -> Iterator[Record]:
        qe = _edge()
        self._warn_unindexed(filter)
        wv = with_vectors if isinstance(with_vectors, bool) else list(with_vectors)
        flt = _edge_filter(filter)
        offset = None
        while True:
            recs, offset = self._live().scroll(qe.ScrollRequest(
                offset=offset, limit=page, filter=flt, with_payload=with_payload, with_vector=wv))
            for r in recs:
                yield _edge_record(r)
            if offset is None:
                return

    def info(self) -> StoreInfo:
        inf = self._live().info()
        names = {"Keyword": "keyword", "Integer": "integer", "Float": "float"}
        indexes = {}
        for name, pinfo in inf.payload_schema.items():
            kind = names.get(str(pinfo.data_type).rsplit(".", 1)[-1], str(pinfo.data_type))
            params = pinfo.params
            if kind == "keyword" and params is not None and getattr(params, "prefix", None):
                kind = "prefix"
            indexes[name] = kind
        return StoreInfo(inf.points_count, inf.indexed_vectors_count, inf.segments_count, indexes)

    def _params(self, exact: bool, ef: int | None) -> Any:
        return _search_params(_edge(), self._require_spec(), exact, ef)

    def search_batch(self, vector_name: str, vectors: Sequence[VectorLike] | np.ndarray, k: int = 10,
                     filter: Filter | None = None, *, exact: bool = False, ef: int | None = None,
                     with_payload: bool = True, with_vectors: bool | Sequence[str] = False) -> list[list[Hit]]:
        qe = _edge()
        self._check_vector_name(vector_name)
        self._warn_unindexed(filter)
        flt = _edge_filter(filter)
        params = self._params(exact, ef)
        wv = with_vectors if isinstance(with_vectors, bool) else list(with_vectors)
        reqs = [qe.QueryRequest(limit=k, query=qe.Query.Nearest(_as_vector(v).tolist(), using=vector_name),
                                filter=flt, params=params, with_payload=with_payload, with_vector=wv)
                for v in vectors]
        if len(reqs) == 1:  # the plain query path skips batch planning
            return [[_edge_hit(p) for p in self._live().query(reqs[0])]]
        res = self._live().query_batch(qe.QueryBatchRequest(reqs))
        return [[_edge_hit(p) for p in r] for r in res]

    def search_ids(self, vector_name: str, vectors: Sequence[VectorLike] | np.ndarray, k: int = 10,
                   filter: Filter | None = None, *, exact: bool = False, ef: int | None = None) -> list[RankedIds]:
        """`search_batch` with no payload asked of the engine and no `Hit` made: ids and scores read
        straight off its answer (`Store.search_ids`)."""
        qe = _edge()
        self._check_vector_name(vector_name)
        self._warn_unindexed(filter)
        flt, params = _edge_filter(filter), self._params(exact, ef)
        reqs = [qe.QueryRequest(limit=k, query=qe.Query.Nearest(_as_vector(v).tolist(), using=vector_name),
                                filter=flt, params=params, with_payload=False, with_vector=False) for v in vectors]
        names: dict[int, PointId] = {}  # the queries of a batch meet the same points: each id turned into a str once
        if len(reqs) == 1:
            return [_edge_ranked(self._live().query(reqs[0]), names)]
        return [_edge_ranked(r, names) for r in self._live().query_batch(qe.QueryBatchRequest(reqs))]

    def prefetch_batch(self, prefetches: Sequence[Prefetch], filter: Filter | None = None, *, exact: bool = False,
                       ef: int | None = None, with_payload: bool = True) -> list[list[Hit]]:
        qe = _edge()
        if not prefetches:
            return []
        flt = _edge_filter(filter)
        params = self._params(exact, ef)
        reqs = [qe.QueryRequest(limit=p.limit, query=qe.Query.Nearest(_as_vector(p.vector).tolist(), using=p.vector_name),
                                filter=flt, params=params, with_payload=with_payload, with_vector=False)
                for p in prefetches]
        res = self._live().query_batch(qe.QueryBatchRequest(reqs))
        return [[_edge_hit(p) for p in r] for r in res]

    def search_fused(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int = 10,
                     filter: Filter | None = None, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
                     exact: bool = False, ef: int | None = None, with_payload: bool = True) -> list[Hit]:
        return [_edge_hit(p) for p in self._fused_query(prefetches, k, filter, fusion, rrf_k, exact, ef, with_payload)]

    def search_fused_ids(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int = 10,
                         filter: Filter | None = None, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
                         exact: bool = False, ef: int | None = None) -> RankedIds:
        """`search_fused` read as ids and scores, with no payload (`Store.search_fused_ids`)."""
        return _edge_ranked(self._fused_query(prefetches, k, filter, fusion, rrf_k, exact, ef, False), {})

    def _fused_query(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int,
                     filter: Filter | None, fusion: FusionKind, rrf_k: int, exact: bool, ef: int | None,
                     with_payload: bool) -> list[Any]:
        """The engine's answer to one fused query (prefetches fused in one Query API call), ties in the
        order of their ids: the engine orders equal fused scores (common with RRF, which reads only ranks)
        differently from run to run, so it is asked for one more hit per list and the cut is made here."""
        qe = _edge()
        pfs, weights = self._fused_prefetches(prefetches, filter, fusion)
        flt = _edge_filter(filter)
        params = self._params(exact, ef)
        fuse = qe.Fusion.Dbsf() if fusion == "dbsf" else qe.Fusion.Rrf(k=rrf_k, weights=weights)
        req = qe.QueryRequest(
            limit=k + len(pfs), query=fuse, filter=flt, with_payload=with_payload,
            prefetches=[qe.Prefetch(limit=p.limit, query=qe.Query.Nearest(_as_vector(p.vector).tolist(),
                                                                           using=p.vector_name),
                                    filter=flt, params=params) for p in pfs],
        )
        return sorted(self._live().query(req), key=_score_then_id)[:k]


def set_aside(path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Move an embedded store's own files (its description and shard) from `path` into `dest`,
    so a damaged store is kept for inspection while a new one is built in its place. Returns
    the moved paths (at their new place); nothing else of the index folder is touched."""
    moved = []
    Path(dest).mkdir(parents=True, exist_ok=True)
    for name in (EdgeStore.META_FILE, EdgeStore.SHARD_DIR, PARTS_DIR):
        src = Path(path) / name
        if src.exists():
            moved.append(Path(dest) / name)
            os.replace(src, moved[-1])
    return moved


class StoreInUseError(EmergentBridgeError):
    """Another process has the embedded store open (the engine allows one process per store)."""


def store_holders(index_dir: str | os.PathLike[str]) -> list[int]:
    """Pids of this user's processes with a file of the embedded store of `index_dir` open
    (its `shard/` or `modalities/` folder; Linux /proc; empty elsewhere)."""
    root = Path(index_dir).resolve()
    prefixes = (*(str(root / d) + "/" for d in (EdgeStore.SHARD_DIR, PARTS_DIR)),
                str(root / EdgeStore.LOCK_FILE))
    me, found = os.getpid(), []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(proc.name)
            if pid != me and any(os.readlink(fd).startswith(prefixes) for fd in (proc / "fd").iterdir()):
                found.append(pid)
        except (OSError, ValueError):
            continue
    return sorted(found)


def in_use_error(index_dir: str | os.PathLike[str], exc: Exception) -> Exception:
    """Another holder of the store (the engine's "failed to open WAL ... WouldBlock", or the store's
    lock file: `_lock_store`) as one sentence naming the holder; any other error as it is."""
    if not isinstance(exc, _StoreLocked) and "WouldBlock" not in str(exc):
        return exc
    holders = store_holders(index_dir)
    who = f"pid {', '.join(map(str, holders))}" if holders else "pid unknown"
    return StoreInUseError(
        f"index {index_dir} is in use by another process ({who}): an `ebridge index`, `ebridge search`, "
        "`ebridge serve` or a Python session with Index.open. The embedded store opens in one process "
        "at a time: wait for it to finish or close it, then retry (serve the index with `ebridge serve` "
        "to search it from several clients).")



def _edge_memory(where: str | None) -> Any:
    qe = _edge()
    return {None: None, "ram": qe.Memory.Pinned, "cold": qe.Memory.Cold, "cached": qe.Memory.Cached}[where]


def _edge_index_schema(kind: str, hnsw_links: bool = True, memory: str | None = None) -> Any:
    """The engine's index params; `hnsw_links` False keeps the field out of the payload_m links,
    `memory` places the index of optimized segments ("cold": mmap)."""
    qe = _edge()
    enable = None if hnsw_links else False
    mem = _edge_memory(memory)
    if kind == "prefix":
        return qe.KeywordIndexParams(prefix=True, enable_hnsw=enable, memory=mem)
    if enable is None and mem is None:
        return {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer,
                "float": qe.PayloadSchemaType.Float}[kind]
    if kind == "keyword":
        return qe.KeywordIndexParams(enable_hnsw=enable, memory=mem)
    if kind == "integer":
        return qe.IntegerIndexParams(lookup=True, range=True, enable_hnsw=enable, memory=mem)
    return qe.FloatIndexParams(enable_hnsw=enable, memory=mem)


def _edge_condition(key: str, value: FilterValue) -> Any:
    qe = _edge()
    if isinstance(value, Range):
        return qe.FieldCondition(key, range=qe.RangeFloat(gte=value.gte, gt=value.gt, lte=value.lte, lt=value.lt))
    if isinstance(value, (str, int, bool)):
        return qe.FieldCondition(key, match=qe.MatchValue(value))
    if isinstance(value, Sequence):
        return qe.FieldCondition(key, match=qe.MatchAny(list(_match_values(key, value))))
    raise TypeError(f"filter on {key!r}: {value!r} is not a str/int/bool, a list of them or a Range "
                    "(floats only match through Range)")


def _edge_filter(f: Filter | None) -> Any:
    if f is None:
        return None
    qe = _edge()
    must = [_edge_condition(k, v) for k, v in f.must.items()]
    if f.path_prefix is not None:
        must.append(qe.FieldCondition("path", match=qe.MatchPrefix(f.path_prefix)))
    must_not = [_edge_condition(k, v) for k, v in f.must_not.items()]
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def _edge_record(r: Any) -> Record:
    return Record(_normalize_id(r.id), dict(r.payload or {}), _vectors_out(r.vector))


def _edge_id(pid: Any) -> PointId:
    """An id the engine answers (uuid.UUID or int: already valid, only the UUID needs its string)."""
    return str(pid) if isinstance(pid, uuid.UUID) else _normalize_id(pid)


def _edge_hit(p: Any) -> Hit:
    return Hit(_edge_id(p.id), float(p.score), dict(p.payload or {}), _vectors_out(p.vector))


def _score_then_id(point: Any) -> tuple:
    """Best score first, equal scores by id (UUIDs by their int, fast; ints; then strings)."""
    pid = point.id
    if pid.__class__ is uuid.UUID:
        return (-point.score, 1, pid.int)
    return (-point.score, 0, pid) if isinstance(pid, int) else (-point.score, 2, str(pid))


def _edge_ranked(points: Sequence[Any], names: dict[int, PointId]) -> RankedIds:
    """The engine's answer as ids and scores; `names` memoises `_edge_id` (a UUID's str is most of the cost)."""
    ids = []
    for p in points:
        pid = p.id
        if pid.__class__ is not uuid.UUID:
            ids.append(_normalize_id(pid))
            continue
        name = names.get(pid.int)  # keyed by its int: a UUID's own hash and == run in Python
        if name is None:
            name = names[pid.int] = str(pid)
        ids.append(name)
    return RankedIds(ids, np.fromiter((p.score for p in points), np.float64, len(points)))
