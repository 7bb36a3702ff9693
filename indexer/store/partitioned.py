"""One index, one HNSW graph per modality: a store made of one partition (sub-store) per modality.

Every cross-modal query names its target modality, so every search the engine runs is filtered by
``modality``. In one shared graph that filter makes the walk skip four points in five (and, without
payload links, needs ACORN's two-hop walk to stay correct), which is where the store lost to a
FAISS index per modality (issue 22). Here each modality's points live in their own sub-store
(an embedded shard, or a server collection), so a search of one modality walks only that
modality's graph, unfiltered:

* ``modality == m`` (what `Index.search` sends): one call to partition ``m``, the condition dropped
  (every point there matches it).
* several modalities, or none: one call per partition, merged by score (cosine scores of one named
  vector are comparable across partitions, so the merge is exact).
* fused search of one modality: one Query API call (prefetch + fusion) to that partition. Of
  several: one batched call per partition holding every prefetch, the lists merged per prefetch to
  the global top ``limit``, then fused here exactly as the engine fuses (weighted RRF / DBSF), so the
  answer equals the one-collection answer.

To the user it is still one store: one folder (or one manifest collection), one spec, one metadata,
one `Store` interface. Partitions are created on the first point of their modality, so a modality a
new bridge adds later gets its own graph then. A partition appears whole or not at all (an embedded
one is built aside and renamed into place), is listed in the manifest only once whole, and gets points
only once listed: a run killed anywhere in between leaves nothing the next run cannot open (`_part`). Named vectors ``raw_<modality>`` (an encoder's own
features, carried only by that modality's points) are declared only in that modality's partition;
other named vectors in every partition (a point may lack a declared named vector: the engine stores
and searches only the points that carry it).

Subclasses say where the manifest and the partitions live: `indexer.store.edge_partitioned.PartitionedEdgeStore`
(folders) and `indexer.store.server.PartitionedServerStore` (collections).
"""
from __future__ import annotations

import abc
import dataclasses
import heapq
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from indexer.faults import crash_point
from indexer.store.base import Store, _merge_metadata, _normalize_id
from indexer.store.types import (DEFAULT_RRF_K, CollectionSpec, Filter, FusionKind, Hit, Point, PointId,
                                 Prefetch, RankedIds, Record, StoreInfo, StoreUnreadableError, VectorLike)

log = logging.getLogger(__name__)

PARTITION_KEY = "modality"
LAYOUT = "per-modality"
RAW_PREFIX = "raw_"


def partition_vectors(spec_vectors: Mapping[str, int], partition: str) -> dict[str, int]:
    """The named vectors a partition declares: every vector, except ``raw_<other modality>``.

    Example:
        >>> partition_vectors({"bridged": 8, "raw_image": 1280, "raw_audio": 96}, "audio")
        {'bridged': 8, 'raw_audio': 96}
    """
    return {name: dim for name, dim in spec_vectors.items()
            if not name.startswith(RAW_PREFIX) or name == RAW_PREFIX + partition}


class PartitionedStore(Store):
    """A store whose points are split by ``payload["modality"]`` into one sub-store per value.

    Subclasses implement the hooks below (manifest I/O, opening, making and dropping partitions);
    everything else (routing writes, fanning out reads and searches, merging) is here.
    """

    _parts: dict[str, Store]
    _manifest: dict[str, Any]

    # -- hooks -------------------------------------------------------------------

    @abc.abstractmethod
    def _read_manifest(self) -> dict[str, Any] | None:
        """The saved manifest (spec, metadata, partitions), or None when there is no store."""

    @abc.abstractmethod
    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        """Save the manifest durably."""

    @abc.abstractmethod
    def _part_store(self, name: str) -> Store:
        """The sub-store object of partition `name` (opened if it exists, not yet created otherwise)."""

    @abc.abstractmethod
    def _drop_storage(self) -> None:
        """Delete every partition and the manifest (recreate)."""

    def _close_part(self, store: Store) -> None:
        store.close()

    # -- lifecycle ---------------------------------------------------------------

    def _init_partitions(self) -> None:
        self._parts = {}
        self._manifest = {}
        self._warned_unindexed = set()
        self._since_optimize = 0  # points upserted (all partitions) since the optimizer last ran
        self._since_optimize_bytes = 0  # their vectors' bytes, as their partitions declare them
        manifest = self._read_manifest()
        if manifest is not None:
            self._adopt(manifest)

    def _adopt(self, manifest: dict[str, Any]) -> None:
        try:
            self._spec = CollectionSpec.from_json(manifest["spec"])
            manifest.setdefault("metadata", {})
            manifest.setdefault("partitions", {})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreUnreadableError(f"{self!r}: unreadable store manifest ({type(e).__name__}: {e})") from e
        self._manifest = manifest

    def exists(self) -> bool:
        return bool(self._manifest) or self._read_manifest() is not None

    def create(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        if self.exists():
            if not recreate:
                raise FileExistsError(f"{self!r} already holds a store; open it, or pass recreate=True to drop it")
            self._close_parts()
            self._drop_storage()
        self._spec = dataclasses.replace(spec, metadata={})
        self._manifest = {"layout": LAYOUT, "partition_key": PARTITION_KEY, "spec": self._spec.to_json(),
                          "metadata": json.loads(json.dumps(spec.metadata)), "partitions": {}}
        self._write_manifest(self._manifest)
        log.info("created %r: one graph per %s, vectors=%s", self, PARTITION_KEY, spec.vectors)

    def partitions(self) -> list[str]:
        """Names of the partitions created so far (the modalities that have had points), sorted."""
        return sorted(self._manifest.get("partitions", {}))

    def _part(self, name: str, create: bool = False) -> Store | None:
        """Partition `name`, opened on first use (so opening the index reads only the manifest);
        None if it does not exist and `create` is False.

        A partition is listed in the manifest only once it is whole, and gets points only once it is
        listed. So a listed partition that cannot be opened is damage (`StoreUnreadableError`: the
        indexer sets the store aside and rebuilds it), while an unlisted one, half-made by a run killed
        while creating it, holds no point anyone recorded: it is made anew (or, whole, adopted)."""
        store = self._parts.get(name)
        if store is not None:
            return store
        known = self._manifest.get("partitions", {})
        if name not in known:
            self._refresh_partitions()  # another writer (a server's other indexer pods) may have made it
            known = self._manifest.get("partitions", {})
        if name not in known and not create:
            return None
        t0 = time.perf_counter()
        if name in known:
            store = self._part_store(name)
            if not store.exists():
                raise StoreUnreadableError(f"{self!r}: partition {name!r} is listed in the store's manifest but "
                                           f"{store!r} is missing or incomplete")
        else:
            store = self._new_part(name)
            crash_point("partition-manifest-before")
            self._manifest["partitions"][name] = {"vectors": dict(store.spec.vectors)}
            self._write_manifest(self._manifest)
            crash_point("partition-manifest-after")
        log.debug("%r: opened partition %r in %.3fs", self, name, time.perf_counter() - t0)
        self._parts[name] = store
        return store

    def _part_spec(self, name: str) -> CollectionSpec:
        """The spec partition `name` is created with."""
        spec = self._require_spec()
        # The partitions do not count chunks themselves: this store counts points and their vectors'
        # bytes across them (spec.optimize_every, optimize_every_kb), so the unindexed points of all
        # partitions together stay one chunk.
        # No `modality` payload index in a partition: every point there has the same value, and
        # _targets drops the condition before a partition sees it. The engine keeps an unindexed
        # segment's payload indexes in RAM: this one was 20 MiB per 100k points of the build's heap
        # (docs/store-benchmark.md).
        indexes = {k: v for k, v in spec.payload_indexes.items() if k != PARTITION_KEY}
        return dataclasses.replace(spec, vectors=partition_vectors(spec.vectors, name), optimize_every=None,
                                   optimize_every_kb=None, payload_indexes=indexes, metadata={"partition": name})

    def _new_part(self, name: str) -> Store:
        """Partition `name`, not yet in the manifest: made whole (`_make_part`), or, when a killed run
        (or another writer) left one, adopted if whole and made anew if not."""
        spec = self._part_spec(name)
        try:
            store = self._part_store(name)
            whole = store.exists()
        except StoreUnreadableError as exc:  # complete-looking but unloadable: it holds no recorded point
            log.warning("%r: partition %r, not yet in the manifest, cannot be loaded (%s); making it anew",
                        self, name, exc)
            return self._make_part(name, spec)
        if whole:
            return self._adopt_part(name, store, spec)
        store = self._make_part(name, spec)
        log.info("%r: new partition %r (vectors %s)", self, name, dict(spec.vectors))
        return store

    @abc.abstractmethod
    def _make_part(self, name: str, spec: CollectionSpec) -> Store:
        """Create partition `name` so that it appears whole or not at all, replacing any half-made one
        a killed run left (it holds no point: it was never listed); returns it open."""

    def _adopt_part(self, name: str, store: Store, spec: CollectionSpec) -> Store:
        """A whole partition the manifest does not list yet (a run killed before listing it, or another
        writer about to): used as it is. Backends override to finish or replace it."""
        log.info("%r: partition %r was made but not yet listed (an interrupted run, or another writer); using it",
                 self, name)
        return store

    def _refresh_partitions(self) -> None:
        """Learn partitions other writers added (a server store re-reads its manifest; a folder has one writer)."""
        return None

    def _open_parts(self, names: Iterable[str] | None = None) -> list[tuple[str, Store]]:
        known = self._manifest.get("partitions", {})
        wanted = sorted(known) if names is None else [n for n in names if n in known]
        return [(n, s) for n in wanted if (s := self._parts.get(n) or self._part(n)) is not None]

    def _close_parts(self) -> None:
        parts, self._parts = self._parts, {}
        for store in parts.values():
            self._close_part(store)

    def flush(self) -> None:
        for store in self._parts.values():
            store.flush()

    def close(self) -> None:
        self._close_parts()

    def pending(self) -> int:
        return self._since_optimize

    def optimize_pending(self) -> None:
        """Index every partition's pending points (one bounded chunk in all)."""
        log.info("%r: %d points (%.0f MiB of vectors) since the last optimizer run; optimizing", self,
                 self._since_optimize, self._since_optimize_bytes / 2 ** 20)
        for _, store in list(self._parts.items()):
            if store.pending():
                store.optimize_pending()
        self._since_optimize = self._since_optimize_bytes = 0

    def optimize(self) -> None:
        """Index what is pending, then each partition's final merge pass (``spec.merge_segments_kb``)."""
        for i, (_, store) in enumerate(self._open_parts()):
            if i:
                crash_point("partition-optimize")  # one partition's graph built, the next one's not
            store.optimize()
        self._since_optimize = self._since_optimize_bytes = 0

    # -- metadata ----------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._manifest.get("metadata", {})))

    def update_metadata(self, patch: Mapping[str, Any]) -> None:
        self._require_spec()
        _merge_metadata(self._manifest["metadata"], json.loads(json.dumps(dict(patch))))
        self._write_manifest(self._manifest)

    def add_vectors(self, vectors: Mapping[str, int]) -> None:
        """Declare more named vectors (``raw_audio`` when a new bridge binds audio; ``proxy`` when a bridge
        with G extends a zero-training index).

        Partitions created from now on declare them. An existing partition that one of them belongs to
        was built without it, and the engine cannot add a named vector to a built shard: where the backend
        can (`grows_vectors`) the partition is rebuilt with it (`_grow_part`), its points kept as they are;
        elsewhere the vector must be added before that partition's first point.
        """
        spec = self._require_spec()
        wanted = dict(spec.vectors)
        for name, dim in vectors.items():
            if name in spec.vectors and spec.vectors[name] != dim:
                raise ValueError(f"vector {name!r} is declared with {spec.vectors[name]} dims, not {dim}")
            wanted[name] = dim
        short = [p for p in self.partitions()
                 if set(partition_vectors(wanted, p)) - set(self._manifest["partitions"][p]["vectors"])]
        if short and not self.grows_vectors:
            names = sorted(set(vectors) - set(spec.vectors))
            raise ValueError(f"vectors {names} would belong to existing partitions {short}, which were built "
                             "without them; add them before their first point, or re-index into a fresh store")
        self._spec = dataclasses.replace(spec, vectors=wanted)
        try:
            for name in short:
                self._grow_part(name, self._part_spec(name))
        except BaseException:
            self._spec = spec
            raise
        self._manifest["spec"] = self._spec.to_json()
        self._write_manifest(self._manifest)

    def _grow_part(self, name: str, spec: CollectionSpec) -> None:
        """Rebuild partition `name` with `spec`'s vectors, keeping its points (`grows_vectors` backends)."""
        raise NotImplementedError(f"{type(self).__name__} cannot rebuild a partition with more vectors")

    # -- writes ------------------------------------------------------------------

    def upsert(self, points: Iterable[Point], batch: int = 256) -> int:
        """Route each point to its modality's partition (created on first use). A point without a
        modality (an overwrite of a damaged point, say) replaces the point where it already is, or
        goes to the ``_none`` partition."""
        spec = self._require_spec()
        n = 0
        groups: dict[str, list[Point]] = {}
        homeless: list[Point] = []

        def drain() -> None:
            nonlocal n
            if homeless:
                self._place_homeless(homeless, groups)
                homeless.clear()
            for name, pts in groups.items():
                part = self._part(name, create=True)
                assert part is not None
                self._check_part_vectors(name, part, pts)
                n += part.upsert(pts, batch=batch)
                self._evict(name, pts)
                self._since_optimize += len(pts)
                self._since_optimize_bytes += len(pts) * part.spec.point_bytes()
            groups.clear()
            if spec.chunk_is_full(self._since_optimize, self._since_optimize_bytes):
                self.optimize_pending()

        pending = 0
        for p in points:
            for vname in p.vectors:
                if vname not in spec.vectors:
                    raise KeyError(f"point {p.id}: unknown vector {vname!r}; collection has {sorted(spec.vectors)}")
            key = p.payload.get(PARTITION_KEY) if isinstance(p.payload, Mapping) else None
            if isinstance(key, str) and key:
                groups.setdefault(_check_partition_name(key), []).append(p)
            else:
                homeless.append(p)
            pending += 1
            if pending >= batch * 8:  # bounded memory: hand large streams over in slices
                drain()
                pending = 0
        drain()
        return n

    def _evict(self, home: str, points: list[Point]) -> None:
        """A point whose modality changed (same id) leaves its old partition: one id is one point.
        Looked up first (a read, no payload) so the common case writes nothing to the other partitions."""
        if len(self._manifest.get("partitions", {})) < 2:
            return
        ids = [_normalize_id(p.id) for p in points]
        for name, store in self._open_parts():
            if name != home:
                stale = store.present_ids(ids)
                if stale:
                    store.delete(stale)

    def _check_part_vectors(self, name: str, part: Store, points: list[Point]) -> None:
        have = _spec_vectors(part)
        for p in points:
            for vname in p.vectors:
                if vname not in have:
                    raise KeyError(f"point {p.id}: vector {vname!r} is not declared in the {name!r} partition "
                                   f"(it has {sorted(have)}; raw_<modality> vectors belong to their own modality, "
                                   "and vectors added after a partition was built do not reach it)")

    def _place_homeless(self, points: list[Point], groups: dict[str, list[Point]]) -> None:
        ids = [_normalize_id(p.id) for p in points]
        where: dict[PointId, str] = {}
        for name, store in self._open_parts():
            for rec in store.retrieve(ids, with_vectors=False, with_payload=False):  # no payload: it may be garbled
                where.setdefault(rec.id, name)
        for pid, p in zip(ids, points):
            groups.setdefault(where.get(pid, "_none"), []).append(p)

    def delete(self, ids: Iterable[PointId]) -> None:
        id_list = [_normalize_id(i) for i in ids]
        if not id_list:
            return
        for _, store in self._open_parts():
            store.delete(id_list)

    # -- reads -------------------------------------------------------------------

    def retrieve(self, ids: Sequence[PointId], *, with_vectors: bool | Sequence[str] = False) -> list[Record]:
        norm = [_normalize_id(i) for i in ids]
        records: list[Record] = []
        for _, store in self._open_parts():
            records.extend(store.retrieve(norm, with_vectors=self._part_with_vectors(store, with_vectors)))
        return self._order_records(norm, records)

    def _part_with_vectors(self, store: Store, with_vectors: bool | Sequence[str]) -> bool | list[str]:
        if isinstance(with_vectors, bool):
            return with_vectors
        return [v for v in with_vectors if v in _spec_vectors(store)]

    def _targets(self, filter: Filter | None) -> tuple[list[str], Filter | None]:
        """The partitions a filter can match, and the filter each of them still needs (the
        modality condition dropped: within a partition every point matches it)."""
        value = None if filter is None else filter.must.get(PARTITION_KEY)
        asked = [value] if isinstance(value, str) else value
        known = self._manifest.get("partitions", {})
        if not isinstance(asked, (list, tuple)) or any(n not in known for n in asked):
            # Every partition, or one this reader has not seen: another writer (an indexer beside a
            # served server index) may have added it since. A no-op for a folder (one writer).
            self._refresh_partitions()
        parts = self.partitions()
        if filter is None:
            return parts, None
        must, must_not = dict(filter.must), dict(filter.must_not)
        names = [value] if isinstance(value, str) else value
        if isinstance(names, (list, tuple)) and names and all(isinstance(v, str) for v in names):
            parts = [p for p in parts if p in names]
            must.pop(PARTITION_KEY)
        elif value is not None:  # not a modality name (an int, a Range): only points without one could hold it
            parts = [p for p in parts if p == "_none"]
        excluded = must_not.get(PARTITION_KEY)
        names = [excluded] if isinstance(excluded, str) else excluded
        if isinstance(names, (list, tuple)) and names and all(isinstance(v, str) for v in names):
            # `_none` points have no modality, so they pass a must_not on it: keep them, condition dropped.
            parts = [p for p in parts if p not in names]
            must_not.pop(PARTITION_KEY)
        rest = Filter(must=must, must_not=must_not, path_prefix=filter.path_prefix)
        if not rest.must and not rest.must_not and rest.path_prefix is None:
            rest = None  # type: ignore[assignment]
        return parts, rest

    def count(self, filter: Filter | None = None) -> int:
        self._warn_unindexed(filter)
        parts, rest = self._targets(filter)
        return sum(store.count(rest) for _, store in self._open_parts(parts))

    def scroll(self, filter: Filter | None = None, *, with_payload: bool = True,
               with_vectors: bool | Sequence[str] = False, page: int = 1024) -> Iterator[Record]:
        """Every (matching) point: partition by partition (in name order), id order within each.
        Each partition opens only when the scroll reaches it, so reading a first page (what a reader
        checks when it opens an index) opens one partition, not all."""
        self._warn_unindexed(filter)
        parts, rest = self._targets(filter)
        for name in parts:
            store = self._part(name)
            if store is not None:
                yield from store.scroll(rest, with_payload=with_payload,
                                        with_vectors=self._part_with_vectors(store, with_vectors), page=page)

    def info(self) -> StoreInfo:
        points = indexed = segments = 0
        indexes: dict[str, str] = {}
        for _, store in self._open_parts():
            inf = store.info()
            points += inf.points
            indexed += inf.indexed_vectors
            segments += inf.segments or 0
            indexes = indexes or inf.payload_indexes
        spec_indexes = self._require_spec().payload_indexes
        if not indexes:
            indexes = dict(spec_indexes)
        elif PARTITION_KEY in spec_indexes:  # answered by choosing partitions, not by an index in each
            indexes = {PARTITION_KEY: spec_indexes[PARTITION_KEY], **indexes}
        return StoreInfo(points, indexed, segments, indexes)

    def partition_info(self) -> dict[str, StoreInfo]:
        """`info()` of each partition, for reports."""
        return {name: store.info() for name, store in self._open_parts()}

    # -- search ------------------------------------------------------------------

    def search_batch(self, vector_name: str, vectors: Sequence[VectorLike] | np.ndarray, k: int = 10,
                     filter: Filter | None = None, *, exact: bool = False, ef: int | None = None,
                     with_payload: bool = True, with_vectors: bool | Sequence[str] = False) -> list[list[Hit]]:
        self._check_vector_name(vector_name)
        self._warn_unindexed(filter)
        parts, rest = self._targets(filter)
        per_part = [store.search_batch(vector_name, vectors, k, rest, exact=exact, ef=ef, with_payload=with_payload,
                                       with_vectors=self._part_with_vectors(store, with_vectors))
                    for _, store in self._open_parts(parts) if vector_name in _spec_vectors(store)]
        if len(per_part) == 1:
            return per_part[0]
        if not per_part:
            return [[] for _ in range(len(vectors))]
        return [_merge_by_score(lists, k) for lists in zip(*per_part)]

    def search_ids(self, vector_name: str, vectors: Sequence[VectorLike] | np.ndarray, k: int = 10,
                   filter: Filter | None = None, *, exact: bool = False, ef: int | None = None) -> list[RankedIds]:
        """Each partition's own lean search; several partitions' lists merged by score as `search_batch` merges them."""
        self._check_vector_name(vector_name)
        self._warn_unindexed(filter)
        parts, rest = self._targets(filter)
        per_part = [store.search_ids(vector_name, vectors, k, rest, exact=exact, ef=ef)
                    for _, store in self._open_parts(parts) if vector_name in _spec_vectors(store)]
        if len(per_part) == 1:
            return per_part[0]
        if not per_part:
            return [RankedIds([], np.zeros(0)) for _ in range(len(vectors))]
        return [_merge_ranked(lists, k) for lists in zip(*per_part)]

    def search_fused_ids(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int = 10,
                         filter: Filter | None = None, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
                         exact: bool = False, ef: int | None = None) -> RankedIds:
        """One partition answers through its own lean path; several are fused as `search_fused` fuses them."""
        pfs, _ = self._fused_prefetches(prefetches, filter, fusion)
        parts, rest = self._targets(filter)
        stores = [s for _, s in self._open_parts(parts)]
        if len(stores) == 1 and all(p.vector_name in _spec_vectors(stores[0]) for p in pfs):
            return stores[0].search_fused_ids(pfs, k, rest, fusion=fusion, rrf_k=rrf_k, exact=exact, ef=ef)
        return super().search_fused_ids(prefetches, k, filter, fusion=fusion, rrf_k=rrf_k, exact=exact, ef=ef)

    def search_fused(self, prefetches: Sequence[Prefetch | tuple[str, VectorLike, int, float]], k: int = 10,
                     filter: Filter | None = None, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
                     exact: bool = False, ef: int | None = None, with_payload: bool = True) -> list[Hit]:
        pfs, weights = self._fused_prefetches(prefetches, filter, fusion)
        parts, rest = self._targets(filter)
        stores = [s for _, s in self._open_parts(parts)]
        if len(stores) == 1 and all(p.vector_name in _spec_vectors(stores[0]) for p in pfs):
            return stores[0].search_fused(pfs, k, rest, fusion=fusion, rrf_k=rrf_k, exact=exact, ef=ef,
                                          with_payload=with_payload)
        # Several partitions: one batched call per partition holds every prefetch; the merged lists
        # are each prefetch's global top `limit`, fused here as the engine would fuse them.
        lists: list[list[list[Hit]]] = [[] for _ in pfs]
        for store in stores:
            mine = [i for i, p in enumerate(pfs) if p.vector_name in _spec_vectors(store)]
            answer = store.prefetch_batch([pfs[i] for i in mine], rest, exact=exact, ef=ef, with_payload=with_payload)
            for i, hits in zip(mine, answer):
                lists[i].append(hits)
        merged = [_merge_by_score(parts_of_one, p.limit) if parts_of_one else [] for parts_of_one, p in zip(lists, pfs)]
        return fuse(merged, k, fusion=fusion, rrf_k=rrf_k, weights=weights)


def _spec_vectors(store: Store) -> Mapping[str, int]:
    """A partition's named vectors, without `Store.spec`'s copy of the metadata (this is on every search's path)."""
    return store._require_spec().vectors


def _check_partition_name(name: str) -> str:
    """A modality value names a folder / collection: keep it to safe characters."""
    if not all(c.isalnum() or c in "_-" for c in name) or len(name) > 64:
        raise ValueError(f"modality {name!r}: a partition name must be letters, digits, '_' or '-' (at most 64)")
    return name


def _merge_by_score(lists: Sequence[list[Hit]], k: int) -> list[Hit]:
    """Top-k of several partitions' hits of one query (scores of one named vector compare across them)."""
    if len(lists) == 1:
        return lists[0][:k]
    return heapq.nlargest(k, (h for hits in lists for h in hits), key=lambda h: h.score)


def _merge_ranked(lists: Sequence[RankedIds], k: int) -> RankedIds:
    """`_merge_by_score` for ids and scores: the top k by score, ties in the order the partitions answered."""
    if len(lists) == 1:
        return RankedIds(lists[0].ids[:k], lists[0].scores[:k])
    ids = [i for r in lists for i in r.ids]
    scores = np.concatenate([r.scores for r in lists])
    top = np.argsort(-scores, kind="stable")[:k]
    return RankedIds([ids[j] for j in top], scores[top])


def fuse(lists: Sequence[list[Hit]], k: int, *, fusion: FusionKind = "rrf", rrf_k: int = DEFAULT_RRF_K,
         weights: Sequence[float] | None = None) -> list[Hit]:
    """Fuse ranked lists as Qdrant does: weighted RRF (a hit at rank r of a list with weight w scores
    ``1 / ((r + 1) / w + rrf_k - 1)``, 0 when w <= 0) or DBSF (each list's scores mapped from
    mean -/+ 3 sample standard deviations to 0..1, summed; a list of one, or of equal scores, gives 0.5).

    Example:
        >>> a, b = Hit(1, 0.9, {}), Hit(2, 0.8, {})
        >>> [(h.id, round(h.score, 3)) for h in fuse([[a, b], [b]], 2)]
        [(2, 0.833), (1, 0.5)]
    """
    scores: dict[PointId, float] = {}
    first: dict[PointId, Hit] = {}
    for i, hits in enumerate(lists):
        if fusion == "rrf":
            w = 1.0 if weights is None else float(weights[i])
            part = [(h, 0.0 if w <= 0 else 1.0 / ((r + 1.0) / w + rrf_k - 1.0)) for r, h in enumerate(hits)]
        else:
            part = list(zip(hits, _dbsf_normalize([h.score for h in hits])))
        for h, s in part:
            scores[h.id] = scores.get(h.id, 0.0) + s
            first.setdefault(h.id, h)
    top = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:k]
    return [dataclasses.replace(first[pid], score=float(s), vectors=None) for pid, s in top]


def _dbsf_normalize(scores: list[float]) -> list[float]:
    if len(scores) <= 1:
        return [0.5] * len(scores)
    mean = sum(scores) / len(scores)
    var = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
    if var == 0:
        return [0.5] * len(scores)
    low, high = mean - 3 * var ** 0.5, mean + 3 * var ** 0.5
    return [(s - low) / (high - low) for s in scores]


__all__ = ["PartitionedStore", "partition_vectors", "fuse", "PARTITION_KEY", "LAYOUT"]
