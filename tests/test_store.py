"""Congruence tests for indexer.store: the same operations on every backend give the same answers.

Backends: the embedded engine (qdrant-edge), qdrant-client local mode (":memory:", the same
client calls a server gets), and a real server when QDRANT_URL is set. Answers are also
checked against a brute-force numpy reference, so "congruent" cannot mean "equally wrong".
"""

from __future__ import annotations

import os
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer.store import (
    BUILD_SETTINGS,
    CollectionSpec,
    EdgeStore,
    Filter,
    PartitionedEdgeStore,
    PartitionedServerStore,
    PartitionedStore,
    Hit,
    Point,
    Prefetch,
    Range,
    RankedIds,
    ServerStore,
    Store,
    open_store,
    point_id,
)

DIM = 32
N = 400
MODALITIES = ["image", "audio", "depth", "thermal", "text"]
TOL = 1e-5

QDRANT_URL = os.environ.get("QDRANT_URL")
needs_server = pytest.mark.skipif(
    not QDRANT_URL, reason="set QDRANT_URL=http://host:6333 to run the store tests against a real Qdrant server"
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Corpus:
    """A small fixed-seed corpus: two named vectors, payload like the indexer writes."""

    def __init__(self, seed: int = 0, n: int = N) -> None:
        rng = np.random.default_rng(seed)
        centres = _unit(rng.standard_normal((12, DIM)))
        assign = rng.integers(0, len(centres), n)
        self.bridged = _unit(centres[assign] + 0.35 * rng.standard_normal((n, DIM)))
        self.proxy = _unit(self.bridged + 0.5 * rng.standard_normal((n, DIM)))
        self.paths = [f"data/{MODALITIES[i % 5]}/{'train' if i % 3 else 'val'}/item{i:04d}.bin" for i in range(n)]
        self.ids = [point_id(p) for p in self.paths]
        self.payloads = [
            {"path": self.paths[i], "modality": MODALITIES[i % 5], "label": f"c{assign[i] % 10}",
             "hash": f"{i:08x}", "bridge_version": "v1", "size": int(i * 7 % 1000)}
            for i in range(n)
        ]
        self.queries = _unit(rng.standard_normal((8, DIM)))

    def points(self) -> list[Point]:
        return [Point(self.ids[i], {"bridged": self.bridged[i], "proxy": self.proxy[i]}, self.payloads[i])
                for i in range(len(self.ids))]

    def mask(self, keep: Callable[[dict], bool]) -> np.ndarray:
        return np.array([keep(p) for p in self.payloads])

    def exact_top(self, q: np.ndarray, k: int, mask: np.ndarray | None = None,
                  vectors: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
        vecs = self.bridged if vectors is None else vectors
        scores = vecs @ _unit(q)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[:k]
        order = order[np.isfinite(scores[order])]
        return [self.ids[i] for i in order], scores[order]


SPEC = CollectionSpec(
    vectors={"bridged": DIM, "proxy": DIM},
    payload_indexes={"modality": "keyword", "label": "keyword", "path": "prefix", "size": "integer"},
    metadata={"preset": "test", "bridge": {"checkpoint": "abc123", "version": 1}, "dims": DIM},
)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


def _make(kind: str, tmp_path, spec: CollectionSpec = SPEC) -> Store:
    """`kind`: edge / local / server (one shard or collection for every modality, the layout before
    issue 22), or the same with "-pm" (one per modality, what new indexes get)."""
    if kind == "edge":
        store: Store = EdgeStore(tmp_path / f"edge-{uuid.uuid4().hex[:8]}")
    elif kind == "edge-pm":
        store = PartitionedEdgeStore(tmp_path / f"edge-pm-{uuid.uuid4().hex[:8]}")
    elif kind == "local":
        store = ServerStore.memory()
    elif kind == "local-pm":
        store = PartitionedServerStore.memory()
    elif kind == "server":
        store = ServerStore(QDRANT_URL, f"eb-test-{uuid.uuid4().hex[:12]}")  # type: ignore[arg-type]
    elif kind == "server-pm":
        store = PartitionedServerStore(QDRANT_URL, f"eb-test-{uuid.uuid4().hex[:12]}")  # type: ignore[arg-type]
    else:  # pragma: no cover
        raise ValueError(kind)
    store.create(spec)
    return store


def _drop(kind: str, store: Store) -> None:
    if kind == "server":
        store.client.delete_collection(store.collection)  # type: ignore[attr-defined]
    elif kind == "server-pm":
        store.drop()  # type: ignore[attr-defined]


BACKENDS = ["edge", "edge-pm", "local", "local-pm", pytest.param("server", marks=needs_server),
            pytest.param("server-pm", marks=needs_server)]
# Compared with the per-modality embedded store (what new indexes get): every other backend and layout.
OTHERS = ["edge", "local", "local-pm", pytest.param("server", marks=needs_server),
          pytest.param("server-pm", marks=needs_server)]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path, corpus) -> Iterator[Store]:
    s = _make(request.param, tmp_path)
    s.upsert(corpus.points(), batch=97)  # odd batch size: the last batch is partial
    yield s
    _drop(request.param, s)
    s.close()


@pytest.fixture(params=OTHERS)
def pair(request, tmp_path, corpus) -> Iterator[tuple[Store, Store]]:
    """The per-modality embedded store and another backend or layout holding the same points."""
    edge, other = _make("edge-pm", tmp_path), _make(request.param, tmp_path)
    for s in (edge, other):
        s.upsert(corpus.points(), batch=128)
    yield edge, other
    _drop(request.param, other)
    edge.close()
    other.close()


def assert_same_hits(a: list[Hit], b: list[Hit], tol: float = TOL) -> None:
    """Same scores in the same order; ids equal, except that tied scores may come in any order.

    The ids of the final tie group are not compared (see below).
    """
    assert len(a) == len(b), (len(a), len(b))
    sa, sb = np.array([h.score for h in a]), np.array([h.score for h in b])
    np.testing.assert_allclose(sa, sb, atol=tol, rtol=0)
    i = 0
    while i < len(a):
        j = i + 1
        while j < len(a) and abs(sa[j] - sa[i]) <= tol:
            j += 1
        group_a = {h.id for h in a[i:j]}
        group_b = {h.id for h in b[i:j]}
        if j == len(a):
            # The last group may be tied with points beyond the cut-off, and each backend
            # may keep a different one of them: only its scores (checked above) must agree.
            # Callers ask for a few more results than they care about.
            break
        assert group_a == group_b, f"rank {i}..{j}: {group_a} != {group_b}"
        i = j


# ---------------------------------------------------------------------------
# Each backend against the numpy reference
# ---------------------------------------------------------------------------


def test_exact_search_matches_numpy(store: Store, corpus: Corpus) -> None:
    for q in corpus.queries:
        ids, scores = corpus.exact_top(q, 10)
        hits = store.search("bridged", q, k=10, exact=True)
        assert [h.id for h in hits] == ids
        np.testing.assert_allclose([h.score for h in hits], scores, atol=TOL)


@pytest.mark.parametrize(
    "flt, keep",
    [
        (Filter(must={"modality": "depth"}), lambda p: p["modality"] == "depth"),
        (Filter(must={"label": "c3"}), lambda p: p["label"] == "c3"),
        (Filter(path_prefix="data/audio/val/"), lambda p: p["path"].startswith("data/audio/val/")),
        (Filter(must={"modality": ["audio", "thermal"]}), lambda p: p["modality"] in ("audio", "thermal")),
        (Filter(must={"size": Range(gte=100, lt=400)}), lambda p: 100 <= p["size"] < 400),
        (Filter(must={"modality": "image"}, must_not={"label": ["c1", "c2"]}, path_prefix="data/image/train"),
         lambda p: p["modality"] == "image" and p["label"] not in ("c1", "c2")
         and p["path"].startswith("data/image/train")),
    ],
    ids=["modality", "label", "path-prefix", "match-any", "range", "combined"],
)
def test_filters_match_numpy(store: Store, corpus: Corpus, flt: Filter, keep) -> None:
    mask = corpus.mask(keep)
    assert store.count(flt) == int(mask.sum()) > 0
    assert {r.id for r in store.scroll(flt, page=17)} == {corpus.ids[i] for i in np.flatnonzero(mask)}
    q = corpus.queries[0]
    ids, scores = corpus.exact_top(q, 10, mask)
    hits = store.search("bridged", q, k=10, filter=flt, exact=True)
    assert [h.id for h in hits] == ids
    np.testing.assert_allclose([h.score for h in hits], scores, atol=TOL)
    assert all(keep(h.payload) for h in hits)


def test_ids_round_trip_as_uuid_strings(store: Store, corpus: Corpus) -> None:
    wanted = [corpus.ids[5], corpus.ids[2].upper(), corpus.ids[9]]  # upper case: canonicalised
    recs = store.retrieve(wanted + [point_id("never-indexed")], with_vectors=True)
    assert [r.id for r in recs] == [corpus.ids[5], corpus.ids[2], corpus.ids[9]]
    assert all(isinstance(r.id, str) for r in recs)
    np.testing.assert_allclose(recs[0].vectors["bridged"], corpus.bridged[5], atol=1e-6)
    assert recs[0].payload == corpus.payloads[5]
    hit = store.search("bridged", corpus.bridged[7], k=1, exact=True)[0]
    assert hit.id == corpus.ids[7] and isinstance(hit.id, str)
    with pytest.raises(ValueError, match="not a UUID"):
        store.retrieve(["data/x.png"])


def test_upsert_same_id_twice_keeps_one_point(store: Store, corpus: Corpus) -> None:
    pid = corpus.ids[0]
    new_vec = corpus.queries[3]
    store.upsert([Point(pid, {"bridged": new_vec, "proxy": new_vec}, {**corpus.payloads[0], "label": "moved"})])
    store.upsert([Point(pid, {"bridged": new_vec, "proxy": new_vec}, {**corpus.payloads[0], "label": "moved"})])
    assert store.count() == N
    assert store.count(Filter(must={"label": "moved"})) == 1
    assert store.search("bridged", new_vec, k=1, exact=True)[0].id == pid


def test_delete(store: Store, corpus: Corpus) -> None:
    gone = corpus.ids[:10]
    store.delete(gone + [point_id("never-indexed")])
    assert store.count() == N - 10
    assert store.retrieve(gone) == []
    hits = store.search("bridged", corpus.bridged[3], k=5, exact=True)
    assert not set(h.id for h in hits) & set(gone)


def test_metadata_round_trip(store: Store) -> None:
    assert store.metadata == SPEC.metadata
    route = {"audio->depth": {"route": "proxy", "weights": [1.0, 0.5]}, "image->text": {"route": "direct"}}
    store.update_metadata({"routes": route, "preset": None})
    assert store.metadata == {"bridge": {"checkpoint": "abc123", "version": 1}, "dims": DIM, "routes": route}
    assert store.spec.vectors == SPEC.vectors and store.spec.metadata["routes"] == route


def test_fused_search_weighted_rrf_matches_reference(store: Store, corpus: Corpus) -> None:
    """Weighted RRF as Qdrant defines it, computed by hand from two exact rankings."""
    q = corpus.queries[1]
    w_direct, w_proxy, limit, rrf_k = 1.0, 0.6, 30, 2
    ids_d, _ = corpus.exact_top(q, limit)
    ids_p, _ = corpus.exact_top(q, limit, vectors=corpus.proxy)
    ref: dict[str, float] = {}
    for ids, w in ((ids_d, w_direct), (ids_p, w_proxy)):
        for rank, pid in enumerate(ids):
            ref[pid] = ref.get(pid, 0.0) + 1.0 / ((rank + 1) / w + rrf_k - 1)
    hits = store.search_fused([Prefetch("bridged", q, limit, w_direct), ("proxy", q, limit, w_proxy)],
                              k=10, exact=True, rrf_k=rrf_k)
    ref_top = sorted(ref.values(), reverse=True)[:10]
    np.testing.assert_allclose([h.score for h in hits], ref_top, atol=TOL)
    for h in hits:
        assert ref[h.id] == pytest.approx(h.score, abs=TOL)


def test_dbsf_refuses_weights(store: Store, corpus: Corpus) -> None:
    q = corpus.queries[0]
    with pytest.raises(ValueError, match="DBSF"):
        store.search_fused([("bridged", q, 20, 1.0), ("proxy", q, 20, 0.5)], fusion="dbsf")
    assert len(store.search_fused([("bridged", q, 20, 1.0), ("proxy", q, 20, 1.0)], k=5, fusion="dbsf")) == 5


def test_rejects_wrong_dimension(store: Store) -> None:
    with pytest.raises(ValueError, match="expects 32"):
        store.upsert([Point(point_id("bad"), {"bridged": np.zeros(8, np.float32)}, {})])
    with pytest.raises(KeyError, match="unknown vector"):
        store.search("nope", np.zeros(DIM, np.float32))


# ---------------------------------------------------------------------------
# Embedded vs client-backed: same calls, same answers
# ---------------------------------------------------------------------------

CONGRUENT_FILTERS = [
    None,
    Filter(must={"modality": "depth"}),
    Filter(must={"label": ["c1", "c4", "c7"]}),
    Filter(path_prefix="data/thermal/"),
    Filter(must={"modality": "audio", "size": Range(lte=500)}, must_not={"label": "c0"}),
]


@pytest.mark.parametrize("flt", CONGRUENT_FILTERS, ids=["none", "modality", "any", "prefix", "combined"])
def test_congruent_search(pair: tuple[Store, Store], corpus: Corpus, flt: Filter | None) -> None:
    edge, other = pair
    for name in ("bridged", "proxy"):
        batch_e = edge.search_batch(name, corpus.queries, k=11, filter=flt, exact=True)
        batch_o = other.search_batch(name, corpus.queries, k=11, filter=flt, exact=True)
        for q, he, ho in zip(corpus.queries, batch_e, batch_o):
            assert_same_hits(he, ho)
            assert_same_hits(edge.search(name, q, k=11, filter=flt, exact=True), he)
    assert edge.count(flt) == other.count(flt)
    assert sorted(r.id for r in edge.scroll(flt)) == sorted(r.id for r in other.scroll(flt))


@pytest.mark.parametrize("flt", CONGRUENT_FILTERS, ids=["none", "modality", "any", "prefix", "combined"])
def test_ids_only_search_is_the_full_search_without_payloads(store: Store, corpus: Corpus, flt: Filter | None) -> None:
    """`search_ids` / `search_fused_ids` (what an evaluation asks) give the ranking and the very scores of
    `search_batch` / `search_fused` on every backend and layout, merged across partitions alike. Tied
    scores compare as sets: the engine orders a fused list's ties differently from call to call. The
    embedded engine (what users run) answers the same scores to the bit; qdrant-client's local mode,
    within float32 rounding from one call to the next."""
    tol = 0.0 if isinstance(store, (EdgeStore, PartitionedEdgeStore)) else TOL
    for name in ("bridged", "proxy"):
        full = store.search_batch(name, corpus.queries, k=40, filter=flt)
        lean = store.search_ids(name, corpus.queries, k=40, filter=flt)
        assert len(lean) == len(full)
        for r, hits in zip(lean, full):
            assert_same_hits(_as_hits(r), hits, tol=tol)
        one = store.search_ids(name, corpus.queries[:1], k=40, filter=flt)[0]  # the single-query path
        assert_same_hits(_as_hits(one), full[0], tol=tol)
    for q in corpus.queries[:3]:
        pf = [("bridged", q, 40, 1.0), ("proxy", q, 25, 0.35)]
        assert_same_hits(_as_hits(store.search_fused_ids(pf, k=30, filter=flt)), store.search_fused(pf, k=30, filter=flt),
                         tol=tol)


def _as_hits(ranked: RankedIds) -> list[Hit]:
    assert ranked.scores.dtype == np.float64 and len(ranked.scores) == len(ranked.ids)
    return [Hit(i, float(s), {}) for i, s in zip(ranked.ids, ranked.scores)]


@pytest.mark.parametrize("fusion, weights", [("rrf", (1.0, 1.0)), ("rrf", (1.0, 0.35)), ("dbsf", (1.0, 1.0))])
@pytest.mark.parametrize("flt", [None, Filter(must={"modality": ["depth", "audio"]})], ids=["all", "filtered"])
def test_congruent_fused_search(pair, corpus: Corpus, fusion: str, weights, flt) -> None:
    edge, other = pair
    for q in corpus.queries[:4]:
        pf = [("bridged", q, 40, weights[0]), ("proxy", q, 25, weights[1])]
        he = edge.search_fused(pf, k=12, filter=flt, fusion=fusion, exact=True)  # type: ignore[arg-type]
        ho = other.search_fused(pf, k=12, filter=flt, fusion=fusion, exact=True)  # type: ignore[arg-type]
        assert_same_hits(he, ho)
        if flt is not None:
            assert all(h.payload["modality"] in ("depth", "audio") for h in he)


@pytest.mark.parametrize("kind", ["edge", "edge-pm"])
def test_embedded_fused_ties_come_in_id_order_every_call(kind, tmp_path, corpus: Corpus) -> None:
    """RRF reads only ranks, so equal fused scores are common (rank r of one list only vs rank r of the
    other); the engine orders them differently from call to call. The embedded store breaks ties by id:
    the same query answers the same list every time, so results and benchmarks repeat."""
    store = _make(kind, tmp_path)
    store.upsert(corpus.points(), batch=128)
    flt = Filter(must={"modality": "depth"}) if kind == "edge-pm" else None  # one partition: the engine fuses
    ties = 0
    for q in corpus.queries[:4]:
        pf = [("bridged", q, 40, 1.0), ("proxy", q, 40, 1.0)]
        answers = {tuple((h.id, h.score) for h in store.search_fused(pf, k=30, filter=flt)) for _ in range(8)}
        answers |= {tuple(zip(r.ids, r.scores.tolist())) for r in (store.search_fused_ids(pf, k=30, filter=flt)
                                                                      for _ in range(8))}
        assert len(answers) == 1
        (hits,) = answers
        for (id_a, s_a), (id_b, s_b) in zip(hits, hits[1:]):
            assert s_a >= s_b
            if s_a == s_b:
                ties += 1
                assert uuid.UUID(str(id_a)).int < uuid.UUID(str(id_b)).int
    assert ties > 0  # the case this is about did occur
    store.close()


def test_congruent_after_upserts_and_deletes(pair, corpus: Corpus) -> None:
    edge, other = pair
    rng = np.random.default_rng(7)
    gone = [corpus.ids[i] for i in rng.choice(N, 40, replace=False)]
    moved = _unit(rng.standard_normal((5, DIM)))
    changes = [Point(corpus.ids[i], {"bridged": moved[j], "proxy": moved[j]}, {**corpus.payloads[i], "label": "new"})
               for j, i in enumerate(range(100, 105))]
    for s in (edge, other):
        s.delete(gone)
        s.upsert(changes)
        s.upsert(changes)
    assert edge.count() == other.count() == N - len(set(gone) - {p.id for p in changes})
    for q in list(corpus.queries) + list(moved):
        assert_same_hits(edge.search("bridged", q, k=11, exact=True), other.search("bridged", q, k=11, exact=True))
    assert edge.count(Filter(must={"label": "new"})) == other.count(Filter(must={"label": "new"}))


# ---------------------------------------------------------------------------
# Embedded store only: persistence, HNSW, indexes
# ---------------------------------------------------------------------------


def test_edge_reload_from_disk(tmp_path, corpus: Corpus) -> None:
    path = tmp_path / "index"
    with open_store(path, spec=SPEC) as s:
        s.upsert(corpus.points())
        s.update_metadata({"routes": {"audio->depth": "proxy"}})
        before = s.search_batch("bridged", corpus.queries, k=11, exact=True)
    assert sorted(p.name for p in path.iterdir()) == ["collection.json", "modalities"]
    assert sorted(p.name for p in (path / "modalities").iterdir()) == sorted(MODALITIES)
    with open_store(path) as s:
        assert s.count() == N
        assert s.metadata["routes"] == {"audio->depth": "proxy"}
        assert s.spec.payload_indexes == SPEC.payload_indexes
        for a, b in zip(before, s.search_batch("bridged", corpus.queries, k=11, exact=True)):
            assert_same_hits(a, b)
    with pytest.raises(ValueError, match="differ"):
        open_store(path, spec=CollectionSpec(vectors={"bridged": 64}))
    with pytest.raises(FileNotFoundError, match="no store there"):
        open_store(tmp_path / "missing")


def test_edge_create_refuses_existing(tmp_path) -> None:
    with EdgeStore(tmp_path / "i") as s:
        s.create(SPEC)
        with pytest.raises(FileExistsError, match="recreate=True"):
            s.create(SPEC)
        s.create(CollectionSpec(vectors={"bridged": 8}), recreate=True)
        assert s.spec.vectors == {"bridged": 8}


def test_edge_modality_filter_is_index_backed(tmp_path) -> None:
    with EdgeStore(tmp_path / "i") as s:
        s.create(SPEC)
        indexes = s.info().payload_indexes
    assert indexes == {"modality": "keyword", "label": "keyword", "path": "prefix", "size": "integer"}


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_edge_hnsw_close_to_exact(tmp_path, quantization: str | None) -> None:
    """After optimize() the graph is used (not brute force) and still finds the true neighbours."""
    c = Corpus(seed=1, n=3000)
    spec = CollectionSpec(vectors={"bridged": DIM, "proxy": DIM}, quantization=quantization,  # type: ignore[arg-type]
                          full_scan_threshold_kb=1, indexing_threshold_kb=10, hnsw_m=16, hnsw_ef_construct=64)
    with EdgeStore(tmp_path / "hnsw") as s:
        s.create(spec)
        s.upsert(c.points(), batch=500)
        s.optimize()
        info = s.info()
        assert info.indexed_vectors >= len(c.ids), info  # both vectors of every point are in a graph
        found = total = 0
        for q in c.queries:
            exact = [h.id for h in s.search("bridged", q, k=10, exact=True)]
            assert exact == c.exact_top(q, 10)[0]
            approx = s.search("bridged", q, k=10, ef=64)
            found += len(set(exact) & {h.id for h in approx})
            total += 10
            # Filtered HNSW search must still return only matching points.
            depth = s.search("bridged", q, k=10, ef=64, filter=Filter(must={"modality": "depth"}))
            assert depth and all(h.payload["modality"] == "depth" for h in depth)
        assert found / total >= 0.95


def test_local_on_disk_mode(tmp_path, corpus: Corpus) -> None:
    s = ServerStore.local(tmp_path / "qd", collection="c")
    s.create(SPEC)
    s.upsert(corpus.points()[:50])
    s.close()
    s = ServerStore.local(tmp_path / "qd", collection="c")
    assert s.count() == 50 and s.metadata == SPEC.metadata
    s.close()


def test_filter_rejects_float_match(store: Store) -> None:
    with pytest.raises(TypeError, match="Range"):
        store.count(Filter(must={"size": 1.5}))


# ---------------------------------------------------------------------------
# Build bounds (issue 15): applied to the engine, recorded with the collection, kept on reopen
# ---------------------------------------------------------------------------


def test_default_spec_bounds_the_build() -> None:
    """What the indexer's CollectionSpec(vectors=..., payload_indexes=..., quantization=...) gets."""
    spec = CollectionSpec(vectors={"bridged": DIM})
    assert spec.payload_m == 0
    assert spec.max_segment_size_kb is not None and spec.optimize_every is not None
    assert spec.hnsw_payload_fields == ["modality"]
    # The byte budget is the benchmark's 300k-point chunk of 256-d vectors: there the point cap binds first.
    assert spec.optimize_every is not None and spec.optimize_every_kb is not None
    bench = CollectionSpec(vectors={"bridged": 256})
    assert not bench.chunk_is_full(spec.optimize_every - 1, (spec.optimize_every - 1) * bench.point_bytes())
    assert bench.optimize_every_kb * 1024 >= bench.optimize_every * bench.point_bytes()


def test_edge_build_settings_applied_recorded_and_kept(tmp_path, corpus: Corpus) -> None:
    spec = CollectionSpec(vectors={"bridged": DIM, "proxy": DIM},
                          payload_indexes={"modality": "keyword", "path": "prefix"}, payload_m=4, hnsw_payload_fields=["modality"], max_segment_size_kb=12_345,
                          default_segment_number=3, indexing_threshold_kb=1, full_scan_threshold_kb=1,
                          optimize_every=150, acorn_max_selectivity=0.3, hnsw_memory="cached",
                          payload_index_memory={"path": "cold"},
                          indexing_threads=1, search_threads=1)
    path = tmp_path / "index"

    def check(s: EdgeStore) -> None:
        cfg = s.engine_config()
        assert cfg["hnsw_config"]["payload_m"] == 4 and cfg["hnsw_config"]["max_indexing_threads"] == 1
        assert cfg["optimizers"]["max_segment_size"] == 12_345
        assert cfg["optimizers"]["default_segment_number"] == 3
        assert cfg["optimizers"]["indexing_threshold"] == 1
        for name in BUILD_SETTINGS:
            assert getattr(s.spec, name) == getattr(spec, name), name
        assert s.info().payload_indexes == {"modality": "keyword", "path": "prefix"}  # still index-backed

    with EdgeStore(path) as s:
        s.create(spec)
        check(s)
        # optimize_every: the optimizer has run on its own (a graph exists) before any optimize() call.
        s.upsert(corpus.points(), batch=50)
        assert s.info().indexed_vectors > 0
    with EdgeStore(path) as s:
        check(s)
        assert s.count() == N
        hits = s.search("bridged", corpus.queries[0], k=5, filter=Filter(must={"modality": "depth"}))
        assert hits and all(h.payload["modality"] == "depth" for h in hits)


def test_spec_recorded_before_build_settings_reads_as_engine_defaults(tmp_path) -> None:
    """A collection.json written before these fields existed: None (engine default), not today's default."""
    old = CollectionSpec(vectors={"bridged": DIM}).to_json()
    for name in BUILD_SETTINGS:
        old.pop(name)
    spec = CollectionSpec.from_json(old)
    assert spec.payload_m is None and spec.max_segment_size_kb is None and spec.optimize_every is None
    assert spec.optimize_every_kb is None  # a store recorded before the byte budget chunks by points only
    assert spec.hnsw_payload_fields is None and spec.acorn_max_selectivity is None and spec.indexing_threads == 0


def test_spec_rejects_bad_build_settings() -> None:
    with pytest.raises(ValueError, match="optimize_every"):
        CollectionSpec(vectors={"bridged": DIM}, optimize_every=0)
    with pytest.raises(ValueError, match="optimize_every_kb"):
        CollectionSpec(vectors={"bridged": DIM}, optimize_every_kb=0)
    with pytest.raises(ValueError, match="payload_m"):
        CollectionSpec(vectors={"bridged": DIM}, payload_m=-1)
    with pytest.raises(ValueError, match="acorn_max_selectivity"):
        CollectionSpec(vectors={"bridged": DIM}, acorn_max_selectivity=1.5)
    with pytest.raises(ValueError, match="hnsw_memory"):
        CollectionSpec(vectors={"bridged": DIM}, hnsw_memory="disk")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# One graph per modality (issue 22)
# ---------------------------------------------------------------------------

OLD_INDEX = Path(__file__).parent / "assets" / "index-v1-single-shard.tar.gz"


def _old_index(tmp_path) -> Path:
    """The committed index built by the code before issue 22 (one shard for every modality): 6 images,
    3 sounds and 2 texts indexed with a tiny 16-d bridge. Its chunk files are sparse; tarfile keeps them so."""
    with tarfile.open(OLD_INDEX) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "old.index"


def test_old_single_shard_index_opens_and_searches_as_it_is(tmp_path) -> None:
    from query.search import Index

    idx = _old_index(tmp_path)
    with open_store(idx) as store:
        assert isinstance(store, EdgeStore) and not isinstance(store, PartitionedStore)
        assert store.count() == 11 and store.count(Filter(must={"modality": "image"})) == 6
        rec = next(iter(store.scroll(Filter(must={"modality": "audio"}), with_vectors=["bridged"])))
        hits = store.search("bridged", rec.vectors["bridged"], k=3, filter=Filter(must={"modality": "audio"}))
        assert hits[0].id == rec.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with Index.open(idx) as index:
        hits = index.search("a spoken seven", target="image", k=4)
        assert len(hits) == 4 and {h.modality for h in hits} == {"image"}
        both = index.search("a spoken seven", target=["image", "audio"], k=9)
        assert len(both) == 9 and {h.modality for h in both} == {"image", "audio"}
    assert sorted(p.name for p in idx.iterdir() if p.name in ("shard", "modalities")) == ["shard"]  # untouched


def test_each_modality_has_its_own_graph_and_raw_vectors(tmp_path, corpus: Corpus) -> None:
    """raw_<modality> vectors are declared only in that modality's partition; points may lack a
    declared named vector; a modality first seen later gets its partition then."""
    spec = CollectionSpec(vectors={"bridged": DIM, "proxy": DIM, "raw_image": 12})
    rng = np.random.default_rng(3)
    raw = _unit(rng.standard_normal((N, 12)))
    first = [Point(p.id, {**p.vectors, **({"raw_image": raw[i]} if corpus.payloads[i]["modality"] == "image" else {})},
                   p.payload) for i, p in enumerate(corpus.points()) if corpus.payloads[i]["modality"] != "audio"]
    with PartitionedEdgeStore(tmp_path / "pm") as store:
        store.create(spec)
        store.upsert(first)
        assert store.partitions() == ["depth", "image", "text", "thermal"]
        assert store.engine_config()["image"]["vectors"].keys() == {"bridged", "proxy", "raw_image"}
        assert store.engine_config()["depth"]["vectors"].keys() == {"bridged", "proxy"}
        # raw_image search: only image points carry it, whatever the filter says
        hits = store.search("raw_image", raw[0], k=5, exact=True)
        assert hits[0].id == corpus.ids[0] and all(h.payload["modality"] == "image" for h in hits)
        with pytest.raises(KeyError, match="not declared in the 'depth' partition"):
            store.upsert([Point(corpus.ids[2], {"bridged": corpus.bridged[2], "raw_image": raw[2]}, corpus.payloads[2])])
        # a bridge that binds audio later: declare its raw vector, then its points make the partition
        store.add_vectors({"raw_audio": 7})
        audio = [i for i in range(N) if corpus.payloads[i]["modality"] == "audio"]
        store.upsert([Point(corpus.ids[i], {"bridged": corpus.bridged[i], "raw_audio": np.ones(7, np.float32)},
                            corpus.payloads[i]) for i in audio])
        assert store.engine_config()["audio"]["vectors"].keys() == {"bridged", "proxy", "raw_audio"}
        # a vector that belongs to a built partition: that partition is rebuilt with it, its points kept
        depth = Filter(must={"modality": "depth"})
        kept = {r.id: (r.vectors, r.payload) for r in store.scroll(depth, with_vectors=True)}
        store.add_vectors({"raw_depth": 4})
        assert store.engine_config()["depth"]["vectors"].keys() == {"bridged", "proxy", "raw_depth"}
        after = {r.id: (r.vectors, r.payload) for r in store.scroll(depth, with_vectors=True)}
        assert after.keys() == kept.keys() and all(after[i][1] == kept[i][1] for i in kept)
        assert all((after[i][0][k] == v).all() for i in kept for k, v in kept[i][0].items())
        assert not [p.name for p in (tmp_path / "pm" / "modalities").iterdir() if p.name.startswith(".")]
        assert store.count() == N and store.count(Filter(must={"modality": "audio"})) == len(audio)
    with open_store(tmp_path / "pm") as store:  # reopened: same partitions, spec and answers
        assert isinstance(store, PartitionedEdgeStore) and "raw_audio" in store.spec.vectors
        q = corpus.queries[0]
        ids, _ = corpus.exact_top(q, 10, corpus.mask(lambda p: p["modality"] in ("audio", "depth")))
        hits = store.search("bridged", q, k=10, exact=True, filter=Filter(must={"modality": ["audio", "depth"]}))
        assert [h.id for h in hits] == ids


def test_a_server_store_refuses_a_vector_its_built_partitions_lack() -> None:
    """A server's collections cannot be rebuilt in place (`Store.grows_vectors` false): a vector that
    belongs to a partition with points must be declared before them."""
    store = PartitionedServerStore.memory()
    store.create(CollectionSpec(vectors={"bridged": DIM}))
    store.upsert([Point(point_id("a.png"), {"bridged": np.ones(DIM, np.float32)}, {"modality": "image"})])
    assert not store.grows_vectors
    with pytest.raises(ValueError, match="built without them"):
        store.add_vectors({"proxy": DIM})
    store.add_vectors({"raw_audio": 7})  # no partition it belongs to has points yet
    assert "raw_audio" in store.spec.vectors


def test_a_point_changing_modality_moves_and_one_without_stays(tmp_path, corpus: Corpus) -> None:
    with PartitionedEdgeStore(tmp_path / "pm") as store:
        store.create(SPEC)
        store.upsert(corpus.points())
        pid, payload = corpus.ids[0], dict(corpus.payloads[0])
        assert payload["modality"] == "image"
        store.upsert([Point(pid, {"bridged": corpus.bridged[0]}, {**payload, "modality": "depth"})])
        assert store.count() == N and [r.payload["modality"] for r in store.retrieve([pid])] == ["depth"]
        # an overwrite without a modality (what repairing a damaged point writes) stays where the point is
        store.upsert([Point(pid, {"bridged": corpus.bridged[0]}, {"damaged": True})])
        assert store.count() == N and "_none" not in store.partitions()
        assert store.count(Filter(must={"modality": "depth"})) == N // 5 + 1
        store.delete([pid])
        assert store.count() == N - 1


def test_bounded_build_then_merge_pass(tmp_path, corpus: Corpus) -> None:
    """optimize_every counts points across partitions (each chunk makes one small segment per
    partition); optimize() then merges each partition's segments (merge_segments_kb)."""
    kw = dict(full_scan_threshold_kb=1, indexing_threshold_kb=1, max_segment_size_kb=1, optimize_every=100)
    c = Corpus(seed=2, n=1000)
    for merge, most in ((None, None), (10_000, 2)):
        spec = CollectionSpec(vectors={"bridged": DIM, "proxy": DIM}, merge_segments_kb=merge, **kw)
        with PartitionedEdgeStore(tmp_path / f"m{merge}") as store:
            store.create(spec)
            store.upsert(c.points(), batch=100)
            before = {name: inf.segments for name, inf in store.partition_info().items()}
            # ~10 chunks of ~20 points per partition; the engine's optimizer keeps a few segments of them
            assert all(n >= 3 for n in before.values()), before
            store.optimize()
            after = {name: inf.segments for name, inf in store.partition_info().items()}
            if most is not None:
                assert all(n <= most < before[name] for name, n in after.items()), (before, after)
                assert store.engine_config()["image"]["optimizers"]["max_segment_size"] == 1  # the cap is back
            hits = store.search("bridged", c.queries[0], k=10, ef=64, filter=Filter(must={"modality": "audio"}))
            assert len(hits) == 10 and all(h.payload["modality"] == "audio" for h in hits)


def test_chunk_bounded_by_vector_bytes(tmp_path, corpus: Corpus) -> None:
    """optimize_every_kb: the optimizer runs once the pending points' declared vectors reach the
    budget, before the point cap; 2 x 32-d vectors are 256 bytes a point, so 4 KiB is 16 points."""
    spec = CollectionSpec(vectors={"bridged": DIM, "proxy": DIM}, indexing_threshold_kb=1, full_scan_threshold_kb=1,
                          optimize_every=1000, optimize_every_kb=4)
    with EdgeStore(tmp_path / "one") as store:
        store.create(spec)
        pts = corpus.points()
        store.upsert(pts[:12], batch=4)
        assert store.pending() == 12 and store.info().indexed_vectors == 0
        store.upsert(pts[12:20], batch=4)  # the 16th point fills the budget: 4 left after it
        assert store.pending() == 4 and store.info().indexed_vectors > 0
    with EdgeStore(tmp_path / "one") as store:
        assert store.spec.optimize_every_kb == 4  # recorded with the collection


def test_partitioned_chunk_counts_each_partitions_declared_bytes(tmp_path, corpus: Corpus) -> None:
    """Across partitions, each point counts the vectors its partition declares (its own raw_<modality>
    only), whether it carries them or not: an image point here is 4 x (32 + 96) = 512 bytes, an audio
    point 4 x (32 + 32) = 256, against a 2 KiB budget."""
    spec = CollectionSpec(vectors={"bridged": DIM, "raw_image": 96, "raw_audio": DIM}, optimize_every=1000,
                          optimize_every_kb=2)

    def pts(modality: str, lo: int, hi: int) -> list[Point]:
        return [Point(corpus.ids[i], {"bridged": corpus.bridged[i]}, {"modality": modality, "path": f"{modality}/{i}"})
                for i in range(lo, hi)]

    with PartitionedEdgeStore(tmp_path / "parts") as store:
        store.create(spec)
        store.upsert(pts("image", 0, 3))
        assert store.pending() == 3
        store.upsert(pts("image", 3, 4))  # 4 x 512 bytes = 2 KiB
        assert store.pending() == 0
        store.upsert(pts("audio", 10, 17))
        assert store.pending() == 7
        store.upsert(pts("audio", 17, 18))  # 8 x 256 bytes
        assert store.pending() == 0
        store.upsert(pts("audio", 20, 22) + pts("image", 30, 32))  # 2 x 256 + 2 x 512 < 2 KiB
        assert store.pending() == 4 and store.count() == 16


def test_old_index_migrates_once_to_one_graph_per_modality(tmp_path) -> None:
    from indexer.store import is_single_shard, migrate_to_per_modality

    idx = _old_index(tmp_path)
    with open_store(idx) as old:
        probes = [(r.payload["modality"], r.vectors["bridged"]) for r in old.scroll(with_vectors=["bridged"])]
        before = [old.search("bridged", v, k=4, exact=True, filter=Filter(must={"modality": m})) for m, v in probes]
        meta, n = old.metadata, old.count()
    migrate_to_per_modality(idx).close()
    assert not is_single_shard(idx) and not (idx / "shard").exists() and not (idx / ".migrate.tmp").exists()
    with open_store(idx) as new:
        assert isinstance(new, PartitionedEdgeStore) and new.partitions() == ["audio", "image", "text"]
        assert new.count() == n and new.metadata == meta
        for (m, v), hits in zip(probes, before):
            assert_same_hits(new.search("bridged", v, k=4, exact=True, filter=Filter(must={"modality": m})), hits)
    with pytest.raises(ValueError, match="nothing to migrate"):
        migrate_to_per_modality(idx)


def test_partitions_hold_no_modality_index_and_still_filter_by_modality(tmp_path, corpus: Corpus) -> None:
    """Within a partition every point has the same modality, so its shard has no `modality` payload
    index (the engine keeps an unindexed segment's payload indexes in RAM); the manifest keeps the
    field, and modality conditions are answered by choosing partitions."""
    with PartitionedEdgeStore(tmp_path / "pm") as store:
        store.create(SPEC)
        store.upsert(corpus.points())
        homeless = point_id("loose/item.bin")
        store.upsert([Point(homeless, {"bridged": corpus.bridged[0], "proxy": corpus.proxy[0]}, {"path": "loose/item.bin"})])
        assert store.spec.payload_indexes["modality"] == "keyword"  # the index's own spec is unchanged
        assert store.info().payload_indexes == SPEC.payload_indexes  # modality: answered by the layout
        n_depth = sum(p["modality"] == "depth" for p in corpus.payloads)
        assert store.count(Filter(must={"modality": "depth"})) == n_depth
        assert store.count(Filter(must_not={"modality": ["depth"]})) == N + 1 - n_depth  # `_none` passes it
        assert store.count(Filter(must={"modality": Range(gte=0)})) == 0  # not a name: only `_none` is asked
        want = corpus.mask(lambda p: p["modality"] in ("image", "audio") and p["label"] == "c1")
        ids, _ = corpus.exact_top(corpus.queries[0], 5, want)
        hits = store.search("bridged", corpus.queries[0], k=5, exact=True,
                            filter=Filter(must={"modality": ["image", "audio"], "label": "c1"}))
        assert [h.id for h in hits] == ids
    for name in MODALITIES + ["_none"]:
        part = EdgeStore(tmp_path / "pm" / "modalities" / name)
        assert "modality" not in part.spec.payload_indexes and "label" in part.spec.payload_indexes, name
        part.close()


def test_without_a_wal_flushed_updates_survive_a_killed_process(tmp_path) -> None:
    """The embedded store's default has no write-ahead log (wal=False): what flush() returned for
    survives a process killed before its next flush, what came after it is lost, and the store
    loads. A store recorded before the setting existed reads wal=None (the engine's default, on)."""
    import subprocess
    import sys
    import textwrap

    assert CollectionSpec(vectors={"bridged": DIM}).wal is False
    legacy = CollectionSpec(vectors={"bridged": DIM}).to_json()
    legacy.pop("wal")
    assert CollectionSpec.from_json(legacy).wal is None
    script = textwrap.dedent(f"""
        import os, numpy as np
        from indexer.store import CollectionSpec, PartitionedEdgeStore, Point, point_id
        store = PartitionedEdgeStore({str(tmp_path / "pm")!r})
        store.create(CollectionSpec(vectors={{"bridged": {DIM}}}))
        rng = np.random.default_rng(0)
        def pts(tag, n):
            return [Point(point_id(f"{{tag}}{{i}}"), {{"bridged": rng.standard_normal({DIM})}},
                          {{"path": f"{{tag}}{{i}}", "modality": ["image", "audio"][i % 2]}}) for i in range(n)]
        store.upsert(pts("kept", 300))
        store.flush()
        store.upsert(pts("lost", 100))
        store.delete([point_id("kept0")])
        os._exit(3)  # killed: no flush, no close
    """)
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert run.returncode == 3, run.stderr[-2000:]
    with open_store(tmp_path / "pm") as store:
        assert store.engine_config()["image"]["wal_enabled"] is False
        assert store.count() == 300 and store.count(Filter(must={"modality": "audio"})) == 150
        assert store.retrieve([point_id("kept0")]) and not store.retrieve([point_id("lost0")])
        rec = store.retrieve([point_id("kept7")], with_vectors=["bridged"])[0]
        assert store.search("bridged", rec.vectors["bridged"], k=1, filter=Filter(must={"modality": "audio"}))[0].id == rec.id


def test_store_with_a_wal_reports_a_garbled_wal_as_unreadable(tmp_path, corpus: Corpus) -> None:
    """wal=True still works (each partition's shard keeps a WAL), and a garbled WAL segment makes the
    store unreadable with the shard named, rather than a crash."""
    from indexer.store.types import StoreUnreadableError

    with PartitionedEdgeStore(tmp_path / "pm") as store:
        store.create(CollectionSpec(vectors={"bridged": DIM, "proxy": DIM}, wal=True))
        store.upsert(corpus.points())
        assert store.engine_config()["depth"]["wal_enabled"] is True
    with open_store(tmp_path / "pm") as store:
        assert store.count() == N
    wal = sorted((tmp_path / "pm").rglob("wal/open-*"))[0]
    with open(wal, "r+b") as fh:
        fh.write(b"\xde\xad\xbe\xef" * 4)
    with pytest.raises(StoreUnreadableError, match="the engine cannot load it"):
        with open_store(tmp_path / "pm") as store:
            store.count()


def test_a_store_without_a_wal_opens_in_one_holder_at_a_time(tmp_path, corpus: Corpus) -> None:
    """Without a WAL the engine takes no lock, so the store's own lock file keeps a second holder
    out (another process, or another store object), as the WAL's lock did; closing releases it."""
    from indexer.store import StoreInUseError

    with PartitionedEdgeStore(tmp_path / "pm") as store:
        store.create(CollectionSpec(vectors={"bridged": DIM, "proxy": DIM}))
        store.upsert(corpus.points())
    first, second = open_store(tmp_path / "pm"), open_store(tmp_path / "pm")
    try:
        assert first.count() == N  # opens every partition
        with pytest.raises(StoreInUseError, match=f"index {tmp_path / 'pm'} is in use by another process"):
            second.count()
        first.close()
        assert second.count() == N
    finally:
        first.close()
        second.close()


def test_local_mode_answers_searches_while_another_thread_writes() -> None:
    """qdrant-client's local mode (the server store's test double, and `ServerStore.local`) is numpy
    arrays that a write replaces while a search in another thread reads them: a served index whose
    folder was watched answered 400 "operands could not be broadcast together with shapes (4,) (3,)".
    Calls to one local client now go one at a time."""
    import threading
    import time

    store = PartitionedServerStore.memory()
    store.create(CollectionSpec(vectors={"bridged": 8}, payload_indexes={"modality": "keyword"}))
    rng = np.random.default_rng(0)

    def point(name: str) -> Point:
        return Point(point_id(name), {"bridged": rng.standard_normal(8).astype(np.float32)}, {"modality": "image"})

    store.upsert([point(f"p{i}") for i in range(4)])
    stop, errors, searches = threading.Event(), [], 0

    def writer() -> None:
        i = 0
        while not stop.is_set():
            store.upsert([point(f"w{i}")])
            if i % 2:
                store.delete([point_id(f"w{i - 1}")])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                assert len(store.search("bridged", rng.standard_normal(8).astype(np.float32), k=5)) == 5
                searches += 1
            except ValueError as exc:  # the race: arrays of two lengths
                errors.append(str(exc))
    finally:
        stop.set()
        thread.join()
    assert searches > 0 and errors == [], errors[:2]
