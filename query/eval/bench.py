"""`ebridge bench`: the whole system, measured pair by pair on the digits world.

For every seed and variant it trains the bridge (variants of one seed share the base space
and G, so only the binding differs), indexes the validation and test splits into the
embedded Qdrant store with the real indexer, calibrates the route table on validation
(never on test), and queries the test index through the router: every ordered pair of
modalities, every route, then `auto` (the calibrated table). Output in `--out`:
report.json, report.md and PNG heatmaps of the pair matrix.

Example:
    ebridge bench --quick --data ../shared/data --out bench-out
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.config import VARIANTS
from query.eval.metrics import ranking_metrics
from query.search import ROUTES

log = logging.getLogger(__name__)
CROSS_MODALITIES = ("image", "text", "audio", "depth", "thermal")
QUICK_TRAINING = {"steps": 300, "proxy_steps": 600}


@dataclass
class BenchConfig:
    out: Path
    data: Path | None = None  # ../shared/data; None: the sample shipped with the package
    scale: str = "quick"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    preset: str = "offline-small"  # the offline preset at 128 px: digits are 28 px, 3.7x faster
    max_queries: int = 150  # per source modality, sampled once with a fixed seed
    train_overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = None  # "auto", "cpu", "cuda", "mps"; None: torch's default (CPU)


# ------------------------------------------------------------------------------ helpers


def _index_points(store: Any) -> dict[str, dict[str, Any]]:
    """All points of a store by modality: ids, labels, bridged vectors."""
    by_mod: dict[str, dict[str, Any]] = {}
    for rec in store.scroll(with_payload=True, with_vectors=["bridged"]):
        m = rec.payload["modality"]
        d = by_mod.setdefault(m, {"ids": [], "labels": [], "vectors": []})
        d["ids"].append(str(rec.id))
        d["labels"].append(rec.payload.get("label"))
        d["vectors"].append(np.asarray(rec.vectors["bridged"], dtype=np.float32))
    for d in by_mod.values():
        order = np.argsort(d["ids"])  # a fixed order, whatever order the store returns
        d["ids"] = [d["ids"][i] for i in order]
        d["labels"] = [d["labels"][i] for i in order]
        d["vectors"] = np.stack(d["vectors"])[order]
    return by_mod


def _queries(points: dict[str, Any], modality: str, limit: int) -> tuple[np.ndarray, list]:
    d = points[modality]
    n = len(d["ids"])
    pick = np.sort(np.random.default_rng(7).choice(n, size=min(n, limit), replace=False))
    return d["vectors"][pick], [d["labels"][i] for i in pick]


def evaluate_index(index: Any, points: dict[str, Any], routes: list[str], max_queries: int) -> dict[str, dict[str, Any]]:
    """Metrics for every ordered cross-modal pair and route, ranking the whole target corpus.

    R@k and mAP use the hits Qdrant returned (k = the target corpus size, so nothing is cut
    off). Zero-shot (text targets): a query's class ranking is the order in which class
    labels first appear among its text hits (nearest prompt per class)."""
    out: dict[str, dict[str, Any]] = {}
    mods = [m for m in CROSS_MODALITIES if m in points]
    for s in mods:
        q, q_labels = _queries(points, s, max_queries)
        views = index.bridge.proxy_view(q)  # once per source, not once per pair and route
        for t in mods:
            if s == t:
                continue
            n_target = len(points[t]["ids"])
            relevant = [sum(lbl == y for lbl in points[t]["labels"]) for y in q_labels]
            pair = out.setdefault(f"{s}->{t}", {"paired": bool(index.bridge.is_paired(s, t))})
            for route in routes:
                hits = index.search_vectors(s, q, target=t, k=n_target, route=route, views=views)
                ranked = [[h.label for h in hs] for hs in hits]
                m = ranking_metrics(q_labels, ranked, ks=(1, 5, 10), relevant_counts=relevant)
                m["top1"] = m["top5"] = None
                if t == "text":
                    classes = [list(dict.fromkeys(r)) for r in ranked]
                    m["top1"] = float(np.mean([y in c[:1] for y, c in zip(q_labels, classes)]))
                    m["top5"] = float(np.mean([y in c[:5] for y, c in zip(q_labels, classes)]))
                if route == "auto":
                    m["route"] = hits[0][0].route if hits and hits[0] else None
                pair[route] = m
    return out


def calibrate_routes(val_metrics: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Best route per pair by validation R@1 (then mAP); ties keep the simpler route."""
    table = {}
    for pair, res in val_metrics.items():
        table[pair] = max(ROUTES, key=lambda r: (round(res[r]["r1"], 6), round(res[r]["map"], 6), -ROUTES.index(r)))
    return table


def latency(index: Any, points: dict[str, Any], n: int = 100) -> dict[str, dict[str, float]]:
    """p50/p95 ms of one top-10 query per route, audio -> depth, encoding excluded: the
    query's bridged vector and its proxy view are computed first (`proxy_view` is timed
    on its own, as part of encoding a query)."""
    s, t = ("audio", "depth") if {"audio", "depth"} <= points.keys() else tuple(list(points)[:2])
    q, _ = _queries(points, s, n)
    out: dict[str, dict[str, float]] = {}
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


# ------------------------------------------------------------------------------ the run


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache
    from bridge.pairs import in_split, read_manifest, training_set
    from bridge.train import TrainConfig, train
    from indexer.index import index_directory
    from query.eval.digits import build_digits_world
    from query.search import Index

    t_start = time.perf_counter()
    if cfg.device is not None:
        from bridge.device import resolve_device

        resolve_device(cfg.device)  # a device that is not here fails before any work
    cfg.out.mkdir(parents=True, exist_ok=True)
    world = build_digits_world(cfg.out / "world", scale=cfg.scale, data_dir=cfg.data)
    preset = load_preset(cfg.preset)
    if cfg.device is not None:
        preset.to(cfg.device)
    cache = FeatureCache(cfg.out / "cache")
    rows = read_manifest(world / "manifest.csv")
    train_set = training_set(in_split(rows, "train"), preset, cache)
    val_set = training_set(in_split(rows, "val"), preset, cache)  # picks each head's best step; never test
    counts = {split: {m: sum(r.modality == m for r in in_split(rows, split)) for m in CROSS_MODALITIES}
              for split in ("train", "val", "test")}

    runs: dict[str, dict[int, Any]] = {v: {} for v in cfg.variants}
    settings: dict[str, Any] = {}
    indexing: list[dict[str, Any]] = []
    lat: dict[str, Any] = {}
    order = sorted(cfg.variants, key=lambda v: v != "anchor")  # anchor trains the shared base
    for seed in cfg.seeds:
        base = None
        for variant in order:
            tc = TrainConfig(**{**cfg.train_overrides, "preset": cfg.preset, "variant": variant, "seed": seed})
            settings = {k: v for k, v in dataclasses.asdict(tc).items() if k not in ("variant", "seed")}
            bridge, curves = train(tc, train_set, val=val_set, preset_info=preset.info(), base=base,
                                   device=cfg.device)
            base = base or bridge
            bridge.save(cfg.out / "checkpoints" / f"{variant}-s{seed}", curves)
            bridge.feature_cache = cache  # every run after the first re-uses the frozen features
            indexes = {}
            for split in ("val", "test"):
                idx_path = cfg.out / "indexes" / f"{variant}-s{seed}-{split}"
                shutil.rmtree(idx_path, ignore_errors=True)
                summary = index_directory(world / split, idx_path, bridge=bridge, batch_size=64, progress=False,
                                          device=cfg.device)
                indexing.append({"run": f"{variant}-s{seed}-{split}", "items": summary.indexed,
                                 "items_per_s": summary.items_per_s, "seconds": summary.seconds, "errors": summary.errors})
                indexes[split] = Index.open(idx_path, device=cfg.device)
            val_points = _index_points(indexes["val"].store)
            table = calibrate_routes(evaluate_index(indexes["val"], val_points, list(ROUTES), cfg.max_queries))
            indexes["test"].store.update_metadata({"routes": table})
            test_points = _index_points(indexes["test"].store)
            result = evaluate_index(indexes["test"], test_points, [*ROUTES, "auto"], cfg.max_queries)
            runs[variant][seed] = {"pairs": result, "routes": table, "version": bridge.version}
            if not lat:
                lat = latency(indexes["test"], test_points)
            for ix in indexes.values():
                ix.close()
            log.info("bench %s seed %d: unpaired mean R@1 (auto) %.3f", variant, seed,
                     np.mean([p["auto"]["r1"] for p in result.values() if not p["paired"]]))

    report = {
        "world": {"scale": cfg.scale, "data": str(cfg.data) if cfg.data else "shipped sample", "items": counts},
        "preset": cfg.preset, "seeds": cfg.seeds, "settings": settings,
        "variants": {v: aggregate(runs[v]) for v in cfg.variants},
        "routes_per_seed": {v: {s: r["routes"] for s, r in runs[v].items()} for v in cfg.variants},
        "indexing": indexing, "latency_ms": lat,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if "anchor" in report["variants"]:
        report["deltas_vs_anchor"] = deltas(report["variants"])
    write_report(report, cfg.out)
    return report


def aggregate(per_seed: dict[int, Any]) -> dict[str, Any]:
    """Mean and spread (std over seeds) per pair and route; `pairs` holds the auto route."""
    seeds = sorted(per_seed)
    pairs: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    for pair in per_seed[seeds[0]]["pairs"]:
        first = per_seed[seeds[0]]["pairs"][pair]
        routes[pair] = {}
        for route in [*ROUTES, "auto"]:
            agg: dict[str, Any] = {}
            for key in ("r1", "r5", "r10", "map", "top1", "top5"):
                vals = [per_seed[s]["pairs"][pair][route][key] for s in seeds]
                if vals[0] is None:
                    agg[key] = None
                    continue
                agg[key] = round(float(np.mean(vals)), 4)
                agg[f"{key}_std"] = round(float(np.std(vals)), 4)
            routes[pair][route] = agg
        pairs[pair] = {"paired": first["paired"], **routes[pair]["auto"],
                       "route": [per_seed[s]["routes"].get(pair, "direct") for s in seeds]}
    unpaired = [p["r1"] for p in pairs.values() if not p["paired"]]
    paired = [p["r1"] for p in pairs.values() if p["paired"]]
    return {"pairs": pairs, "routes": routes,
            "summary": {"unpaired_mean_r1": round(float(np.mean(unpaired)), 4) if unpaired else None,
                        "paired_mean_r1": round(float(np.mean(paired)), 4) if paired else None}}


def deltas(variants: dict[str, Any]) -> dict[str, Any]:
    """Each variant minus `anchor`, in R@1 points, per pair (auto route)."""
    base = variants["anchor"]["pairs"]
    out = {}
    for v, res in variants.items():
        if v == "anchor":
            continue
        d = {p: round(100 * (res["pairs"][p]["r1"] - base[p]["r1"]), 2) for p in base}
        unpaired = [d[p] for p in d if not base[p]["paired"]]
        paired = [d[p] for p in d if base[p]["paired"]]
        out[v] = {"pairs_r1_points": d,
                  "unpaired_mean_points": round(float(np.mean(unpaired)), 2) if unpaired else None,
                  "unpaired_worst_points": min(unpaired) if unpaired else None,
                  "paired_worst_points": min(paired) if paired else None}
    return out


# ------------------------------------------------------------------------------ output


def write_report(report: dict[str, Any], out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    try:
        heatmaps(report, out)
    except ImportError as exc:  # matplotlib is an optional extra
        log.warning("no heatmaps: %s", exc)
    log.info("report written to %s (report.json, report.md, heatmaps)", out)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Digits-world benchmark ({report['world']['scale']}, preset `{report['preset']}`, seeds {report['seeds']})", ""]
    lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in sorted(report["settings"].items())))
    lines.append("")
    variants = report["variants"]
    names = list(variants)
    lines.append("## R@1 per ordered pair (calibrated route), mean ± std over seeds")
    lines.append("")
    lines.append("| pair | paired | " + " | ".join(names) + " | zero-shot top-1 (" + " / ".join(names) + ") |")
    lines.append("|---|---|" + "---|" * len(names) + "---|")
    for pair, first in variants[names[0]]["pairs"].items():
        cells = [f"{100 * variants[v]['pairs'][pair]['r1']:.1f} ± {100 * variants[v]['pairs'][pair]['r1_std']:.1f}" for v in names]
        zs = " / ".join(f"{100 * variants[v]['pairs'][pair]['top1']:.1f}" for v in names) if first["top1"] is not None else ""
        lines.append(f"| {pair} | {'yes' if first['paired'] else 'no'} | " + " | ".join(cells) + f" | {zs} |")
    lines.append("")
    lines.append("| variant | unpaired mean R@1 | paired mean R@1 |")
    lines.append("|---|---|---|")
    for v in names:
        s = variants[v]["summary"]
        lines.append(f"| {v} | {100 * s['unpaired_mean_r1']:.1f} | {100 * s['paired_mean_r1']:.1f} |")
    if "deltas_vs_anchor" in report:
        lines += ["", "## Against `anchor` (R@1 points)", "", "| variant | unpaired mean | unpaired worst | paired worst |", "|---|---|---|---|"]
        for v, d in report["deltas_vs_anchor"].items():
            lines.append(f"| {v} | {d['unpaired_mean_points']:+.2f} | {d['unpaired_worst_points']:+.2f} | {d['paired_worst_points']:+.2f} |")
    lines += ["", "## Routes (unpaired pairs, R@1 mean over seeds)", "", "| variant | pair | direct | proxy | fused | calibrated |", "|---|---|---|---|---|---|"]
    for v in names:
        for pair, res in variants[v]["routes"].items():
            if variants[v]["pairs"][pair]["paired"]:
                continue
            lines.append(f"| {v} | {pair} | " + " | ".join(f"{100 * res[r]['r1']:.1f}" for r in ROUTES)
                         + f" | {100 * res['auto']['r1']:.1f} ({', '.join(sorted(set(variants[v]['pairs'][pair]['route'])))}) |")
    lines += ["", "## System", ""]
    ips = [r["items_per_s"] for r in report["indexing"] if r["items"]]
    lines.append(f"- indexing: first run {report['indexing'][0]['items_per_s']} items/s (cold encoders); "
                 f"median over runs {np.median(ips) if ips else 0:.1f} items/s")
    for route, l in report["latency_ms"].items():
        what = "G's view of one query (part of encoding it)" if route == "proxy_view" else f"query latency ({route}, top-10, encoding excluded)"
        lines.append(f"- {what}: p50 {l['p50_ms']} ms, p95 {l['p95_ms']} ms")
    lines.append(f"- total time: {report['seconds']} s")
    return "\n".join(lines) + "\n"


def heatmaps(report: dict[str, Any], out: Path) -> None:
    from bridge.deps import require

    require("matplotlib", "benchmark heatmaps").use("Agg")
    import matplotlib.pyplot as plt

    mods = [m for m in CROSS_MODALITIES if any(p.startswith(m + "->") for p in next(iter(report["variants"].values()))["pairs"])]
    panels = [(v, res["pairs"], "R@1 (%)", "viridis", 0, 100) for v, res in report["variants"].items()]
    for v, d in report.get("deltas_vs_anchor", {}).items():
        panels.append((f"{v} - anchor", {p: {"r1": x / 100} for p, x in d["pairs_r1_points"].items()}, "R@1 points", "RdBu", -25, 25))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4))
    for ax, (title, pairs, label, cmap, lo, hi) in zip(np.atleast_1d(axes), panels):
        grid = np.full((len(mods), len(mods)), np.nan)
        for i, s in enumerate(mods):
            for j, t in enumerate(mods):
                if f"{s}->{t}" in pairs:
                    grid[i, j] = 100 * pairs[f"{s}->{t}"]["r1"]
        im = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi)
        for i in range(len(mods)):
            for j in range(len(mods)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if cmap == "viridis" and grid[i, j] < 60 else "black")
        ax.set_xticks(range(len(mods)), mods, rotation=45)
        ax.set_yticks(range(len(mods)), mods)
        ax.set_xlabel("target")
        ax.set_ylabel("query")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046, label=label)
    fig.tight_layout()
    fig.savefig(out / "pair_matrix.png", dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="train, index and query the digits world; report the pair matrix")
    p.add_argument("--data", type=Path, default=None, help="../shared/data (FSDD + MNIST); default: the shipped sample")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--quick", action="store_true", help="smaller world, fewer queries (under 10 minutes on 2 cores)")
    p.add_argument("--scale", choices=["sample", "quick", "full"], default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--preset", default="offline-small", help="encoder preset (default offline-small: offline at 128 px)")
    p.add_argument("--max-queries", type=int, default=None)
    from bridge.cli import config_options
    from bridge.device import add_device_option

    add_device_option(p)
    config_options(p, skip=("variant", "seed", "preset"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bridge.cli import given_options, set_threads

    set_threads(args.threads)
    overrides = given_options(args, skip=("variant", "seed", "preset"))
    scale = args.scale or ("quick" if args.quick or args.data is None else "full")
    if args.data is None and scale != "sample":
        log.info("no --data: using the shipped sample of the digits world")
        scale = "sample"
    if args.quick:  # shorter training, fewer queries: the whole run in under 10 minutes on 2 cores
        overrides = {**QUICK_TRAINING, **overrides}
    cfg = BenchConfig(out=args.out, data=args.data, scale=scale, seeds=args.seeds, variants=args.variants,
                      preset=args.preset, max_queries=args.max_queries or (60 if args.quick else 300),
                      train_overrides=overrides, device=args.device)
    report = run_bench(cfg)
    print((cfg.out / "report.md").read_text())
    return 0 if report else 1
