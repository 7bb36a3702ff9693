"""The indexed evaluation behind `ebridge bench` and `ebridge demo`: read an index back, ask every
ordered pair of modalities through the real router, score the hits; the raw frozen features'
own exact search (the zero-training baseline) and the query latency per route.

Example:
    from query.search import Index
    index = Index.open("bench-out/indexes/emergentbridge-s0-test")
    points = index_points(index.store, "test/")
    metrics = evaluate_index(index, points, ["direct", "auto"], max_queries=100)
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from query.eval.metrics import (qrels_by_key, ranked_list_metrics, search_metrics, zero_shot_accuracy,
                                zero_shot_from_ranked, class_embeddings)
from query.search import CROSS_ROUTES, FEATURE_ROUTES, SAME_MODALITY_ROUTES


# ------------------------------------------------------------------------------ reading an index


def index_points(store: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """All points of a store by modality, sorted by key (`prefix` + the payload path, i.e. the
    item's path in the world): point ids, keys, labels, pair keys, bridged vectors."""
    by_mod: dict[str, dict[str, Any]] = {}
    for rec in store.scroll(with_payload=True, with_vectors=True):
        p = rec.payload
        d = by_mod.setdefault(p["modality"], {"ids": [], "keys": [], "labels": [], "pairs": [], "vectors": [],
                                              "raw": []})
        d["ids"].append(rec.id)
        d["keys"].append(prefix + p["path"])
        d["labels"].append(p.get("label") or None)
        d["pairs"].append(p.get("pair") or None)
        d["vectors"].append(np.asarray(rec.vectors["bridged"], dtype=np.float32))
        d["raw"].append(rec.vectors.get(f"raw_{p['modality']}"))  # the raw route's query (search by example)
    for d in by_mod.values():
        order = np.argsort(d["keys"])
        for k in ("ids", "keys", "labels", "pairs"):
            d[k] = [d[k][i] for i in order]
        d["vectors"] = np.stack(d["vectors"])[order]
        d["raw"] = None if any(r is None for r in d["raw"]) else np.stack(d["raw"]).astype(np.float32)[order]
    return by_mod


def query_rows(keys: list[str], split: str, limit: int) -> np.ndarray:
    """Rows (into sorted `keys`) of the queries: items of `split`, at most `limit`, drawn with a
    fixed seed, so every variant, route and the raw baseline ask the same queries."""
    rows = np.flatnonzero([k.startswith(split + "/") for k in keys])
    if rows.size > limit:
        rows = np.sort(np.random.default_rng(7).choice(rows, size=limit, replace=False))
    return rows


def relevance_of(mode: str, q_pairs: list, c_pairs: list) -> str:
    """"pair" or "label" for one ordered pair: `auto` takes pair keys when both sides share any."""
    if mode != "auto":
        return mode
    return "pair" if {p for p in q_pairs if p} & {p for p in c_pairs if p} else "label"


def _subsets(labels: list, unseen: set[str]) -> dict[str, np.ndarray]:
    if not unseen:
        return {}
    is_unseen = np.array([y in unseen for y in labels])
    return {"seen": np.flatnonzero(~is_unseen), "unseen": np.flatnonzero(is_unseen)}


def _score(q_keys, ranked_keys, ranked_labels, qrels, q_labels, zero_shot: bool) -> dict[str, Any]:
    m: dict[str, Any] = ranked_list_metrics(q_keys, ranked_keys, qrels)
    m["top1"] = m["top5"] = None
    if zero_shot:
        m.update(zero_shot_from_ranked(q_labels, ranked_labels, ks=(1, 5)))
    return m


def feature_routes(index: Any, source: str, target: str) -> list[str]:
    """The encoder-feature routes (`raw`, `instance`) a cross pair can take in `index`: `raw` where one
    encoder reads both sides and the index stores the target's features, `instance` where the bridge
    also holds a map for the pair. As at training (`choose_cross_modal_routes`), only for pairs the
    bridge searches directly: a never-paired pair is G's to route."""
    b = index.bridge
    if source == target or not index.shares_encoder(source, target) or not index.has_raw(target) \
            or (b.has_proxy and not b.is_paired(source, target)):
        return []
    return ["raw", *(["instance"] if b.has_instance(source, target) else [])]


def evaluate_index(index: Any, points: dict[str, Any], routes: list[str], max_queries: int, *, split: str = "test",
                   relevance: str = "auto", zero_shot: bool = True, unseen: set[str] = frozenset(),
                   max_k: int = 1000) -> dict[str, dict[str, Any]]:
    """Metrics for every ordered cross-modal pair and route through the router.

    Queries are `split` items of the source modality, with their stored encoder features (the
    `raw`/`instance` routes' queries, asked only of pairs that can take them: `feature_routes`); the
    corpus is every point of the target modality in the index (the gallery). Where `raw` is scored,
    each other route records `vs_raw`: (queries only it gets right at rank 1, only raw does).
    Zero-shot (text targets, labelled queries): a query's class ranking is the order in which labels
    first appear among its prompt hits. A hit's key is its point's in `points` (see `index_points`).
    Every route asks `Index.search_ids` (whole files, ids and scores only: each query ranks the whole
    gallery, which mAP needs)."""
    from bridge.modalities import MODALITIES

    out: dict[str, dict[str, Any]] = {}
    mods = [m for m in MODALITIES if m in points]
    for s in mods:
        rows = query_rows(points[s]["keys"], split, max_queries)
        if not rows.size:
            continue
        q = points[s]["vectors"][rows]
        q_keys = [points[s]["keys"][i] for i in rows]
        q_labels = [points[s]["labels"][i] for i in rows]
        q_pairs = [points[s]["pairs"][i] for i in rows]
        features = None if points[s].get("raw") is None else points[s]["raw"][rows]
        views = index.bridge.proxy_view(q) if index.bridge.has_proxy else None  # once per source
        for t in mods:
            if s == t:
                continue  # search by example: `evaluate_same_modality`
            c = points[t]
            how, qrels = qrels_for(relevance, q_keys, q_pairs, q_labels, c)
            zs = zero_shot and t == "text" and any(q_labels) and any(c["labels"])
            pair = out.setdefault(f"{s}->{t}", {"paired": bool(index.bridge.is_paired(s, t)), "relevance": how,
                                                "queries": len(q_keys), "gallery": len(c["keys"])})
            k = min(len(c["keys"]), max_k)
            first: dict[str, list[bool]] = {}
            for route in routes:
                if route in ("proxy", "fused") and views is None:
                    continue  # a zero-training space has no G
                if route in FEATURE_ROUTES and (features is None or route not in feature_routes(index, s, t)):
                    continue
                taken, hits = index.search_ids(s, q, t, k=k, route=route, views=views, features=features)
                ranked, ranked_labels = _keys_and_labels(hits, c)
                m = _score(q_keys, ranked, ranked_labels, qrels, q_labels, zs)
                for name, sub in _subsets(q_labels, unseen).items():
                    m[name] = _score([q_keys[i] for i in sub], [ranked[i] for i in sub],
                                     [ranked_labels[i] for i in sub], qrels, [q_labels[i] for i in sub], zs) \
                        if sub.size else None
                if route == "auto":
                    m["route"] = taken if hits and len(hits[0]) else None
                pair[route] = m
                first[route] = [bool(r) and r[0] in qrels.get(key, ()) for r, key in zip(ranked, q_keys)]
            for route in (r for r in first if r != "raw" and "raw" in first):
                pair[route]["vs_raw"] = list(discordant(first[route], first["raw"]))
    return out


def evaluate_same_modality(index: Any, points: dict[str, Any], routes: list[str], max_queries: int, *,
                           split: str = "test", unseen: set[str] = frozenset(), max_k: int = 1000
                           ) -> dict[str, dict[str, Any]]:
    """Search by example, m -> m for every labelled modality: through the space (`direct`) and
    through the encoder's own features (`raw`, the zero-training baseline), relevance by label,
    each query's own item left out of its hits. Kept apart from the cross-modal pairs' means."""
    out: dict[str, dict[str, Any]] = {}
    for m, d in points.items():
        rows = query_rows(d["keys"], split, max_queries)
        if rows.size and any(d["labels"][i] for i in rows):
            _same_modality(index, m, rows, d, routes, max_k, unseen, out)
    return out


def _same_modality(index: Any, m: str, rows: np.ndarray, d: dict[str, Any], routes: list[str], max_k: int,
                   unseen: set[str], out: dict[str, dict[str, Any]]) -> None:
    q_keys = [d["keys"][i] for i in rows]
    q_labels = [d["labels"][i] for i in rows]
    qrels = qrels_by_key(q_keys, q_labels, d["keys"], d["labels"])
    qrels = {q: set(rel) - {q} for q, rel in qrels.items()}
    k = min(len(d["keys"]) - 1, max_k)
    if k < 1:
        return
    pair = out.setdefault(f"{m}->{m}", {"relevance": "label", "queries": len(q_keys), "gallery": len(d["keys"]) - 1})
    features = d["raw"][rows] if d.get("raw") is not None else None
    wanted = [r for r in routes if r in (*SAME_MODALITY_ROUTES, "auto")] or list(SAME_MODALITY_ROUTES)
    first: dict[str, list[bool]] = {}  # per route: was each query's first hit relevant
    for route in wanted:
        if route == "raw" and features is None:
            continue  # an index without raw vectors
        taken, hits = index.search_ids(m, d["vectors"][rows], m, k=k + 1, route=route, features=features)
        ranked = [[key for key in keys if key != q][:k] for keys, q in zip(_keys_and_labels(hits, d)[0], q_keys)]
        no_labels = [[None]] * len(q_keys)
        metrics = _score(q_keys, ranked, no_labels, qrels, q_labels, False)
        for name, sub in _subsets(q_labels, unseen).items():
            metrics[name] = _score([q_keys[i] for i in sub], [ranked[i] for i in sub], [[None]] * len(sub), qrels,
                                   [q_labels[i] for i in sub], False) if sub.size else None
        if route == "auto":
            metrics["route"] = taken if hits and len(hits[0]) else None
        pair[route] = metrics
        first[route] = [bool(r) and r[0] in qrels.get(q, ()) for r, q in zip(ranked, q_keys)]
    if "direct" in first and "raw" in first:
        pair["direct_only"], pair["raw_only"] = discordant(first["direct"], first["raw"])


def _keys_and_labels(hits: list[Any], corpus: dict[str, Any]) -> tuple[list[list[str]], list[list[Any]]]:
    """Each query's ranked keys and labels, read off `corpus` (one modality of `index_points`) by point id."""
    key_of, label_of = dict(zip(corpus["ids"], corpus["keys"])), dict(zip(corpus["ids"], corpus["labels"]))
    return [[key_of[i] for i in r.ids] for r in hits], [[label_of[i] for i in r.ids] for r in hits]


def discordant(a: list[bool], b: list[bool]) -> tuple[int, int]:
    """(queries only `a` gets right at rank 1, queries only `b` gets right): what a sign test reads."""
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def qrels_for(relevance: str, q_keys: list, q_pairs: list, q_labels: list, corpus: dict[str, Any]) -> tuple[str, Any]:
    """("pair" or "label", the qrels) for queries against one modality's corpus."""
    how = relevance_of(relevance, q_pairs, corpus["pairs"])
    return how, qrels_by_key(q_keys, q_pairs if how == "pair" else q_labels, corpus["keys"],
                             corpus["pairs"] if how == "pair" else corpus["labels"])


# ------------------------------------------------------------------------------ the raw-feature baseline


def raw_baseline(world: Any, preset: Any, cache: Any, splits: list[str], max_queries: int, *, relevance: str,
                 zero_shot: bool, unseen: set[str]) -> dict[str, dict[str, Any]]:
    """Exact search on the frozen encoders' own (normalised) features, for every ordered pair
    whose two sides share an encoder; the same queries, gallery and qrels as the routed runs."""
    mods = world.modalities("test")
    pairs = [(s, t) for s in mods for t in mods if s != t and preset.shares_encoder(s, t)]
    if not pairs:
        return {}
    keyed = keyed_features(world, preset, cache, splits, sorted({m for p in pairs for m in p}))
    for d in keyed.values():
        x = d["features"].astype(np.float32)
        d["vectors"] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = {}
    for s, t in pairs:
        src, c = keyed[s], keyed[t]
        rows_q = query_rows(src["keys"], "test", max_queries)
        if not rows_q.size:
            continue
        q_keys = [src["keys"][i] for i in rows_q]
        q_labels = [src["labels"][i] for i in rows_q]
        q_pairs = [src["pairs"][i] for i in rows_q]
        how = relevance_of(relevance, q_pairs, c["pairs"])
        qrels = qrels_by_key(q_keys, q_pairs if how == "pair" else q_labels, c["keys"],
                             c["pairs"] if how == "pair" else c["labels"])

        def score(sub: np.ndarray) -> dict[str, Any]:
            keys = [q_keys[i] for i in sub]
            m: dict[str, Any] = search_metrics(src["vectors"][rows_q[sub]], keys, c["vectors"], c["keys"], qrels)
            m["top1"] = m["top5"] = None
            if zero_shot and t == "text" and any(q_labels) and any(c["labels"]):
                test_prompts = [i for i, k in enumerate(c["keys"]) if k.startswith("test/") and c["labels"][i]]
                classes, names = class_embeddings(c["vectors"][test_prompts], [c["labels"][i] for i in test_prompts])
                m.update(zero_shot_accuracy(src["vectors"][rows_q[sub]], [q_labels[i] for i in sub], classes, names,
                                            ks=(1, 5)))
            return m

        res = score(np.arange(len(q_keys)))
        for name, sub in _subsets(q_labels, unseen).items():
            res[name] = score(sub) if sub.size else None
        out[f"{s}->{t}"] = {"relevance": how, **res}
    return out


# ------------------------------------------------------------------------------ settings on validation


def keyed_features(world: Any, preset: Any, cache: Any, splits: list[str], modalities: list[str] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Frozen features of the items of `splits` by modality, sorted by key (as `index_points`)."""
    from bridge.pairs import training_set

    need = [m for m in world.modalities() if modalities is None or m in modalities]
    rows = [r for split in splits for r in world.rows(split) if r.modality in need]
    if not rows:
        return {}
    feats = training_set(rows, preset, cache)  # grouped by modality, in row order
    out: dict[str, dict[str, Any]] = {}
    for m in feats:
        its = [it for split in splits for it in world.items if it.split == split and it.modality == m]
        order = np.argsort([it.key for it in its])
        out[m] = {"keys": [its[i].key for i in order], "labels": [its[i].label for i in order],
                  "pairs": [its[i].pair for i in order], "features": feats[m].features[order]}
    return out


def latency(index: Any, points: dict[str, Any], n: int = 100) -> dict[str, dict[str, float]]:
    """p50/p95 ms of one top-10 query per route for one unpaired pair (audio -> depth when there
    is one), encoding excluded: G's view of the query is timed on its own, as part of encoding."""
    mods = list(points)
    unpaired = [(s, t) for s in mods for t in mods if s != t and not index.bridge.is_paired(s, t)]
    s, t = ("audio", "depth") if {"audio", "depth"} <= points.keys() else \
        (unpaired[0] if unpaired else tuple(mods[:2]) if len(mods) > 1 else (mods[0], mods[0]))
    rows = query_rows(points[s]["keys"], points[s]["keys"][0].split("/", 1)[0], n)
    q = points[s]["vectors"][rows]
    out: dict[str, dict[str, float]] = {"pair": f"{s}->{t}"}  # type: ignore[dict-item]
    views, times = [], []
    for v in q:
        t0 = time.perf_counter()
        views.append(index.bridge.proxy_view(v[None, :]))
        times.append((time.perf_counter() - t0) * 1000)
    out["proxy_view"] = _percentiles(times)
    for route in CROSS_ROUTES:
        times = []
        for v, g in zip(q, views):
            t0 = time.perf_counter()
            index.search_vectors(s, v[None, :], target=t, k=10, route=route, views=g)
            times.append((time.perf_counter() - t0) * 1000)
        out[route] = _percentiles(times)
    return out


def _percentiles(times_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(times_ms, 50)), 3), "p95_ms": round(float(np.percentile(times_ms, 95)), 3)}
