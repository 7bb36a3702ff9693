#!/usr/bin/env python
"""Search latency through the query router at scale (a benchmark script, not a test).

Builds an embedded index of N points shaped like bridged embeddings (clustered unit
vectors, five modalities in the payload, `proxy` vectors from a real bridge's G), then
times `Index.search_vectors` for top-10 on every route with a modality filter, encoding
excluded, and measures recall@10 against exact search of the same route.

    python scripts/bench_search.py --n 100000 --json search.json

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_store import make_vectors  # noqa: E402

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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from indexer.store import CollectionSpec, Filter, Point, Prefetch, open_store, point_id
    from query.search import ROUTES, Index

    bridge = small_bridge(args.dim, args.seed)
    vectors = make_vectors(args.n + args.queries, args.dim, 300, 0.8, 0.2, 16, args.seed)
    base, queries = vectors[: args.n], vectors[args.n :]
    rng = np.random.default_rng(args.seed)
    modality = rng.choice(MODALITIES, size=args.n)
    with tempfile.TemporaryDirectory() as tmp:
        spec = CollectionSpec(vectors={"bridged": args.dim, "proxy": args.dim}, hnsw_ef=args.ef,
                              quantization=None if args.quantization == "none" else "int8")
        store = open_store(Path(tmp) / "index", spec=spec)
        t0 = time.perf_counter()
        for lo in range(0, args.n, 2000):
            chunk = base[lo : lo + 2000]
            proxy = bridge.proxy_view(chunk)
            store.upsert([Point(point_id(f"item-{lo + i}"), {"bridged": chunk[i], "proxy": proxy[i]},
                                {"modality": str(modality[lo + i]), "path": f"{modality[lo + i]}/{lo + i}", "label": str((lo + i) % 10)})
                          for i in range(len(chunk))], batch=1000)
        store.optimize()
        build_s = time.perf_counter() - t0
        index = Index(store, bridge)
        flt = Filter(must={"modality": "depth"})
        views = bridge.proxy_view(queries)
        results = {}
        for route in ROUTES:
            times, recalls = [], []
            for q, g in zip(queries, views):
                t = time.perf_counter()
                hits = index.search_vectors("audio", q[None, :], target="depth", k=10, route=route)[0]
                times.append((time.perf_counter() - t) * 1000)
                if route == "direct":
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
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "routes": results}
    print(f"{args.n} points x {args.dim}-d, quantization={args.quantization}, ef={args.ef}, build {build_s:.1f}s")
    print(f"{'route':<8}{'p50 ms':>9}{'p95 ms':>9}{'recall@10':>11}")
    for route, r in results.items():
        print(f"{route:<8}{r['p50_ms']:>9.3f}{r['p95_ms']:>9.3f}{r['recall_at_10']:>11.4f}")
    if args.json:
        from bridge.provenance import write_json_report

        write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
