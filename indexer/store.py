"""Storage layer: one small typed interface over two real Qdrant backends.

* :class:`EdgeStore` (the default) runs the Qdrant engine in-process through
  ``qdrant-edge-py`` and persists under an index folder.
* :class:`ServerStore` talks to a Qdrant server or cluster through ``qdrant-client``
  (Query API only). ``ServerStore.memory()`` / ``ServerStore.local(path)`` use the
  client's local mode, which exercises the same client calls a server gets.

Every ``qdrant_edge`` / ``qdrant_client`` import lives in this file, so a client
release that renames things touches only this module. Callers see only the plain
types below (:class:`CollectionSpec`, :class:`Point`, :class:`Filter`, :class:`Hit`, ...).

Example::

    from indexer.store import CollectionSpec, Filter, Point, open_store

    spec = CollectionSpec(vectors={"bridged": 256, "proxy": 256})
    with open_store("my-index", spec=spec) as store:
        store.upsert([Point(point_id("a.png"), {"bridged": v, "proxy": p}, {"modality": "image"})])
        store.optimize()
        hits = store.search("bridged", query, k=10, filter=Filter(must={"modality": "depth"}))
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Self, TypeAlias

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - import only for type checkers
    import qdrant_edge
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qm

log = logging.getLogger(__name__)

PointId: TypeAlias = str | int
"""A UUID string (what the indexer passes, see :func:`point_id`) or an unsigned int."""
VectorLike: TypeAlias = "Sequence[float] | np.ndarray"
MatchValue: TypeAlias = str | int | bool
IndexType = Literal["keyword", "prefix", "integer", "float"]
FusionKind = Literal["rrf", "dbsf"]

# Namespace for deterministic ids: one item identity always maps to the same point,
# so re-indexing a folder never duplicates and an interrupted run resumes.
ID_NAMESPACE = uuid.UUID("6f1c9d2e-5b8a-4c1e-9a57-0b6c2e8f4d31")

# Qdrant's default RRF constant (both the engine and qdrant-client's local mode use 2).
DEFAULT_RRF_K = 2

# Key under which ServerStore keeps the CollectionSpec inside the collection metadata;
# it is hidden from Store.metadata so users only see their own keys.
_SPEC_KEY = "__emergentbridge_store_spec__"


def point_id(identity: str) -> str:
    """Deterministic point id (UUID5 string) for an item identity such as its path.

    >>> point_id("photos/cat.png") == point_id("photos/cat.png")
    True
    """
    return str(uuid.uuid5(ID_NAMESPACE, identity))


# ---------------------------------------------------------------------------
# Plain types shared by every backend
# ---------------------------------------------------------------------------


@dataclass
class CollectionSpec:
    """What a collection holds and how it is indexed; saved with the collection.

    ``payload_indexes`` maps payload field -> index type: ``"keyword"``, ``"integer"``,
    ``"float"`` or ``"prefix"`` (a keyword index that also serves prefix matching,
    used for ``path`` so "everything under this folder" is an index lookup).

    ``shards``, ``replication`` and ``write_consistency`` only mean something on a
    server; the embedded store is one shard and ignores them.

    Example::

        spec = CollectionSpec(vectors={"bridged": 256, "proxy": 256}, quantization="int8",
                              metadata={"bridge_version": "v3"})
    """

    vectors: dict[str, int]
    payload_indexes: dict[str, IndexType] = field(
        default_factory=lambda: {"modality": "keyword", "label": "keyword", "path": "prefix"}
    )
    quantization: Literal["int8"] | None = None
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    # Search-time ef used when a call passes none; None lets Qdrant pick (ef_construct).
    hnsw_ef: int | None = None
    # With int8 quantization, fetch oversampling * k candidates and rescore them with the
    # original float vectors, which keeps recall@10 near the unquantized figure.
    oversampling: float = 2.0
    # Where the original float vectors live (embedded store): None/"ram" in memory,
    # "cold" on disk (mmap, read when needed: with int8 the graph walk never touches them,
    # only the rescoring of a few candidates does), "cached" on disk with a page cache.
    vectors_memory: Literal["ram", "cold", "cached"] | None = None
    # Below this many KB of vectors a segment is searched by brute force (Qdrant's unit).
    full_scan_threshold_kb: int = 10_000
    # Segments smaller than this (KB) get no HNSW graph; None keeps Qdrant's default.
    indexing_threshold_kb: int | None = None
    shards: int = 1
    replication: int = 1
    write_consistency: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.vectors:
            raise ValueError("CollectionSpec.vectors needs at least one named vector, e.g. {'bridged': 256}")
        for name, kind in self.payload_indexes.items():
            if kind not in ("keyword", "prefix", "integer", "float"):
                raise ValueError(
                    f"payload index {name!r}: unknown type {kind!r}; use keyword, prefix, integer or float"
                )
        if self.quantization not in (None, "int8"):
            raise ValueError(f"quantization {self.quantization!r} is not supported; use 'int8' or None")

    def to_json(self) -> dict[str, Any]:
        """The spec as plain JSON (metadata excluded: it is stored and updated separately)."""
        data = dataclasses.asdict(self)
        data.pop("metadata")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> CollectionSpec:
        """Inverse of :meth:`to_json`; unknown keys (from a newer release) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k != "metadata"}
        return cls(**kwargs, metadata=dict(metadata or {}))


@dataclass
class Point:
    """One item to store: its id, named vectors and payload.

    Example::

        Point(point_id("a.wav"), {"bridged": np.zeros(256, np.float32)}, {"modality": "audio"})
    """

    id: PointId
    vectors: dict[str, Any]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    """A stored point as read back by :meth:`Store.retrieve` or :meth:`Store.scroll`."""

    id: PointId
    payload: dict[str, Any]
    vectors: dict[str, np.ndarray] | None = None


@dataclass
class Hit:
    """One search result. Scores are cosine similarities (or fusion scores)."""

    id: PointId
    score: float
    payload: dict[str, Any]
    vectors: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Range:
    """Numeric range condition, e.g. ``Range(gte=2020, lt=2024)``."""

    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


FilterValue: TypeAlias = MatchValue | Sequence[MatchValue] | Range


@dataclass(frozen=True)
class Filter:
    """Our filter, translated to each backend's filter.

    ``must`` / ``must_not`` map a payload field to a value (exact match), a list of
    values (match any) or a :class:`Range`. ``path_prefix`` keeps points whose
    ``path`` starts with the given string (byte-wise; end it with ``/`` to mean a folder).

    Example::

        Filter(must={"modality": ["depth", "thermal"], "year": Range(gte=2020)},
               path_prefix="datasets/nyu/")
    """

    must: Mapping[str, FilterValue] = field(default_factory=dict)
    must_not: Mapping[str, FilterValue] = field(default_factory=dict)
    path_prefix: str | None = None

    def fields(self) -> set[str]:
        """Payload fields this filter reads."""
        out = set(self.must) | set(self.must_not)
        if self.path_prefix is not None:
            out.add("path")
        return out


class Prefetch(NamedTuple):
    """One source of a fused search: nearest ``limit`` points by ``vector_name``.

    ``weight`` scales this source in weighted RRF. A plain tuple
    ``("proxy", vec, 50, 0.5)`` works too.
    """

    vector_name: str
    vector: Any
    limit: int
    weight: float = 1.0


@dataclass
class StoreInfo:
    """What the backend reports about the collection."""

    points: int
    indexed_vectors: int
    segments: int | None
    payload_indexes: dict[str, str]


# ---------------------------------------------------------------------------
# Helpers shared by the backends
# ---------------------------------------------------------------------------


def _normalize_id(pid: Any) -> PointId:
    """Canonical id: lower-case UUID string or int. Rejects what Qdrant would reject."""
    if isinstance(pid, uuid.UUID):
        return str(pid)
    if isinstance(pid, bool):  # bool is an int subclass; never a sensible id
        raise ValueError(f"point id {pid!r} is a bool; use a UUID string or an unsigned int")
    if isinstance(pid, (int, np.integer)):
        if pid < 0:
            raise ValueError(f"point id {pid} is negative; Qdrant ids are unsigned ints or UUIDs")
        return int(pid)
    if isinstance(pid, str):
        try:
            return str(uuid.UUID(pid))
        except ValueError:
            raise ValueError(
                f"point id {pid!r} is not a UUID; derive one with indexer.store.point_id({pid!r})"
            ) from None
    raise TypeError(f"point id {pid!r} has type {type(pid).__name__}; use a UUID string or an int")


def _as_vector(v: Any) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-d vector, got shape {arr.shape}")
    return arr


def _vectors_out(raw: Any) -> dict[str, np.ndarray] | None:
    if not raw:
        return None
    if isinstance(raw, dict):
        return {name: np.asarray(v, dtype=np.float32) for name, v in raw.items()}
    return {"": np.asarray(raw, dtype=np.float32)}


def _check_weights(prefetches: Sequence[Prefetch], fusion: FusionKind) -> list[float] | None:
    weights = [float(p.weight) for p in prefetches]
    if any(w < 0 for w in weights):
        raise ValueError(f"fusion weights must be >= 0, got {weights}")
    if fusion == "dbsf":
        # Neither the engine nor qdrant-client has weighted DBSF; silently dropping the
        # weights would change the route's meaning, so refuse instead.
        if len(set(weights)) > 1:
            raise ValueError(
                f"DBSF fusion takes no weights in Qdrant (got {weights}); use fusion='rrf' "
                "for weighted fusion or give every prefetch the same weight"
            )
        return None
    if fusion != "rrf":
        raise ValueError(f"unknown fusion {fusion!r}; use 'rrf' or 'dbsf'")
    # Unweighted RRF is sent without weights so both backends take their plain path.
    return None if all(w == 1.0 for w in weights) else weights


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a crash leaves either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # fsync the directory so the rename itself survives a power cut.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _merge_metadata(dest: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Shallow merge where ``None`` deletes a key: the Qdrant server's own semantics."""
    for key, value in patch.items():
        if value is None:
            dest.pop(key, None)
        else:
            dest[key] = value
    return dest


# ---------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------


class Store(abc.ABC):
    """A collection of points with named vectors, payload indexes and metadata.

    Use as a context manager so the store is flushed and closed::

        with EdgeStore("my-index") as store:
            store.create(CollectionSpec(vectors={"bridged": 256}))
            store.upsert(points)
            store.optimize()
            hits = store.search("bridged", q, k=10)
    """

    _spec: CollectionSpec | None = None
    _warned_unindexed: set[str]

    # -- lifecycle -----------------------------------------------------------------

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the collection exists (created earlier, maybe by another process)."""

    @abc.abstractmethod
    def create(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        """Create the collection with its payload indexes; ``recreate`` drops an old one."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the backend; the store is unusable afterwards."""

    @abc.abstractmethod
    def optimize(self) -> None:
        """Merge segments and build HNSW graphs; call once at the end of an indexing run."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def spec(self) -> CollectionSpec:
        """The spec the collection was created with, metadata included."""
        if self._spec is None:
            raise RuntimeError(f"{self!r}: no collection yet; call create(spec) first")
        return dataclasses.replace(self._spec, metadata=self.metadata)

    # -- metadata ----------------------------------------------------------------

    @property
    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """Free JSON stored with the collection (preset, bridge version, route table...)."""

    @abc.abstractmethod
    def update_metadata(self, patch: Mapping[str, Any]) -> None:
        """Shallow-merge ``patch`` into the metadata; a ``None`` value removes that key."""

    # -- writes ------------------------------------------------------------------

    @abc.abstractmethod
    def upsert(self, points: Iterable[Point], batch: int = 256) -> int:
        """Insert or replace points (same id -> one point), ``batch`` per call; returns the count."""

    @abc.abstractmethod
    def delete(self, ids: Iterable[PointId]) -> None:
        """Delete points by id; unknown ids are ignored."""

    # -- reads -------------------------------------------------------------------

    @abc.abstractmethod
    def retrieve(
        self, ids: Sequence[PointId], *, with_vectors: bool | Sequence[str] = False
    ) -> list[Record]:
        """Points by id, in the order asked; missing ids are left out."""

    @abc.abstractmethod
    def count(self, filter: Filter | None = None) -> int:
        """Exact number of points, optionally matching ``filter``."""

    @abc.abstractmethod
    def scroll(
        self,
        filter: Filter | None = None,
        *,
        with_payload: bool = True,
        with_vectors: bool | Sequence[str] = False,
        page: int = 1024,
    ) -> Iterator[Record]:
        """Iterate over all (matching) points, ``page`` at a time, in id order."""

    @abc.abstractmethod
    def info(self) -> StoreInfo:
        """Point counts, segments and the payload indexes the backend reports."""

    # -- search ------------------------------------------------------------------

    def search(
        self,
        vector_name: str,
        vector: VectorLike,
        k: int = 10,
        filter: Filter | None = None,
        *,
        exact: bool = False,
        ef: int | None = None,
        with_payload: bool = True,
        with_vectors: bool | Sequence[str] = False,
    ) -> list[Hit]:
        """Top-``k`` points by cosine similarity of ``vector_name`` to ``vector``.

        Example::

            store.search("bridged", q, k=10, filter=Filter(must={"modality": "audio"}))
        """
        return self.search_batch(
            vector_name, [vector], k, filter, exact=exact, ef=ef,
            with_payload=with_payload, with_vectors=with_vectors,
        )[0]

    @abc.abstractmethod
    def search_batch(
        self,
        vector_name: str,
        vectors: Sequence[VectorLike] | np.ndarray,
        k: int = 10,
        filter: Filter | None = None,
        *,
        exact: bool = False,
        ef: int | None = None,
        with_payload: bool = True,
        with_vectors: bool | Sequence[str] = False,
    ) -> list[list[Hit]]:
        """:meth:`search` for many query vectors in one backend call; one list per query."""

    @abc.abstractmethod
    def search_fused(
        self,
        prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]],
        k: int = 10,
        filter: Filter | None = None,
        *,
        fusion: FusionKind = "rrf",
        rrf_k: int = DEFAULT_RRF_K,
        exact: bool = False,
        ef: int | None = None,
        with_payload: bool = True,
    ) -> list[Hit]:
        """Several nearest-neighbour searches fused into one ranking, in ONE Query API call.

        ``fusion="rrf"`` honours per-prefetch weights (weighted RRF: a hit at rank r
        scores ``1 / ((r + 1) / weight + rrf_k - 1)``); ``fusion="dbsf"`` has no
        weights in Qdrant and refuses unequal ones. ``filter`` applies to every prefetch.

        Example::

            store.search_fused([("bridged", q, 50, 1.0), ("proxy", g_q, 50, 0.5)], k=10)
        """

    # -- shared helpers ----------------------------------------------------------

    def _require_spec(self) -> CollectionSpec:
        if self._spec is None:
            raise RuntimeError(f"{self!r}: no collection yet; call create(spec) first")
        return self._spec

    def _check_vector_name(self, name: str) -> None:
        spec = self._require_spec()
        if name not in spec.vectors:
            raise KeyError(f"unknown vector {name!r}; this collection has {sorted(spec.vectors)}")

    def _warn_unindexed(self, filter: Filter | None) -> None:
        """Filtering on an unindexed field works but scans payloads: say so once per field."""
        if filter is None:
            return
        spec = self._require_spec()
        if not hasattr(self, "_warned_unindexed"):
            self._warned_unindexed = set()
        for name in filter.fields() - set(spec.payload_indexes) - self._warned_unindexed:
            self._warned_unindexed.add(name)
            log.warning("filter on payload field %r has no payload index: it will scan payloads; "
                        "add it to CollectionSpec.payload_indexes", name)
        if filter.path_prefix is not None and spec.payload_indexes.get("path") not in ("prefix", None):
            if "path:prefix" not in self._warned_unindexed:
                self._warned_unindexed.add("path:prefix")
                log.warning("path_prefix filter but 'path' is indexed as %r, not 'prefix'",
                            spec.payload_indexes["path"])

    def _prepare_points(self, points: Iterable[Point]) -> Iterator[Point]:
        spec = self._require_spec()
        for p in points:
            pid = _normalize_id(p.id)
            # Both backends take plain float lists fastest (measured: numpy arrays are ~2x
            # slower through qdrant-edge), so convert exactly once here.
            vecs: dict[str, list[float]] = {}
            for name, v in p.vectors.items():
                if name not in spec.vectors:
                    raise KeyError(f"point {pid}: unknown vector {name!r}; collection has {sorted(spec.vectors)}")
                vec = v if isinstance(v, list) else _as_vector(v).tolist()
                if len(vec) != spec.vectors[name]:
                    raise ValueError(
                        f"point {pid}: vector {name!r} has {len(vec)} dims, collection expects "
                        f"{spec.vectors[name]}"
                    )
                vecs[name] = vec
            yield Point(pid, vecs, p.payload)

    def _order_records(self, ids: Sequence[PointId], records: list[Record]) -> list[Record]:
        by_id = {r.id: r for r in records}
        out = []
        for pid in ids:
            rec = by_id.get(_normalize_id(pid))
            if rec is not None:
                out.append(rec)
        return out


def _search_params(models: Any, spec: CollectionSpec, exact: bool, ef: int | None) -> Any:
    """Search parameters; both client libraries name these types and fields alike."""
    quant = None
    if spec.quantization is not None:  # int8 candidates are always rescored with the float vectors
        quant = models.QuantizationSearchParams(rescore=True, oversampling=spec.oversampling)
    return models.SearchParams(hnsw_ef=ef if ef is not None else spec.hnsw_ef, exact=exact, quantization=quant)


def _batched(items: Iterable[Point], size: int) -> Iterator[list[Point]]:
    if size < 1:
        raise ValueError(f"batch must be >= 1, got {size}")
    chunk: list[Point] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------
# Embedded backend: qdrant-edge-py
# ---------------------------------------------------------------------------


def _edge() -> Any:
    try:
        import qdrant_edge
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise ImportError("the embedded store needs qdrant-edge-py: pip install 'qdrant-edge-py==0.9.0'") from e
    return qdrant_edge


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

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._shard: Any = None
        self._meta: dict[str, Any] = {}
        self._warned_unindexed = set()
        if self.exists():
            self._load()

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
            raise RuntimeError(
                f"{self._meta_path}: unreadable store description ({e}); restore it from a backup "
                "or re-index into a fresh folder"
            ) from e
        self._shard = qe.EdgeShard.load(str(self._shard_path))
        log.info("opened embedded store %s (%d points)", self.path, self._shard.info().points_count)

    def _edge_config(self, spec: CollectionSpec) -> Any:
        qe = _edge()
        quant = None
        if spec.quantization == "int8":
            # Pinned: quantized vectors stay in RAM, the originals (for rescoring) may page.
            quant = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
        optimizers = None
        if spec.indexing_threshold_kb is not None:
            optimizers = qe.EdgeOptimizersConfig(indexing_threshold=spec.indexing_threshold_kb)
        memory = {None: None, "ram": qe.Memory.Pinned, "cold": qe.Memory.Cold, "cached": qe.Memory.Cached}[spec.vectors_memory]
        return qe.EdgeConfig(
            vectors={name: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, memory=memory)
                     for name, dim in spec.vectors.items()},
            hnsw_config=qe.HnswIndexConfig(
                m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construct,
                full_scan_threshold=spec.full_scan_threshold_kb,
            ),
            quantization_config=quant,
            optimizers=optimizers,
        )

    def create(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        qe = _edge()
        if self._shard_path.exists() and any(self._shard_path.iterdir()):
            if not recreate:
                raise FileExistsError(
                    f"{self._shard_path} already holds a shard; open it with EdgeStore({str(self.path)!r}) "
                    "or pass recreate=True to drop it"
                )
            self._drop()
        self._shard = qe.EdgeShard.create(str(self._shard_path), self._edge_config(spec))
        for name, kind in spec.payload_indexes.items():
            self._shard.update(qe.UpdateOperation.create_field_index(name, _edge_index_schema(kind)))
        self._spec = dataclasses.replace(spec, metadata={})
        self._meta = dict(spec.metadata)
        self._save_meta()
        log.info("created embedded store %s: vectors=%s quantization=%s", self.path, spec.vectors, spec.quantization)

    def _drop(self) -> None:
        import shutil

        if self._shard is not None:
            self._shard.close()
            self._shard = None
        shutil.rmtree(self._shard_path)
        self._meta_path.unlink(missing_ok=True)

    def _save_meta(self) -> None:
        _write_json_atomic(self._meta_path, {"spec": self._require_spec().to_json(), "metadata": self._meta})

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

    def optimize(self) -> None:
        t0 = time.perf_counter()
        changed = self._live().optimize()
        self._shard.flush()
        log.info("optimized %s in %.1fs (changed=%s)", self.path, time.perf_counter() - t0, changed)

    def upsert(self, points: Iterable[Point], batch: int = 256) -> int:
        qe = _edge()
        shard = self._live()
        n = 0
        for chunk in _batched(self._prepare_points(points), batch):
            ops = [qe.Point(p.id, p.vectors, p.payload) for p in chunk]
            shard.update(qe.UpdateOperation.upsert_points(ops))
            n += len(chunk)
        return n

    def delete(self, ids: Iterable[PointId]) -> None:
        qe = _edge()
        id_list = [_normalize_id(i) for i in ids]
        if id_list:
            self._live().update(qe.UpdateOperation.delete_points(id_list))

    def retrieve(self, ids: Sequence[PointId], *, with_vectors: bool | Sequence[str] = False) -> list[Record]:
        norm = [_normalize_id(i) for i in ids]
        wv = with_vectors if isinstance(with_vectors, bool) else list(with_vectors)
        recs = self._live().retrieve(norm, True, wv)
        return self._order_records(norm, [_edge_record(r) for r in recs])

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

    def search_fused(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int = 10,
                     filter: Filter | None = None, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
                     exact: bool = False, ef: int | None = None, with_payload: bool = True) -> list[Hit]:
        qe = _edge()
        pfs = [Prefetch(*p) for p in prefetches]
        if not pfs:
            raise ValueError("search_fused needs at least one prefetch")
        for p in pfs:
            self._check_vector_name(p.vector_name)
        self._warn_unindexed(filter)
        weights = _check_weights(pfs, fusion)
        flt = _edge_filter(filter)
        params = self._params(exact, ef)
        fuse = qe.Fusion.Dbsf() if fusion == "dbsf" else qe.Fusion.Rrf(k=rrf_k, weights=weights)
        req = qe.QueryRequest(
            limit=k, query=fuse, filter=flt, with_payload=with_payload,
            prefetches=[qe.Prefetch(limit=p.limit, query=qe.Query.Nearest(_as_vector(p.vector).tolist(),
                                                                           using=p.vector_name),
                                    filter=flt, params=params) for p in pfs],
        )
        return [_edge_hit(p) for p in self._live().query(req)]


def _edge_index_schema(kind: str) -> Any:
    qe = _edge()
    if kind == "prefix":
        return qe.KeywordIndexParams(prefix=True)
    return {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer,
            "float": qe.PayloadSchemaType.Float}[kind]


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


def _match_values(key: str, values: Sequence[Any]) -> list[MatchValue]:
    vals = list(values)
    if not vals:
        raise ValueError(f"filter on {key!r}: empty list of values matches nothing; drop the condition")
    if not (all(isinstance(v, str) for v in vals) or all(isinstance(v, int) and not isinstance(v, bool) for v in vals)):
        raise TypeError(f"filter on {key!r}: a list must be all strings or all ints, got {vals!r}")
    return vals


def _edge_record(r: Any) -> Record:
    return Record(_normalize_id(r.id), dict(r.payload or {}), _vectors_out(r.vector))


def _edge_hit(p: Any) -> Hit:
    return Hit(_normalize_id(p.id), float(p.score), dict(p.payload or {}), _vectors_out(p.vector))


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
        self.client = client
        self.collection = collection
        self._warned_unindexed = set()
        # Local mode ignores payload indexes and search params and warns each call; those
        # warnings are expected there (it is a test double for the server), so we mute them.
        self._is_local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"
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
        self._meta_cache = {k: v for k, v in meta.items() if k != _SPEC_KEY}

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
        if spec.indexing_threshold_kb is not None:
            optimizers = m.OptimizersConfigDiff(indexing_threshold=spec.indexing_threshold_kb)
        self._call(
            self.client.create_collection,
            self.collection,
            vectors_config={name: m.VectorParams(size=dim, distance=m.Distance.COSINE)
                            for name, dim in spec.vectors.items()},
            shard_number=spec.shards,
            replication_factor=spec.replication,
            write_consistency_factor=spec.write_consistency,
            hnsw_config=m.HnswConfigDiff(m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construct,
                                         full_scan_threshold=spec.full_scan_threshold_kb),
            optimizers_config=optimizers,
            quantization_config=quant,
            metadata={**spec.metadata, _SPEC_KEY: spec.to_json()},
        )
        for name, kind in spec.payload_indexes.items():
            self._call(self.client.create_payload_index, self.collection, name,
                       field_schema=_client_index_schema(kind), wait=True)
        self._spec = dataclasses.replace(spec, metadata={})
        self._meta_cache = json.loads(json.dumps(spec.metadata))
        log.info("created collection %r: vectors=%s shards=%d replication=%d", self.collection,
                 spec.vectors, spec.shards, spec.replication)

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

    def retrieve(self, ids: Sequence[PointId], *, with_vectors: bool | Sequence[str] = False) -> list[Record]:
        norm = [_normalize_id(i) for i in ids]
        wv = with_vectors if isinstance(with_vectors, bool) else list(with_vectors)
        recs = self._call(self.client.retrieve, self.collection, norm, with_payload=True, with_vectors=wv)
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

    def search_fused(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int = 10,
                     filter: Filter | None = None, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
                     exact: bool = False, ef: int | None = None, with_payload: bool = True) -> list[Hit]:
        m = _client_models()
        pfs = [Prefetch(*p) for p in prefetches]
        if not pfs:
            raise ValueError("search_fused needs at least one prefetch")
        for p in pfs:
            self._check_vector_name(p.vector_name)
        self._warn_unindexed(filter)
        weights = _check_weights(pfs, fusion)
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


def _client_index_schema(kind: str) -> Any:
    m = _client_models()
    if kind == "prefix":
        return m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, prefix=True)
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


# ---------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------


def open_store(index_dir: str | os.PathLike[str], url: str | None = None, collection: str = "emergentbridge",
               spec: CollectionSpec | None = None, *, api_key: str | None = None) -> Store:
    """Open the store of an index: embedded under ``index_dir``, or on the server at ``url``.

    With ``spec``, a missing collection is created and an existing one is checked
    against it (same named vectors and sizes). ``url=":memory:"`` gives local mode.

    Example::

        store = open_store("my-index", spec=CollectionSpec(vectors={"bridged": 256}))
        store = open_store("my-index", url="http://localhost:6333", collection="digits")
    """
    store: Store = EdgeStore(index_dir) if url is None else ServerStore(url, collection, api_key=api_key)
    if store.exists():
        if spec is not None and store._require_spec().vectors != spec.vectors:
            where = index_dir if url is None else f"{url} collection {collection!r}"
            raise ValueError(
                f"{where}: stored vectors {store._require_spec().vectors} differ from the requested "
                f"{spec.vectors}; index into a fresh folder/collection or recreate it"
            )
    elif spec is not None:
        store.create(spec)
    else:
        where = index_dir if url is None else f"{url} collection {collection!r}"
        raise FileNotFoundError(f"{where}: no store there; pass a CollectionSpec to create one")
    return store
