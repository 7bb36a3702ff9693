"""The bench's seeds: train every variant, choose its setting on validation, calibrate, test.

`train_and_test` runs the first seed here: its anchor trains the base, then every other variant's
trials (a bounded sweep) run side by side in forked workers (`core.workers`), each re-binding
on that base. The choices it makes (each variant's setting, `--base auto`'s start) hold for the later
seeds, whose trainings then run whole, one seed per worker, while the first seed's chosen bridges are
indexed and scored here. A trial trained in a worker comes back as a checkpoint folder; training is
seeded and single-threaded, so every trial's figures are the same for any `jobs`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from bridge.route_table import write_route_table
from core.workers import fork_map, forked
from query.eval.evaluate import SAME_MODALITY_ROUTES, index_points, latency
from query.eval.selection import (calibrate_routes, choose, grid_edges, sweep_candidates, train_config,
                                  validate_exact, validation_score)
from query.search import CROSS_ROUTES, FEATURE_ROUTES

log = logging.getLogger(__name__)


@dataclass
class Results:
    """What the seeds' loop gathers for the report."""

    runs: dict[str, dict[int, Any]]
    selection: dict[str, dict[int, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)


@dataclass
class Choices:
    """What the first seed chose on validation, for the later seeds."""

    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> its chosen setting
    base_start: dict[str, Any] = field(default_factory=dict)  # {"base": the start `--base auto` chose}


def train_and_test(run: Any, val_feats: dict[str, Any], jobs: int) -> Results:
    """Every seed and variant (`anchor` first: it trains the shared base), on up to `jobs` cores.
    Workers only train (torch alone: the engine's and polars' thread pools do not survive a fork);
    indexing, calibration and test run here."""
    cfg = run.cfg
    res = Results(runs={v: {} for v in run.variants}, selection={v: {} for v in run.variants})
    first, *later = cfg.seeds
    choices = Choices()
    trials = _train_seed(run, first, val_feats, choices, True, jobs)
    picks = _choose_seed(run, res, trials, choices, True)
    sweeping = cfg.sweep_every_seed
    with forked(functools.partial(_seed_trials_job, run, val_feats, choices, sweeping), later, jobs) as trained:
        _test_seed(run, res, first, trials, picks)  # while the later seeds train
        for seed, seed_trials in zip(later, trained):
            _test_seed(run, res, seed, seed_trials, _choose_seed(run, res, seed_trials, choices, sweeping))
    return res


def _train_seed(run: Any, seed: int, val_feats: dict[str, Any], choices: Choices, sweeping: bool,
                jobs: int) -> dict[str, list[dict[str, Any]]]:
    """One seed's trials by variant: the anchor's here, then the other variants' side by side (they
    re-bind on the base it trained). `sweeping`: try the sweep's grid rather than the first seed's choices."""
    from bridge.train import BASE_KEYS

    def candidates(variant: str) -> list[dict[str, Any]]:
        if sweeping or variant not in choices.settings:
            grid = sweep_candidates(run.sweep, variant, BASE_KEYS, run.bound)
        else:
            grid = [choices.settings[variant]]
        return grid if sweeping else [{**choices.base_start, **c} for c in grid]

    bases: dict[tuple, Any] = {}  # trained bases by their settings: variants re-bind on them
    order = sorted(run.variants, key=lambda v: v != "anchor")
    trials = {v: [_trial(run, v, seed, s, bases, val_feats, jobs) for s in candidates(v)] for v in order[:1]}
    others = [(v, s) for v in order[1:] for s in candidates(v)]
    for (variant, _), trial in zip(others, fork_map(functools.partial(_trial_job, run, seed, bases, val_feats),
                                                    others, jobs)):
        trials.setdefault(variant, []).append(trial)
    return trials


def _seed_trials_job(run: Any, val_feats: dict[str, Any], choices: Choices, sweeping: bool,
                     seed: int) -> dict[str, list[dict[str, Any]]]:
    """`_train_seed` for a worker: every bridge comes back as a checkpoint folder, and the seconds of
    the trials trained outside `_trial_job` (the anchor's) with the first of them."""
    with _own_timer(run) as timer:
        trials = _train_seed(run, seed, val_feats, choices, sweeping, jobs=1)
    out = {v: [_saved(run, seed, t) if "bridge" in t else t for t in ts] for v, ts in trials.items()}
    first = next(iter(out.values()))[0]
    first.update(seconds=dict(timer.seconds), cpu_seconds=dict(timer.cpu_seconds))
    return out


def _choose_seed(run: Any, res: Results, trials: dict[str, list[dict[str, Any]]], choices: Choices,
                 sweeping: bool) -> dict[str, tuple[int, bool]]:
    """Each variant's trial chosen on validation, and whether its grid was swept; the choices are
    recorded for the later seeds when `sweeping` for the first time."""
    picks, anchor_paired = {}, None
    for variant, variant_trials in trials.items():  # anchor first
        swept = sweeping or variant not in choices.settings
        pick = choose(variant_trials, anchor_paired if variant != "anchor" else None)
        chosen = variant_trials[pick]
        if variant == "anchor":
            anchor_paired = chosen["val"]["paired_r1"]
        if variant not in choices.settings:  # the first time it is swept
            choices.settings[variant] = chosen["setting"]
            if variant == "anchor":
                res.settings = {k: v for k, v in dataclasses.asdict(chosen["config"]).items()
                                if k not in ("variant", "seed")}
                base_choice = _bridge(run, chosen).config.get("base_choice")
                choices.base_start = {"base": base_choice["chosen"]} if base_choice and "base" not in run.sweep else {}
        picks[variant] = (pick, swept)
    return picks


def _test_seed(run: Any, res: Results, seed: int, trials: dict[str, list[dict[str, Any]]],
               picks: dict[str, tuple[int, bool]]) -> None:
    """Each variant's chosen bridge calibrated on validation and scored on test."""
    for variant, variant_trials in trials.items():
        _finish(run, res, variant, seed, variant_trials, *picks[variant])
    shutil.rmtree(run.cfg.out / "trials" / f"s{seed}", ignore_errors=True)


@contextmanager
def _own_timer(run: Any) -> Iterator[Any]:
    """A fresh stage timer for work whose seconds the caller adds to the run's (the same whether the
    work ran in a worker or, with one job, here)."""
    saved, run.timer = run.timer, type(run.timer)()
    try:
        yield run.timer
    finally:
        run.timer = saved


def _trial(run: Any, variant: str, seed: int, setting: dict[str, Any], bases: dict[tuple, Any],
           val_feats: dict[str, Any], jobs: int = 1) -> dict[str, Any]:
    """Train `variant` with `setting` (its own trial runs on up to `jobs` cores) and score it by exact
    search on validation."""
    from bridge.train import BASE_KEYS, train

    cfg = run.cfg
    tc = train_config(cfg, run.world, variant, seed, setting)
    base_key = tuple(getattr(tc, k, None) for k in BASE_KEYS)
    with run.timer("train"):
        bridge, curves = train(tc, run.train_set, val=run.val_set, preset=run.preset, base=bases.get(base_key),
                               device=cfg.device, jobs=jobs)
    bases.setdefault(base_key, bridge)
    with run.timer("query"):
        spec = run.world.spec
        val = validate_exact(bridge, val_feats, cfg.max_queries, spec.relevance, cfg.max_k) if val_feats else {}
    log.info("%s seed %d %s: validation %s", variant, seed, setting or "(defaults)", validation_score(val))
    return {"setting": setting, "val": validation_score(val), "bridge": bridge, "config": tc, "curves": curves}


def _trial_job(run: Any, seed: int, bases: dict[tuple, Any], val_feats: dict[str, Any],
               job: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """`_trial` for a worker: the bridge comes back as a checkpoint folder, with the stages' seconds."""
    variant, setting = job
    with _own_timer(run) as timer:
        trial = _trial(run, variant, seed, setting, bases, val_feats)
    return {**_saved(run, seed, trial), "seconds": dict(timer.seconds), "cpu_seconds": dict(timer.cpu_seconds)}


def _saved(run: Any, seed: int, trial: dict[str, Any]) -> dict[str, Any]:
    """The trial with its bridge saved to a checkpoint folder in place of the object."""
    setting = trial["setting"]
    name = f"{trial['config'].variant}-" + ("-".join(f"{k}={v}" for k, v in sorted(setting.items())) or "defaults")
    bridge = trial.pop("bridge")
    return {**trial, "path": bridge.save(run.cfg.out / "trials" / f"s{seed}" / name)}


def _bridge(run: Any, trial: dict[str, Any]) -> Any:
    """The trial's bridge: trained here, or loaded from the folder a worker saved it in."""
    if "bridge" not in trial:
        from bridge.space import Bridge

        trial["bridge"] = Bridge.load(trial["path"], preset=run.preset)
    return trial["bridge"]


def _finish(run: Any, res: Results, variant: str, seed: int, trials: list[dict[str, Any]], pick: int,
            swept: bool) -> None:
    """Save the chosen bridge, calibrate its route table on validation, score it on test; record the trials."""
    for trial in trials:  # a worker's stages count in the run's (summed over workers)
        for stage, s in trial.pop("seconds", {}).items():
            run.timer.seconds[stage] += s
            run.timer.cpu_seconds[stage] += trial["cpu_seconds"][stage]
    chosen = trials[pick]
    edges = grid_edges(chosen["setting"], run.sweep) if len(trials) > 2 else []
    if edges:
        log.warning("%s seed %d: %s chosen at the edge of its grid; extend --sweep past it before comparing",
                    variant, seed, ", ".join(edges))
    bridge = _bridge(run, chosen)
    bridge.save(run.cfg.out / "checkpoints" / f"{variant}-s{seed}", chosen["curves"])
    bridge.feature_cache = run.cache  # indexing re-uses the frozen features
    routes, val_routed, val_same = _calibrate(run, bridge, f"{variant}-s{seed}")
    res.selection[variant][seed] = {
        "chosen": chosen["setting"], "swept": swept, "routes": routes, "at_grid_edge": edges,
        "same_modality_val": {p: {r: round(m[r]["r1"], 4) for r in SAME_MODALITY_ROUTES if r in m}
                              for p, m in val_same.items()},
        "val_routed": validation_score(val_routed), "base_choice": bridge.config.get("base_choice"),
        "trials": [{"setting": t["setting"], **t["val"], "chosen": i == pick} for i, t in enumerate(trials)]}
    _test(run, res, bridge, variant, seed, routes, chosen["setting"])


def _calibrate(run: Any, bridge: Any, name: str) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The route table, calibrated through the real index and router on validation:
    (the table, the cross-modal pairs' and the search-by-example validation metrics)."""
    index = run.build_index(bridge, f"{name}-val", "val")
    val_routed, val_same = run.evaluate(index, "val", [*CROSS_ROUTES, *FEATURE_ROUTES], list(SAME_MODALITY_ROUTES))
    index.close()
    routes = calibrate_routes(val_routed)
    routes.update(calibrate_routes(val_same))
    return routes, val_routed, val_same


def _test(run: Any, res: Results, bridge: Any, variant: str, seed: int, routes: dict[str, str],
          setting: dict[str, Any]) -> None:
    """Index the test gallery with the calibrated route table in its metadata and score it once,
    every route and the table's own (`auto`); the first test index also times the routes."""
    index = run.build_index(bridge, f"{variant}-s{seed}-test", "test")
    index.store.update_metadata(write_route_table({}, routes))
    points = index_points(index.store, run.prefix_of("test"))
    result, same = run.evaluate(index, "test", [*CROSS_ROUTES, *FEATURE_ROUTES, "auto"], [*SAME_MODALITY_ROUTES, "auto"],
                                points)
    res.runs[variant][seed] = {"pairs": result, "routes": routes, "version": bridge.version, "same": same}
    if not res.latency:
        res.latency = latency(index, points)
    index.close()
    unpaired = [p["auto"]["r1"] for p in result.values() if not p["paired"]]
    log.info("bench %s seed %d (%s): test unpaired mean R@1 %s", variant, seed, setting or "defaults",
             f"{np.mean(unpaired):.3f}" if unpaired else "n/a")
