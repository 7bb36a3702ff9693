#!/usr/bin/env python
"""Search latency through the query router at scale (a benchmark script, not a test).

Builds an embedded index of N points shaped like bridged embeddings (clustered unit
vectors, five modalities in the payload, `proxy` vectors from a real bridge's G), then
times `Index.search_vectors` for top-10 on every route with a modality filter, encoding
excluded, and measures recall@10 against exact search of the same route. The depth points also
carry `raw_depth`, the encoder's own features (`--raw-dim`, 1280 as EfficientNet-Lite0's): the
`raw` route of search by example; `--raw-dim 0` builds without them, to measure what they cost
(build time, peak memory, the index's size on disk).

    python -m scripts.bench_search --n 100000 --json search.json
    python -m scripts.bench_search --n 100000 --raw-dim 0 --json search-noraw.json

Goal (issue 4): p50 under 5 ms and recall@10 >= 0.98 at 100k points.
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scripts.store_data import make_vectors

MODALITIES = ["image", "text", "audio", "depth", "thermal"]


def small_bridge(dim: int, seed: int):
    """A real (small) trained bridge whose G makes the proxy vectors; MLP G, so 100k views are cheap."""
    from bridge.pairs import ModalityData
    from bridge.train import TrainConfig, train

    rng = np.random.default_rng(seed)
    data = {}
    for m, d in {"image": 32, "text": 16, "audio": 24, "depth": 32, "thermal": 32}.items():
        centres = rng.normal(size=(10, d))
        labels = [str(i % 10) for i in range(400)]
        feats = np.stack([centres[int(y)] + rng.normal(size=d) * 0.5 for y in labels]).astype(np.float32)
        data[m] = ModalityData([f"{m}{i}" for i in range(400)], feats, labels)
    cfg = TrainConfig(preset="synthetic", dim=dim, proxy_model="mlp", steps=60, proxy_steps=60, seed=seed)
    return train(cfg, data)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--quantization", choices=["none", "int8"], default="none")
    ap.add_argument("--ef", type=int, default=128, help="HNSW ef at query time")
    ap.add_argument("--raw-dim", type=int, default=1280, help="size of the depth points' raw vectors (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from indexer.store import CollectionSpec, Filter, Point, Prefetch, open_store, point_id
    from query.search import CROSS_ROUTES, Index

    bridge = small_bridge(args.dim, args.seed)
    vectors = make_vectors(args.n + args.queries, args.dim, 300, 0.8, 0.2, 16, args.seed)
    base, queries = vectors[: args.n], vectors[args.n :]
    rng = np.random.default_rng(args.seed)
    modality = rng.choice(MODALITIES, size=args.n)
    with tempfile.TemporaryDirectory() as tmp:
        raw_dim = args.raw_dim
        raw_all = make_vectors(args.n + args.queries, raw_dim, 300, 0.8, 0.2, 16, args.seed + 1) if raw_dim else None
        spec = CollectionSpec(vectors={"bridged": args.dim, "proxy": args.dim,
                                       **({"raw_depth": raw_dim} if raw_dim else {})}, hnsw_ef=args.ef,
                              quantization=None if args.quantization == "none" else "int8")
        store = open_store(Path(tmp) / "index", spec=spec)
        t0 = time.perf_counter()
        for lo in range(0, args.n, 2000):
            chunk = base[lo : lo + 2000]
            proxy = bridge.proxy_view(chunk)
            def vectors_of(i: int) -> dict:
                out = {"bridged": chunk[i], "proxy": proxy[i]}
                if raw_dim and modality[lo + i] == "depth":
                    out["raw_depth"] = raw_all[lo + i]
                return out

            store.upsert([Point(point_id(f"item-{lo + i}"), vectors_of(i),
                                {"modality": str(modality[lo + i]), "path": f"{modality[lo + i]}/{lo + i}", "label": str((lo + i) % 10)})
                          for i in range(len(chunk))], batch=1000)
        store.optimize()
        build_s = time.perf_counter() - t0
        disk_mib = sum(f.stat().st_size for f in (Path(tmp) / "index").rglob("*") if f.is_file()) / 2**20
        index = Index(store, bridge)
        flt = Filter(must={"modality": "depth"})
        views = bridge.proxy_view(queries)
        results = {}
        raw_queries = raw_all[args.n:] if raw_dim else None
        for route in (*CROSS_ROUTES, "raw") if raw_dim else CROSS_ROUTES:
            times, recalls = [], []
            for j, (q, g) in enumerate(zip(queries, views)):
                t = time.perf_counter()
                if route == "raw":  # search by example: a depth map's own features against the depth points'
                    hits = index.search_vectors("depth", q[None, :], target="depth", k=10, route="raw",
                                                features=raw_queries[j][None, :])[0]
                else:
                    hits = index.search_vectors("audio", q[None, :], target="depth", k=10, route=route)[0]
                times.append((time.perf_counter() - t) * 1000)
                if route == "raw":
                    exact = store.search("raw_depth", raw_queries[j], 10, flt, exact=True)
                elif route == "direct":
                    exact = store.search("bridged", q, 10, flt, exact=True)
                elif route == "proxy":
                    exact = store.search("proxy", g, 10, flt, exact=True)
                else:
                    depth = max(index.fusion.depth, 10)
                    exact = store.search_fused([Prefetch("bridged", q, depth, 1.0), Prefetch("proxy", g, depth, 1.0)],
                                               10, flt, exact=True)
                recalls.append(len({h.id for h in hits} & {h.id for h in exact}) / 10)
            results[route] = {"p50_ms": round(float(np.percentile(times, 50)), 3),
                              "p95_ms": round(float(np.percentile(times, 95)), 3),
                              "recall_at_10": round(float(np.mean(recalls)), 4)}
        store.close()
    report = {"n": args.n, "dim": args.dim, "queries": args.queries, "quantization": args.quantization,
              "ef": args.ef, "filter": "modality=depth (1/5 of points)", "build_s": round(build_s, 1),
              "raw_dim": raw_dim, "disk_mib": round(disk_mib, 1),
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "routes": results}
    print(f"{args.n} points x {args.dim}-d (+ raw_depth {raw_dim}-d on depth points), quantization={args.quantization}, "
          f"ef={args.ef}, build {build_s:.1f}s, {disk_mib:.0f} MiB on disk, peak RSS {report['peak_rss_mib']} MiB")
    print(f"{'route':<8}{'p50 ms':>9}{'p95 ms':>9}{'recall@10':>11}")
    for route, r in results.items():
        print(f"{route:<8}{r['p50_ms']:>9.3f}{r['p95_ms']:>9.3f}{r['recall_at_10']:>11.4f}")
    if args.json:
        from bridge.provenance import write_json_report

        write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
