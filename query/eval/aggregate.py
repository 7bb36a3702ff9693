"""The bench's figures over seeds: mean and spread per pair and route, search by example, the
zero-training row, and each variant against `anchor` and `oracle`.

Example:
    summary = aggregate({0: {"pairs": pairs_seed0, "routes": routes_seed0}})["summary"]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from query.eval.evaluate import SAME_MODALITY_ROUTES
from query.search import CROSS_ROUTES, FEATURE_ROUTES

METRICS = ("r1", "r5", "r10", "map", "mrr10", "ndcg10", "top1", "top5")


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
                        for route in [*CROSS_ROUTES, *FEATURE_ROUTES, "auto"] if any(route in r for r in runs)}
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
    never-paired mean over the pairs it can score; the modalities it does not place, with why, and
    the never-paired pairs left unscored for that (e.g. audio on a preset with no audio tagger)."""
    pairs = {p: {"r1": m["auto"]["r1"], "top1": m["auto"].get("top1"), "route": m["auto"].get("route")}
             for p, m in zero["pairs"].items()}
    never = {f"{a}->{b}" for a, b in never_paired} | {f"{b}->{a}" for a, b in never_paired}
    scored = [pairs[p]["r1"] for p in pairs if p in never]
    not_placed = zero.get("not_placed") or {}
    return {"modalities": zero["modalities"], "pairs": pairs, "not_placed": not_placed,
            "never_paired_scored": sorted(p for p in pairs if p in never),
            "never_paired_unscored": sorted(p for p in never if p not in pairs
                                            and set(p.split("->")) & set(not_placed)),
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
