"""What validation chooses in `ebridge bench`: the variants worth training, each variant's setting
from a small bounded sweep (scored by exact search on the validation features, no indexing), and
the route table (calibrated through the real index on validation). The test split is never read here.

Example:
    candidates = sweep_candidates({"lambda_proxy": [1.0, 4.0]}, "emergentbridge", BASE_KEYS, True)
    pick = choose([{"val": {"unpaired_r1": 0.4, "paired_r1": 0.9}}], anchor_paired=0.9)
    routes = calibrate_routes({"audio->depth": {"direct": {"r1": 0.2, "map": 0.3}, ...}})
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Any

import numpy as np

from bridge.validation import clearly_better
from query.eval.evaluate import qrels_for, query_rows
from query.eval.metrics import ranked_list_metrics
from query.search import CROSS_ROUTES, FEATURE_ROUTES

log = logging.getLogger(__name__)
# lambda 4 (then the grid's top) was chosen for both proxy variants with validation still rising: the
# grid reaches past it.
DEFAULT_SWEEP = {"lambda_proxy": [1.0, 2.0, 4.0, 8.0, 16.0]}
MAX_SWEEP = 16  # candidates per variant and seed: the sweep must stay small
PAIRED_TOLERANCE = 0.01  # a candidate may cost paired pairs at most one R@1 point on validation


# ------------------------------------------------------------------------------ settings on validation


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
            how, qrels = qrels_for(relevance, q_keys, q_pairs, q_labels, c)
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
        candidates = [r for r in (*CROSS_ROUTES, *FEATURE_ROUTES) if isinstance(res.get(r), dict)]
        if "raw" in candidates:
            candidates = [r for r in candidates if r == "raw" or clearly_better(*res[r].get("vs_raw", (0, 0)))]
        preference = ["raw", "instance", *CROSS_ROUTES]
        table[pair] = max(candidates, key=lambda r: (round(res[r]["r1"], 6), round(res[r]["map"], 6),
                                                     -preference.index(r)))
    return table


def validation_score(val_metrics: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Mean R@1 of the unpaired and of the paired pairs, each pair under its best route (what
    calibrating the route table on these figures would give)."""
    best = {p: max(res[r]["r1"] for r in CROSS_ROUTES) for p, res in val_metrics.items()}
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


def train_config(cfg: Any, world: Any, variant: str, seed: int, setting: dict[str, Any]) -> Any:
    """The `TrainConfig` of one variant, seed and swept setting: the bench's overrides (`cfg`, a
    `BenchConfig`), the setting, and the world's anchor and proxy; an unknown setting is refused."""
    from bridge.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {**cfg.train_overrides, **setting, "preset": cfg.preset, "variant": variant, "seed": seed,
             "anchor": world.spec.anchor, "proxy": world.spec.proxy}
    unknown = set(given) - known
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}")
    return TrainConfig(**given)


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
