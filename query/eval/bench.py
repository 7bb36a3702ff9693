"""`ebridge bench`: the whole system, measured pair by pair, on any dataset.

One path for every dataset (`--dataset digits|esc50|nyud|sunrgbd|llvip|audiocaps|clotho|manifest`):
adapter -> world (split folders + the pairs manifest, see `query.eval.tasks`) -> train the
variants -> index with the real indexer -> query through the router -> report.

For every seed: `anchor` trains the base space and G once; each proxy variant re-binds on
that base for every setting of a small, bounded sweep (default `lambda_proxy` in
{1, 2, 4, 8, 16}), each candidate is indexed and scored on the **validation** split, and the
best one (mean unpaired R@1 under the best route per pair, paired pairs kept within a point
of `anchor`) is the one tested. The route table is calibrated on validation too; the test
split is touched once per variant and seed. Every report holds the raw frozen features
(no bridge) for pairs whose two sides share an encoder, seen and unseen classes apart
(`--unseen`), and the wall time of each stage. Output in `--out`: report.json, report.md and PNGs.

Example:
    ebridge bench --quick --data ../shared/data --out bench-out
    ebridge bench --dataset esc50 --data ~/data/ESC-50-master --preset offline --out esc50-out
    ebridge bench --dataset manifest --data my/manifest.csv --out mine
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bridge.config import VARIANTS
from core.errors import EmergentBridgeError
from bridge.validation import clearly_better
from query.eval.digits import DIGITS_PRESET
from query.eval.metrics import (qrels_by_key, ranked_list_metrics, search_metrics, zero_shot_accuracy,
                                zero_shot_from_ranked, class_embeddings)
from query.eval.tasks import DATASETS
from query.search import CROSS_ROUTES as ROUTES
from query.search import FEATURE_ROUTES

log = logging.getLogger(__name__)
QUICK_TRAINING = {"steps": 300, "proxy_steps": 600}
# lambda 4 (then the grid's top) was chosen for both proxy variants with validation still rising: the
# grid reaches past it.
DEFAULT_SWEEP = {"lambda_proxy": [1.0, 2.0, 4.0, 8.0, 16.0]}
MAX_SWEEP = 16  # candidates per variant and seed: the sweep must stay small
METRICS = ("r1", "r5", "r10", "map", "mrr10", "ndcg10", "top1", "top5")
PAIRED_TOLERANCE = 0.01  # a candidate may cost paired pairs at most one R@1 point on validation


@dataclass
class BenchConfig:
    out: Path
    dataset: str = "digits"
    data: Path | None = None  # the dataset folder (digits: ../shared/data; None = the shipped sample)
    scale: str | None = None  # digits world only; None: "full" with --data, the shipped "sample" without
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    preset: str = DIGITS_PRESET
    max_queries: int = 300  # per source modality, sampled once with a fixed seed
    train_overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "mps"; None: torch's default
    sweep: dict[str, list[Any]] = field(default_factory=lambda: dict(DEFAULT_SWEEP))
    unseen: list[str] | int | None = None  # classes held out of train and val (class-disjoint split)
    gallery: str = "test"  # "test", or "test+train": the test index also holds the training items
    anchor: str | None = None
    proxy: str | None = None
    max_k: int = 1000  # hits asked per query; relevant items beyond count as misses
    sweep_every_seed: bool = False  # False: the sweep runs on the first seed, later seeds reuse its choice

    # The defaults above are `ebridge bench`'s: the CLI reads them from here (see add_parser).
    def __post_init__(self) -> None:
        if self.scale is None:
            self.scale = "full" if self.data is not None else "sample"


class StageTimer:
    """Wall seconds per stage (encode, train, index, query), summed over the run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0

    def report(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.seconds.items()}


# ------------------------------------------------------------------------------ reading an index


def index_points(store: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """All points of a store by modality, sorted by key (`prefix` + the payload path, i.e. the
    item's path in the world): keys, labels, pair keys, bridged vectors."""
    by_mod: dict[str, dict[str, Any]] = {}
    for rec in store.scroll(with_payload=True, with_vectors=True):
        p = rec.payload
        d = by_mod.setdefault(p["modality"], {"keys": [], "labels": [], "pairs": [], "vectors": [], "raw": []})
        d["keys"].append(prefix + p["path"])
        d["labels"].append(p.get("label") or None)
        d["pairs"].append(p.get("pair") or None)
        d["vectors"].append(np.asarray(rec.vectors["bridged"], dtype=np.float32))
        d["raw"].append(rec.vectors.get(f"raw_{p['modality']}"))  # the raw route's query (search by example)
    for d in by_mod.values():
        order = np.argsort(d["keys"])
        for k in ("keys", "labels", "pairs"):
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
                   max_k: int = 1000, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Metrics for every ordered cross-modal pair and route through the router.

    Queries are `split` items of the source modality, with their stored encoder features (the
    `raw`/`instance` routes' queries, asked only of pairs that can take them: `feature_routes`); the
    corpus is every point of the target modality in the index (the gallery). Where `raw` is scored,
    each other route records `vs_raw`: (queries only it gets right at rank 1, only raw does).
    Zero-shot (text targets, labelled queries): a query's class ranking is the order in which labels
    first appear among its prompt hits. `prefix` + a hit's payload path is its key in `points`
    (see `index_points`)."""
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
            how, qrels = _relevant(relevance, q_keys, q_pairs, q_labels, c)
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
                hits = index.search_vectors(s, q, target=t, k=k, route=route, views=views, features=features)
                ranked = [[prefix + str(h.path) for h in hs] for hs in hits]
                ranked_labels = [[h.label or None for h in hs] for hs in hits]
                m = _score(q_keys, ranked, ranked_labels, qrels, q_labels, zs)
                for name, sub in _subsets(q_labels, unseen).items():
                    m[name] = _score([q_keys[i] for i in sub], [ranked[i] for i in sub],
                                     [ranked_labels[i] for i in sub], qrels, [q_labels[i] for i in sub], zs) \
                        if sub.size else None
                if route == "auto":
                    m["route"] = hits[0][0].route if hits and hits[0] else None
                pair[route] = m
                first[route] = [bool(r) and r[0] in qrels.get(key, ()) for r, key in zip(ranked, q_keys)]
            for route in (r for r in first if r != "raw" and "raw" in first):
                pair[route]["vs_raw"] = list(discordant(first[route], first["raw"]))
    return out


SAME_MODALITY_ROUTES = ("direct", "raw")


def evaluate_same_modality(index: Any, points: dict[str, Any], routes: list[str], max_queries: int, *,
                           split: str = "test", unseen: set[str] = frozenset(), max_k: int = 1000,
                           prefix: str = "") -> dict[str, dict[str, Any]]:
    """Search by example, m -> m for every labelled modality: through the space (`direct`) and
    through the encoder's own features (`raw`, the zero-training baseline), relevance by label,
    each query's own item left out of its hits. Kept apart from the cross-modal pairs' means."""
    out: dict[str, dict[str, Any]] = {}
    for m, d in points.items():
        rows = query_rows(d["keys"], split, max_queries)
        if rows.size and any(d["labels"][i] for i in rows):
            _same_modality(index, m, rows, d, routes, max_k, unseen, out, prefix)
    return out


def _same_modality(index: Any, m: str, rows: np.ndarray, d: dict[str, Any], routes: list[str], max_k: int,
                   unseen: set[str], out: dict[str, dict[str, Any]], prefix: str) -> None:
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
        hits = index.search_vectors(m, d["vectors"][rows], target=m, k=k + 1, route=route, features=features)
        ranked = [[key for key in (prefix + str(h.path) for h in hs) if key != q][:k] for hs, q in zip(hits, q_keys)]
        no_labels = [[None]] * len(q_keys)
        metrics = _score(q_keys, ranked, no_labels, qrels, q_labels, False)
        for name, sub in _subsets(q_labels, unseen).items():
            metrics[name] = _score([q_keys[i] for i in sub], [ranked[i] for i in sub], [[None]] * len(sub), qrels,
                                   [q_labels[i] for i in sub], False) if sub.size else None
        if route == "auto":
            metrics["route"] = hits[0][0].route if hits and hits[0] else None
        pair[route] = metrics
        first[route] = [bool(r) and r[0] in qrels.get(q, ()) for r, q in zip(ranked, q_keys)]
    if "direct" in first and "raw" in first:
        pair["direct_only"], pair["raw_only"] = discordant(first["direct"], first["raw"])


def discordant(a: list[bool], b: list[bool]) -> tuple[int, int]:
    """(queries only `a` gets right at rank 1, queries only `b` gets right): what a sign test reads."""
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


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


def fused_order(direct: np.ndarray, proxy: np.ndarray, k: int, fusion: Any = None) -> list[np.ndarray]:
    """The fused route's ranking computed in numpy, as `Index.search(route="fused")` ranks it: each
    side's top `max(fusion.depth, k)` by score, fused with the store's weighted RRF (`rrf_scores`,
    `DEFAULT_RRF_K`, the weights of `FusionSettings`), the top `k` of the items either side found.
    One row of item indices per query, best first."""
    from indexer.store.types import DEFAULT_RRF_K, rrf_scores
    from query.search import FusionSettings

    f = fusion or FusionSettings()
    depth = min(max(f.depth, k), direct.shape[1])
    sides = [np.argsort(-scores, axis=1, kind="stable")[:, :depth] for scores in (direct, proxy)]
    fused = rrf_scores(sides, [f.direct_weight, f.proxy_weight], direct.shape[1], DEFAULT_RRF_K)
    order = np.argsort(-fused, axis=1, kind="stable")[:, :k]
    return [row[fused[i, row] > 0] for i, row in enumerate(order)]


def validate_exact(bridge: Any, val: dict[str, dict[str, Any]], max_queries: int, relevance: str = "auto",
                   max_k: int = 1000) -> dict[str, dict[str, Any]]:
    """Validation R@1/mAP per pair and route by exact search in numpy on the validation
    features: the sweep's yardstick, so trying a setting costs no indexing. Same queries,
    qrels, depth (`max_k` hits) and route definitions as `evaluate_index` (fused: `fused_order`)."""
    emb = {m: bridge.embed_features(m, d["features"]) for m, d in val.items() if m in bridge.modalities}
    views = {m: bridge.proxy_view(z) for m, z in emb.items()}
    out: dict[str, dict[str, Any]] = {}
    for s in emb:
        rows = query_rows(val[s]["keys"], "val", max_queries)
        if not rows.size:
            continue
        q_keys = [val[s]["keys"][i] for i in rows]
        q_labels = [val[s]["labels"][i] for i in rows]
        q_pairs = [val[s]["pairs"][i] for i in rows]
        for t in emb:
            if s == t:
                continue
            c = val[t]
            how, qrels = _relevant(relevance, q_keys, q_pairs, q_labels, c)
            direct, proxy = emb[s][rows] @ emb[t].T, views[s][rows] @ views[t].T
            k = min(len(c["keys"]), max_k)
            orders = {"direct": np.argsort(-direct, axis=1, kind="stable")[:, :k],
                      "proxy": np.argsort(-proxy, axis=1, kind="stable")[:, :k], "fused": fused_order(direct, proxy, k)}
            res: dict[str, Any] = {"paired": bool(bridge.is_paired(s, t)), "relevance": how}
            for route, order in orders.items():
                res[route] = ranked_list_metrics(q_keys, [[c["keys"][j] for j in row] for row in order], qrels)
            out[f"{s}->{t}"] = res
    return out


def calibrate_routes(val_metrics: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Best route per pair by validation R@1 (then mAP); ties keep the simpler route. The encoder's
    own features are the floor wherever they are scored: search by example and a cross pair on one
    encoder take another route only where it clearly beats them (sign test, `clearly_better`, as at
    training), so a pair is never below the zero-training baseline on a tie or on noise."""
    table = {}
    for pair, res in val_metrics.items():
        if "direct_only" in res:  # search by example: the space only where it clearly beats the encoder
            table[pair] = "direct" if clearly_better(res["direct_only"], res["raw_only"]) else "raw"
            continue
        candidates = [r for r in (*ROUTES, *FEATURE_ROUTES) if isinstance(res.get(r), dict)]
        if "raw" in candidates:
            candidates = [r for r in candidates if r == "raw" or clearly_better(*res[r].get("vs_raw", (0, 0)))]
        preference = ["raw", "instance", *ROUTES]
        table[pair] = max(candidates, key=lambda r: (round(res[r]["r1"], 6), round(res[r]["map"], 6),
                                                     -preference.index(r)))
    return table


def validation_score(val_metrics: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Mean R@1 of the unpaired and of the paired pairs, each pair under its best route (what
    calibrating the route table on these figures would give)."""
    best = {p: max(res[r]["r1"] for r in ROUTES) for p, res in val_metrics.items()}
    unpaired = [v for p, v in best.items() if not val_metrics[p]["paired"]]
    paired = [v for p, v in best.items() if val_metrics[p]["paired"]]
    return {"unpaired_r1": round(float(np.mean(unpaired)), 4) if unpaired else None,
            "paired_r1": round(float(np.mean(paired)), 4) if paired else None}


def choose(trials: list[dict[str, Any]], anchor_paired: float | None) -> int:
    """The trial to test: best validation unpaired R@1 (all pairs when none is unpaired) among
    those that keep the paired pairs within a point of `anchor`; first in grid order on ties."""
    def objective(t: dict[str, Any]) -> float:
        v = t["val"]
        return v["unpaired_r1"] if v["unpaired_r1"] is not None else (v["paired_r1"] or 0.0)

    ok = [i for i, t in enumerate(trials) if anchor_paired is None or t["val"]["paired_r1"] is None
          or t["val"]["paired_r1"] >= anchor_paired - PAIRED_TOLERANCE]
    pool = ok or list(range(len(trials)))
    return max(pool, key=lambda i: (round(objective(trials[i]), 6), -i))


def grid_edges(setting: dict[str, Any], sweep: dict[str, list[Any]]) -> list[str]:
    """The swept settings whose chosen value is the smallest or largest of its grid (a grid to extend)."""
    return [f"{k}={v}" for k, v in setting.items() if len(sweep.get(k, [])) > 2
            and isinstance(v, (int, float)) and v in (min(sweep[k]), max(sweep[k]))]


def sweep_candidates(sweep: dict[str, list[Any]], variant: str, base_keys: tuple[str, ...],
                     bound_modalities: bool) -> list[dict[str, Any]]:
    """The settings to try for one variant: `anchor` and `oracle` sweep only base settings (they
    have no proxy term for lambda to weigh), and nothing is swept that cannot matter (no modality
    bound in stage 3)."""
    keys = [k for k in sweep if (variant not in ("anchor", "oracle") or k in base_keys)
            and (bound_modalities or k in base_keys)]
    combos = [dict(zip(keys, values)) for values in itertools.product(*(sweep[k] for k in keys))]
    if len(combos) > MAX_SWEEP:
        raise ValueError(f"the sweep has {len(combos)} settings per variant; keep it to {MAX_SWEEP} or fewer")
    return combos or [{}]


def _train_config(cfg: BenchConfig, world: Any, variant: str, seed: int, setting: dict[str, Any]) -> Any:
    from bridge.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {**cfg.train_overrides, **setting, "preset": cfg.preset, "variant": variant, "seed": seed,
             "anchor": world.spec.anchor, "proxy": world.spec.proxy}
    unknown = set(given) - known
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}")
    return TrainConfig(**given)


# ------------------------------------------------------------------------------ the run


def _relevant(relevance: str, q_keys: list, q_pairs: list, q_labels: list, corpus: dict[str, Any]) -> tuple[str, Any]:
    """("pair" or "label", the qrels) for queries against one modality's corpus."""
    how = relevance_of(relevance, q_pairs, corpus["pairs"])
    return how, qrels_by_key(q_keys, q_pairs if how == "pair" else q_labels, corpus["keys"],
                             corpus["pairs"] if how == "pair" else corpus["labels"])


class NothingToScore(EmergentBridgeError, ValueError):
    """The benchmark's test split holds nothing that can be scored."""


def check_something_to_score(world: Any, gallery: str = "test") -> None:
    """Refuse, with the reason, a world whose test queries have nothing to find: at least one
    ordered pair of modalities must have test queries and a gallery item relevant to one of them
    (the same pair key, else the same label). Class prompts of any split count: they are added to
    the test gallery (`query.eval.tasks`)."""
    splits = {"test", "train"} if gallery == "test+train" else {"test"}
    test = [it for it in world.items if it.split == "test"]
    shown = [it for it in world.items if it.split in splits]
    mods = sorted({it.modality for it in test})
    for s in mods:
        q = [it for it in test if it.modality == s]
        for t in {it.modality for it in shown} - {s}:
            c = [it for it in shown if it.modality == t]
            how = relevance_of(world.spec.relevance, [it.pair for it in q], [it.pair for it in c])
            key = (lambda it: it.pair) if how == "pair" else (lambda it: it.label)  # noqa: E731
            if {key(it) for it in q if key(it)} & {key(it) for it in c if key(it)}:
                return
    counts = ", ".join(f"{m} {n}" for m, n in world.counts()["test"].items() if n) or "none"
    what = "the gallery holds one modality only" if len({it.modality for it in shown}) < 2 else \
        "no test query shares a label or pair key with a gallery item of another modality"
    raise NothingToScore(f"{world.spec.title}: nothing to score: {what} (test items: {counts}). Add test rows of a "
                         "second modality sharing labels or pair keys with them, or labelled text rows (class "
                         "prompts, in any split) for zero-shot")


def variants_to_run(asked: list[str], bound: bool, modalities: list[str]) -> tuple[list[str], str | None]:
    """The variants worth training, and why others are not: they differ only in how stage 3 binds
    modalities beyond the anchor and proxy, so with nothing to bind they are one model."""
    if bound or len(asked) < 2:
        return list(asked), None
    keep = ["anchor"] if "anchor" in asked else asked[:1]
    note = (f"only `{keep[0]}` runs: the data holds {' and '.join(modalities)} only (the anchor and the proxy), "
            f"so nothing is bound in stage 3 and {', '.join(asked)} would be one and the same model")
    log.warning("%s", note)
    return keep, note


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark described by `cfg`; returns the report (also written to `cfg.out`)."""
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache
    from bridge.pairs import training_set
    from bridge.train import train
    from query.eval.report import write_report
    from query.eval.tasks import prepare_world

    from bridge.train import BASE_KEYS
    from bridge.provenance import provenance

    prov = provenance()  # at the start: the code that runs is the checkout as it is now, not when it ends
    t_start = time.perf_counter()
    timer = StageTimer()
    cfg.out.mkdir(parents=True, exist_ok=True)
    with timer("prepare"):
        world = prepare_world(cfg.dataset, cfg.data, cfg.out, scale=cfg.scale, unseen=cfg.unseen,
                              anchor=cfg.anchor, proxy=cfg.proxy)
    spec, unseen = world.spec, set(world.unseen)
    check_something_to_score(world, cfg.gallery)  # before any encoder loads
    if cfg.device is not None:
        from core.device import resolve_device

        resolve_device(cfg.device)  # a device that is not here fails before any work
    preset = load_preset(cfg.preset)
    if cfg.device is not None:
        preset.to(cfg.device)
    cache = FeatureCache(cfg.out / "cache")
    preset_info = preset.info()
    with timer("encode"):
        train_set = training_set(world.rows("train"), preset, cache)
        val_rows = world.rows("val")
        # Validation picks each head's best step (and, below, the swept settings); never test.
        val_set = training_set(val_rows, preset, cache) if val_rows else None
    mods = world.modalities()
    bound = any(m not in (spec.anchor, spec.proxy) for m in train_set)
    variants, variants_note = variants_to_run(cfg.variants, bound, sorted(train_set))
    sweep = {k: v for k, v in cfg.sweep.items() if bound or k in BASE_KEYS}  # what is really swept
    gallery_splits = ["test", "train"] if cfg.gallery == "test+train" else ["test"]
    with timer("encode"):  # the raw features' own search is counted with encoding: no bridge involved
        raw = raw_baseline(world, preset, cache, gallery_splits, cfg.max_queries, relevance=spec.relevance,
                           zero_shot=spec.zero_shot, unseen=unseen)

    eval_opts = {"relevance": spec.relevance, "zero_shot": spec.zero_shot, "unseen": unseen, "max_k": cfg.max_k}
    runs: dict[str, dict[int, Any]] = {v: {} for v in variants}
    selection: dict[str, dict[int, Any]] = {v: {} for v in variants}
    indexing: list[dict[str, Any]] = []
    lat: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    order = sorted(variants, key=lambda v: v != "anchor")  # anchor trains the shared base

    def build_index(bridge: Any, name: str, split: str) -> Any:
        from indexer.index import index_directory
        from query.search import Index

        path = cfg.out / "indexes" / name
        shutil.rmtree(path, ignore_errors=True)
        with timer("index"):
            if split == "test" and cfg.gallery == "test+train":
                summary = index_directory(world.root, path, bridge=bridge, sidecar=world.root / "gallery.csv",
                                          exclude=["val"], batch_size=64, progress=False, device=cfg.device)
            else:
                summary = index_directory(world.root / split, path, bridge=bridge, batch_size=64, progress=False,
                                          device=cfg.device)
        indexing.append({"run": name, "items": summary.indexed, "items_per_s": summary.items_per_s,
                         "seconds": summary.seconds, "encode_seconds": summary.encode_seconds,
                         "errors": summary.errors})
        return Index.open(path, device=cfg.device)

    def prefix_of(split: str) -> str:  # the test index of a test+train gallery is the world folder itself
        return "" if split == "test" and cfg.gallery == "test+train" else f"{split}/"

    zero_training = None
    if preset.aligned_pairs:  # the preset's pretrained space alone, nothing bound: the zero-training row
        from bridge.space import Bridge

        zb = Bridge.from_preset(preset, extra=[m for m in ("depth", "thermal") if m in mods])
        zb.feature_cache = cache
        index = build_index(zb, "zero-training-test", "test")
        points = index_points(index.store, prefix_of("test"))
        with timer("query"):
            zero_training = {
                "modalities": zb.modalities,
                "pairs": evaluate_index(index, points, ["auto"], cfg.max_queries, split="test",
                                        prefix=prefix_of("test"), **eval_opts),
                "same_modality": evaluate_same_modality(index, points, [*SAME_MODALITY_ROUTES, "auto"],
                                                        cfg.max_queries, split="test", prefix=prefix_of("test"),
                                                        unseen=unseen, max_k=cfg.max_k)}
        index.close()
    with timer("encode"):
        val_feats = keyed_features(world, preset, cache, ["val"])
    chosen_settings: dict[str, dict[str, Any]] = {}
    for seed_no, seed in enumerate(cfg.seeds):
        bases: dict[tuple, Any] = {}
        anchor_paired: float | None = None
        for variant in order:
            sweeping = seed_no == 0 or cfg.sweep_every_seed or variant not in chosen_settings
            candidates = sweep_candidates(sweep, variant, BASE_KEYS, bound) if sweeping \
                else [chosen_settings[variant]]
            trials = []
            for setting in candidates:
                tc = _train_config(cfg, world, variant, seed, setting)
                base_key = tuple(getattr(tc, k, None) for k in BASE_KEYS)
                with timer("train"):
                    bridge, curves = train(tc, train_set, val=val_set, preset_info=preset_info,
                                           base=bases.get(base_key), device=cfg.device)
                bases.setdefault(base_key, bridge)
                with timer("query"):
                    val = validate_exact(bridge, val_feats, cfg.max_queries, spec.relevance, cfg.max_k) \
                        if val_feats else {}
                trials.append({"setting": setting, "val": validation_score(val), "bridge": bridge, "config": tc,
                               "curves": curves})
                log.info("%s seed %d %s: validation %s", variant, seed, setting or "(defaults)", trials[-1]["val"])
            pick = choose(trials, anchor_paired if variant != "anchor" else None)
            chosen = trials[pick]
            edges = grid_edges(chosen["setting"], sweep) if len(trials) > 2 else []
            if edges:
                log.warning("%s seed %d: %s chosen at the edge of its grid; extend --sweep past it before comparing",
                            variant, seed, ", ".join(edges))
            chosen_settings.setdefault(variant, chosen["setting"])
            if variant == "anchor":
                anchor_paired = chosen["val"]["paired_r1"]
                settings = {k: v for k, v in dataclasses.asdict(chosen["config"]).items()
                            if k not in ("variant", "seed")}
            bridge = chosen["bridge"]
            bridge.save(cfg.out / "checkpoints" / f"{variant}-s{seed}", chosen["curves"])
            bridge.feature_cache = cache  # indexing re-uses the frozen features
            # The route table is calibrated through the real index and router, on validation.
            index = build_index(bridge, f"{variant}-s{seed}-val", "val")
            with timer("query"):
                val_routed = evaluate_index(index, index_points(index.store, prefix_of("val")),
                                            [*ROUTES, *FEATURE_ROUTES],
                                            cfg.max_queries, split="val", prefix=prefix_of("val"), **eval_opts)
            with timer("query"):
                val_same = evaluate_same_modality(index, index_points(index.store, prefix_of("val")),
                                                  list(SAME_MODALITY_ROUTES), cfg.max_queries, split="val",
                                                  prefix=prefix_of("val"), max_k=cfg.max_k)
            index.close()
            routes = calibrate_routes(val_routed)
            same_routes = calibrate_routes(val_same)
            routes.update(same_routes)
            selection[variant][seed] = {
                "chosen": chosen["setting"], "swept": sweeping, "routes": routes, "at_grid_edge": edges,
                "same_modality_val": {p: {r: round(res[r]["r1"], 4) for r in SAME_MODALITY_ROUTES if r in res}
                                      for p, res in val_same.items()},
                "val_routed": validation_score(val_routed),
                "trials": [{"setting": t["setting"], **t["val"], "chosen": i == pick} for i, t in enumerate(trials)]}
            index = build_index(bridge, f"{variant}-s{seed}-test", "test")
            index.store.update_metadata({"routes": routes})
            points = index_points(index.store, prefix_of("test"))
            with timer("query"):
                result = evaluate_index(index, points, [*ROUTES, *FEATURE_ROUTES, "auto"], cfg.max_queries,
                                        split="test",
                                        prefix=prefix_of("test"), **eval_opts)
            with timer("query"):
                same = evaluate_same_modality(index, points, [*SAME_MODALITY_ROUTES, "auto"], cfg.max_queries,
                                              split="test", prefix=prefix_of("test"), unseen=unseen, max_k=cfg.max_k)
            runs[variant][seed] = {"pairs": result, "routes": routes, "version": bridge.version, "same": same}
            if not lat:
                lat = latency(index, points)
            index.close()
            unpaired = [p["auto"]["r1"] for p in result.values() if not p["paired"]]
            log.info("bench %s seed %d (%s): test unpaired mean R@1 %s", variant, seed, chosen["setting"] or "defaults",
                     f"{np.mean(unpaired):.3f}" if unpaired else "n/a")

    report = {
        "dataset": {
            "name": spec.name, "title": spec.title, "data": str(cfg.data) if cfg.data else "shipped sample",
            "scale": cfg.scale if spec.name == "digits" else None, "source": spec.source,
            "anchor": spec.anchor, "proxy": spec.proxy,
            "paired": [list(p) for p in spec.paired(mods)], "never_paired": [list(p) for p in spec.never_paired(mods)],
            "relevance": spec.relevance, "zero_shot": spec.zero_shot, "splits": spec.splits, "notes": spec.notes,
            "unseen_classes": sorted(unseen), "gallery": cfg.gallery, "items": world.counts(),
        },
        "world": {"scale": cfg.scale, "data": str(cfg.data) if cfg.data else "shipped sample", "items": world.counts()},
        "preset": cfg.preset, "seeds": cfg.seeds, "settings": settings, "sweep": sweep,
        "sweep_every_seed": cfg.sweep_every_seed,
        "selection": selection, "max_queries": cfg.max_queries, "max_k": cfg.max_k,
        "raw": raw,
        "variants": {v: aggregate(runs[v]) for v in variants}, "variants_note": variants_note,
        "routes_per_seed": {v: {s: r["routes"] for s, r in runs[v].items()} for v in variants},
        "per_seed": {v: {s: {p: {"r1": m["auto"]["r1"], "paired": m["paired"]} for p, m in r["pairs"].items()}
                         for s, r in runs[v].items()} for v in variants},
        "indexing": indexing, "latency_ms": lat, "stages_s": timer.report(),
        "seconds": round(time.perf_counter() - t_start, 1), "provenance": prov,
    }
    report["same_modality"] = {v: aggregate_same(runs[v]) for v in variants}
    if zero_training is not None:
        report["zero_training"] = summarise_zero_training(zero_training, spec.never_paired(mods))
    if "anchor" in report["variants"] and len(report["variants"]) > 1:
        report["deltas_vs_anchor"] = deltas(report["variants"])
    if {"anchor", "oracle"} <= set(report["variants"]):
        report["gap_closed"] = gap_closed(report["variants"])
    if not any(p for v in runs.values() for r in v.values() for p in r["pairs"].values()):
        raise NothingToScore(f"{spec.title}: no test query found a gallery to score against; "
                             "the test split needs items of two modalities that share labels or pair keys")
    write_report(report, cfg.out)
    return report


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
    for route in ROUTES:
        times = []
        for v, g in zip(q, views):
            t0 = time.perf_counter()
            index.search_vectors(s, v[None, :], target=t, k=10, route=route, views=g)
            times.append((time.perf_counter() - t0) * 1000)
        out[route] = _percentiles(times)
    return out


def _percentiles(times_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(times_ms, 50)), 3), "p95_ms": round(float(np.percentile(times_ms, 95)), 3)}


def _mean_std(values: list[Any]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return round(float(np.mean(vals)), 4), round(float(np.std(vals)), 4)


def _aggregate_metrics(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    agg: dict[str, Any] = {}
    for key in METRICS:
        mean, std = _mean_std([m.get(key) for m in per_seed])
        agg[key] = mean
        if mean is not None:
            agg[f"{key}_std"] = std
    for sub in ("seen", "unseen"):
        subs = [m.get(sub) for m in per_seed if m.get(sub)]
        if subs:
            agg[sub] = _aggregate_metrics(subs)
    return agg


def aggregate(per_seed: dict[int, Any]) -> dict[str, Any]:
    """Mean and spread (std over seeds) per pair and route; `pairs` holds the calibrated (auto) route."""
    seeds = sorted(per_seed)
    pairs: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    for pair, first in per_seed[seeds[0]]["pairs"].items():
        runs = [per_seed[s]["pairs"][pair] for s in seeds]  # `instance` only in seeds whose bridge kept the map
        routes[pair] = {route: _aggregate_metrics([r[route] for r in runs if route in r])
                        for route in [*ROUTES, *FEATURE_ROUTES, "auto"] if any(route in r for r in runs)}
        pairs[pair] = {"paired": first["paired"], "relevance": first["relevance"], **routes[pair]["auto"],
                       "route": [per_seed[s]["routes"].get(pair, "direct") for s in seeds]}
    unpaired = [p["r1"] for p in pairs.values() if not p["paired"]]
    paired = [p["r1"] for p in pairs.values() if p["paired"]]
    return {"pairs": pairs, "routes": routes,
            "summary": {"unpaired_mean_r1": round(float(np.mean(unpaired)), 4) if unpaired else None,
                        "paired_mean_r1": round(float(np.mean(paired)), 4) if paired else None}}


def aggregate_same(per_seed: dict[int, Any]) -> dict[str, Any]:
    """Search by example per modality: mean R@1 over seeds through the space, the raw features and
    the calibrated route, with the routes chosen."""
    seeds = sorted(per_seed)
    out: dict[str, Any] = {}
    for pair in per_seed[seeds[0]].get("same", {}):
        runs = [per_seed[s]["same"][pair] for s in seeds]
        out[pair] = {r: _mean_std([x[r]["r1"] for x in runs if isinstance(x.get(r), dict)])[0]
                     for r in (*SAME_MODALITY_ROUTES, "auto")}
        for part in ("seen", "unseen"):  # classes held out of training (--unseen) apart
            if any(isinstance((x.get("auto") or {}).get(part), dict) for x in runs):
                out[pair][part] = {r: _mean_std([x[r][part]["r1"] for x in runs
                                                 if isinstance((x.get(r) or {}).get(part), dict)])[0]
                                   for r in (*SAME_MODALITY_ROUTES, "auto")}
        out[pair]["route"] = [(per_seed[s]["same"][pair].get("auto") or {}).get("route") or "?" for s in seeds]
    return out


def summarise_zero_training(zero: dict[str, Any], never_paired: list[tuple[str, str]]) -> dict[str, Any]:
    """The zero-training row: per pair R@1 where the pretrained space places both sides, and the
    never-paired mean over the pairs it can score (it places no audio without an aligned tower)."""
    pairs = {p: {"r1": m["auto"]["r1"], "top1": m["auto"].get("top1"), "route": m["auto"].get("route")}
             for p, m in zero["pairs"].items()}
    never = {f"{a}->{b}" for a, b in never_paired} | {f"{b}->{a}" for a, b in never_paired}
    scored = [pairs[p]["r1"] for p in pairs if p in never]
    return {"modalities": zero["modalities"], "pairs": pairs,
            "never_paired_scored": sorted(p for p in pairs if p in never),
            "never_paired_mean_r1": round(float(np.mean(scored)), 4) if scored else None,
            "same_modality": {p: {r: m[r]["r1"] for r in (*SAME_MODALITY_ROUTES, "auto") if isinstance(m.get(r), dict)}
                              for p, m in zero["same_modality"].items()}}


def gap_closed(variants: dict[str, Any]) -> dict[str, Any]:
    """How much of the gap between `anchor` (binding only) and `oracle` (every pair trained with its
    own pairs) each variant closes on the never-paired pairs' mean R@1: the figure that matters."""
    lo, hi = (variants[v]["summary"]["unpaired_mean_r1"] for v in ("anchor", "oracle"))
    out: dict[str, Any] = {"anchor": lo, "oracle": hi}
    for v, res in variants.items():
        if v in ("anchor", "oracle") or lo is None or hi is None:
            continue
        mean = res["summary"]["unpaired_mean_r1"]
        out[v] = {"unpaired_mean_r1": mean, "gap_closed": round((mean - lo) / (hi - lo), 4) if hi != lo else None}
    return out


def deltas(variants: dict[str, Any]) -> dict[str, Any]:
    """Each variant minus `anchor`, in R@1 points per pair (calibrated route), and the relative
    gain on the mean unpaired R@1."""
    base = variants["anchor"]["pairs"]
    base_mean = variants["anchor"]["summary"]["unpaired_mean_r1"]
    out = {}
    for v, res in variants.items():
        if v == "anchor":
            continue
        d = {p: round(100 * (res["pairs"][p]["r1"] - base[p]["r1"]), 2) for p in base}
        unpaired = [d[p] for p in d if not base[p]["paired"]]
        paired = [d[p] for p in d if base[p]["paired"]]
        mean = res["summary"]["unpaired_mean_r1"]
        out[v] = {"pairs_r1_points": d,
                  "unpaired_mean_points": round(float(np.mean(unpaired)), 2) if unpaired else None,
                  "unpaired_relative_gain": round(mean / base_mean - 1, 4) if unpaired and base_mean else None,
                  "unpaired_worst_points": min(unpaired) if unpaired else None,
                  "paired_worst_points": min(paired) if paired else None}
    return out


# ------------------------------------------------------------------------------ CLI


def _parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    from bridge.config import TrainConfig

    types = {f.name: type(f.default) for f in dataclasses.fields(TrainConfig)}
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise ValueError(f"bad --sweep {item!r}: use SETTING=V1,V2,... with a training setting (e.g. lambda_proxy=0.5,1,2)")
        out[key] = [types[key](v) for v in values.split(",") if v.strip()]
    return out


DEFAULTS = BenchConfig(out=Path("bench-out"))  # the CLI's defaults are the Python API's


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="train, index and query a dataset; report the pair matrix",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default=DEFAULTS.dataset,
                   help="digits (default), a standard dataset, or manifest (your own pairs manifest)")
    p.add_argument("--data", type=Path, default=None,
                   help="the dataset folder; digits: ../shared/data (default: the shipped sample); manifest: the CSV/Parquet")
    p.add_argument("--out", type=Path, default=DEFAULTS.out)
    p.add_argument("--quick", action="store_true", help="smaller world, shorter training, fewer queries")
    p.add_argument("--scale", choices=["sample", "quick", "full"], default=None, help="digits world size")
    p.add_argument("--seeds", type=int, nargs="+", default=DEFAULTS.seeds)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=DEFAULTS.variants)
    p.add_argument("--preset", default=DEFAULTS.preset, help=f"encoder preset (default {DEFAULTS.preset}: offline at 128 px)")
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--sweep", action="append", default=None, metavar="SETTING=V1,V2",
                   help="settings chosen on validation (repeatable; default lambda_proxy="
                   + ",".join(f"{v:g}" for v in DEFAULT_SWEEP["lambda_proxy"]) + ")")
    p.add_argument("--no-sweep", action="store_true", help="train each variant once with the given settings")
    p.add_argument("--unseen", default=None,
                   help="class-disjoint split: N classes (seeded draw) or a comma list held out of train and val")
    p.add_argument("--gallery", choices=["test", "test+train"], default=DEFAULTS.gallery,
                   help="what the test index holds: the test split, or test + train (as a user's index would)")
    from bridge.cli import config_options
    from core.cli import add_device_option

    add_device_option(p)
    config_options(p, skip=("variant", "seed", "preset"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bridge.cli import given_options
    from core.device import set_threads

    set_threads(args.threads)
    overrides = given_options(args, skip=("variant", "seed", "preset", "anchor", "proxy"))
    scale = args.scale or ("quick" if args.quick or args.data is None else "full")
    if args.dataset == "digits" and args.data is None and scale != "sample":
        log.info("no --data: using the shipped sample of the digits world")
        scale = "sample"
    if args.quick:  # shorter training, fewer queries
        overrides = {**QUICK_TRAINING, **overrides}
    if args.no_sweep:
        sweep: dict[str, list[Any]] = {}
    elif args.sweep:  # an explicit sweep wins over a fixed value of the same setting
        sweep = _parse_sweep(args.sweep)
        for key in sweep:
            overrides.pop(key, None)
    else:  # the default sweep leaves alone what the user fixed (e.g. --lambda-proxy 2)
        sweep = {k: v for k, v in DEFAULT_SWEEP.items() if k not in overrides}
    unseen: list[str] | int | None = None
    if args.unseen:
        unseen = int(args.unseen) if args.unseen.isdigit() else [c.strip() for c in args.unseen.split(",") if c.strip()]
    cfg = BenchConfig(out=args.out, dataset=args.dataset, data=args.data, scale=scale, seeds=args.seeds,
                      variants=args.variants, preset=args.preset,
                      max_queries=args.max_queries or (60 if args.quick else DEFAULTS.max_queries), train_overrides=overrides,
                      sweep=sweep, unseen=unseen, gallery=args.gallery,
                      anchor=getattr(args, "anchor", None), proxy=getattr(args, "proxy", None),
                      device=args.device)
    report = run_bench(cfg)
    print((cfg.out / "report.md").read_text())
    return 0 if report else 1
