"""The plain types every store backend speaks: specs, points, filters, hits, ids.

Callers of the storage layer see only these; no qdrant type leaks out of `indexer.store`.
"""
from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeAlias

import numpy as np

from core.errors import EmergentBridgeError

PointId: TypeAlias = str | int
"""A UUID string (what the indexer passes, see :func:`point_id`) or an unsigned int."""
VectorLike: TypeAlias = "Sequence[float] | np.ndarray"
MatchValue: TypeAlias = str | int | bool
IndexType = Literal["keyword", "prefix", "integer", "float"]
FusionKind = Literal["rrf", "dbsf"]

# Namespace for deterministic ids: one item identity always maps to the same point,
# so re-indexing a folder never duplicates and an interrupted run resumes.
ID_NAMESPACE = uuid.UUID("6f1c9d2e-5b8a-4c1e-9a57-0b6c2e8f4d31")

class StoreDamagedError(EmergentBridgeError):
    """The index's store holds unreadable or garbage points, or cannot be opened at all."""


class StoreUnreadableError(StoreDamagedError):
    """The store's own files (its description, WAL or segments) cannot be loaded: no point can be
    read, so only a rebuild from the source files helps (`ebridge index` does it)."""


# Qdrant's default RRF constant (both the engine and qdrant-client's local mode use 2).
DEFAULT_RRF_K = 2


def rrf_scores(rankings: Sequence[np.ndarray], weights: Sequence[float], n_items: int,
               rrf_k: int = DEFAULT_RRF_K) -> np.ndarray:
    """Weighted reciprocal-rank fusion as the engine computes a fused query (`Store.search_fused`):
    a hit at 0-based rank r of a source with weight w scores 1 / ((r + 1) / w + rrf_k - 1), summed
    over the sources. The one definition the benchmark's exact search uses too, so settings chosen
    there are chosen on the fusion users get (tests/test_first_use.py checks both agree).

    rankings: per source, a (queries, depth) array of item indices, best first (-1: none).
    Returns (queries, n_items) fused scores; 0 for an item in no source's list.

    Example:
        >>> rrf_scores([np.array([[2, 0]]), np.array([[0, 1]])], [1.0, 1.0], 3).round(3).tolist()
        [[0.833, 0.333, 0.5]]
    """
    out = np.zeros((rankings[0].shape[0], n_items), np.float64)
    for ranks, w in zip(rankings, weights):
        if w <= 0:
            continue
        ranks = np.asarray(ranks)
        score = 1.0 / ((np.arange(ranks.shape[1]) + 1) / w + rrf_k - 1)
        rows = np.broadcast_to(np.arange(ranks.shape[0])[:, None], ranks.shape)
        ok = ranks >= 0
        np.add.at(out, (rows[ok], ranks[ok]), np.broadcast_to(score, ranks.shape)[ok])
    return out



# The CollectionSpec fields that bound an index build (issue 15). A spec read from a collection
# recorded before they existed gets None for each: "the engine's default", which is what it was built with.
BUILD_SETTINGS = ("payload_m", "hnsw_payload_fields", "max_segment_size_kb", "default_segment_number",
                  "optimize_every", "optimize_every_kb", "acorn_max_selectivity", "payload_index_memory", "hnsw_memory",
                  "indexing_threads", "search_threads", "merge_segments_kb", "wal")


def point_id(identity: str) -> str:
    """Deterministic point id (UUID5 string) for an item identity such as its path.

    >>> point_id("photos/cat.png") == point_id("photos/cat.png")
    True
    """
    return str(uuid.uuid5(ID_NAMESPACE, identity))


def moment_id(file_id: str, number: int) -> str:
    """Deterministic id of a long file's `number`-th moment (bridge.moments), from its file's point id:
    re-indexing the file overwrites the same ids, so a resumed run never duplicates a moment.

    >>> moment_id(point_id("a.wav"), 0) == moment_id(point_id("a.wav"), 0)
    True
    """
    return point_id(f"{file_id}#moment{number}")


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
    # Default "cold": with chunked builds (optimize_every) a finished segment's vectors then stay
    # out of RAM while the next chunk is built, which bounds the build's peak (see the README table).
    vectors_memory: Literal["ram", "cold", "cached"] | None = "cold"
    # Below this many KB of vectors a segment is searched by brute force (Qdrant's unit).
    full_scan_threshold_kb: int = 10_000
    # Segments smaller than this (KB) get no HNSW graph; None keeps Qdrant's default.
    indexing_threshold_kb: int | None = None
    # ---- Build bounds (see BUILD_SETTINGS; chosen from the table in README-store-section.md) ----
    # Extra HNSW links per value of each HNSW-enabled payload index (Qdrant's payload_m; None = m).
    # They only help very selective filters, and building them re-runs the graph build once per
    # frequent value; 0 turns them off. Filtered search stays index-backed either way: the payload
    # index answers the condition and the query planner's cardinality estimate.
    payload_m: int | None = 0
    # Payload fields whose values get those links when payload_m != 0; None = every indexed field.
    hnsw_payload_fields: list[str] | None = field(default_factory=lambda: ["modality"])
    # Largest segment the optimizer merges into (KB of vectors): ~100k 256-d float vectors. A
    # per-modality store's chunk puts ~60k points in each of five partitions, so two chunk segments
    # never fit one merge (each merge rebuilds the graph and holds source and target at once).
    max_segment_size_kb: int | None = 100_000
    # Segments the optimizer aims for (0/None = Qdrant's CPU-derived default).
    default_segment_number: int | None = None
    # Embedded store: run the optimizer after every this many upserted points, so the
    # unindexed (appendable) segments never grow past one chunk. None = only on optimize().
    # 300,000 since issue 29 (100,000 before): with 100k chunks a per-modality store's partitions got
    # 20k-point segments which the engine then merged, re-building each graph (at 300k every
    # partition's graph was built three times: 20k, 40k, 60k); the build took 2.9x FAISS's CPU time.
    # A 300k chunk builds each graph once (1.9x) and costs build memory: peak 932 MiB at 300k
    # against 498 MiB (docs/store-benchmark.md, "Build time").
    optimize_every: int | None = 300_000
    # Embedded store: run the optimizer also once the points upserted since it last ran hold this many
    # KB (KiB, as the engine's sizes) of vectors, counted from the sizes the collection declares: an
    # unindexed point keeps a slot for every declared vector, written or not (measured: 23.6 KiB a photo
    # point of the offline preset's index, 2324-d bridged and proxy declared, 1280-d raw_image). With
    # points alone a 300k chunk of photos held 5.0 GiB unindexed at 200k and a 30k build peaked at
    # 2.3 GiB; this budget is the benchmark's 300k x 256-d chunk (there the point cap binds first and
    # each graph is built once) and keeps a photo build near 1.1 GiB (docs/store-benchmark.md,
    # "Chunks bounded by bytes"). None = points only (stores recorded before it read None).
    optimize_every_kb: int | None = 300_000
    # Filtered searches walk the graph ACORN-style (neighbours of neighbours) when the filter keeps
    # at most this fraction of the points (Qdrant's estimate); None = off. This is what keeps a
    # filtered search correct without payload_m links: a plain walk restricted to the matching
    # fifth of the points strands in islands (measured: recall@10 0.42 for modality=depth at 100k).
    acorn_max_selectivity: float | None = 0.4
    # Embedded store: where each payload index of an optimized segment lives, per field ("cold" =
    # mmap, read on use); fields not named stay in RAM. Measured at 30k: the path prefix index
    # alone holds ~0.9 KB per point in RAM, more than the 256-d vector itself. Default: path, label
    # and folder cold (issue 22: loading them was the largest part of opening an index, profiled
    # with py-spy: 100k per modality, partitions load in 0.5 s instead of 1.1 s; modality filters
    # are answered by the per-modality layout, not these indexes).
    payload_index_memory: dict[str, Literal["ram", "cold", "cached"]] = field(
        default_factory=lambda: {"path": "cold", "label": "cold", "folder": "cold"})
    # Where the HNSW graph lives (embedded store), as vectors_memory; None = the engine default.
    hnsw_memory: Literal["ram", "cold", "cached"] | None = None
    # Embedded store: the final merge pass. optimize() (the end of an indexing run) merges the
    # chunk-sized segments the bounded build left into segments of up to this many KB of vectors,
    # then restores max_segment_size_kb so later incremental runs stay bounded. None = no merge pass.
    # Chosen from the table in docs/store-benchmark.md (issue 22).
    merge_segments_kb: int | None = None
    # Embedded store: whether the engine writes every update to a write-ahead log first (None = the
    # engine's default, on; a store recorded before this field existed reads None). Fixed when the
    # store is created. With a WAL each shard maps its open 32 MiB WAL segment and every vector is
    # written twice: at 100k per modality the five partitions' WALs were 133 of the build's 493 MiB
    # peak (docs/store-benchmark.md). Off (the default since issue 22): an update is durable once
    # flush() returns, and a process killed before that loses the updates since the last flush;
    # the store still loads. The indexer loses nothing it recorded: it flushes the store after
    # every batch, before its manifest commits the batch, so unflushed points are re-embedded.
    wal: bool | None = False
    # Threads for one graph build (0 = one per CPU) and the search pool (None = per CPU).
    indexing_threads: int = 0
    search_threads: int | None = None
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
        for name in ("payload_m", "max_segment_size_kb", "default_segment_number", "optimize_every",
                     "optimize_every_kb", "indexing_threads", "search_threads", "merge_segments_kb", "wal"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"CollectionSpec.{name} must be >= 0 (or None), got {value}")
        if self.acorn_max_selectivity is not None and not 0.0 <= self.acorn_max_selectivity <= 1.0:
            raise ValueError(f"CollectionSpec.acorn_max_selectivity must be in [0, 1] or None, "
                             f"got {self.acorn_max_selectivity}")
        for name in ("optimize_every", "optimize_every_kb"):
            if getattr(self, name) == 0:
                raise ValueError(f"CollectionSpec.{name} must be >= 1, or None to optimize only on request")
        for name, where in self.payload_index_memory.items():
            if where not in ("ram", "cold", "cached"):
                raise ValueError(f"payload_index_memory[{name!r}] = {where!r}: use 'ram', 'cold' or 'cached'")
        for name in ("vectors_memory", "hnsw_memory"):
            if getattr(self, name) not in (None, "ram", "cold", "cached"):
                raise ValueError(f"CollectionSpec.{name} {getattr(self, name)!r}: use 'ram', 'cold', 'cached' or None")

    def point_bytes(self) -> int:
        """Bytes of vectors one point holds in an unindexed segment: a float32 slot per declared vector."""
        return 4 * sum(self.vectors.values())

    def chunk_is_full(self, points: int, vector_bytes: int) -> bool:
        """Whether `points` upserted since the optimizer last ran, holding `vector_bytes` of vectors,
        make a chunk (``optimize_every`` points or ``optimize_every_kb`` KiB, whichever comes first).

        Example:
            >>> spec = CollectionSpec(vectors={"bridged": 256}, optimize_every=10, optimize_every_kb=4)
            >>> spec.chunk_is_full(3, 3 * spec.point_bytes()), spec.chunk_is_full(4, 4 * spec.point_bytes())
            (False, True)
        """
        return ((self.optimize_every is not None and points >= self.optimize_every)
                or (self.optimize_every_kb is not None and vector_bytes >= self.optimize_every_kb * 1024))

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
        # A collection recorded before a build setting existed was built with the engine's
        # default for it: say so (None) rather than claim today's default.
        for name in BUILD_SETTINGS:
            kwargs.setdefault(name, None)
        if kwargs.get("payload_index_memory") is None:
            kwargs["payload_index_memory"] = {}
        if kwargs.get("indexing_threads") is None:
            kwargs["indexing_threads"] = 0
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
class RankedIds:
    """One query's hits as ids and scores only, best first (`Store.search_ids`): what an evaluation
    reads, which ranks whole galleries, with no payload or `Hit` made per point.

    Example:
        >>> r = RankedIds.of([Hit("a", 0.9, {}), Hit("b", 0.5, {})])
        >>> r.ids, r.scores.tolist()
        (['a', 'b'], [0.9, 0.5])
    """

    ids: list[PointId]
    scores: np.ndarray  # float64, one per id

    @classmethod
    def of(cls, hits: Sequence[Hit]) -> "RankedIds":
        return cls([h.id for h in hits], np.fromiter((h.score for h in hits), np.float64, len(hits)))

    def __len__(self) -> int:
        return len(self.ids)


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

