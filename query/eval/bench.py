"""`ebridge bench`: the whole system, measured pair by pair, on any dataset.

One path for every dataset (`--dataset digits|esc50|nyud|sunrgbd|llvip|audiocaps|clotho|manifest`):
adapter -> world (split folders + the pairs manifest, see `query.eval.tasks`) -> train the
variants -> index with the real indexer -> query through the router -> report.

For every seed: `anchor` trains the base space and G once; the other variants re-bind on that
base, borrowing with it what no variant changes (the instance maps, G's bank of noisy proxies);
each proxy variant does so for every setting of a small, bounded sweep (default `lambda_proxy` in
{1, 2, 4, 8, 16}; {2, 4, 8} with `--quick`), run on the first seed with `--base auto`'s trials
(later seeds reuse both choices); each candidate is scored on the **validation** split, and the
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
import logging
import os
import resource
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bridge.config import VARIANTS
from bridge.validation import clearly_better
from core.errors import EmergentBridgeError
from core.workers import default_jobs
# The bench by concern; every name stays importable from here (tests, scripts and the demo do).
from query.eval.aggregate import (METRICS, aggregate, aggregate_same, deltas, gap_closed,
                                  summarise_zero_training)
from query.eval.digits import DIGITS_PRESET
from query.eval.evaluate import (SAME_MODALITY_ROUTES, discordant, evaluate_index, evaluate_same_modality,
                                 feature_routes, index_points, keyed_features, latency, qrels_for, query_rows,
                                 raw_baseline, relevance_of)
from query.eval.selection import (DEFAULT_SWEEP, MAX_SWEEP, PAIRED_TOLERANCE, calibrate_routes, choose,
                                  fused_order, grid_edges, sweep_candidates, train_config, validate_exact,
                                  validation_score, variants_to_run)
from query.eval.seeds import Results, train_and_test
from query.eval.tasks import DATASETS
from query.search import CROSS_ROUTES, FEATURE_ROUTES

__all__ = ["BenchConfig", "DEFAULTS", "DEFAULT_SWEEP", "FEATURE_ROUTES", "MAX_SWEEP", "METRICS", "NothingToScore",
           "PAIRED_TOLERANCE", "QUICK_SWEEP", "QUICK_TRAINING", "CROSS_ROUTES", "SAME_MODALITY_ROUTES", "StageTimer", "add_parser",
           "aggregate", "aggregate_same", "calibrate_routes", "check_something_to_score", "choose", "clearly_better",
           "deltas", "discordant", "evaluate_index", "evaluate_same_modality", "feature_routes", "fused_order",
           "gap_closed", "grid_edges", "index_points", "keyed_features", "latency", "qrels_for", "query_rows",
           "raw_baseline", "relevance_of", "run", "run_bench", "summarise_zero_training", "sweep_candidates",
           "train_config", "validate_exact", "validation_score", "variants_to_run"]


def __getattr__(name: str) -> object:
    """`query.eval.bench.ROUTES`, the cross routes under a name `query.search.ROUTES` uses for more, is deprecated."""
    if name == "ROUTES":
        import warnings

        warnings.warn("query.eval.bench.ROUTES is deprecated: use query.search.CROSS_ROUTES", DeprecationWarning, 2)
        return CROSS_ROUTES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

log = logging.getLogger(__name__)
QUICK_TRAINING = {"steps": 300, "proxy_steps": 600}
# --quick sweeps lambda over the middle of the default grid: on the digits world validation chose 4 for both
# proxy variants in every run, with 1 and 16 below 2 and 8 (docs/reports/bench-digits-quick.json, selection).
QUICK_SWEEP = {"lambda_proxy": [2.0, 4.0, 8.0]}


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
    # False: the sweep (and `--base auto`'s choice of start) runs on the first seed, later seeds reuse its choice
    sweep_every_seed: bool = False
    cache: Path | None = None  # the frozen features' cache; None: the user's (`user_cache_dir("features")`)
    # trainings side by side in forked workers (core.workers); 0: every core on a CPU, 1 on an accelerator.
    # Stage seconds in the report are summed over workers.
    jobs: int = 0

    # The defaults above are `ebridge bench`'s: the CLI reads them from here (see add_parser).
    def __post_init__(self) -> None:
        if self.jobs < 0:
            raise ValueError(f"jobs must be 0 (every core on a CPU) or more, got {self.jobs}")
        if self.scale is None:
            self.scale = "full" if self.data is not None else "sample"


class StageTimer:
    """Wall and CPU seconds per stage (encode, train, index, query), summed over the run. CPU seconds
    (this process's, every thread) are the measure of a stage's own work on a shared machine."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0
            self.cpu_seconds[stage] += time.process_time() - c0

    def report(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.seconds.items()}

    def cpu_report(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.cpu_seconds.items()}


# ------------------------------------------------------------------------------ reading an index


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


# ------------------------------------------------------------------------------ the run, step by step


@dataclass
class _Run:
    """What every step of one bench run reads: the config, the world, the preset and its frozen
    features, the variants and sweep worth running; and what the steps add up (`indexing`)."""

    cfg: BenchConfig
    timer: StageTimer
    world: Any
    preset: Any
    cache: Any
    train_set: Any
    val_set: Any
    bound: bool  # some modality beyond the anchor and proxy is bound in stage 3
    variants: list[str]
    variants_note: str | None
    sweep: dict[str, list[Any]]
    indexing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unseen(self) -> set[str]:
        return set(self.world.unseen)

    def eval_opts(self) -> dict[str, Any]:
        spec = self.world.spec
        return {"relevance": spec.relevance, "zero_shot": spec.zero_shot, "unseen": self.unseen,
                "max_k": self.cfg.max_k}

    @property
    def gallery_splits(self) -> list[str]:
        return ["test", "train"] if self.cfg.gallery == "test+train" else ["test"]

    def prefix_of(self, split: str) -> str:  # the test index of a test+train gallery is the world folder itself
        return "" if split == "test" and self.cfg.gallery == "test+train" else f"{split}/"

    def build_index(self, bridge: Any, name: str, split: str) -> Any:
        """Index `split` of the world (the test gallery with the training items where asked) with `bridge`."""
        from indexer.index import index_directory
        from query.search import Index

        cfg, root = self.cfg, self.world.root
        path = cfg.out / "indexes" / name
        shutil.rmtree(path, ignore_errors=True)
        with self.timer("index"):
            if split == "test" and cfg.gallery == "test+train":
                summary = index_directory(root, path, bridge=bridge, sidecar=root / "gallery.csv",
                                          exclude=["val"], batch_size=64, progress=False, device=cfg.device)
            else:
                summary = index_directory(root / split, path, bridge=bridge, batch_size=64, progress=False,
                                          device=cfg.device)
        self.indexing.append({"run": name, "items": summary.indexed, "items_per_s": summary.items_per_s,
                              "seconds": summary.seconds, "encode_seconds": summary.encode_seconds,
                              "errors": summary.errors})
        return Index.open(path, device=cfg.device)

    def evaluate(self, index: Any, split: str, routes: list[str], same_routes: list[str],
                 points: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(cross-modal pairs, search by example) of `index` on `split`, timed as querying."""
        prefix, opts = self.prefix_of(split), self.eval_opts()
        with self.timer("query"):
            points = points or index_points(index.store, prefix)
            pairs = evaluate_index(index, points, routes, self.cfg.max_queries, split=split, **opts)
            same = evaluate_same_modality(index, points, same_routes, self.cfg.max_queries, split=split,
                                          unseen=opts["unseen"], max_k=self.cfg.max_k)
        return pairs, same


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark described by `cfg`; returns the report (also written to `cfg.out`).

    Example:
        report = run_bench(BenchConfig(out=Path("bench-out"), seeds=[0], preset="tiny"))
        report["variants"]["emergentbridge"]["summary"]["unpaired_mean_r1"]
    """
    from bridge.provenance import provenance
    from query.eval.report import write_report

    prov = provenance()  # at the start: the code that runs is the checkout as it is now, not when it ends
    t_start = time.perf_counter()
    run = _prepare(cfg)
    with run.timer("encode"):  # the raw features' own search is counted with encoding: no bridge involved
        raw = raw_baseline(run.world, run.preset, run.cache, run.gallery_splits, cfg.max_queries,
                           relevance=run.world.spec.relevance, zero_shot=run.world.spec.zero_shot, unseen=run.unseen)
    zero_training = _zero_training(run)
    with run.timer("encode"):
        val_feats = keyed_features(run.world, run.preset, run.cache, ["val"])
    jobs = cfg.jobs or default_jobs(cfg.device)
    results = train_and_test(run, val_feats, jobs)
    report = _report(run, results, raw, zero_training, {"jobs": jobs, "stages_s": run.timer.report(),
                                                        "stages_cpu_s": run.timer.cpu_report(),
                                                        "seconds": round(time.perf_counter() - t_start, 1),
                                                        "cpu_seconds": _cpu_seconds(), "provenance": prov,
                                                        "loadavg_end": [round(x, 2) for x in os.getloadavg()]})
    if not any(p for v in results.runs.values() for r in v.values() for p in r["pairs"].values()):
        raise NothingToScore(f"{run.world.spec.title}: no test query found a gallery to score against; "
                             "the test split needs items of two modalities that share labels or pair keys")
    write_report(report, cfg.out)
    return report


def _cpu_seconds() -> float:
    """CPU seconds this process (and any worker it waited for) has used: on a shared machine the
    measure of the bench's own work, where wall time also counts the other processes'."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime, 1)


def _prepare(cfg: BenchConfig) -> _Run:
    """The world, the preset on its device, the frozen features of train and val, and what is worth
    running on them (variants, sweep); a world with nothing to score fails before any encoder loads."""
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache
    from bridge.pairs import training_set
    from bridge.train import BASE_KEYS
    from core.files import user_cache_dir
    from query.eval.tasks import prepare_world

    timer = StageTimer()
    cfg.out.mkdir(parents=True, exist_ok=True)
    with timer("prepare"):
        world = prepare_world(cfg.dataset, cfg.data, cfg.out, scale=cfg.scale, unseen=cfg.unseen,
                              anchor=cfg.anchor, proxy=cfg.proxy)
    check_something_to_score(world, cfg.gallery)  # before any encoder loads
    if cfg.device is not None:
        from core.device import resolve_device

        resolve_device(cfg.device)  # a device that is not here fails before any work
    preset = load_preset(cfg.preset)
    if cfg.device is not None:
        preset.to(cfg.device)
    cache = FeatureCache(cfg.cache or user_cache_dir("features"))  # keyed by encoder and content: shared by runs
    with timer("encode"):
        train_set = training_set(world.rows("train"), preset, cache)
        val_rows = world.rows("val")
        # Validation picks each head's best step (and, below, the swept settings); never test.
        val_set = training_set(val_rows, preset, cache) if val_rows else None
    bound = any(m not in (world.spec.anchor, world.spec.proxy) for m in train_set)
    variants, note = variants_to_run(cfg.variants, bound, sorted(train_set))
    sweep = {k: v for k, v in cfg.sweep.items() if bound or k in BASE_KEYS}  # what is really swept
    return _Run(cfg, timer, world, preset, cache, train_set, val_set, bound, variants, note, sweep)


def _zero_training(run: _Run) -> dict[str, Any] | None:
    """The preset's pretrained space alone, nothing bound (the zero-training row); None for a preset
    with no aligned pairs."""
    if not run.preset.aligned_pairs:
        return None
    from bridge.space import Bridge

    mods = run.world.modalities()
    placed = run.preset.places()
    extra = [m for m in ("depth", "thermal") if m in mods and m not in placed
             and run.preset.backbone_key(m) == run.preset.backbone_key("image")]
    zb = Bridge.from_preset(run.preset, extra=extra)
    zb.feature_cache = run.cache
    index = run.build_index(zb, "zero-training-test", "test")
    pairs, same = run.evaluate(index, "test", ["auto"], [*SAME_MODALITY_ROUTES, "auto"])
    index.close()
    return {"modalities": zb.modalities, "pairs": pairs, "same_modality": same,
            "not_placed": {m: _not_placed_why(run.preset, m) for m in mods if m not in zb.modalities}}


def _not_placed_why(preset: Any, modality: str) -> str:
    """Why the zero-training row has no pair with `modality`: what the preset's pretrained space lacks."""
    if modality == "audio":
        return (f"{preset.name}'s pretrained space places no audio: its audio encoder has no named classes to meet "
                "text in (the offline preset places audio through YAMNet's AudioSet classes)")
    if modality in ("depth", "thermal"):
        return f"{preset.name}'s image network does not read {modality}, so its label space cannot place it"
    return f"{preset.name}'s pretrained space does not place {modality}"


def _report(run: _Run, res: Results, raw: dict[str, Any], zero_training: dict[str, Any] | None,
            system: dict[str, Any]) -> dict[str, Any]:
    """The report: what was measured, the choices made on validation, the figures over seeds, and
    `system` (wall time per stage, total, provenance)."""
    cfg, world, spec, variants = run.cfg, run.world, run.world.spec, run.variants
    mods = world.modalities()
    data = str(cfg.data) if cfg.data else "shipped sample"
    report = {
        "dataset": {
            "name": spec.name, "title": spec.title, "data": data,
            "scale": cfg.scale if spec.name == "digits" else None, "source": spec.source,
            "anchor": spec.anchor, "proxy": spec.proxy,
            "paired": [list(p) for p in spec.paired(mods)], "never_paired": [list(p) for p in spec.never_paired(mods)],
            "relevance": spec.relevance, "zero_shot": spec.zero_shot, "splits": spec.splits, "notes": spec.notes,
            "unseen_classes": sorted(run.unseen), "gallery": cfg.gallery, "items": world.counts(),
        },
        "world": {"scale": cfg.scale, "data": data, "items": world.counts()},
        "preset": cfg.preset, "seeds": cfg.seeds, "settings": res.settings, "sweep": run.sweep,
        "sweep_every_seed": cfg.sweep_every_seed,
        "selection": res.selection, "max_queries": cfg.max_queries, "max_k": cfg.max_k,
        "raw": raw,
        "variants": {v: aggregate(res.runs[v]) for v in variants}, "variants_note": run.variants_note,
        "routes_per_seed": {v: {s: r["routes"] for s, r in res.runs[v].items()} for v in variants},
        "per_seed": {v: {s: {p: {"r1": m["auto"]["r1"], "paired": m["paired"]} for p, m in r["pairs"].items()}
                         for s, r in res.runs[v].items()} for v in variants},
        "indexing": run.indexing, "latency_ms": res.latency, **system,
    }
    report["same_modality"] = {v: aggregate_same(res.runs[v]) for v in variants}
    if zero_training is not None:
        report["zero_training"] = summarise_zero_training(zero_training, spec.never_paired(mods))
    if "anchor" in report["variants"] and len(report["variants"]) > 1:
        report["deltas_vs_anchor"] = deltas(report["variants"])
    if {"anchor", "oracle"} <= set(report["variants"]):
        report["gap_closed"] = gap_closed(report["variants"])
    return report


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
    from core.cli import add_jobs_option

    p = sub.add_parser("bench", help="train, index and query a dataset; report the pair matrix",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default=DEFAULTS.dataset,
                   help="digits (default), a standard dataset, or manifest (your own pairs manifest)")
    p.add_argument("--data", type=Path, default=None,
                   help="the dataset folder; digits: ../shared/data (default: the shipped sample); manifest: the CSV/Parquet")
    p.add_argument("--out", type=Path, default=DEFAULTS.out)
    p.add_argument("--quick", action="store_true",
                   help="smaller world, shorter training, fewer queries, lambda_proxy swept over "
                   + ",".join(f"{v:g}" for v in QUICK_SWEEP["lambda_proxy"]))
    p.add_argument("--scale", choices=["sample", "quick", "full"], default=None, help="digits world size")
    p.add_argument("--seeds", type=int, nargs="+", default=DEFAULTS.seeds)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=DEFAULTS.variants)
    p.add_argument("--preset", default=DEFAULTS.preset, help=f"encoder preset (default {DEFAULTS.preset}: offline at 128 px)")
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--sweep", action="append", default=None, metavar="SETTING=V1,V2",
                   help="settings chosen on validation (repeatable; default lambda_proxy="
                   + ",".join(f"{v:g}" for v in DEFAULT_SWEEP["lambda_proxy"]) + ")")
    p.add_argument("--no-sweep", action="store_true", help="train each variant once with the given settings")
    p.add_argument("--cache", type=Path, default=None,
                   help="the frozen features' cache (default: the user's cache; keyed by encoder and content)")
    p.add_argument("--unseen", default=None,
                   help="class-disjoint split: N classes (seeded draw) or a comma list held out of train and val")
    add_jobs_option(p, "trainings run side by side, one core each (default 0: every core on a CPU, 1 on a GPU)")
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
        sweep = {k: v for k, v in (QUICK_SWEEP if args.quick else DEFAULT_SWEEP).items() if k not in overrides}
    unseen: list[str] | int | None = None
    if args.unseen:
        unseen = int(args.unseen) if args.unseen.isdigit() else [c.strip() for c in args.unseen.split(",") if c.strip()]
    cfg = BenchConfig(out=args.out, dataset=args.dataset, data=args.data, scale=scale, seeds=args.seeds,
                      variants=args.variants, preset=args.preset,
                      max_queries=args.max_queries or (60 if args.quick else DEFAULTS.max_queries), train_overrides=overrides,
                      sweep=sweep, unseen=unseen, gallery=args.gallery,
                      anchor=getattr(args, "anchor", None), proxy=getattr(args, "proxy", None),
                      device=args.device, cache=args.cache, jobs=args.jobs)
    report = run_bench(cfg)
    print((cfg.out / "report.md").read_text())
    return 0 if report else 1
