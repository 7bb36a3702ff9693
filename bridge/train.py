"""Training the bridge: one config dataclass, three stages, one loop.

1. base:  heads for the anchor and proxy modalities (image, text) on their pairs (InfoNCE).
2. proxy: G, the noisy bridge anchor, learns anchor -> proxy embeddings; then frozen.
3. bind:  every other modality's head learns InfoNCE(z_new, z_anchor) + lambda * L_proxy,
          where L_proxy depends on the variant:
          `anchor` (none), `naive-proxy` (no projection), `emergentbridge` (P = I - u u^T).

Training works on frozen-encoder features (see bridge.features), so it is fast on a CPU.

Example:
    >>> bridge, curves = train(TrainConfig(preset="tiny", steps=50), data)   # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from bridge.deps import require
from bridge.config import TrainConfig
from bridge.model import BridgeModules, build_modules, info_nce, proxy_loss
from bridge.pairs import ModalityData, TrainingSet
from bridge.space import Bridge

torch = require("torch", "training")
nn = torch.nn
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ pairing


def pair_keys(a: ModalityData, b: ModalityData) -> tuple[list[str | None], list[str | None], str]:
    """Keys that pair items of a with items of b: explicit pair keys when the two share
    any, else shared labels (e.g. an image and the text of its class name)."""
    shared = {p for p in a.pairs if p is not None} & {p for p in b.pairs if p is not None}
    if shared:
        return a.pairs, b.pairs, "pair"
    if {x for x in a.labels if x is not None} & {x for x in b.labels if x is not None}:
        return a.labels, b.labels, "label"
    return [], [], "none"


class PairSampler:
    """Draws batches of (row of a, a random partner row of b) pairs, with the positives mask.

    Keys are turned into integer codes and partners into one sorted array with per-key
    offsets, so a batch is drawn with a few vectorised numpy calls (a Python loop per row
    cost as much as the training step itself)."""

    def __init__(self, a: ModalityData, b: ModalityData, rng: np.random.Generator, what: str):
        keys_a, keys_b, self.how = pair_keys(a, b)
        codes = {k: c for c, k in enumerate(sorted({k for k in keys_b if k is not None}))}
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


# ------------------------------------------------------------------------------ training


def _optimise(params: list, steps: int, cfg: TrainConfig, loss_fn: Callable[[int], "torch.Tensor"],
              name: str, curves: dict[str, list]) -> None:
    """AdamW with warm-up and cosine decay; logs and records the loss every few steps."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    curve = curves.setdefault(name, [])
    t0 = time.perf_counter()
    for step in range(steps):
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            curve.append([step, round(loss.item(), 6)])
        if step % max(1, steps // 4) == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f (%.1fs)", name, step + 1, steps, loss.item(), time.perf_counter() - t0)


def _tensor(data: ModalityData, rows: np.ndarray) -> "torch.Tensor":
    return torch.as_tensor(data.features[rows], dtype=torch.float32)


# Settings that must agree for a bridge's base space and G to be reused by another run.
BASE_KEYS = ("preset", "dim", "anchor", "proxy", "proxy_model", "proxy_sigma", "diffusion_steps",
             "diffusion_timesteps", "diffusion_depth", "hidden", "dropout", "batch_size", "steps", "proxy_steps", "lr",
             "weight_decay", "temperature", "seed")


def train(cfg: TrainConfig, data: TrainingSet, val: TrainingSet | None = None,
          preset_info: dict[str, Any] | None = None, base: Bridge | None = None,
          device: Any = None) -> tuple[Bridge, dict[str, Any]]:
    """Train all three stages on frozen features; returns the bridge and its training curves.

    `val` (optional, never the test split) is embedded after training to log retrieval
    R@1 for every trained pair; the figures go into the curves. `base`, a bridge trained
    with the same base settings, lends its base space and G (stages 1-2), so variants
    compared side by side differ only in how the other modalities are bound. `device`
    ("auto", "cpu", "cuda", "mps") runs the whole training there; the checkpoint is the same.
    """
    if device is not None:  # device plumbing (issue 11): the whole run under one torch device
        from bridge.device import resolve_device

        dev = resolve_device(device)
        with dev:  # parameters, batches and samples are made on `dev`; `Bridge.save` writes CPU tensors
            bridge, curves = train(cfg, data, val=val, preset_info=preset_info, base=base)
        bridge.device = dev
        return bridge, curves
    for role in (cfg.anchor, cfg.proxy):
        if role not in data:
            raise ValueError(f"the training data has no {role!r} items (needed as the {role} role)")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    preset_info = preset_info or {"name": cfg.preset, "fingerprint": None}
    feature_dims = {m: int(d.features.shape[1]) for m, d in data.items()}
    config = {**asdict(cfg), "feature_dims": feature_dims, "preset_name": preset_info["name"],
              "preset_fingerprint": preset_info.get("fingerprint"), "paired": [], "version": "unsaved"}
    modules = build_modules(config)
    for m, d in data.items():
        modules.heads[m].fit_scaler(torch.as_tensor(d.features))
    curves: dict[str, Any] = {}
    anchor, proxy = data[cfg.anchor], data[cfg.proxy]

    # Stage 1: the base space, anchor <-> proxy (image <-> text).
    pairs_ap = PairSampler(anchor, proxy, rng, f"{cfg.anchor}<->{cfg.proxy}")
    h_a, h_p = modules.heads[cfg.anchor], modules.heads[cfg.proxy]
    scale = modules.logit_scales[cfg.proxy]

    def base_loss(_: int) -> "torch.Tensor":
        rows, cols, pos = pairs_ap.batch(cfg.batch_size)
        return info_nce(h_a(_tensor(anchor, rows)), h_p(_tensor(proxy, cols)), scale.exp().clamp(max=100), pos)

    if base is not None:
        _adopt_base(modules, base, config)
        curves.update({k: v for k, v in base.config.get("base_curves", {}).items()})
    else:
        modules.train()
        _optimise([*h_a.parameters(), *h_p.parameters(), scale], cfg.steps, cfg, base_loss,
                  f"base/{cfg.anchor}-{cfg.proxy}", curves)
    config["paired"].append([cfg.anchor, cfg.proxy])
    for p in [*h_a.parameters(), *h_p.parameters()]:
        p.requires_grad_(False)
    h_a.eval()
    h_p.eval()

    # Stage 2: G learns anchor -> proxy on the frozen base space, then is frozen too.
    with torch.no_grad():
        z_anchor_all = h_a(torch.as_tensor(anchor.features))
        z_proxy_all = h_p(torch.as_tensor(proxy.features))
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
        if m in (cfg.anchor, cfg.proxy):
            continue
        sampler = PairSampler(d, anchor, rng, f"{m}<->{cfg.anchor}")
        head, scale_m = modules.heads[m], modules.logit_scales[m]
        head.train()

        def bind_loss(_: int, d=d, head=head, scale_m=scale_m, sampler=sampler) -> "torch.Tensor":
            rows, cols, pos = sampler.batch(cfg.batch_size)
            z_new, u = head(_tensor(d, rows)), z_anchor_all[cols]
            loss = info_nce(z_new, u, scale_m.exp().clamp(max=100), pos)
            if cfg.variant != "anchor" and cfg.lambda_proxy > 0:
                p = bank[torch.as_tensor(cols), torch.randint(0, cfg.proxy_bank, (len(cols),))]
                loss = loss + cfg.lambda_proxy * proxy_loss(z_new, p, u if cfg.variant == "emergentbridge" else None)
            return loss

        _optimise([*head.parameters(), scale_m], cfg.steps, cfg, bind_loss, f"bind/{m}-{cfg.anchor}", curves)
        head.eval()
        config["paired"].append([m, cfg.anchor])

    modules.eval()
    bridge = Bridge(config, modules)
    if val:
        curves["val"] = validate(bridge, val)
    return bridge, curves


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
    modules.logit_scales[config["proxy"]].data.copy_(src.logit_scales[config["proxy"]].data)
    modules.proxy.load_state_dict(src.proxy.state_dict())
    config["base_from"] = base.version


def validate(bridge: Bridge, val: TrainingSet) -> dict[str, float]:
    """R@1 between every two modalities of `val` sharing labels (same label = relevant)."""
    emb = {m: bridge.embed_features(m, d.features) for m, d in val.items() if m in bridge.modalities}
    out: dict[str, float] = {}
    for s in emb:
        for t in emb:
            if s == t:
                continue
            r1 = recall_at_1(emb[s], val[s].labels, emb[t], val[t].labels)
            out[f"{s}->{t}"] = round(r1, 4)
            kind = "paired" if bridge.is_paired(s, t) else "unpaired"
            log.info("val %-8s R@1 %.3f  %s->%s", kind, r1, s, t)
    return out


def recall_at_1(queries: np.ndarray, query_labels: list, corpus: np.ndarray, corpus_labels: list) -> float:
    """Fraction of queries whose nearest corpus item shares their label (ties: first in corpus order)."""
    top = np.argmax(np.asarray(queries, np.float32) @ np.asarray(corpus, np.float32).T, axis=1)
    return float(np.mean([query_labels[i] is not None and query_labels[i] == corpus_labels[j]
                          for i, j in enumerate(top)]))
