"""The engines of the store benchmark (`scripts.bench_store`): how each is built over the data file,
opened, and searched, and the child process that builds or serves one of them.

Engines: ``edge:<preset>`` (the project's store; presets below), ``faiss-hnsw``, ``faiss-sq8``,
``faiss-hnsw-pm`` / ``hnswlib-pm`` (one index per modality), ``hnswlib``, ``numpy`` (exact).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from indexer.store import CollectionSpec, EdgeStore, Filter, PartitionedEdgeStore, Point, Store
from scripts.store_data import FILTER_MODALITY, FILTER_REM, MODALITIES, id_of, payload_of, read_chunks
from scripts.store_procs import cpu_seconds, dir_allocated_bytes, dir_bytes, peak_rss_bytes, proc_status

Search = Callable[[np.ndarray, int, bool], list[Any]]

# Settings of the project's store to compare. "default" is whatever CollectionSpec defaults to
# (what the indexer gets); "old" is the spec before the build bounds existed (engine defaults:
# payload links on every indexed field, no segment cap, one optimizer run at the end).
# "layout": "single" is one shard for every modality (every store before issue 22); without it the
# store is per modality (PartitionedEdgeStore, what new indexes get).
EDGE_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "single": {"layout": "single"},
    # the bounded build without / with the final merge pass (issue 22)
    "nomerge": {"merge_segments_kb": None},
    "merge": {"merge_segments_kb": 1_000_000},
    "old": {"layout": "single", "payload_m": None, "hnsw_payload_fields": None, "max_segment_size_kb": None,
            "default_segment_number": None, "optimize_every": None, "optimize_every_kb": None,
            "acorn_max_selectivity": None,
            "vectors_memory": None},
    # payload_m links for modality only, no ACORN: the other way to keep modality filters correct
    "modlinks": {"payload_m": 16, "hnsw_payload_fields": ["modality"], "acorn_max_selectivity": None},
    # no payload links and no ACORN: what a filtered search does without either
    "bare": {"payload_m": 0, "acorn_max_selectivity": None},
    "int8-cold": {"quantization": "int8", "vectors_memory": "cold"},
    # the chunk before issue 29 (100k points: partitions' 20k segments merged and re-built), and the
    # same chunk with the merges stopped (more, smaller graphs per partition)
    # (the default byte budget, optimize_every_kb 300,000, is 300k of the bench's 256-d points: it never
    # binds here)
    "chunk100k": {"optimize_every": 100_000},
    "chunk100k-nomerge": {"optimize_every": 100_000, "default_segment_number": 4},
}



def _import_peer(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError as e:
        pip = {"faiss": "faiss-cpu"}.get(name, name)
        raise ImportError(f"engine needs {pip}: pip install -e '.[bench]' (or pip install {pip}; a private install "
                          f"elsewhere: PYTHONPATH=DIR python -m scripts.bench_store ...)") from e


def edge_layout(args: argparse.Namespace, preset: str) -> str:
    return dict({**EDGE_PRESETS, **args.edge_presets}[preset]).get("layout", "per-modality")


def open_edge_store(args: argparse.Namespace, preset: str, out: Path) -> Store:
    """The preset's store at `out`, as `open_store` opens it: a per-modality store reads its
    manifest here and opens each partition on first use (see serve_engine's cold figures)."""
    if edge_layout(args, preset) == "single":
        return EdgeStore(out)
    return PartitionedEdgeStore(out)


def edge_spec(args: argparse.Namespace, preset: str) -> CollectionSpec:
    over = dict({**EDGE_PRESETS, **args.edge_presets}[preset])
    over.pop("layout", None)
    spec = CollectionSpec(
        vectors={"bridged": args.dim},
        payload_indexes={"modality": "keyword", "label": "keyword", "path": "prefix"},
        hnsw_m=args.m, hnsw_ef_construct=args.ef_construct,
        indexing_threads=args.threads, search_threads=args.threads,
        metadata={"bench": True},
    )
    return dataclasses.replace(spec, **over)



# ------------------------------------------------------------------------------ build (child 1)


def _build_edge(preset: str, args: argparse.Namespace, data: Path, out: Path, res: dict[str, Any]) -> Path:
    spec = edge_spec(args, preset)
    res["spec"] = spec.to_json()
    res["layout"] = edge_layout(args, preset)
    store: Store = EdgeStore(out) if res["layout"] == "single" else PartitionedEdgeStore(out)
    store.create(spec)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
        vecs = rows.tolist()
        store.upsert((Point(id_of(lo + j), {"bridged": v}, payload_of(lo + j)) for j, v in enumerate(vecs)),
                     batch=args.batch)
        del vecs  # before the next batch's lists exist: one batch of them at a time, not two
    res["upsert_s"], res["upsert_cpu_s"] = time.perf_counter() - t0, cpu_seconds() - cpu0
    # Before the final optimizer run: the chunks indexed during the upserts and the last,
    # unindexed chunk (VmHWM so far), to tell the upsert phase's peak from the final index build's.
    st = proc_status()
    res["upsert_rss_bytes"], res["upsert_peak_rss_bytes"] = st.get("VmRSS", 0), st.get("VmHWM", 0)
    t1, cpu1 = time.perf_counter(), cpu_seconds()
    store.optimize()
    res["optimize_s"], res["optimize_cpu_s"] = time.perf_counter() - t1, cpu_seconds() - cpu1
    info = store.info()
    res.update(segments=info.segments, indexed_vectors=info.indexed_vectors)
    res["engine_config"] = store.engine_config()  # type: ignore[attr-defined]
    if isinstance(store, PartitionedEdgeStore):
        res["partition_segments"] = {name: pi.segments for name, pi in store.partition_info().items()}
    store.close()
    return out


def _build_faiss(engine: str, args: argparse.Namespace, data: Path, out: Path) -> Path:
    faiss = _import_peer("faiss")
    faiss.omp_set_num_threads(args.threads)
    if engine == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexHNSWSQ(args.dim, faiss.ScalarQuantizer.QT_8bit, args.m, faiss.METRIC_INNER_PRODUCT)
        # Train the quantizer's ranges on the first 50k vectors (its whole training input).
        sample = next(read_chunks(data, min(args.n, 50_000), args.dim, min(args.n, 50_000)))[1]
        index.train(sample)
        del sample
    index.hnsw.efConstruction = args.ef_construct
    for _, rows in read_chunks(data, args.n, args.dim, args.batch):
        index.add(rows)
    faiss.write_index(index, str(out))
    return out


def _build_per_modality(engine: str, args: argparse.Namespace, data: Path, out: Path) -> Path:
    """What a user of theirs builds for searches by modality: one index per modality (rows i % 5),
    each keeping the global row numbers (FAISS: an IDMap) so hits are comparable."""
    out.mkdir(parents=True, exist_ok=True)
    per: dict[int, Any] = {}
    if engine == "faiss-hnsw-pm":
        faiss = _import_peer("faiss")
        faiss.omp_set_num_threads(args.threads)
        for m in range(len(MODALITIES)):
            per[m] = faiss.IndexIDMap(faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT))
            faiss.downcast_index(per[m].index).hnsw.efConstruction = args.ef_construct
    else:
        hnswlib = _import_peer("hnswlib")
        for m in range(len(MODALITIES)):
            per[m] = hnswlib.Index(space="ip", dim=args.dim)
            per[m].init_index(max_elements=(args.n + 4) // 5, M=args.m, ef_construction=args.ef_construct,
                              random_seed=0)
            per[m].set_num_threads(args.threads)
    for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
        ids = np.arange(lo, lo + len(rows))
        for m, index in per.items():
            sel = ids % 5 == m
            if engine == "faiss-hnsw-pm":
                index.add_with_ids(np.ascontiguousarray(rows[sel]), ids[sel])
            else:
                index.add_items(rows[sel], ids[sel], num_threads=args.threads)
    for m, index in per.items():
        if engine == "faiss-hnsw-pm":
            faiss.write_index(index, str(out / f"{MODALITIES[m]}.faiss"))
        else:
            index.save_index(str(out / f"{MODALITIES[m]}.hnsw"))
    return out


def _build_hnswlib(args: argparse.Namespace, data: Path, out: Path) -> Path:
    hnswlib = _import_peer("hnswlib")
    index = hnswlib.Index(space="ip", dim=args.dim)
    index.init_index(max_elements=args.n, M=args.m, ef_construction=args.ef_construct, random_seed=0)
    index.set_num_threads(args.threads)
    for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
        index.add_items(rows, np.arange(lo, lo + len(rows)), num_threads=args.threads)
    index.save_index(str(out))
    return out


def _build_numpy(args: argparse.Namespace, data: Path, out: Path) -> Path:
    base = np.empty((args.n, args.dim), np.float32)
    for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
        base[lo:lo + len(rows)] = rows
    np.save(out, base)
    return out.with_suffix(".npy")


def build_engine(engine: str, args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    """Build `engine` over the vectors in `data` and save it at `out`; returns build figures
    (wall and CPU seconds: on a shared machine CPU time is the build's own cost)."""
    res: dict[str, Any] = {"build_baseline_rss_bytes": proc_status().get("VmRSS", 0)}  # interpreter + imports
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    if engine.startswith("edge:"):
        written = _build_edge(engine.split(":", 1)[1], args, data, out, res)
    elif engine in ("faiss-hnsw", "faiss-sq8"):
        written = _build_faiss(engine, args, data, out)
    elif engine in ("faiss-hnsw-pm", "hnswlib-pm"):
        written = _build_per_modality(engine, args, data, out)
    elif engine == "hnswlib":
        written = _build_hnswlib(args, data, out)
    elif engine == "numpy":
        written = _build_numpy(args, data, out)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    res["build_s"] = time.perf_counter() - t0
    res["build_cpu_s"] = cpu_seconds() - cpu0
    res["build_peak_rss_bytes"] = peak_rss_bytes()
    res["disk_bytes"] = dir_bytes(written)
    res["disk_allocated_bytes"] = dir_allocated_bytes(written)
    return res


# ------------------------------------------------------------------------------ serve (child 2)


def _open_edge(preset: str, args: argparse.Namespace, out: Path) -> tuple[Search, Callable[[], None]]:
    store = open_edge_store(args, preset, out)
    flt = Filter(must={"modality": FILTER_MODALITY})

    def search(q: np.ndarray, ef: int, filtered: bool) -> list[Any]:
        return [h.id for h in store.search("bridged", q, k=10, ef=ef, with_payload=False,
                                           filter=flt if filtered else None)]
    return search, store.close


def _open_per_modality(engine: str, args: argparse.Namespace, out: Path) -> Search:
    """Unfiltered: every modality's index, merged by score; filtered: the depth index alone."""
    if engine == "faiss-hnsw-pm":
        faiss = _import_peer("faiss")
        faiss.omp_set_num_threads(args.threads)
        indexes = [faiss.read_index(str(out / f"{m}.faiss")) for m in MODALITIES]

        def one(i: int, q: np.ndarray, ef: int) -> tuple[np.ndarray, np.ndarray]:
            d, idx = indexes[i].search(q[None, :], 10, params=faiss.SearchParametersHNSW(efSearch=ef))
            return d[0], idx[0]
    else:
        hnswlib = _import_peer("hnswlib")
        indexes = []
        for m in MODALITIES:
            index = hnswlib.Index(space="ip", dim=args.dim)
            index.load_index(str(out / f"{m}.hnsw"))
            index.set_num_threads(args.threads)
            indexes.append(index)

        def one(i: int, q: np.ndarray, ef: int) -> tuple[np.ndarray, np.ndarray]:
            indexes[i].set_ef(ef)
            labels, dist = indexes[i].knn_query(q, k=10, num_threads=1)
            return 1.0 - dist[0], labels[0]  # ip space: distance = 1 - dot

    def search(q: np.ndarray, ef: int, filtered: bool) -> list[Any]:
        if filtered:
            return one(FILTER_REM, q, ef)[1].tolist()
        scores, ids = zip(*(one(i, q, ef) for i in range(len(MODALITIES))))
        s, i = np.concatenate(scores), np.concatenate(ids)
        return i[np.argsort(-s)[:10]].tolist()
    return search


def _open_faiss(args: argparse.Namespace, out: Path) -> Search:
    faiss = _import_peer("faiss")
    faiss.omp_set_num_threads(args.threads)
    index = faiss.read_index(str(out))
    bitmap = np.packbits((np.arange(args.n) % 5 == FILTER_REM).astype(np.uint8), bitorder="little")
    selector = faiss.IDSelectorBitmap(args.n, faiss.swig_ptr(bitmap))  # borrows bitmap: keep it alive

    def search(q: np.ndarray, ef: int, filtered: bool, _bitmap: np.ndarray = bitmap) -> list[Any]:
        params = faiss.SearchParametersHNSW(efSearch=ef, sel=selector if filtered else None)
        _, idx = index.search(q[None, :], 10, params=params)
        return idx[0].tolist()
    return search


def _open_hnswlib(args: argparse.Namespace, out: Path) -> Search:
    hnswlib = _import_peer("hnswlib")
    index = hnswlib.Index(space="ip", dim=args.dim)
    index.load_index(str(out), max_elements=args.n)
    index.set_num_threads(args.threads)

    def keep(label: int) -> bool:
        return label % 5 == FILTER_REM

    def search(q: np.ndarray, ef: int, filtered: bool) -> list[Any]:
        index.set_ef(ef)
        labels, _ = index.knn_query(q, k=10, num_threads=1, filter=keep if filtered else None)
        return labels[0].tolist()
    return search


def _open_numpy(args: argparse.Namespace, out: Path) -> Search:
    base = np.load(out.with_suffix(".npy"))
    mask = np.arange(args.n) % 5 != FILTER_REM

    def search(q: np.ndarray, ef: int, filtered: bool) -> list[Any]:
        s = base @ q
        if filtered:
            s[mask] = -np.inf
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])].tolist()
    return search


def open_engine(engine: str, args: argparse.Namespace, out: Path) -> tuple[Search, Callable[[], None]]:
    """Open a built engine; returns search(q, ef, filtered) -> hit keys, and close()."""
    if engine.startswith("edge:"):
        return _open_edge(engine.split(":", 1)[1], args, out)
    if engine in ("faiss-hnsw-pm", "hnswlib-pm"):
        search = _open_per_modality(engine, args, out)
    elif engine.startswith("faiss"):
        search = _open_faiss(args, out)
    elif engine == "hnswlib":
        search = _open_hnswlib(args, out)
    elif engine == "numpy":
        search = _open_numpy(args, out)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    return search, lambda: None


def serve_engine(engine: str, args: argparse.Namespace, workdir: Path, out: Path) -> dict[str, Any]:
    """Open the built engine in a fresh process and measure open time, latency, recall and RSS."""
    queries = np.load(workdir / "queries.npy")
    truth = {False: np.load(workdir / "truth.npy"), True: np.load(workdir / "truth_filtered.npy")}
    rss_before_open = proc_status().get("VmRSS", 0)
    t0 = time.perf_counter()
    search, close = open_engine(engine, args, out)
    open_lazy_s = time.perf_counter() - t0
    # A cold search of one modality: what a user waits for after opening (a per-modality store
    # opens that modality's partition now); then the first search of all modalities (every partition).
    t1 = time.perf_counter()
    search(queries[0], args.ef[0], True)
    cold_filtered_ms = (time.perf_counter() - t1) * 1e3
    t1 = time.perf_counter()
    search(queries[0], args.ef[0], False)
    first_query_ms = (time.perf_counter() - t1) * 1e3
    open_s = time.perf_counter() - t0  # everything loaded: comparable across layouts and engines
    # Our store answers with point ids (UUIDs of the paths); the peers with row numbers.
    key: Callable[[int], Any] = id_of if engine.startswith("edge:") else int
    exact_ef = [args.ef[0]] if engine == "numpy" else args.ef  # ef means nothing to exact search
    rows = []
    for filtered in (False, True):
        want = [{key(int(i)) for i in row} for row in truth[filtered]]
        for ef in exact_ef:
            for q in queries[:50]:  # warm caches and the search pool
                search(q, ef, filtered)
            lat = np.empty(len(queries))
            found = 0
            for qi, q in enumerate(queries):
                t = time.perf_counter()
                got = search(q, ef, filtered)
                lat[qi] = time.perf_counter() - t
                found += len(want[qi] & set(got))
            rows.append({"ef": None if engine == "numpy" else ef, "filtered": filtered,
                         "p50_ms": float(np.percentile(lat, 50) * 1e3), "p95_ms": float(np.percentile(lat, 95) * 1e3),
                         "recall_at_10": found / (10 * len(queries))})
    st = proc_status()
    close()
    return {"open_s": open_s, "open_lazy_s": open_lazy_s, "cold_filtered_ms": cold_filtered_ms,
            "first_query_ms": first_query_ms, "search": rows,
            "serve_rss_bytes": st.get("VmRSS", 0) - rss_before_open, "serve_anon_bytes": st.get("RssAnon", 0),
            "serve_peak_rss_bytes": peak_rss_bytes(), "serve_process_rss_bytes": st.get("VmRSS", 0),
            "serve_baseline_rss_bytes": rss_before_open}


def child_main(phase: str, engine: str, args: argparse.Namespace, workdir: Path, out: Path, q: mp.Queue) -> None:
    """The child process of `store_procs.run_child`: build or serve one engine, answer on `q`."""
    logging.basicConfig(level=logging.WARNING)
    try:
        fn = build_engine if phase == "build" else serve_engine
        q.put(("ok", fn(engine, args, workdir / "base.f32", out) if phase == "build"
               else fn(engine, args, workdir, out)))
    except BaseException as e:  # report, do not hang the parent
        import traceback
        q.put(("error", f"{e!r}\n{traceback.format_exc()}"))
