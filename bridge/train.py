"""Training the bridge: three stages on frozen-encoder features, each head kept only where
validation says it earns its place.

1. base:  the anchor and proxy modalities (image, text). Where the preset declares them aligned
          (CLIP's towers) the base is *frozen*: their vectors are the encoders' own normalised
          outputs and nothing is trained. Otherwise a base is learned, starting from the anchor
          encoder's geometry (PCA) and the proxy's closed-form fit to it.
2. proxy: G, the noisy bridge anchor, learns anchor -> proxy embeddings; then frozen.
3. bind:  every other modality's head learns InfoNCE(z_new, z_anchor) + lambda * L_proxy,
          where L_proxy depends on the variant:
          `anchor` (none), `naive-proxy` (no projection), `emergentbridge` (P = I - u u^T).

Every head starts where its encoder is (a copy of the anchor's map when it shares the anchor's
backbone, a ridge fit to the anchor otherwise), is pulled back towards that start by
`start_decay`, and is checked on validation pairs against a gallery that also holds the training
items (what a user's index holds). The best check wins, the start included, so a head never ends
below where it began; the log puts each pair's raw-feature R@1 beside it.

Example:
    >>> bridge, curves = train(TrainConfig(preset="tiny", steps=50), data)   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from bridge.config import TrainConfig
from core.deps import require
from bridge.model import (BridgeModules, InstanceMap, build_modules, info_nce, init_copy, init_pca, init_ridge,
                          instance_key, instance_loss, neighbour_loss, proxy_loss)
from bridge.pairs import ModalityData, TrainingSet, pair_keys
from bridge.labelspace import label_classes, space_dim
from bridge.validation import PairCheck, clearly_better, hits_at_1, hold_out, recall_at_1, unit_rows
from bridge.space import Bridge

torch = require("torch", "training")
nn = torch.nn
F = torch.nn.functional
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ pairing


class PairSampler:
    """Draws batches of (row of a, a random partner row of b) pairs, with the positives mask.

    Keys are turned into integer codes and partners into one sorted array with per-key
    offsets, so a batch is drawn with a few vectorised numpy calls (a Python loop per row
    cost as much as the training step itself)."""

    def __init__(self, a: ModalityData, b: ModalityData, rng: np.random.Generator, what: str):
        keys_a, keys_b, self.how = pair_keys(a, b)
        codes = {k: c for c, k in enumerate(sorted({k for k in keys_b if k is not None}))}
        self.n_codes = len(codes)
        self.code_a = np.array([codes.get(k, -1) if k is not None else -1 for k in keys_a])
        self.code_b = np.array([codes.get(k, -1) if k is not None else -1 for k in keys_b])
        self.rows = np.flatnonzero(self.code_a >= 0)
        if not self.rows.size:
            raise ValueError(f"no paired data for {what}: the items share neither pair keys nor labels")
        has_key = np.flatnonzero(self.code_b >= 0)
        self.partners = has_key[np.argsort(self.code_b[has_key], kind="stable")]  # b rows grouped by key
        counts = np.bincount(self.code_b[has_key], minlength=len(codes))
        self.start, self.count = np.concatenate([[0], np.cumsum(counts)[:-1]]), counts
        self.rng = rng

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, "torch.Tensor"]:
        rows = self.rng.choice(self.rows, size=min(size, self.rows.size), replace=False)
        key = self.code_a[rows]
        cols = self.partners[self.start[key] + (self.rng.random(rows.size) * self.count[key]).astype(int)]
        return rows, cols, torch.as_tensor(key[:, None] == self.code_b[cols][None, :])

    def partner_means(self, z_b: "torch.Tensor") -> tuple[np.ndarray, "torch.Tensor"]:
        """(rows of a that have partners, the normalised mean of each one's partners' vectors)."""
        sums = torch.zeros(self.n_codes, z_b.shape[1])
        has_key = self.code_b >= 0
        sums.index_add_(0, torch.as_tensor(self.code_b[has_key]), z_b[torch.as_tensor(np.flatnonzero(has_key))])
        return self.rows, F.normalize(sums[torch.as_tensor(self.code_a[self.rows])], dim=-1)


class TopClassPairs:
    """G's training pairs when the proxy is the label space's class prompts: each anchor item with
    the prompt of its most probable class (the largest of its label-space vector's first `classes`
    coordinates: in a concept space the classes come first, then the concepts above them)."""

    def __init__(self, head: nn.Module, anchor: ModalityData, rng: np.random.Generator, classes: int):
        with torch.no_grad():
            self.top = head(torch.as_tensor(anchor.features))[:, :classes].argmax(1).cpu().numpy()
        self.rng = rng

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, "torch.Tensor"]:
        rows = self.rng.choice(len(self.top), size=min(size, len(self.top)), replace=False)
        cols = self.top[rows]
        return rows, cols, torch.as_tensor(cols[:, None] == cols[None, :])


# ------------------------------------------------------------------------------ optimisation


def _optimise(params: list, steps: int, cfg: TrainConfig, loss_fn: Callable[[int], "torch.Tensor"], name: str,
              curves: dict[str, Any], keep: list[nn.Module] | None = None, check: Callable[[], float] | None = None,
              anchored: list | None = None) -> dict[str, Any]:
    """AdamW with warm-up and cosine decay, a progress bar, and selection on validation.

    `anchored` parameters are pulled towards their starting values (`start_decay`, L2-SP) rather
    than towards zero. With `check`, the modules in `keep` are scored at the start and every
    `eval_every` steps, the best state is restored at the end, and the stage stops early after
    `patience` checks without progress. A check may return (trained pair's R@1, score): a state
    is only kept if the first is not below its start value.
    """
    from tqdm.auto import tqdm

    if steps <= 0:  # nothing to train: the start is what is kept
        start = _evaluate(check, keep)[1] if check is not None and cfg.select else None
        return {"steps": 0, **({"start_r1": start, "best_r1": start, "best_step": 0} if start is not None else {})}
    anchored = anchored or []
    starts = [p.detach().clone() for p in anchored]
    anchored_ids = {id(p) for p in anchored}
    groups = [{"params": [p for p in params if id(p) not in anchored_ids], "weight_decay": cfg.weight_decay}]
    if anchored:
        groups.append({"params": anchored, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    curve = curves.setdefault(name, [])
    selecting = check is not None and cfg.select
    result: dict[str, Any] = {"steps": steps}
    if selecting:
        floor, best = _evaluate(check, keep)
        result["start_r1"], result["start_pair_r1"] = best, floor
        best_step, best_state, stale = 0, [copy.deepcopy(m.state_dict()) for m in keep], 0
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=name, leave=False, mininterval=1.0, disable=None)
    for step in bar:
        loss = loss_fn(step)
        if anchored and cfg.start_decay > 0:
            loss = loss + cfg.start_decay * sum(((p - s) ** 2).sum() for p, s in zip(anchored, starts))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            curve.append([step, round(loss.item(), 6)])
        if selecting and ((step + 1) % cfg.eval_every == 0 or step == steps - 1):
            primary, score = _evaluate(check, keep)
            if score > best and primary >= floor - 1e-9:  # never below the start on the trained pair
                best, best_step, best_state, stale = score, step + 1, [copy.deepcopy(m.state_dict()) for m in keep], 0
            else:
                stale += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", val_r1=f"{score:.3f}", best=f"{best:.3f}")
            if stale >= cfg.patience:
                log.debug("%s: no better validation R@1 for %d checks; stopping at step %d", name, stale, step + 1)
                break
        elif step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    log.info("%s: %d steps, loss %.4f (%.1fs)", name, step + 1, loss.item(), time.perf_counter() - t0)
    if selecting:
        for module, state in zip(keep, best_state):
            module.load_state_dict(state)
        result.update(best_r1=best, best_step=best_step, stopped_at=step + 1)
    return result


def _pair_and_mean(checks: list[PairCheck], embed: Callable[[str, np.ndarray], np.ndarray]) -> tuple[float, float]:
    scores = [c.score(embed) for c in checks]
    return scores[0], float(np.mean(scores))


def _evaluate(check: Callable[[], float | tuple[float, float]], modules: list[nn.Module]) -> tuple[float, float]:
    """(the trained pair's R@1, the selection score): equal unless the check scores more than one pair."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            value = check()
        return value if isinstance(value, tuple) else (value, value)
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def _tensor(data: ModalityData, rows: np.ndarray) -> "torch.Tensor":
    return torch.as_tensor(data.features[rows], dtype=torch.float32)


# Settings that must agree for a bridge's base space and G to be reused by another run.
BASE_KEYS = ("preset", "base", "dim", "anchor", "proxy", "proxy_model", "proxy_sigma", "diffusion_steps",
             "diffusion_timesteps", "diffusion_depth", "hidden", "dropout", "batch_size", "steps", "proxy_steps", "lr",
             "weight_decay", "temperature", "head_init", "start_decay", "select", "eval_every", "patience",
             "val_fraction", "seed", "keep_neighbours")


def frozen_modalities(cfg: TrainConfig, preset_info: dict[str, Any], data: TrainingSet) -> set[str]:
    """Modalities whose bridged vectors are their encoders' own outputs, or their label-space map
    (a pretrained aligned base). `--base finetune` (and `auto` on a label-space base) starts there
    and is trained instead: then none is frozen."""
    aligned = [tuple(p) for p in preset_info.get("aligned") or []]
    holding_anchor = [p for p in aligned if cfg.anchor in p and all(m in data for m in p)]
    if (_label_space(preset_info) and cfg.base in ("auto", "frozen") and not holding_anchor
            and any(cfg.anchor in p for p in aligned)):
        # The manifest binds to one side of the pretrained space (audio-text pairs, `--anchor text`):
        # that side stays the space's own, and its partners (the photos) are carried with it.
        return {cfg.anchor}
    if cfg.base == "finetune" and not (_label_space(preset_info) and holding_anchor):
        raise ValueError(f"--base finetune needs a label-space preset whose aligned pair holds {cfg.anchor} (the "
                         f"offline presets); preset {preset_info.get('name')!r}: use --base frozen or trained")
    if cfg.base in ("trained", "finetune") or (cfg.base == "auto" and (not holding_anchor or _label_space(preset_info))):
        return set()
    if not holding_anchor:
        raise ValueError(f"--base frozen needs a preset that declares {cfg.anchor} aligned with another modality; "
                         f"preset {preset_info.get('name')!r} declares {aligned or 'none'}: use --base trained")
    frozen = {m for p in aligned if all(x in data for x in p) for m in p}
    dims = {m: int(data[m].features.shape[1]) for m in frozen}
    if not _label_space(preset_info) and len(set(dims.values())) != 1:
        raise ValueError(f"the aligned encoders' outputs differ in size ({dims}); they cannot form one frozen space")
    return frozen


def _label_space(preset_info: dict[str, Any]) -> bool:
    return bool(preset_info.get("label_space"))


def carried_modalities(preset_info: dict[str, Any], data: TrainingSet, frozen: set[str]) -> list[str]:
    """Modalities a frozen pretrained base places with no training (`Preset.places`: video frames
    through the aligned image encoder; in a concept space also depth, thermal and a tagger's audio)
    that the training data lacks: carried into the bridge with their fixed heads, so a bridge bound
    to the base embeds everything the zero-training space did, the same way."""
    if not frozen or not preset_info.get("dims"):
        return []
    places = preset_info.get("places")
    if places is None:  # an info dict from before `places`: video through the image network
        backbones = preset_info.get("backbones") or {}
        places = [m for m in ("video",) if backbones.get(m) == backbones.get("image")]
    return [m for m in places if m not in data and m not in frozen and m in preset_info["dims"]]


def base_kinds(cfg: TrainConfig, preset_info: dict[str, Any], data: TrainingSet, frozen: set[str],
               shares_anchor: set[str]) -> dict[str, str]:
    """Each modality's head kind. On a label-space base (the offline presets' aligned image/text),
    the anchor and proxy are the fixed label-space maps (frozen) or start there and are fine-tuned
    on the pairs (`finetune`, what `auto` does there), and modalities read by the anchor's backbone
    (depth, thermal, video) or placed by the space themselves (a tagger's audio in a concept space)
    start at their own label-space vector, the zero-training baseline. A manifest that binds to one
    side of the space (audio-text pairs with `--anchor text`) keeps that side frozen."""
    on_labels = _label_space(preset_info) and cfg.base != "trained" and (cfg.anchor in frozen or any(
        cfg.anchor in p and all(m in data for m in p) for p in preset_info.get("aligned") or []))
    places = preset_info.get("places")

    def placed(m: str) -> bool:  # whether the space has a label map of m's own to start from
        return places is None or m in places or m in shares_anchor

    kinds = {}
    for m in data:
        if m in frozen:
            kinds[m] = "labelspace" if on_labels else "identity"
        elif on_labels and cfg.head_init == "encoder" and (m in (cfg.anchor, cfg.proxy) or m in shares_anchor) \
                and placed(m):
            kinds[m] = "labelspace-residual"
        else:
            kinds[m] = "mlp" if cfg.head_init == "random" else "residual"
    return kinds


def train(cfg: TrainConfig, data: TrainingSet, val: TrainingSet | None = None,
          preset_info: dict[str, Any] | None = None, base: Bridge | None = None,
          device: Any = None) -> tuple[Bridge, dict[str, Any]]:
    """Train the bridge on frozen features; returns it and its training curves.

    `val` (never the test split) picks each head's best step and is reported per pair; without
    it, `val_fraction` of the training pairs are held out for that. `base`, a bridge trained
    with the same base settings, lends its base space and G (stages 1-2), so variants compared
    side by side differ only in how the other modalities are bound. `preset_info` is
    `Preset.info()`: its aligned pairs decide the frozen base, its backbones which heads start
    as a copy of the anchor's. `device` ("auto", "cpu", "cuda", "mps") runs the whole training
    there; the checkpoint is the same.
    """
    if device is not None:  # device plumbing (issue 11): the whole run under one torch device
        from core.device import resolve_device

        dev = resolve_device(device)
        # Parameters, batches and samples are made on `dev`; `Bridge.save` writes CPU tensors. On the
        # CPU there is nothing to move, and no device mode to pay for on every torch call.
        with dev if dev.type != "cpu" else contextlib.nullcontext():
            bridge, curves = train(cfg, data, val=val, preset_info=preset_info, base=base)
        bridge.device = dev
        return bridge, curves
    import functools

    from bridge.labelspace import supplies_proxy

    @functools.cache
    def preset() -> Any:  # the preset's networks, loaded once and only for a label-space base
        from bridge.encoders import load_preset

        return load_preset(cfg.preset)

    as_given = (cfg, data, val)  # what a trial run (the class guard) starts from
    prompts_as_proxy = cfg.proxy not in data and supplies_proxy(preset_info or {}, cfg.anchor, cfg.proxy, cfg.base)
    if prompts_as_proxy:  # no text rows: the label space's class prompts are the proxy, the base stays frozen
        from bridge.labelspace import class_prompt_items

        data = {**data, cfg.proxy: class_prompt_items(preset())}
        cfg = dataclasses.replace(cfg, base="frozen")
        log.info("no %s rows: the preset's class prompts stand for them; the base stays the pretrained space and G "
                 "learns each %s's top class prompt", cfg.proxy, cfg.anchor)
    for role in (cfg.anchor, cfg.proxy):
        if role not in data:
            raise ValueError(f"the training data has no {role!r} items (needed as the {role} role)")
    preset_info = preset_info or {"name": cfg.preset, "fingerprint": None}
    caches = {d.feature_cache for d in data.values() if d.feature_cache}  # set by training_set
    if val is None or not all(m in val for m in data):
        data, val = _complete_val(data, val, cfg)
    base_choice = None
    if base is not None and cfg.base == "auto":  # a lent base was chosen when it was trained
        cfg = dataclasses.replace(cfg, base=base.config["base"])
    elif cfg.base == "auto" and _label_space(preset_info) and any(
            cfg.anchor in p and cfg.proxy in p for p in preset_info.get("aligned") or []):
        base_choice = choose_base(cfg, data, val, preset_info)
        cfg = dataclasses.replace(cfg, base=base_choice["chosen"])
    guard = guard_held_out_classes(cfg, data, val, preset_info, as_given) if cfg.class_guard and base is None else {}
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    frozen = frozen_modalities(cfg, preset_info, data)
    frozen |= {m for m, g in guard.items() if g["keep_start"]}
    feature_dims = {m: int(d.features.shape[1]) for m, d in data.items()}

    def same_encoder(a: str, b: str) -> bool:
        """One network on one kind of input: a head's map can be copied, raw features compared."""
        from bridge.encoders.presets import shares_encoder

        return shares_encoder(preset_info, a, b, aligned=False)

    shares_anchor = {m for m in data if m != cfg.anchor and same_encoder(m, cfg.anchor)}
    kinds = base_kinds(cfg, preset_info, data, frozen, shares_anchor)
    carried = carried_modalities(preset_info, data, frozen)
    for m in carried:  # placed by the frozen base with no pairs (video; depth, thermal, audio in a concept space)
        feature_dims[m], kinds[m] = int(preset_info["dims"][m]), kinds[cfg.anchor]
        frozen = frozen | {m}
    maps = _label_maps(preset, kinds)
    dim = space_dim(maps) if maps else feature_dims[cfg.anchor] if frozen else cfg.dim
    aligned = [sorted(p) for p in (preset_info.get("aligned") or []) if set(p) <= frozen]
    aligned += [sorted([m, x]) for m in carried for x in sorted(frozen - set(carried))]
    config = {**asdict(cfg), "dim": dim, "feature_dims": feature_dims, "head_kinds": kinds,
              **label_classes(maps),
              "base": "frozen" if frozen else "finetune" if any(k == "labelspace-residual" for k in kinds.values()) else "trained", "frozen": sorted(frozen),
              "preset_name": preset_info["name"], "preset_fingerprint": preset_info.get("fingerprint"),
              "paired": [list(p) for p in aligned], "heads": {}, "version": "unsaved",
              **({"base_choice": base_choice} if base_choice else {}),
              **({"class_guard": guard} if guard else {}),
              **({"label_space": preset_info["label_space"]} if maps and preset_info.get("label_space") else {}),
              **({"feature_cache": caches.pop()} if len(caches) == 1 else {})}
    modules = build_modules(config)
    for m, d in data.items():
        if not modules.heads[m].fixed:  # a fixed head reads the features as they are: nothing to fit
            modules.heads[m].fit_scaler(torch.as_tensor(d.features))
    for m, args in maps.items():
        modules.heads[m].labels.set(**args)
    curves: dict[str, Any] = {}
    anchor = data[cfg.anchor]
    h_a = modules.heads[cfg.anchor]

    def embed(m: str, x: np.ndarray) -> np.ndarray:
        return modules.heads[m](torch.as_tensor(x, dtype=torch.float32)).cpu().numpy()

    def start_head(m: str, target: str) -> str:
        """Put head m where its encoder is, relative to the (already placed) head of `target`."""
        head = modules.heads[m]
        if m in shares_anchor and target == cfg.anchor and head.kind == h_a.kind == "labelspace-residual":
            # The anchor's fine-tuned head, as a trained base's heads start as a copy of its map:
            # on the anchor's backbone that is where this modality's items are nearest their partners.
            init_copy(head, h_a, data[m].features)
            return "copy of the anchor"
        if head.kind.startswith("labelspace"):
            return "its label-space vector"
        if head.kind != "residual":
            return "random" if head.kind == "mlp" else "identity"
        if m in shares_anchor and target == cfg.anchor:
            init_copy(head, h_a, data[m].features)
            return "copy of the anchor" if h_a.kind != "identity" else "identity (raw features)"
        sampler = PairSampler(data[m], data[target], rng, f"{m}<->{target}")
        with torch.no_grad():
            rows, targets = sampler.partner_means(modules.heads[target](torch.as_tensor(data[target].features)))
        init_ridge(head, data[m].features, rows, targets)
        return "ridge fit to the anchor"

    def record(m: str, pair: tuple[str, str], init: str, result: dict[str, Any], check: PairCheck | None,
               also: PairCheck | None = None) -> None:
        """Write down (config["heads"]) and log where head m started, what was kept, and the raw baseline."""
        info: dict[str, Any] = {"init": init, "kind": modules.heads[m].kind}
        if check is not None and check.usable and "start_r1" in result:
            with torch.no_grad():
                modules.heads[m].eval()
                kept_r1 = check.score(embed)
            info.update(pair=f"{pair[0]}<->{pair[1]}", relevance=check.how, kept_step=result.get("best_step"),
                        start_r1=round(result.get("start_pair_r1", result["start_r1"]), 4), val_r1=round(kept_r1, 4))
            if same_encoder(*pair):
                info["raw_r1"] = round(check.raw(), 4)
            if also is not None:
                with torch.no_grad():
                    info.update(selected_on=f"mean of {pair[0]}<->{pair[1]} and {also.a}<->{also.b}",
                                also_val_r1=round(also.score(embed), 4))
            kept = "the start (the encoder's geometry)" if not info["kept_step"] else f"step {info['kept_step']}"
            raw = f", raw features {info['raw_r1']:.3f}" if "raw_r1" in info else ""
            extra = f" ({also.a}<->{also.b} {info['also_val_r1']:.3f})" if also is not None else ""
            log.info("head %-8s %s val R@1: start %.3f, kept %.3f%s%s -> keeping %s", m, info["pair"],
                     info["start_r1"], info["val_r1"], extra, raw, kept)
        config["heads"][m] = info

    def settle(m: str, result: dict[str, Any]) -> None:
        """A label-space head whose start validation kept is that fixed map itself: the very vectors of
        the zero-training space, so an index built on it is extended, not re-embedded."""
        head = modules.heads[m]
        if head.kind != "labelspace-residual" or result.get("best_step", 0) != 0 or "best_r1" not in result:
            return
        last = head.net[-1]
        if bool(last.weight.any()) or bool(last.bias.any()):  # it started elsewhere (a copy of the anchor)
            return
        spread = head.labels.spread
        fixed = type(head)(feature_dims[m], dim, kind="labelspace",
                           classes=None if spread is None else int(spread.shape[0]))
        fixed.labels = head.labels  # the same fixed map (a concept space's spread included)
        modules.heads[m] = fixed.eval()
        kinds[m] = config["head_kinds"][m] = "labelspace"
        config["heads"].setdefault(m, {})["kind"] = "labelspace"
        log.info("head %s: validation kept its label-space start; it stays that fixed map", m)

    def check_for(a: str, b: str) -> PairCheck | None:
        if a not in val and b not in val:
            return None
        check = PairCheck(a, b, data, val)  # one side may be judged on its training items only
        return check if check.usable else None

    def head_params(*ms: str) -> list:
        return [p for m in ms for p in modules.heads[m].parameters()]

    # Stage 1: the base space, anchor <-> proxy.
    proxy_data = data[cfg.proxy]
    pairs_ap = TopClassPairs(modules.heads[cfg.anchor], anchor, rng, len(proxy_data.ids)) if prompts_as_proxy else \
        PairSampler(anchor, proxy_data, rng, f"{cfg.anchor}<->{cfg.proxy}")
    h_p, scale = modules.heads[cfg.proxy], modules.logit_scales[cfg.proxy]

    def base_loss(_: int) -> "torch.Tensor":
        rows, cols, pos = pairs_ap.batch(cfg.batch_size)
        x_a, x_p = _tensor(anchor, rows), _tensor(proxy_data, cols)
        z_a, z_p = h_a(x_a), h_p(x_p)
        loss = info_nce(z_a, z_p, scale.exp().clamp(max=100), pos)
        if cfg.keep_neighbours > 0:
            for head, z, x in ((h_a, z_a, x_a), (h_p, z_p, x_p)):
                if not head.fixed:
                    loss = loss + cfg.keep_neighbours * neighbour_loss(z, x)
        return loss

    if base is not None:
        _adopt_base(modules, base, config)
        curves.update({k: v for k, v in base.config.get("base_curves", {}).items()})
    elif cfg.proxy in frozen:
        log.info("base: %s and %s are frozen aligned encoders; nothing to train", cfg.anchor, cfg.proxy)
        for m in frozen:
            record(m, (m, m), "its label-space vector" if kinds[m] == "labelspace" else "identity", {}, None)
    else:
        trainable = [m for m in (cfg.anchor, cfg.proxy) if not modules.heads[m].fixed]
        if h_a.kind == "residual":
            init_pca(h_a, anchor.features, cfg.seed)
        init_p = start_head(cfg.proxy, cfg.anchor)
        check = check_for(cfg.proxy, cfg.anchor)
        modules.train()
        result = _optimise([*head_params(*trainable), scale], cfg.steps, cfg, base_loss,
                           f"base/{cfg.anchor}-{cfg.proxy}", curves, keep=[modules.heads[m] for m in trainable],
                           check=(lambda: check.score(embed)) if check else None,
                           anchored=head_params(*trainable) if cfg.head_init == "encoder" else None)
        record(cfg.anchor, (cfg.anchor, cfg.proxy), "identity" if h_a.kind == "identity" else
               "its label-space vector" if h_a.kind.startswith("labelspace") else
               ("PCA of its features" if h_a.kind == "residual" else "random"), result, check)
        record(cfg.proxy, (cfg.proxy, cfg.anchor), init_p, result, check)
        for m in trainable:
            settle(m, result)
    h_a, h_p = modules.heads[cfg.anchor], modules.heads[cfg.proxy]  # settled (fixed) heads may have replaced them
    if [cfg.anchor, cfg.proxy] not in config["paired"] and sorted([cfg.anchor, cfg.proxy]) not in config["paired"]:
        config["paired"].append([cfg.anchor, cfg.proxy])
    for p in [*h_a.parameters(), *h_p.parameters()]:
        p.requires_grad_(False)
    h_a.eval()
    h_p.eval()

    # Stage 2: G learns anchor -> proxy on the frozen base space, then is frozen too.
    with torch.no_grad():
        z_anchor_all = h_a(torch.as_tensor(anchor.features))
        z_proxy_all = h_p(torch.as_tensor(proxy_data.features))
    g = modules.proxy

    def g_loss(_: int) -> "torch.Tensor":
        rows, cols, _pos = pairs_ap.batch(cfg.batch_size)
        return g.loss(z_anchor_all[rows], z_proxy_all[cols])

    if base is None:
        g.train()
        _optimise(list(g.parameters()), cfg.proxy_steps, cfg, g_loss, f"proxy/{cfg.proxy_model}", curves)
    config["base_curves"] = {k: v for k, v in curves.items() if k.startswith(("base/", "proxy/"))}
    g.eval()
    for p in g.parameters():
        p.requires_grad_(False)
    # Sampling G costs `diffusion_steps` denoiser passes: draw a bank of noisy proxies per
    # anchor item once (each with its own noise) rather than at every binding step.
    with torch.no_grad():
        bank = torch.stack([g.sample(z_anchor_all) for _ in range(cfg.proxy_bank)], dim=1)  # (n, K, dim)

    # Stage 3: bind every other modality to the anchor, with the variant's proxy term.
    for m, d in data.items():
        if m in (cfg.anchor, cfg.proxy) or m in frozen:
            if m in frozen and m not in config["heads"]:
                record(m, (m, m), "its label-space vector" if kinds[m] == "labelspace" else "identity", {}, None)
            continue
        sampler = PairSampler(d, anchor, rng, f"{m}<->{cfg.anchor}")
        head, scale_m = modules.heads[m], modules.logit_scales[m]
        init = start_head(m, cfg.anchor)
        # Selection scores what the user gets: reaching the anchor, and the proxy too where the
        # validation items relate m to it (by label): the pair the proxy term is there to improve.
        checks = [c for c in (check_for(m, cfg.anchor), check_for(m, cfg.proxy)) if c is not None]
        check = checks[0] if checks else None
        head.train()

        own_pairs = _oracle_pairs(m, d, data, modules, rng, cfg.anchor) if cfg.variant == "oracle" else []

        def bind_loss(_: int, d=d, head=head, scale_m=scale_m, sampler=sampler, own_pairs=own_pairs) -> "torch.Tensor":
            rows, cols, pos = sampler.batch(cfg.batch_size)
            x = _tensor(d, rows)
            z_new, u = head(x), z_anchor_all[cols]
            loss = info_nce(z_new, u, scale_m.exp().clamp(max=100), pos)
            if cfg.keep_neighbours > 0:
                loss = loss + cfg.keep_neighbours * neighbour_loss(z_new, x)
            for other_sampler, z_other in own_pairs:  # oracle: this modality's own pairs with the others
                rows_o, cols_o, pos_o = other_sampler.batch(cfg.batch_size)
                loss = loss + info_nce(head(_tensor(d, rows_o)), z_other[cols_o], scale_m.exp().clamp(max=100), pos_o)
            if cfg.variant not in ("anchor", "oracle") and cfg.lambda_proxy > 0:
                p = bank[torch.as_tensor(cols), torch.randint(0, cfg.proxy_bank, (len(cols),))]
                loss = loss + cfg.lambda_proxy * proxy_loss(z_new, p, u if cfg.variant == "emergentbridge" else None)
            return loss

        result = _optimise([*head.parameters(), scale_m], cfg.steps, cfg, bind_loss, f"bind/{m}-{cfg.anchor}",
                           curves, keep=[head],
                           check=(lambda checks=checks: _pair_and_mean(checks, embed)) if checks else None,
                           anchored=list(head.parameters()) if cfg.head_init == "encoder" else None)
        head.eval()
        record(m, (m, cfg.anchor), init, result, check, also=checks[1] if len(checks) > 1 else None)
        settle(m, result)
        config["paired"].append([m, cfg.anchor])

    # Stage 4: each modality read by the anchor's encoder is also bound in that encoder's own geometry
    # (an instance map into the anchor's raw features), where items are told apart, not only classed.
    for m in sorted(shares_anchor & set(data)):
        bind_instance(modules, config, cfg, m, data, val, curves, rng)

    modules.eval()
    fixed = [m for m in config["feature_dims"] if config["head_kinds"].get(m) == "labelspace"]
    for i, a in enumerate(fixed):  # the pretrained space's own vectors meet as they did with no training
        for b in fixed[i + 1:]:
            if not any(sorted(p) == sorted([a, b]) for p in config["paired"]):
                config["paired"].append([a, b])
    bridge = Bridge(config, modules)
    same = choose_same_modality_routes(bridge, data, val)
    for m in bridge.modalities:
        if m not in data:  # carried with no data to judge by: the encoder's own features, as with no training
            same[f"{m}->{m}"] = {"route": "raw", "why": "no training data: the encoder's own features"}
    config["same_modality"] = same
    config["cross_modal"] = choose_cross_modal_routes(bridge, data, val, same_encoder)
    drop_unused_instance_maps(bridge)
    config["routes"] = {pair: info["route"] for pair, info in {**same, **config["cross_modal"]}.items()}
    if val:
        curves["val"] = validate(bridge, val)
    return bridge, curves


def choose_base(cfg: TrainConfig, data: TrainingSet, val: TrainingSet, preset_info: dict[str, Any]) -> dict[str, Any]:
    """`--base auto` on a label-space preset whose pairs hold the anchor and the proxy: which start
    the base space is trained from, chosen on validation as heads are.

    A label-space base knows the classifier's concepts, not necessarily the user's (handwritten
    digits are no ImageNet class), and a base trained from the features' own principal axes keeps
    more of the anchor's geometry, which the modalities bound to it start from. Each candidate
    base is trained with every modality of the manifest bound to it (plain binding, no G) and
    scored by the mean validation R@1 over every pair of modalities that relate, never-paired
    ones included: the base the whole manifest validates best on. The label-space start is kept
    unless the other is higher. Returns {"chosen", "finetune", "trained"} (the scores)."""
    scores: dict[str, float] = {}
    for candidate in ("finetune", "trained"):
        log.info("base: trying the %s start, with the manifest's modalities bound to it (the lines below until "
                 "the choice are this trial's)", "label-space" if candidate == "finetune" else "features' own axes")
        trial = dataclasses.replace(cfg, base=candidate, variant="anchor", proxy_steps=0, proxy_bank=1)
        _, curves = train(trial, data, val=val, preset_info=preset_info)
        got = list(curves.get("val", {}).values())
        scores[candidate] = round(float(np.mean(got)), 4) if got else float("-inf")
    chosen = "trained" if scores["trained"] > scores["finetune"] else "finetune"
    log.info("base: mean validation R@1 over the manifest's pairs from the label-space start %.3f, from the features' "
             "own axes %.3f -> training the base %s", scores["finetune"], scores["trained"],
             "from the label-space start" if chosen == "finetune" else
             "from the features' own axes (an index built with no training is re-embedded: --reembed)")
    return {"chosen": chosen, **scores}


def guard_held_out_classes(cfg: TrainConfig, data: TrainingSet, val: TrainingSet, preset_info: dict[str, Any],
                           as_given: tuple[TrainConfig, TrainingSet, TrainingSet | None]) -> dict[str, dict[str, Any]]:
    """Which heads that start at their label-space vector must stay there, because training on the
    manifest's classes loses classes it never showed.

    Validation holds the manifest's classes only, so it cannot see a head that pulls every sound onto
    the words the pairs taught. A trial bridge is trained with a third of the classes (at least one)
    left out; each such head's items of those classes then search their partner modality (every item
    of it, all classes) through the trial bridge and through the zero-training start. A head whose
    trial loses there (more of those queries lost than won) is kept at its start. Returns per checked
    modality the figures and `keep_start`; empty when no head qualifies (unlabelled pairs, fewer
    than three classes, a base trained from the features). `data` and `val` are the run's (split,
    class prompts added); `as_given` the configuration and data `train` was called with, which the
    trial is trained from."""
    from bridge.encoders import load_preset

    places = set(preset_info.get("places") or [])
    if not _label_space(preset_info) or cfg.base == "trained" or not places:
        return {}
    frozen = frozen_modalities(cfg, preset_info, data)
    # A trained head that starts at its label-space vector, bound to a partner that stays the space's own.
    partner = {m: cfg.anchor if m != cfg.anchor else cfg.proxy for m in data if m in places and m not in frozen}
    partner = {m: p for m, p in partner.items() if p in frozen}
    classes = sorted({y for m in partner for y in data[m].labels if y is not None})
    if not partner or len(classes) < 3:
        return {}
    rng = np.random.default_rng(cfg.seed + 7)
    held = set(rng.choice(classes, size=max(1, len(classes) // 3), replace=False).tolist())

    def without(ts: TrainingSet) -> TrainingSet:
        out = {}
        for m, d in ts.items():
            keep = [i for i, y in enumerate(d.labels) if y not in held]
            out[m] = dataclasses.replace(d, ids=[d.ids[i] for i in keep], features=d.features[keep],
                                         labels=[d.labels[i] for i in keep], pairs=[d.pairs[i] for i in keep])
        return out

    log.info("class guard: training a trial bridge without %s, to see what the heads starting at their label-space "
             "vector do to classes the pairs never show", ", ".join(sorted(held)))
    # The trial trains every step (no selection): its own validation lacks the held-out classes too,
    # so what is measured is what training on the pairs does to classes they never show.
    given_cfg, given_data, given_val = as_given
    trial_cfg = dataclasses.replace(given_cfg, class_guard=False, variant="anchor", proxy_steps=0, proxy_bank=1,
                                    select=False)
    trial, _ = train(trial_cfg, without(given_data), val=without(given_val) if given_val else None,
                     preset_info=preset_info)
    start = Bridge.from_preset(load_preset(cfg.preset))
    out: dict[str, dict[str, Any]] = {}
    for m, p in partner.items():
        items = [d for d in (data[m], val.get(m)) if d is not None]
        q = np.concatenate([d.features for d in items])
        q_labels = [y for d in items for y in d.labels]
        rows = [i for i, y in enumerate(q_labels) if y in held]
        gallery = [d for d in (data[p], val.get(p)) if d is not None]
        g = np.concatenate([d.features for d in gallery])
        g_labels = [y for d in gallery for y in d.labels]
        if not rows or m not in trial.modalities or m not in start.modalities:
            continue
        hits = {name: hits_at_1(b.embed_features(m, q[rows]), [q_labels[i] for i in rows],
                                b.embed_features(p, g), g_labels) for name, b in (("trial", trial), ("start", start))}
        wins = int((hits["trial"] & ~hits["start"]).sum())
        losses = int((hits["start"] & ~hits["trial"]).sum())
        keep = losses > wins  # the start is the safe side: training must not lose what the space knew
        out[m] = {"held_out": sorted(held), "queries": len(rows), "trial_r1": round(float(hits["trial"].mean()), 4),
                  "start_r1": round(float(hits["start"].mean()), 4), "keep_start": bool(keep)}
        log.info("class guard %s->%s on held-out classes: R@1 %.3f after training without them, %.3f at the "
                 "label-space start -> %s", m, p, out[m]["trial_r1"], out[m]["start_r1"],
                 "the head stays its label-space map" if keep else "training goes on")
    return out


def choose_same_modality_routes(bridge: Bridge, data: TrainingSet, val: TrainingSet | None = None) -> dict[str, Any]:
    """Search by example through the space or through the encoder's own features (`raw`), per modality.

    Each validation item (else each training item) queries a gallery of validation and training
    items of its modality, itself left out; relevance is the label. The space is kept only where it
    beats the raw features: a head trained to reach another modality can pull items onto their
    classes and lose what told them apart. Without labels there is no evidence, and the encoder it
    stands on is the safe side: `raw`.
    """
    out: dict[str, Any] = {}
    for m in bridge.modalities:
        if m not in data:
            continue
        held = val.get(m) if val else None
        gallery = data[m] if held is None else ModalityData(
            ids=held.ids + data[m].ids, features=np.concatenate([held.features, data[m].features]),
            labels=list(held.labels) + list(data[m].labels), pairs=list(held.pairs) + list(data[m].pairs))
        n_queries = len(gallery.ids) if held is None else len(held.ids)
        labels = list(gallery.labels)
        pair = f"{m}->{m}"
        labelled = np.array([x is not None for x in labels[:n_queries]])
        if n_queries < 2 or not labelled.any():
            out[pair] = {"route": "raw", "why": "no labelled items to judge by: the encoder's own features"}
            continue
        raw = gallery.features / np.maximum(np.linalg.norm(gallery.features, axis=1, keepdims=True), 1e-12)

        def loo_hits(vectors: np.ndarray) -> np.ndarray:  # each labelled query's own row left out
            return hits_at_1(vectors[:n_queries], labels[:n_queries], vectors, labels,
                             query_groups=range(n_queries), corpus_groups=range(len(labels)))[labelled]

        hit_bridge, hit_raw = loo_hits(bridge.embed_features(m, gallery.features)), loo_hits(raw)
        scores = {"bridge_r1": float(hit_bridge.mean()), "raw_r1": float(hit_raw.mean())}
        wins, losses = int((hit_bridge & ~hit_raw).sum()), int((hit_raw & ~hit_bridge).sum())
        route = "direct" if clearly_better(wins, losses) else "raw"
        out[pair] = {"route": route, **{k: round(v, 4) for k, v in scores.items()}, "queries": int(len(hit_raw)),
                     "space_only": wins, "raw_only": losses,
                     "on": "validation" if held is not None else "training items"}
        log.info("search by example %-8s R@1 through the space %.3f, raw features %.3f -> route %s", m,
                 scores["bridge_r1"], scores["raw_r1"], route)
    return out


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

    result = _optimise([*imap.parameters(), scale], cfg.steps, cfg, loss, f"instance/{m}-{anchor}", curves,
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


def choose_cross_modal_routes(bridge: Bridge, data: TrainingSet, val: TrainingSet,
                              same_encoder: Callable[[str, str], bool]) -> dict[str, Any]:
    """Per ordered pair of two modalities read by one encoder (image, depth, thermal on one CNN),
    searched directly: through the space, the encoder's raw features (`raw`), or the instance map into
    the target's raw features (`instance`), chosen on validation as search by example is.

    The raw features are the floor: the instance map replaces them only where it wins clearly (sign
    test, `clearly_better`), and the space replaces the better of the two only where it wins clearly
    over it. A head bound into the label space matches classes; the raw features match the scene.
    Pairs the bridge searches through G (never paired) are left to their default route.
    """
    out: dict[str, Any] = {}
    heads = lambda m, x: bridge.embed_features(m, x)  # noqa: E731
    for a, b in ((a, b) for i, a in enumerate(bridge.modalities) for b in bridge.modalities[i + 1:]):
        if a not in data or b not in data or not same_encoder(a, b):
            continue
        if bridge.has_proxy and not bridge.is_paired(a, b):
            continue
        check = PairCheck(a, b, data, val)
        for s in check.queries if check.usable else ():
            t = b if s == a else a
            hits = {"direct": check.hits(s, heads), "raw": check.hits(s, unit_rows)}
            if bridge.has_instance(s, t):
                hits["instance"] = check.hits(s, lambda m, x, s=s, t=t: bridge.instance_embed(s, t, x) if m == s
                                              else unit_rows(m, x), unit_rows)
            route, why = "raw", {}
            for challenger in ("instance", "direct"):
                if challenger not in hits:
                    continue
                wins, losses = int((hits[challenger] & ~hits[route]).sum()), int((hits[route] & ~hits[challenger]).sum())
                why[f"{challenger}_vs_{route}"] = [wins, losses]
                if clearly_better(wins, losses):
                    route = challenger
            out[f"{s}->{t}"] = {"route": route, **{f"{r}_r1": round(float(h.mean()), 4) for r, h in hits.items()},
                                "queries": int(len(hits["raw"])), "relevance": check.how, "wins_losses": why,
                                "on": "validation"}
            log.info("%s->%s val R@1 through the space %.3f, raw features %.3f%s -> route %s", s, t,
                     hits["direct"].mean(), hits["raw"].mean(),
                     f", instance map {hits['instance'].mean():.3f}" if "instance" in hits else "", route)
    return out


def drop_unused_instance_maps(bridge: Bridge) -> None:
    """Instance maps no pair's route takes are not saved (the checkpoint stays as a reader before them reads it)."""
    maps = bridge.config.get("instance_maps") or {}
    taken = {pair for pair, info in bridge.config.get("cross_modal", {}).items() if info["route"] == "instance"}
    used = {k for k, m in maps.items() if {f"{m['source']}->{m['target']}", f"{m['target']}->{m['source']}"} & taken}
    for key in [k for k in maps if k not in used]:
        del bridge.modules.instance[key]
        del maps[key]
    if not maps:
        bridge.config.pop("instance_maps", None)


def _oracle_pairs(m: str, d: ModalityData, data: TrainingSet, modules: BridgeModules,
                  rng: np.random.Generator, anchor: str) -> list[tuple[PairSampler, "torch.Tensor"]]:
    """For the `oracle` ceiling: samplers of m's pairs with every other placed modality (not the anchor,
    which binding already pairs it with), with that modality's fixed vectors."""
    out = []
    for o, other in data.items():
        if o in (m, anchor) or modules.heads[o].training:
            continue  # m itself, the anchor (binding pairs them already), or not placed yet (trains later)
        try:
            sampler = PairSampler(d, other, rng, f"{m}<->{o}")
        except ValueError:  # no shared labels or pair keys: nothing to be an oracle with
            continue
        with torch.no_grad():
            out.append((sampler, modules.heads[o](torch.as_tensor(other.features))))
    return out


def _label_maps(preset: Callable[[], Any], kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The label-space maps of the heads that stand on one (`preset()` loads the preset's classifier and
    text encoder; not called when no head needs them)."""
    wanted = [m for m, k in kinds.items() if k.startswith("labelspace")]
    if not wanted:
        return {}
    from bridge.labelspace import label_maps

    # A modality read by the image backbone (depth, thermal, video) uses the image classifier's head.
    return label_maps(preset(), wanted)
def _complete_val(data: TrainingSet, val: TrainingSet | None, cfg: TrainConfig) -> tuple[TrainingSet, TrainingSet]:
    """Validation for every modality: where the user's split lacks one, a share of its training
    pairs is held out (`hold_out`); what cannot be held out (class prompts: a few per class) stays
    in training and is judged as the gallery the other side's validation items query. Returns
    (training set, validation set). Never refuses: one log line says what was done."""
    missing = [m for m in data if not val or m not in val]
    held_train, held_val = hold_out({m: data[m] for m in missing}, cfg.val_fraction, cfg.seed)
    out: TrainingSet = {**(val or {}), **held_val}
    gallery_only = [m for m in missing if m not in out]
    what = f"{', '.join(m for m in missing if m in out)}: {100 * cfg.val_fraction:.0f}% of the training pairs are " \
           "held out to judge each head" if len(gallery_only) < len(missing) else ""
    if gallery_only:
        what += ("; " if what else "") + f"{', '.join(gallery_only)}: too few to hold out (e.g. class prompts), " \
                "so the other modalities' validation items are judged against its training items"
    if val is None:  # the user gave no validation split at all: the documented default
        log.info("no validation split; %s", what)
    else:
        log.warning("the validation split has no %s items; %s", " or ".join(missing), what)
    return {**data, **held_train}, out


def _adopt_base(modules: BridgeModules, base: Bridge, config: dict[str, Any]) -> None:
    """Copy the base heads, their temperature and G from `base` (same base settings only)."""
    differ = [k for k in BASE_KEYS if base.config.get(k) != config.get(k)]
    for role in (config["anchor"], config["proxy"]):
        if base.config["feature_dims"].get(role) != config["feature_dims"][role]:
            differ.append(f"feature_dims[{role}]")
    if differ:
        raise ValueError(f"cannot reuse the base of {base.version}: settings differ ({', '.join(differ)})")
    src = base.modules
    for role in (config["anchor"], config["proxy"]):
        modules.heads[role].load_state_dict(src.heads[role].state_dict())
        if role in base.config.get("heads", {}):
            config["heads"][role] = base.config["heads"][role]
    modules.logit_scales[config["proxy"]].data.copy_(src.logit_scales[config["proxy"]].data)
    modules.proxy.load_state_dict(src.proxy.state_dict())
    config["base_from"] = base.version


def validate(bridge: Bridge, val: TrainingSet) -> dict[str, float]:
    """R@1 between every two modalities of `val` that relate (same pair key, else same label)."""
    emb = {m: bridge.embed_features(m, d.features) for m, d in val.items() if m in bridge.modalities}
    out: dict[str, float] = {}
    for s in emb:
        for t in emb:
            keys_s, keys_t, how = pair_keys(val[s], val[t])
            if s == t or how == "none":
                continue
            r1 = recall_at_1(emb[s], keys_s, emb[t], keys_t)
            out[f"{s}->{t}"] = round(r1, 4)
            kind = "paired" if bridge.is_paired(s, t) else "unpaired"
            log.debug("val %-8s R@1 %.3f  %s->%s", kind, r1, s, t)
    return out
