#!/usr/bin/env python
"""Scale benchmark of the embedded store (qdrant-edge): build time, disk, RSS, latency, recall.

Vectors are shaped like bridged embeddings: unit-norm and clustered (a few hundred
centres on the sphere plus noise), not uniform noise, which would make HNSW look worse
and quantization look better than on real data. Recall@10 is measured against exact
top-10 computed with numpy on the same vectors.

Each configuration (with / without int8 scalar quantization) is built in its own child
process so that the peak RSS of one does not hide inside the other's. Peak RSS includes
the benchmark's own copy of the vectors (n * dim * 4 bytes), reported beside it.

Usage::

    python scripts/bench_store.py                       # 100k x 256-d
    python scripts/bench_store.py --n 1000000 --json bench-1m.json
    python scripts/bench_store.py --n 100000 --m 16 --ef-construct 128 --ef 32,64,128
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.store import CollectionSpec, EdgeStore, Point, point_id  # noqa: E402

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


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if platform.system() == "Darwin" else rss * 1024


def run_config(args: argparse.Namespace, quantization: str | None, workdir: Path) -> dict[str, Any]:
    """Build one store and measure it; runs in a child process."""
    t0 = time.perf_counter()
    total = args.n + args.queries
    allv = make_vectors(total, args.dim, args.clusters, args.spread, args.noise, args.rank, args.seed)
    base, queries = allv[: args.n], allv[args.n:]  # held-out queries from the same clusters
    gen_s = time.perf_counter() - t0

    truth = exact_top_k(base, queries, 10)

    spec = CollectionSpec(
        vectors={"bridged": args.dim},
        payload_indexes={"modality": "keyword", "label": "keyword", "path": "prefix"},
        quantization=quantization,  # type: ignore[arg-type]
        hnsw_m=args.m,
        hnsw_ef_construct=args.ef_construct,
        oversampling=args.oversampling,
        vectors_memory=args.vectors_memory,
        metadata={"bench": True},
    )
    path = workdir / f"store-{quantization or 'f32'}"
    shutil.rmtree(path, ignore_errors=True)
    store = EdgeStore(path)
    store.create(spec)

    def points(lo: int, hi: int):
        rows = base[lo:hi].tolist()  # one conversion per batch, cheaper than per point
        for j, i in enumerate(range(lo, hi)):
            p = f"data/{MODALITIES[i % 5]}/{i // 1000:04d}/{i:07d}.bin"
            yield Point(point_id(p), {"bridged": rows[j]}, {"path": p, "modality": MODALITIES[i % 5],
                                                            "label": f"c{i % 100}"})

    t0 = time.perf_counter()
    for lo in range(0, args.n, args.batch):
        store.upsert(points(lo, min(args.n, lo + args.batch)), batch=args.batch)
    upsert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.optimize()
    optimize_s = time.perf_counter() - t0
    info = store.info()

    id_of = [point_id(f"data/{MODALITIES[i % 5]}/{i // 1000:04d}/{i:07d}.bin") for i in range(args.n)]
    truth_ids = [{id_of[i] for i in row} for row in truth]

    per_ef = []
    for ef in args.ef:
        for q in queries[: min(50, len(queries))]:  # warm caches and the search pool
            store.search("bridged", q, k=10, ef=ef, with_payload=False)
        lat = np.empty(len(queries))
        found = 0
        for qi, q in enumerate(queries):
            t = time.perf_counter()
            hits = store.search("bridged", q, k=10, ef=ef, with_payload=False)
            lat[qi] = time.perf_counter() - t
            found += len(truth_ids[qi] & {h.id for h in hits})
        per_ef.append({
            "ef": ef,
            "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p95_ms": float(np.percentile(lat, 95) * 1e3),
            "recall_at_10": found / (10 * len(queries)),
        })
    store.close()
    result = {
        "quantization": quantization or "none",
        "n": args.n, "dim": args.dim, "m": args.m, "ef_construct": args.ef_construct,
        "oversampling": args.oversampling if quantization else None,
        "generate_s": gen_s,
        "upsert_s": upsert_s, "optimize_s": optimize_s, "build_s": upsert_s + optimize_s,
        "upsert_points_per_s": args.n / upsert_s,
        "segments": info.segments, "indexed_vectors": info.indexed_vectors,
        "disk_bytes": dir_bytes(path),
        "peak_rss_bytes": peak_rss_bytes(),
        "dataset_bytes": int(base.nbytes + queries.nbytes),
        "search": per_ef,
    }
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)
    return result


def _child(args: argparse.Namespace, quantization: str | None, workdir: Path, q: mp.Queue) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        q.put(("ok", run_config(args, quantization, workdir)))
    except BaseException as e:  # report, do not hang the parent
        q.put(("error", repr(e)))


def print_table(results: list[dict[str, Any]]) -> None:
    gib = 1024 ** 3
    print(f"\nembedded store (qdrant-edge) | n={results[0]['n']:,} dim={results[0]['dim']} "
          f"m={results[0]['m']} ef_construct={results[0]['ef_construct']} | cpus={os.cpu_count()}")
    head = (f"{'quant':<6} {'build s':>8} {'(upsert':>8} {'+ optim)':>8} {'pts/s':>8} {'disk GiB':>9} "
            f"{'peakRSS GiB':>11} {'ef':>5} {'p50 ms':>7} {'p95 ms':>7} {'recall@10':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        for i, s in enumerate(r["search"]):
            left = (f"{r['quantization']:<6} {r['build_s']:>8.1f} {r['upsert_s']:>8.1f} {r['optimize_s']:>8.1f} "
                    f"{r['upsert_points_per_s']:>8,.0f} {r['disk_bytes'] / gib:>9.2f} "
                    f"{r['peak_rss_bytes'] / gib:>11.2f}") if i == 0 else " " * 67
            print(f"{left} {s['ef']:>5} {s['p50_ms']:>7.2f} {s['p95_ms']:>7.2f} {s['recall_at_10']:>9.4f}")
    print(f"(peak RSS includes the benchmark's own vectors: {results[0]['dataset_bytes'] / gib:.2f} GiB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="points in the store")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=300)
    ap.add_argument("--spread", type=float, default=0.8, help="within-cluster spread (norm, relative to 1)")
    ap.add_argument("--rank", type=int, default=16, help="intrinsic dimension of each cluster")
    ap.add_argument("--noise", type=float, default=0.2, help="isotropic noise norm, relative to 1")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries")
    ap.add_argument("--m", type=int, default=16, help="HNSW m")
    ap.add_argument("--ef-construct", type=int, default=100)
    ap.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=[64, 128],
                    help="comma-separated search ef values to sweep")
    ap.add_argument("--oversampling", type=float, default=2.0, help="int8 candidates per k, rescored in float")
    ap.add_argument("--vectors-memory", choices=["ram", "cold", "cached"], default=None,
                    help="where the original float vectors live in the embedded store")
    ap.add_argument("--quant", default="none,int8", help="comma-separated: none,int8")
    ap.add_argument("--batch", type=int, default=1000, help="points per upsert call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="where stores are built (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built stores")
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    ctx = mp.get_context("spawn")  # a fresh process per config: clean RSS, no inherited threads
    for name in args.quant.split(","):
        quantization = None if name == "none" else name
        log.info("building n=%d quantization=%s in %s", args.n, name, workdir)
        q: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(args, quantization, workdir, q))
        proc.start()
        status, payload = q.get()
        proc.join()
        if status != "ok":
            log.error("config %s failed: %s", name, payload)
            return 1
        results.append(payload)
        log.info("done %s: build %.1fs", name, payload["build_s"])
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "argv": sys.argv[1:], "cpus": os.cpu_count()},
                                        indent=2))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
