"""Instance maps: a modality read by the anchor's encoder bound in that encoder's own geometry (stage 4
of `bridge.train`), where items are told apart, not only classed (`bridge.model.InstanceMap`).

A map reads the raw features of its two modalities alone, never the base space or a variant's
proxy term, so runs that share a base share its maps: a run keeps every map it trained on its
bridge in memory (`keep_instance_maps`; the routes may drop some from the checkpoint), and a run
that borrows that bridge as its base, with the same settings, takes them (`borrow_instance_map`)
rather than training them again.

Example:
    >>> bind_instance(modules, config, cfg, "thermal", data, val, curves, rng)   # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from bridge.config import TrainConfig
from bridge.model import BridgeModules, InstanceMap, instance_key, instance_loss
from bridge.optimise import PairSampler, optimise
from bridge.pairs import TrainingSet
from bridge.validation import PairCheck, unit_rows
from core.deps import require

torch = require("torch", "training")
nn = torch.nn
log = logging.getLogger(__name__)

# What an instance map's training reads from the config: a lent base's maps serve a run that agrees on these.
INSTANCE_KEYS = ("preset", "anchor", "seed", "steps", "batch_size", "lr", "weight_decay", "start_decay", "temperature",
                 "select", "eval_every", "patience", "val_fraction")


def _settings(cfg: TrainConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in INSTANCE_KEYS}


def keep_instance_maps(bridge: Any, modules: BridgeModules, config: dict[str, Any], cfg: TrainConfig,
                       curves: dict[str, Any]) -> None:
    """Hold every instance map the run made on `bridge` in memory (`trained_instance_maps`), before the
    routes drop the ones no search takes, so a run that borrows this bridge as its base borrows them too."""
    maps = config.get("instance_maps") or {}
    bridge.trained_instance_maps = {
        "settings": _settings(cfg),
        "maps": {key: (modules.instance[key], dict(info), curves.get(f"instance/{info['source']}-{info['target']}"))
                 for key, info in maps.items() if key in modules.instance}}


def borrow_instance_map(base: Any, modules: BridgeModules, config: dict[str, Any], cfg: TrainConfig, m: str,
                        curves: dict[str, Any]) -> bool:
    """Take m's instance map from a lent `base` that trained it with the same settings; False if it has none."""
    lent = getattr(base, "trained_instance_maps", None) or {}
    key = instance_key(m, cfg.anchor)
    if lent.get("settings") != _settings(cfg) or key not in lent.get("maps", {}):
        return False
    imap, info, curve = lent["maps"][key]
    modules.instance[key] = imap
    config.setdefault("instance_maps", {})[key] = {**info, "lent_by": base.version}
    curves[f"instance/{m}-{cfg.anchor}"] = curve
    log.info("instance map %s->%s: lent by the base's bridge %s", m, cfg.anchor, base.version)
    return True


def bind_instance(modules: BridgeModules, config: dict[str, Any], cfg: TrainConfig, m: str, data: TrainingSet,
                  val: TrainingSet, curves: dict[str, Any], rng: np.random.Generator) -> None:
    """Train m's instance map into the anchor's raw features (`InstanceMap`), from the identity (the raw
    route of two modalities on one encoder), with InfoNCE on the pairs both ways, kept at its best
    validation step (the start included). Whether a search takes it is decided with the routes."""
    anchor = cfg.anchor
    check = PairCheck(m, anchor, data, val)
    if not check.usable:
        return
    imap = InstanceMap(data[m].features.shape[1], data[anchor].features.shape[1])
    sampler = PairSampler(data[m], data[anchor], rng, f"{m}<->{anchor}")
    scale = nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)))
    x_m, x_a = torch.as_tensor(data[m].features), torch.as_tensor(data[anchor].features)

    def loss(_: int) -> "torch.Tensor":
        rows, cols, pos = sampler.batch(cfg.batch_size)
        return instance_loss(imap, x_m[rows], x_a[cols], scale.exp().clamp(max=100), pos)

    def embed(s: str, x: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(x, dtype=torch.float32)
        return (imap.to_target(z) if s == m else imap.to_source(z)).cpu().numpy()

    result = optimise([*imap.parameters(), scale], cfg.steps, cfg, loss, f"instance/{m}-{anchor}", curves,
                      keep=[imap], check=lambda: check.score(embed, unit_rows), anchored=list(imap.parameters()))
    imap.eval()
    key = instance_key(m, anchor)
    modules.instance[key] = imap
    config.setdefault("instance_maps", {})[key] = {
        "source": m, "target": anchor, "kept_step": result.get("best_step"),
        "start_r1": round(result.get("start_r1", float("nan")), 4), "val_r1": round(result.get("best_r1", float("nan")), 4)}
    log.info("instance map %s->%s (the encoder's own geometry) val R@1: raw features %.3f, kept %.3f -> keeping %s",
             m, anchor, result.get("start_r1", float("nan")), result.get("best_r1", float("nan")),
             f"step {result['best_step']}" if result.get("best_step") else "the start (the raw features)")
