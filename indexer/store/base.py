"""The store interface (`Store`) and the helpers both backends share.

Use a store as a context manager so it is flushed and closed; open one with
`indexer.store.open_store`, the one factory.
"""
from __future__ import annotations

import abc
import dataclasses
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Self

import numpy as np

from indexer.store.types import (DEFAULT_RRF_K, CollectionSpec, Filter, FusionKind, Hit, MatchValue, Point,
                                 PointId, Prefetch, RankedIds, Record, StoreInfo, VectorLike)

log = logging.getLogger(__name__)


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


def _match_values(key: str, values: Sequence[Any]) -> list[MatchValue]:
    vals = list(values)
    if not vals:
        raise ValueError(f"filter on {key!r}: empty list of values matches nothing; drop the condition")
    if not (all(isinstance(v, str) for v in vals) or all(isinstance(v, int) and not isinstance(v, bool) for v in vals)):
        raise TypeError(f"filter on {key!r}: a list must be all strings or all ints, got {vals!r}")
    return vals


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
    # Whether a named vector can be declared after points were written (`PartitionedStore.add_vectors`, rebuilding what
    # was built without it): the indexer declares a vector its bridge cannot fill only where it cannot.
    grows_vectors = False

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

    def pending(self) -> int:
        """Points written since the optimizer last ran here (0 where the backend optimizes on its own)."""
        return 0

    def optimize_pending(self) -> None:
        """Index what was written since the optimizer last ran, as one bounded chunk (no merge pass);
        a no-op where the backend optimizes on its own (a server)."""
        return None

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
        self, ids: Sequence[PointId], *, with_vectors: bool | Sequence[str] = False, with_payload: bool = True
    ) -> list[Record]:
        """Points by id, in the order asked; missing ids are left out. ``with_payload=False`` reads no
        payload (records get ``{}``), which works even where a payload page is garbled."""

    def present_ids(self, ids: Sequence[PointId]) -> list[PointId]:
        """Which of `ids` (canonical: see `_normalize_id`) the store holds, in no set order. The check
        a per-modality store runs on every write (is this point in another partition?), so a backend
        may answer it without building records."""
        return [r.id for r in self.retrieve(ids, with_payload=False)]

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
        """Iterate over all (matching) points, ``page`` at a time, in id order (a per-modality
        store: partition by partition, id order within each)."""

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

    def search_ids(self, vector_name: str, vectors: Sequence[VectorLike] | np.ndarray, k: int = 10,
                   filter: Filter | None = None, *, exact: bool = False, ef: int | None = None) -> list[RankedIds]:
        """:meth:`search_batch` as ids and scores only, one `RankedIds` per query: the same ranking with
        no payload read and no `Hit` made per point (an evaluation ranks whole galleries). Backends
        with a leaner way to the engine's answer override it.

        Example::

            ranked = store.search_ids("bridged", queries, k=1000, filter=Filter(must={"modality": "depth"}))
            ranked[0].ids[:3], ranked[0].scores[:3]
        """
        return [RankedIds.of(hits) for hits in self.search_batch(vector_name, vectors, k, filter, exact=exact, ef=ef,
                                                                 with_payload=False)]

    def search_fused_ids(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int = 10,
                         filter: Filter | None = None, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
                         exact: bool = False, ef: int | None = None) -> RankedIds:
        """:meth:`search_fused` as ids and scores only (see :meth:`search_ids`)."""
        return RankedIds.of(self.search_fused(prefetches, k, filter, fusion=fusion, rrf_k=rrf_k, exact=exact, ef=ef,
                                              with_payload=False))

    def prefetch_batch(self, prefetches: Sequence[Prefetch], filter: Filter | None = None, *, exact: bool = False,
                       ef: int | None = None, with_payload: bool = True) -> list[list[Hit]]:
        """Each prefetch's own nearest ``limit`` points, unfused (what a partitioned store fuses
        across partitions). Backends answer in one batched call; this fallback makes one per prefetch."""
        return [self.search(p.vector_name, p.vector, p.limit, filter, exact=exact, ef=ef, with_payload=with_payload)
                for p in prefetches]

    # -- shared helpers ----------------------------------------------------------

    def _require_spec(self) -> CollectionSpec:
        if self._spec is None:
            raise RuntimeError(f"{self!r}: no collection yet; call create(spec) first")
        return self._spec

    def _fused_prefetches(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]],
                          filter: Filter | None, fusion: FusionKind) -> tuple[list[Prefetch], list[float] | None]:
        """The prefetches of a fused search, checked, and the fusion weights to send (both backends)."""
        pfs = [Prefetch(*p) for p in prefetches]
        if not pfs:
            raise ValueError("search_fused needs at least one prefetch")
        for p in pfs:
            self._check_vector_name(p.vector_name)
        self._warn_unindexed(filter)
        return pfs, _check_weights(pfs, fusion)

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
    acorn = None
    if spec.acorn_max_selectivity is not None:  # only filtered searches at most this selective use it
        acorn = models.AcornSearchParams(enable=True, max_selectivity=spec.acorn_max_selectivity)
    return models.SearchParams(hnsw_ef=ef if ef is not None else spec.hnsw_ef, exact=exact, quantization=quant,
                               acorn=acorn)


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

