#!/usr/bin/env python
"""Scale benchmark of the embedded store (qdrant-edge) beside FAISS, hnswlib and exact numpy.

Vectors are shaped like bridged embeddings: unit-norm and clustered (a few hundred
centres on the sphere plus noise), not uniform noise, which would make HNSW look worse
and quantization look better than on real data. Recall@10 is measured against exact
top-10 computed with numpy on the same vectors; filtered recall against the exact top-10
among the points whose ``modality`` is ``depth`` (a fifth of them).

Every engine is built in its own child process, then opened and queried in another, so
neither phase's memory hides inside the other's: build peak RSS (the kernel's high-water
mark, file-backed mmap pages included) and the peak of its anonymous part (sampled by the
parent every 50 ms: what cannot be paged out), open time, steady-state RSS while serving,
p50/p95 latency, recall@10. The children read the vectors from a file one upsert batch at
a time (no mmap), so the figures are the engine's, not a copy of the data set held by the
benchmark. Threads: one per engine by default (``--threads``), as the machine is shared.

Engines: ``edge:<preset>`` (the project's store; presets below, ``default`` being
CollectionSpec's own defaults and ``old`` the settings before issue 15), ``faiss-hnsw``,
``faiss-sq8`` (HNSW over 8-bit scalar-quantized vectors), ``hnswlib``, ``numpy`` (exact).
Peers need the ``bench`` extra: ``pip install -e '.[bench]'``.

Usage::

    python -m scripts.bench_store                       # 100k x 256-d, every engine
    python -m scripts.bench_store --n 300000 --json bench-300k.json
    python -m scripts.bench_store --engines edge:default,edge:old --edge-custom 'capped={"max_segment_size_kb": 50000}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import platform
import queue
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bridge.provenance import provenance, write_json_report
from indexer.store import (CollectionSpec, EdgeStore, Filter, PartitionedEdgeStore, Point, Store,
                           point_id)

log = logging.getLogger("bench_store")
MODALITIES = ("image", "audio", "depth", "thermal", "text")


def make_vectors(n: int, dim: int, clusters: int, spread: float, noise: float, rank: int,
                 seed: int) -> np.ndarray:
    """Unit vectors around `clusters` random centres, with a low intrinsic dimension.

    Each cluster varies along its own random `rank`-dimensional subspace (norm `spread`
    relative to the unit centre) plus a little isotropic noise (norm `noise`). Real
    embedding spaces look like this: estimates of the intrinsic dimension of CLIP-like
    embeddings are a few tens, far below 256. Isotropic 256-d noise alone would make every
    neighbour nearly tied with the next and HNSW recall meaninglessly low.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, rank, dim)).astype(np.float32) / np.sqrt(dim)
    # Uneven cluster sizes (Zipf-like, capped so no cluster swallows the corpus), as real classes are.
    sizes = np.minimum(rng.zipf(1.5, clusters), 50).astype(np.float64)
    assign = rng.choice(clusters, size=n, p=sizes / sizes.sum())
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):  # chunked to keep the temporaries small at 1M
        stop = min(n, start + 50_000)
        a = assign[start:stop]
        z = rng.standard_normal((stop - start, rank)).astype(np.float32) * (spread / np.sqrt(rank))
        x = centres[a] + np.einsum("nr,nrd->nd", z, bases[a])
        x += noise / np.sqrt(dim) * rng.standard_normal((stop - start, dim)).astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the exact top-k by dot product (= cosine on unit vectors).

    Chunked over both queries and base so the score blocks stay ~25 MB: the peak RSS we
    report should be the store's, not this reference's.
    """
    out = np.empty((len(queries), k), np.int64)
    for q0 in range(0, len(queries), 250):
        qs = queries[q0:q0 + 250]
        best_s = np.full((len(qs), k), -np.inf, np.float32)
        best_i = np.zeros((len(qs), k), np.int64)
        for start in range(0, len(base), 25_000):
            s = qs @ base[start:start + 25_000].T
            part = np.argpartition(-s, k, axis=1)[:, :k]
            cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
            cand_i = np.concatenate([best_i, part + start], axis=1)
            top = np.argpartition(-cand_s, k, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
        out[q0:q0 + len(qs)] = best_i
    return out


FILTER_MODALITY = "depth"  # the filtered queries keep modality == this (every fifth point)
FILTER_REM = MODALITIES.index(FILTER_MODALITY)

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
            "default_segment_number": None, "optimize_every": None, "acorn_max_selectivity": None,
            "vectors_memory": None},
    # payload_m links for modality only, no ACORN: the other way to keep modality filters correct
    "modlinks": {"payload_m": 16, "hnsw_payload_fields": ["modality"], "acorn_max_selectivity": None},
    # no payload links and no ACORN: what a filtered search does without either
    "bare": {"payload_m": 0, "acorn_max_selectivity": None},
    "int8-cold": {"quantization": "int8", "vectors_memory": "cold"},
}


def payload_of(i: int) -> dict[str, Any]:
    """The payload the store holds for point `i`: what the indexer writes (path, modality, label)."""
    mod = MODALITIES[i % 5]
    return {"path": f"data/{mod}/{i // 1000:04d}/{i:07d}.bin", "modality": mod, "label": f"c{i % 100}"}


def id_of(i: int) -> str:
    return point_id(payload_of(i)["path"])


def dir_bytes(path: Path) -> int:
    """Apparent size of the files (the engine's chunk files are sparse: see dir_allocated_bytes)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def dir_allocated_bytes(path: Path) -> int:
    """Bytes the files take on disk (allocated blocks: holes in sparse files are free)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark in bytes.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a spawned child would
    report at least its parent's RSS at fork time (the parent holds the data set).
    """
    hwm = proc_status().get("VmHWM")
    if hwm:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss if platform.system() == "Darwin" else rss * 1024


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / RssAnon / RssFile / VmHWM of a process, in bytes (Linux; empty elsewhere)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def read_chunks(path: Path, n: int, dim: int, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, rows) of the base vectors, `batch` rows at a time, read (not mapped) from `path`.

    Plain reads keep the file's pages in the page cache, outside the reader's RSS, so a
    child's RSS is its engine's, not the benchmark's copy of the data.
    """
    buf = np.empty((batch, dim), np.float32)
    with open(path, "rb") as f:
        for lo in range(0, n, batch):
            rows = min(batch, n - lo)
            view = buf[:rows]
            f.readinto(memoryview(view).cast("B"))
            yield lo, view


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


def build_engine(engine: str, args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    """Build `engine` over the vectors in `data` and save it at `out`; returns build figures."""
    res: dict[str, Any] = {"build_baseline_rss_bytes": proc_status().get("VmRSS", 0)}  # interpreter + imports
    t0 = time.perf_counter()
    if engine.startswith("edge:"):
        preset = engine.split(":", 1)[1]
        spec = edge_spec(args, preset)
        res["spec"] = spec.to_json()
        res["layout"] = edge_layout(args, preset)
        store: Store = EdgeStore(out) if res["layout"] == "single" else PartitionedEdgeStore(out)
        store.create(spec)
        for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
            vecs = rows.tolist()
            store.upsert((Point(id_of(lo + j), {"bridged": v}, payload_of(lo + j)) for j, v in enumerate(vecs)),
                         batch=args.batch)
            del vecs  # before the next batch's lists exist: one batch of them at a time, not two
        res["upsert_s"] = time.perf_counter() - t0
        # Before the final optimizer run: the chunks indexed during the upserts and the last,
        # unindexed chunk (VmHWM so far), to tell the upsert phase's peak from the final index build's.
        st = proc_status()
        res["upsert_rss_bytes"], res["upsert_peak_rss_bytes"] = st.get("VmRSS", 0), st.get("VmHWM", 0)
        t1 = time.perf_counter()
        store.optimize()
        res["optimize_s"] = time.perf_counter() - t1
        info = store.info()
        res.update(segments=info.segments, indexed_vectors=info.indexed_vectors)
        res["engine_config"] = store.engine_config()  # type: ignore[attr-defined]
        if isinstance(store, PartitionedEdgeStore):
            res["partition_segments"] = {name: pi.segments for name, pi in store.partition_info().items()}
        store.close()
    elif engine in ("faiss-hnsw", "faiss-sq8"):
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
    elif engine in ("faiss-hnsw-pm", "hnswlib-pm"):
        # What a user of theirs builds for searches by modality: one index per modality (rows i % 5),
        # each keeping the global row numbers (FAISS: an IDMap) so hits are comparable.
        out.mkdir(parents=True, exist_ok=True)
        per = {m: [] for m in range(len(MODALITIES))}
        if engine == "faiss-hnsw-pm":
            faiss = _import_peer("faiss")
            faiss.omp_set_num_threads(args.threads)
            for m in per:
                per[m] = faiss.IndexIDMap(faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT))
                faiss.downcast_index(per[m].index).hnsw.efConstruction = args.ef_construct
            for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
                ids = np.arange(lo, lo + len(rows))
                for m in per:
                    sel = ids % 5 == m
                    per[m].add_with_ids(np.ascontiguousarray(rows[sel]), ids[sel])
            for m, index in per.items():
                faiss.write_index(index, str(out / f"{MODALITIES[m]}.faiss"))
        else:
            hnswlib = _import_peer("hnswlib")
            for m in per:
                per[m] = hnswlib.Index(space="ip", dim=args.dim)
                per[m].init_index(max_elements=(args.n + 4) // 5, M=args.m, ef_construction=args.ef_construct,
                                  random_seed=0)
                per[m].set_num_threads(args.threads)
            for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
                ids = np.arange(lo, lo + len(rows))
                for m in per:
                    sel = ids % 5 == m
                    per[m].add_items(rows[sel], ids[sel], num_threads=args.threads)
            for m, index in per.items():
                index.save_index(str(out / f"{MODALITIES[m]}.hnsw"))
    elif engine == "hnswlib":
        hnswlib = _import_peer("hnswlib")
        index = hnswlib.Index(space="ip", dim=args.dim)
        index.init_index(max_elements=args.n, M=args.m, ef_construction=args.ef_construct, random_seed=0)
        index.set_num_threads(args.threads)
        for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
            index.add_items(rows, np.arange(lo, lo + len(rows)), num_threads=args.threads)
        index.save_index(str(out))
    elif engine == "numpy":
        base = np.empty((args.n, args.dim), np.float32)
        for lo, rows in read_chunks(data, args.n, args.dim, args.batch):
            base[lo:lo + len(rows)] = rows
        np.save(out, base)
        out = out.with_suffix(".npy")
    else:
        raise ValueError(f"unknown engine {engine!r}")
    res["build_s"] = time.perf_counter() - t0
    res["build_peak_rss_bytes"] = peak_rss_bytes()
    res["disk_bytes"] = dir_bytes(out)
    res["disk_allocated_bytes"] = dir_allocated_bytes(out)
    return res


# ------------------------------------------------------------------------------ serve (child 2)


def open_engine(engine: str, args: argparse.Namespace, out: Path
                ) -> tuple[Callable[[np.ndarray, int, bool], list[Any]], Callable[[], None]]:
    """Open a built engine; returns search(q, ef, filtered) -> hit keys, and close()."""
    if engine.startswith("edge:"):
        store = open_edge_store(args, engine.split(":", 1)[1], out)
        flt = Filter(must={"modality": FILTER_MODALITY})

        def search(q: np.ndarray, ef: int, filtered: bool) -> list[Any]:
            return [h.id for h in store.search("bridged", q, k=10, ef=ef, with_payload=False,
                                               filter=flt if filtered else None)]
        return search, store.close
    if engine in ("faiss-hnsw-pm", "hnswlib-pm"):
        # Unfiltered: every modality's index, merged by score; filtered: the depth index alone.
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
        return search, lambda: None
    if engine.startswith("faiss"):
        faiss = _import_peer("faiss")
        faiss.omp_set_num_threads(args.threads)
        index = faiss.read_index(str(out))
        bitmap = np.packbits((np.arange(args.n) % 5 == FILTER_REM).astype(np.uint8), bitorder="little")
        selector = faiss.IDSelectorBitmap(args.n, faiss.swig_ptr(bitmap))  # borrows bitmap: keep it alive

        def search(q: np.ndarray, ef: int, filtered: bool, _bitmap: np.ndarray = bitmap) -> list[Any]:
            params = faiss.SearchParametersHNSW(efSearch=ef, sel=selector if filtered else None)
            _, idx = index.search(q[None, :], 10, params=params)
            return idx[0].tolist()
        return search, lambda: None
    if engine == "hnswlib":
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
        return search, lambda: None
    if engine == "numpy":
        base = np.load(out.with_suffix(".npy"))
        mask = np.arange(args.n) % 5 != FILTER_REM

        def search(q: np.ndarray, ef: int, filtered: bool) -> list[Any]:
            s = base @ q
            if filtered:
                s[mask] = -np.inf
            top = np.argpartition(-s, 10)[:10]
            return top[np.argsort(-s[top])].tolist()
        return search, lambda: None
    raise ValueError(f"unknown engine {engine!r}")


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


def _child(phase: str, engine: str, args: argparse.Namespace, workdir: Path, out: Path, q: mp.Queue) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        fn = build_engine if phase == "build" else serve_engine
        q.put(("ok", fn(engine, args, workdir / "base.f32", out) if phase == "build"
               else fn(engine, args, workdir, out)))
    except BaseException as e:  # report, do not hang the parent
        import traceback
        q.put(("error", f"{e!r}\n{traceback.format_exc()}"))


def mapping_kind(name: str, store_dir: Path) -> str:
    """What one /proc/PID/smaps mapping is, for the peak breakdown: anonymous memory (engine and
    Python heap), shared libraries, or a kind of store file summed over every partition and
    segment (WAL, vectors, graph, payload storage, payload indexes, id tracker), the segment
    builder's temporary files apart."""
    if not name or name.startswith("[heap]") or name.startswith("[anon"):
        return "anon (heap: engine and Python allocations)"
    if name.startswith("["):
        return "other ([stack], [vdso], ...)"
    if ".so" in Path(name).name:
        return "shared libraries"
    try:
        rel = Path(name).relative_to(store_dir).as_posix()
    except ValueError:
        return "other files"
    where = "segment builder: " if "/temp_segments/" in f"/{rel}" else ""
    for key, what in (("/wal/", "WAL"), ("vector_storage", "vectors"), ("payload_storage", "payload storage"),
                      ("payload_index", "payload indexes"), ("vector_index", "graph"), ("links", "graph"),
                      ("hnsw", "graph"), ("graph", "graph"),
                      ("id_tracker", "id tracker"), ("mutable_id_tracker", "id tracker")):
        if key in f"/{rel}":
            return where + what
    return where + re.sub(r"\d+", "N", Path(rel).name)


def smaps_breakdown(pid: int, store_dir: Path) -> dict[str, int]:
    """Resident bytes of process `pid` by `mapping_kind`, largest first (Linux; empty elsewhere)."""
    out: dict[str, int] = {}
    kind = "anon (heap, engine and Python allocations)"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    fields = line.split(None, 5)
                    kind = mapping_kind(fields[5].strip() if len(fields) > 5 else "", store_dir)
                elif line.startswith("Rss:"):
                    out[kind] = out.get(kind, 0) + int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def run_child(phase: str, engine: str, args: argparse.Namespace, workdir: Path, out: Path) -> dict[str, Any]:
    """Run one phase in a fresh process, sampling its RSS from outside every 50 ms: the peak of
    its anonymous part, and (build) where the resident memory was at its highest sample
    (``build_peak_breakdown``: /proc/PID/smaps by mapping, read whenever RSS grew 2% past the
    last breakdown, so it costs a few reads, not one per sample)."""
    ctx = mp.get_context("spawn")  # a fresh process: clean RSS, no inherited threads
    q: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(phase, engine, args, workdir, out, q))
    proc.start()
    peak_anon = 0
    breakdown: dict[str, int] = {}
    breakdown_rss = 0
    trace: list[tuple[float, int, int]] = []  # (s since start, RSS, anonymous RSS) once a second
    t0 = time.perf_counter()
    while True:
        st = proc_status(proc.pid)
        if st and (not trace or time.perf_counter() - t0 >= trace[-1][0] + 1.0):
            trace.append((round(time.perf_counter() - t0, 1), st.get("VmRSS", 0), st.get("RssAnon", 0)))
        peak_anon = max(peak_anon, st.get("RssAnon", 0))
        if phase == "build" and st.get("VmRSS", 0) > breakdown_rss * 1.02:
            found = smaps_breakdown(proc.pid, out.resolve())
            if found:
                breakdown, breakdown_rss = found, sum(found.values())
        try:
            status, payload = q.get(timeout=0.05)
            break
        except queue.Empty:
            if not proc.is_alive():
                status, payload = "error", f"child died with exit code {proc.exitcode} (out of memory?)"
                break
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{engine} {phase}: {payload}")
    payload[f"{phase}_peak_anon_bytes"] = peak_anon
    payload[f"{phase}_rss_trace"] = trace
    if breakdown:
        payload["build_peak_breakdown"] = {"sampled_rss_bytes": breakdown_rss, "by_mapping_bytes": breakdown}
    return payload


def prepare_data(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Write the base vectors (raw float32), queries and exact top-10 (plain and filtered) to `workdir`."""
    t0 = time.perf_counter()
    allv = make_vectors(args.n + args.queries, args.dim, args.clusters, args.spread, args.noise, args.rank, args.seed)
    base, queries = allv[: args.n], allv[args.n:]  # held-out queries from the same clusters
    base.tofile(workdir / "base.f32")
    np.save(workdir / "queries.npy", queries)
    np.save(workdir / "truth.npy", exact_top_k(base, queries, 10))
    keep = np.arange(FILTER_REM, args.n, 5)
    np.save(workdir / "truth_filtered.npy", keep[exact_top_k(base[keep], queries, 10)])
    log.info("data: %d x %d (+%d queries) and exact top-10 in %.1fs", args.n, args.dim, args.queries,
             time.perf_counter() - t0)
    return {"raw_vector_bytes": int(base.nbytes)}


def engine_path(workdir: Path, engine: str) -> Path:
    return workdir / engine.replace(":", "-")


def print_table(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    mib, raw = 1024 ** 2, meta["raw_vector_bytes"]
    print(f"\nn={meta['n']:,} dim={meta['dim']} m={meta['m']} ef_construct={meta['ef_construct']} "
          f"raw vectors {raw / mib:,.0f} MiB | threads per engine={meta['threads']} | cpus={meta['cpus']} "
          f"| load avg at start {meta['loadavg_start']} end {meta['loadavg_end']} (shared machine)")
    head = (f"{'engine':<17} {'build s':>8} {'peak MiB':>9} {'(x raw)':>7} {'-base x':>7} {'anon x':>6} {'disk MiB':>8} "
            f"{'open s':>6} {'serve MiB':>9} {'ef':>4} {'p50 ms':>7} {'p95 ms':>7} {'R@10':>6} "
            f"{'filt p50':>8} {'filt p95':>8} {'filt R@10':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['engine']:<17} failed: {r['error'].splitlines()[0]}")
            continue
        plain = [s for s in r["search"] if not s["filtered"]]
        filt = {s["ef"]: s for s in r["search"] if s["filtered"]}
        for i, s in enumerate(plain):
            left = (f"{r['engine']:<17} {r['build_s']:>8.1f} {r['build_peak_rss_bytes'] / mib:>9.0f} "
                    f"{r['build_peak_rss_bytes'] / raw:>7.2f} "
                    f"{(r['build_peak_rss_bytes'] - r['build_baseline_rss_bytes']) / raw:>7.2f} "
                    f"{r['build_peak_anon_bytes'] / raw:>6.2f} "
                    f"{r['disk_bytes'] / mib:>8.0f} {r['open_s']:>6.2f} {r['serve_rss_bytes'] / mib:>9.0f}"
                    if i == 0 else " " * 95)
            f = filt.get(s["ef"])
            fs = (f"{f['p50_ms']:>8.2f} {f['p95_ms']:>8.2f} {f['recall_at_10']:>9.4f}" if f
                  else f"{'n/a':>8} {'n/a':>8} {'n/a':>9}")
            ef = "-" if s["ef"] is None else str(s["ef"])
            print(f"{left} {ef:>4} {s['p50_ms']:>7.2f} {s['p95_ms']:>7.2f} {s['recall_at_10']:>6.4f} {fs}")
    print("peak = build process high-water RSS (VmHWM, file-backed pages included); -base x = the same less the "
          "interpreter + imports measured before building, / raw; anon x = sampled anonymous peak / raw; "
          "serve = RSS the opened index adds while answering queries")


def at_recall(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Per case (plain / filtered): the smallest swept ef whose recall@10 reaches `target`, with its
    p50 (None when no ef does: then the best recall's row, marked)."""
    out: dict[str, Any] = {}
    for filtered in (False, True):
        cand = sorted((r for r in rows if r["filtered"] == filtered), key=lambda r: (r["ef"] or 0))
        hit = next((r for r in cand if r["recall_at_10"] >= target), None)
        best = hit or max(cand, key=lambda r: r["recall_at_10"], default=None)
        out["filtered" if filtered else "plain"] = None if best is None else {
            "ef": best["ef"], "p50_ms": best["p50_ms"], "p95_ms": best["p95_ms"],
            "recall_at_10": best["recall_at_10"], "reached": hit is not None}
    return out


def print_equal_recall(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    target = meta["target_recall"]
    print(f"\nat equal recall: the smallest ef with recall@10 >= {target} ('*' = not reached: best recall shown)")
    print(f"{'engine':<17} {'plain ef':>8} {'p50 ms':>7} {'R@10':>6}   {'filt ef':>7} {'p50 ms':>7} {'R@10':>6}  "
          f"{'filt/plain':>10}")
    for r in results:
        eq = r.get("at_target_recall")
        if not eq or not eq["plain"] or not eq["filtered"]:
            continue
        p, f = eq["plain"], eq["filtered"]
        mark = {True: " ", False: "*"}
        print(f"{r['engine']:<17} {str(p['ef']):>8} {p['p50_ms']:>7.2f} {p['recall_at_10']:>6.3f}{mark[p['reached']]}  "
              f"{str(f['ef']):>7} {f['p50_ms']:>7.2f} {f['recall_at_10']:>6.3f}{mark[f['reached']]} "
              f"{f['p50_ms'] / p['p50_ms']:>10.2f}")


def _git_commit() -> str | None:
    import subprocess

    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("qdrant-edge-py", "qdrant-client", "numpy", "faiss-cpu", "hnswlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="points in the store")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=300)
    ap.add_argument("--spread", type=float, default=0.8, help="within-cluster spread (norm, relative to 1)")
    ap.add_argument("--rank", type=int, default=16, help="intrinsic dimension of each cluster")
    ap.add_argument("--noise", type=float, default=0.2, help="isotropic noise norm, relative to 1")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries")
    ap.add_argument("--m", type=int, default=16, help="HNSW m (every engine)")
    ap.add_argument("--ef-construct", type=int, default=100, help="HNSW ef_construct (every engine)")
    ap.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64, 128],
                    help="comma-separated search ef values to sweep")
    ap.add_argument("--engines", default="edge:default,edge:single,faiss-hnsw,faiss-hnsw-pm,hnswlib,hnswlib-pm",
                    help="comma-separated: edge:<preset>, faiss-hnsw, faiss-sq8, hnswlib, numpy, and "
                         "faiss-hnsw-pm / hnswlib-pm (one index per modality)")
    ap.add_argument("--target-recall", type=float, default=0.98,
                    help="the summary compares engines at the smallest swept ef reaching this recall@10")
    ap.add_argument("--edge-custom", action="append", default=[], metavar="NAME=JSON",
                    help="an extra edge preset: CollectionSpec fields over the defaults, "
                         "e.g. 'cap50={\"max_segment_size_kb\": 50000}'; run it as edge:NAME")
    ap.add_argument("--threads", type=int, default=1, help="threads per engine (build and search)")
    ap.add_argument("--batch", type=int, default=1000, help="points per upsert / add call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="where data and indexes go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built indexes")
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.edge_presets = {}  # travels to the children with args
    for item in args.edge_custom:
        name, _, raw = item.partition("=")
        args.edge_presets[name] = json.loads(raw)
    # Children inherit these: BLAS / OpenMP stay within --threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store-"))
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {"n": args.n, "dim": args.dim, "m": args.m, "ef_construct": args.ef_construct, "threads": args.threads,
            "cpus": os.cpu_count(), "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "argv": sys.argv[1:], "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "shared_machine_note": "load average shows other users' work on the same CPUs",
            "commit": _git_commit(), "versions": _versions(), "python": platform.python_version(),
            "target_recall": args.target_recall}
    meta.update(prepare_data(args, workdir))
    prov = provenance()  # once, at the start: the load average before the engines ran
    results = []
    for engine in args.engines.split(","):
        known = {**EDGE_PRESETS, **args.edge_presets}
        if engine.startswith("edge:") and engine.split(":", 1)[1] not in known:
            raise SystemExit(f"unknown edge preset {engine!r}; known: {sorted(known)} (add one with --edge-custom)")
        out = engine_path(workdir, engine)
        shutil.rmtree(out, ignore_errors=True)
        log.info("building %s", engine)
        load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
        try:
            res = {"engine": engine, "loadavg_build_start": load_before,
                   **run_child("build", engine, args, workdir, out)}
            log.info("built %s in %.1fs (peak %.0f MiB); serving", engine, res["build_s"],
                     res["build_peak_rss_bytes"] / 2 ** 20)
            res["loadavg_serve_start"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
            res.update(run_child("serve", engine, args, workdir, out))
            res["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
            res["at_target_recall"] = at_recall(res["search"], args.target_recall)
        except (RuntimeError, ImportError) as e:
            log.error("%s failed: %s", engine, e)
            res = {"engine": engine, "error": str(e)}
        results.append(res)
        if not args.keep:
            for p in (out, out.with_suffix(".npy")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if args.json:  # after every engine, so a long run that dies keeps what it measured
            meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
            write_json_report(args.json, {"meta": meta, "results": results, "provenance": prov})
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, meta)
    print_equal_recall(results, meta)
    if args.json:
        write_json_report(args.json, {"meta": meta, "results": results, "provenance": prov})
        log.info("wrote %s", args.json)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
