#!/usr/bin/env python
"""What the benchmark's evaluation costs per path (a benchmark script, not a test): on an index `ebridge
bench` built, every ordered pair and route the evaluation asks (`query.eval.evaluate`: the cross routes,
the feature routes where they apply, `auto`, search by example) is searched for the whole gallery twice,
through `Index.search_vectors` (a `SearchHit` and a payload per point, what the evaluation read before
issue 29's lean path) and through `Index.search_ids` (ids and scores only, what it reads now). Prints
and records the CPU seconds of each and whether the rankings agree: the same scores to the bit and
the same ids, tied scores as sets (the engine orders a fused list's ties differently from call to call).

    python -m scripts.bench_eval_path bench-out/indexes/anchor-s0-test --prefix test/ --json eval-path.json
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any



def requests(index: Any, points: dict[str, Any], max_queries: int, split: str) -> list[tuple[str, str, str, Any]]:
    """(source, target, route, query rows) of every search one evaluation of the index asks."""
    from query.eval.evaluate import feature_routes, query_rows
    from query.search import CROSS_ROUTES, SAME_MODALITY_ROUTES

    out = []
    for s, d in points.items():
        rows = query_rows(d["keys"], split, max_queries)
        if not rows.size:
            continue
        for t in points:
            routes = [*SAME_MODALITY_ROUTES, "auto"] if s == t else [*CROSS_ROUTES, *feature_routes(index, s, t), "auto"]
            if not index.bridge.has_proxy:
                routes = [r for r in routes if r not in ("proxy", "fused")]
            if d.get("raw") is None:
                routes = [r for r in routes if r not in ("raw", "instance")]
            out += [(s, t, r, rows) for r in routes]
    return out


def agree(ranked: Any, hits: list[Any]) -> bool:
    """The same scores in order and the same ids within each group of tied scores."""
    if ranked.scores.tolist() != [h.score for h in hits]:
        return False
    lean: dict[float, set] = {}
    full: dict[float, set] = {}
    for pid, h in zip(ranked.ids, hits):
        lean.setdefault(h.score, set()).add(pid)
        full.setdefault(h.score, set()).add(h.id)
    return lean == full


def measure(index_path: Path, prefix: str, max_queries: int, split: str) -> dict[str, Any]:
    from query.eval.evaluate import index_points
    from query.search import Index

    with Index.open(index_path, read_lock=False) as index:
        points = index_points(index.store, prefix)
        asks = requests(index, points, max_queries, split)
        views = {s: index.bridge.proxy_view(points[s]["vectors"][rows]) if index.bridge.has_proxy else None
                 for s, _, _, rows in asks}  # G's views once per source, as the evaluation draws them
        full_s = lean_s = 0.0
        hits = lists = differ = 0
        for s, t, route, rows in asks:
            q, k = points[s]["vectors"][rows], len(points[t]["keys"])
            feats = None if points[s].get("raw") is None else points[s]["raw"][rows]
            c0 = time.process_time()
            full = index.search_vectors(s, q, t, k=k, route=route, views=views[s], features=feats)
            c1 = time.process_time()
            _, lean = index.search_ids(s, q, t, k=k, route=route, views=views[s], features=feats)
            c2 = time.process_time()
            full_s, lean_s = full_s + c1 - c0, lean_s + c2 - c1
            lists += len(full)
            hits += sum(len(h) for h in full)
            differ += sum(not agree(r, h) for r, h in zip(lean, full))
    return {"index": str(index_path), "searches": len(asks), "lists": lists, "hits": hits,
            "cpu_s_search_vectors": round(full_s, 3), "cpu_s_search_ids": round(lean_s, 3),
            "speedup": round(full_s / max(lean_s, 1e-9), 2), "lists_differing_beyond_tie_order": differ}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path, help="an index `ebridge bench` built (OUT/indexes/NAME)")
    ap.add_argument("--prefix", default="test/", help="the split folder its paths sit under in the world")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-queries", type=int, default=60, help="queries per source (60: --quick's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from core.device import set_threads

    set_threads(1)
    report = measure(args.index, args.prefix, args.max_queries, args.split)
    print(f"{report['searches']} searches, {report['lists']} ranked lists, {report['hits']} hits: "
          f"search_vectors {report['cpu_s_search_vectors']} CPU s, search_ids {report['cpu_s_search_ids']} CPU s "
          f"({report['speedup']}x); lists differing beyond tie order: {report['lists_differing_beyond_tie_order']}")
    if args.json:
        from bridge.provenance import write_json_report

        write_json_report(args.json, report)
    return 0 if report["lists_differing_beyond_tie_order"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
