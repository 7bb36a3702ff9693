"""Training the bridge: named stages on frozen-encoder features, each head kept only where
validation says it earns its place. `train()` reads top to bottom:

0. inputs: the class prompts stand for a missing proxy; every modality gets validation items.
   start:  `--base auto` picks the base's start, and the class guard which heads keep their
           label-space start; both by trial runs of `train` itself (`_trial_run`).
   heads:  frozen and carried modalities, each head's kind and label map, the config, the modules.
1. base:  the anchor and proxy modalities (image, text). Where the preset declares them aligned
          (CLIP's towers) the base is *frozen*: their vectors are the encoders' own normalised
          outputs and nothing is trained. Otherwise a base is learned, starting from the anchor
          encoder's geometry (PCA) and the proxy's closed-form fit to it.
2. proxy: G, the noisy bridge anchor, learns anchor -> proxy embeddings; then frozen.
3. bind:  every other modality's head learns InfoNCE(z_new, z_anchor) + lambda * L_proxy,
          where L_proxy depends on the variant:
          `anchor` (none), `naive-proxy` (no projection), `emergentbridge` (P = I - u u^T).
4. instance maps, for modalities read by the anchor's encoder; 5. routes, chosen on validation.

Every head starts where its encoder is (a copy of the anchor's map when it shares the anchor's
backbone, a ridge fit to the anchor otherwise), is pulled back towards that start by
`start_decay`, and is checked on validation pairs against a gallery that also holds the training
items (what a user's index holds). The best check wins, the start included, so a head never ends
below where it began; the log puts each pair's raw-feature R@1 beside it. The stages share one
`TrainRun`; the batches and the optimiser are in `bridge.optimise`, head kinds and starts in
`bridge.head_plan`, route choice in `bridge.route_choice`.

Example:
    >>> bridge, curves = train(TrainConfig(preset="tiny", steps=50), data)   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.config import TrainConfig
from bridge.head_plan import (BASE_KEYS, adopt_base, base_kinds, carried_modalities, frozen_modalities,
                              label_maps_for, on_label_space, preset_record)
from bridge.instance_maps import bind_instance, borrow_instance_map, keep_instance_maps
from bridge.labelspace import label_classes, space_dim
from bridge.model import (BridgeModules, build_modules, info_nce, init_copy, init_pca, init_ridge, neighbour_loss,
                          proxy_loss)
from bridge.optimise import PairSampler, TopClassPairs, optimise, pair_and_mean, rows_tensor
from bridge.pairs import ModalityData, TrainingSet
from bridge.route_choice import choose_cross_modal_routes, choose_same_modality_routes, drop_unused_instance_maps
from bridge.route_table import write_route_table
from bridge.space import Bridge
from bridge.trials import choose_base, guard_held_out_classes
from bridge.validation import PairCheck, complete_val, validate
from core.deps import require

if TYPE_CHECKING:
    from bridge.encoders.presets import Preset

torch = require("torch", "training")
log = logging.getLogger(__name__)

# Names that lived here before the stages had modules of their own; importable from here as before.
__all__ = ["BASE_KEYS", "PairSampler", "TopClassPairs", "TrainConfig", "TrainRun", "base_kinds", "bind_instance",
           "carried_modalities", "choose_base", "choose_cross_modal_routes", "choose_same_modality_routes",
           "drop_unused_instance_maps", "frozen_modalities", "guard_held_out_classes", "label_classes", "train",
           "validate"]


def train(cfg: TrainConfig, data: TrainingSet, val: TrainingSet | None = None,
          preset: Preset | None = None, base: Bridge | None = None,
          device: Any = None, *, preset_info: dict[str, Any] | None = None,
          instance_maps: bool = True, jobs: int = 1) -> tuple[Bridge, dict[str, Any]]:
    """Train the bridge on frozen features; returns it and its training curves.

    `val` (never the test split) picks each head's best step and is reported per pair; without
    it, `val_fraction` of the training pairs are held out for that. `base`, a bridge trained
    with the same base settings, lends its base space and G (stages 1-2), so variants compared
    side by side differ only in how the other modalities are bound. `preset` is the loaded preset
    the features came from (`load_preset(cfg.preset)`, loaded once by the caller): its aligned pairs
    decide the frozen base, its backbones which heads start as a copy of the anchor's, its label
    space the heads that start there. Without it nothing is known of the encoders and every head is
    trained (features made elsewhere). `preset_info=` (a `Preset.info()` dict) is deprecated: the
    preset is then loaded again by `cfg.preset`. `device` ("auto", "cpu", "cuda", "mps") runs the
    whole training there; the checkpoint is the same. `instance_maps=False`
    skips stage 4: a trial run (`bridge.trials`) is scored by its heads alone. `jobs`: trial runs
    that do not depend on each other (`--base auto`'s two) train side by side in that many forked
    workers (`core.workers`); the bridge is the same for any value.

    Example:
        >>> bridge, curves = train(TrainConfig(preset="tiny", steps=50), data, preset=load_preset("tiny"),
        ...                        device="cpu")                                             # doctest: +SKIP
        >>> bridge.save("runs/bridge")                                                       # doctest: +SKIP
    """
    if preset_info is not None:
        preset = _deprecated_preset_info(cfg, preset)
    dev = _settle_device(device)
    with dev if dev is not None and dev.type != "cpu" else contextlib.nullcontext():
        run = _read_inputs(cfg, data, val, preset, base, preset_info)
        _choose_start(run, jobs)
        _plan_heads(run)
        _train_base(run)
        _train_proxy(run)
        _bind_modalities(run)
        if instance_maps:
            _bind_instances(run)
        bridge = _choose_routes(run)
    if dev is not None:
        bridge.device = dev
    return bridge, run.curves


@dataclass
class TrainRun:
    """What the stages of one `train` call share: its inputs as the first stage leaves them, then what
    each stage adds (the plan of heads, the config and modules, the base space's vectors)."""

    cfg: TrainConfig
    data: TrainingSet
    val: TrainingSet
    preset: Preset | None  # the encoders the features came from; None: nothing known of them
    info: dict[str, Any]  # what training records about the preset (`head_plan.preset_record`)
    base: Bridge | None  # a bridge that lends its base space and G
    given: tuple[TrainConfig, TrainingSet, TrainingSet | None]  # what `train` was called with (the guard's trial)
    prompts_as_proxy: bool = False
    caches: set[str] = field(default_factory=set)  # feature caches the training set was read through
    base_choice: dict[str, Any] | None = None
    guard: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng: np.random.Generator | None = None
    frozen: set[str] = field(default_factory=set)
    shares_anchor: set[str] = field(default_factory=set)  # modalities read by the anchor's encoder
    kinds: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    modules: BridgeModules | None = None
    curves: dict[str, Any] = field(default_factory=dict)
    pairs_ap: PairSampler | TopClassPairs | None = None  # anchor <-> proxy batches (base and G)
    z_anchor: Any = None  # every anchor item in the frozen base space
    bank: Any = None  # noisy proxies drawn by G, per anchor item

    def networks(self) -> Preset:
        """The preset whose networks a label-space head or the class prompts need (only a preset with
        a label space asks for them, so a run given none never gets here)."""
        if self.preset is None:
            raise ValueError(f"training needs preset {self.cfg.preset!r}'s networks: pass "
                             "train(..., preset=load_preset(cfg.preset))")
        return self.preset

    def same_encoder(self, a: str, b: str) -> bool:
        """One network on one kind of input: a head's map can be copied, raw features compared."""
        from bridge.encoders.presets import shares_encoder

        return shares_encoder(self.info, a, b, aligned=False)

    def embed(self, m: str, x: np.ndarray) -> np.ndarray:
        return self.modules.heads[m](torch.as_tensor(x, dtype=torch.float32)).cpu().numpy()

    def check_for(self, a: str, b: str) -> PairCheck | None:
        """The validation check of a<->b, or None where neither side has validation items."""
        if a not in self.val and b not in self.val:
            return None
        check = PairCheck(a, b, self.data, self.val)  # one side may be judged on its training items only
        return check if check.usable else None

    def head_params(self, *ms: str) -> list:
        return [p for m in ms for p in self.modules.heads[m].parameters()]


def _deprecated_preset_info(cfg: TrainConfig, preset: Preset | None) -> Preset:
    """`train(preset_info=...)`, the dict form, still works: the dict is what the run records about the
    preset, as before, and the preset's networks are loaded by `cfg.preset`."""
    import warnings

    from bridge.encoders import load_preset

    warnings.warn("train(preset_info=preset.info()) is deprecated: pass train(..., preset=preset)",
                  DeprecationWarning, stacklevel=3)
    return preset if preset is not None else load_preset(cfg.preset)


def _settle_device(device: Any) -> Any:
    """The torch device the whole run is made on (issue 11), or None to leave torch as it is.
    Parameters, batches and samples are made there; `Bridge.save` writes CPU tensors. On the CPU there
    is nothing to move, and no device mode to pay for on every torch call."""
    if device is None:
        return None
    from core.device import resolve_device

    return resolve_device(device)


# ------------------------------------------------------------------------------ 0. inputs, start, heads


def _read_inputs(cfg: TrainConfig, data: TrainingSet, val: TrainingSet | None,
                 preset: Preset | None, base: Bridge | None, preset_info: dict[str, Any] | None = None) -> TrainRun:
    """The run's data: the label space's class prompts stand for missing proxy rows (the base then
    stays frozen), the anchor and proxy must be there, and every modality gets validation items.
    `preset_info`: the deprecated dict form, recorded as given."""
    run = TrainRun(cfg=cfg, data=data, val=val, preset=preset, info=preset_info or preset_record(preset, cfg.preset),
                   base=base, given=(cfg, data, val))
    run.prompts_as_proxy = (cfg.proxy not in data and preset is not None
                            and preset.supplies_proxy(cfg.anchor, cfg.proxy, cfg.base))
    if run.prompts_as_proxy:
        from bridge.labelspace import class_prompt_items

        data = {**data, cfg.proxy: class_prompt_items(run.networks())}
        run.cfg = cfg = dataclasses.replace(cfg, base="frozen")
        log.info("no %s rows: the preset's class prompts stand for them; the base stays the pretrained space and G "
                 "learns each %s's top class prompt", cfg.proxy, cfg.anchor)
    for role in (cfg.anchor, cfg.proxy):
        if role not in data:
            raise ValueError(f"the training data has no {role!r} items (needed as the {role} role)")
    run.caches = {d.feature_cache for d in data.values() if d.feature_cache}  # set by training_set
    if val is None or not all(m in val for m in data):
        data, val = complete_val(data, val, cfg.val_fraction, cfg.seed)
    run.data, run.val = data, val
    return run


def _choose_start(run: TrainRun, jobs: int = 1) -> None:
    """Where the base starts (a lent base's choice, else `choose_base` on a label-space preset whose
    pairs hold anchor and proxy), and which heads the class guard keeps at their label-space start."""
    cfg, info = run.cfg, run.info
    if run.base is not None and cfg.base == "auto":  # a lent base was chosen when it was trained
        run.cfg = dataclasses.replace(cfg, base=run.base.config["base"])
    elif cfg.base == "auto" and on_label_space(info) and any(
            cfg.anchor in p and cfg.proxy in p for p in info.get("aligned") or []):
        run.base_choice = choose_base(cfg, run.data, run.val, run.preset, train=train, jobs=jobs)  # trial runs of train
        run.cfg = dataclasses.replace(cfg, base=run.base_choice["chosen"])
    if run.cfg.class_guard and run.base is None:
        run.guard = guard_held_out_classes(run.cfg, run.data, run.val, run.preset, run.given, train=train)  # a trial run


def _plan_heads(run: TrainRun) -> None:
    """Frozen and carried modalities, each head's kind and label map; then the config and the modules."""
    cfg, data, info = run.cfg, run.data, run.info
    torch.manual_seed(cfg.seed)
    run.rng = np.random.default_rng(cfg.seed)
    frozen = frozen_modalities(cfg, info, data) | {m for m, g in run.guard.items() if g["keep_start"]}
    feature_dims = {m: int(d.features.shape[1]) for m, d in data.items()}
    run.shares_anchor = {m for m in data if m != cfg.anchor and run.same_encoder(m, cfg.anchor)}
    kinds = base_kinds(cfg, info, data, frozen, run.shares_anchor)
    carried = carried_modalities(info, data, frozen)
    for m in carried:  # placed by the frozen base with no pairs (video; depth, thermal, audio in a concept space)
        feature_dims[m], kinds[m] = int(info["dims"][m]), kinds[cfg.anchor]
        frozen = frozen | {m}
    run.frozen, run.kinds = frozen, kinds
    maps = label_maps_for(run.networks, kinds)
    run.config = _run_config(run, feature_dims, carried, maps)
    run.modules = modules = build_modules(run.config)
    for m, d in data.items():
        if not modules.heads[m].fixed:  # a fixed head reads the features as they are: nothing to fit
            modules.heads[m].fit_scaler(torch.as_tensor(d.features))
    for m, args in maps.items():
        modules.heads[m].labels.set(**args)


def _run_config(run: TrainRun, feature_dims: dict[str, int], carried: list[str],
                maps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint's config as the stages start it (they add heads, pairs and routes)."""
    cfg, info, frozen, kinds = run.cfg, run.info, run.frozen, run.kinds
    dim = space_dim(maps) if maps else feature_dims[cfg.anchor] if frozen else cfg.dim
    aligned = [sorted(p) for p in (info.get("aligned") or []) if set(p) <= frozen]
    aligned += [sorted([m, x]) for m in carried for x in sorted(frozen - set(carried))]
    base = "frozen" if frozen else "finetune" if any(k == "labelspace-residual" for k in kinds.values()) else "trained"
    return {**asdict(cfg), "dim": dim, "feature_dims": feature_dims, "head_kinds": kinds, **label_classes(maps),
            "base": base, "frozen": sorted(frozen),
            "preset_name": info["name"], "preset_fingerprint": info.get("fingerprint"),
            "paired": [list(p) for p in aligned], "heads": {}, "version": "unsaved",
            **({"base_choice": run.base_choice} if run.base_choice else {}),
            **({"class_guard": run.guard} if run.guard else {}),
            **({"label_space": info["label_space"]} if maps and info.get("label_space") else {}),
            **({"feature_cache": run.caches.pop()} if len(run.caches) == 1 else {})}


# ------------------------------------------------------------------------------ 1-2. base space and G


def _train_base(run: TrainRun) -> None:
    """Stage 1: the base space, anchor <-> proxy: lent by `base`, frozen aligned encoders, or trained;
    then frozen for the stages after it."""
    cfg, modules = run.cfg, run.modules
    anchor, proxy_data = run.data[cfg.anchor], run.data[cfg.proxy]
    run.pairs_ap = TopClassPairs(modules.heads[cfg.anchor], anchor, run.rng, len(proxy_data.ids)) \
        if run.prompts_as_proxy else PairSampler(anchor, proxy_data, run.rng, f"{cfg.anchor}<->{cfg.proxy}")
    if run.base is not None:
        adopt_base(modules, run.base, run.config)
        run.curves.update({k: v for k, v in run.base.config.get("base_curves", {}).items()})
    elif cfg.proxy in run.frozen:
        log.info("base: %s and %s are frozen aligned encoders; nothing to train", cfg.anchor, cfg.proxy)
        for m in run.frozen:
            _record(run, m, (m, m), _fixed_start(run, m), {}, None)
    else:
        _fit_base(run)
    h_a, h_p = modules.heads[cfg.anchor], modules.heads[cfg.proxy]  # settled (fixed) heads may have replaced them
    paired = run.config["paired"]
    if [cfg.anchor, cfg.proxy] not in paired and sorted([cfg.anchor, cfg.proxy]) not in paired:
        paired.append([cfg.anchor, cfg.proxy])
    for p in [*h_a.parameters(), *h_p.parameters()]:
        p.requires_grad_(False)
    h_a.eval()
    h_p.eval()


def _fit_base(run: TrainRun) -> None:
    """A base learned on the anchor <-> proxy pairs, from the anchor's PCA and the proxy's fit to it."""
    cfg, modules = run.cfg, run.modules
    anchor, proxy_data = run.data[cfg.anchor], run.data[cfg.proxy]
    h_a, h_p, scale = modules.heads[cfg.anchor], modules.heads[cfg.proxy], modules.logit_scales[cfg.proxy]

    def base_loss(_: int) -> "torch.Tensor":
        rows, cols, pos = run.pairs_ap.batch(cfg.batch_size)
        x_a, x_p = rows_tensor(anchor, rows), rows_tensor(proxy_data, cols)
        z_a, z_p = h_a(x_a), h_p(x_p)
        loss = info_nce(z_a, z_p, scale.exp().clamp(max=100), pos)
        if cfg.keep_neighbours > 0:
            for head, z, x in ((h_a, z_a, x_a), (h_p, z_p, x_p)):
                if not head.fixed:
                    loss = loss + cfg.keep_neighbours * neighbour_loss(z, x)
        return loss

    trainable = [m for m in (cfg.anchor, cfg.proxy) if not modules.heads[m].fixed]
    if h_a.kind == "residual":
        init_pca(h_a, anchor.features, cfg.seed)
    init_p = _start_head(run, cfg.proxy, cfg.anchor)
    check = run.check_for(cfg.proxy, cfg.anchor)
    modules.train()
    result = optimise([*run.head_params(*trainable), scale], cfg.steps, cfg, base_loss,
                      f"base/{cfg.anchor}-{cfg.proxy}", run.curves, keep=[modules.heads[m] for m in trainable],
                      check=(lambda: check.score(run.embed)) if check else None,
                      anchored=run.head_params(*trainable) if cfg.head_init == "encoder" else None)
    _record(run, cfg.anchor, (cfg.anchor, cfg.proxy), "identity" if h_a.kind == "identity" else
            "its label-space vector" if h_a.kind.startswith("labelspace") else
            ("PCA of its features" if h_a.kind == "residual" else "random"), result, check)
    _record(run, cfg.proxy, (cfg.proxy, cfg.anchor), init_p, result, check)
    for m in trainable:
        _settle(run, m, result)


def _train_proxy(run: TrainRun) -> None:
    """Stage 2: G learns anchor -> proxy on the frozen base space (unless lent), then is frozen too;
    a bank of its noisy proxies is drawn for binding."""
    cfg, modules = run.cfg, run.modules
    with torch.no_grad():
        run.z_anchor = modules.heads[cfg.anchor](torch.as_tensor(run.data[cfg.anchor].features))
        z_proxy = modules.heads[cfg.proxy](torch.as_tensor(run.data[cfg.proxy].features))
    g = modules.proxy

    def g_loss(_: int) -> "torch.Tensor":
        rows, cols, _pos = run.pairs_ap.batch(cfg.batch_size)
        return g.loss(run.z_anchor[rows], z_proxy[cols])

    if run.base is None:
        g.train()
        optimise(list(g.parameters()), cfg.proxy_steps, cfg, g_loss, f"proxy/{cfg.proxy_model}", run.curves)
    run.config["base_curves"] = {k: v for k, v in run.curves.items() if k.startswith(("base/", "proxy/"))}
    g.eval()
    for p in g.parameters():
        p.requires_grad_(False)
    if cfg.variant not in ("anchor", "oracle") and cfg.lambda_proxy > 0:  # only the proxy term reads the bank
        run.bank = _proxy_bank(run, g)


def _proxy_bank(run: TrainRun, g: Any) -> "torch.Tensor":
    """G's noisy proxies, a bank of `proxy_bank` per anchor item, (n, K, dim). Sampling G costs
    `diffusion_steps` denoiser passes, so the bank is drawn once rather than at every binding step;
    a lent base lends the bank a run on it drew (the same G on the same anchor vectors), so proxy
    variants compared side by side read the same proxies. The bank has its own seeded generator: it is
    the same whichever run draws it first, in whatever process, and leaves the training's draws alone."""
    lent = getattr(run.base, "proxy_bank", None)
    if lent is not None and lent[1].shape[1] == run.cfg.proxy_bank and torch.equal(lent[0], run.z_anchor):
        return lent[1]
    gen = torch.Generator(device=run.z_anchor.device).manual_seed(run.cfg.seed)
    with torch.no_grad():
        bank = torch.stack([g.sample(run.z_anchor, generator=gen) for _ in range(run.cfg.proxy_bank)], dim=1)
    if run.base is not None:
        run.base.proxy_bank = (run.z_anchor, bank)  # for the next run that borrows this base
    return bank


# ------------------------------------------------------------------------------ 3-4. binding


def _bind_modalities(run: TrainRun) -> None:
    """Stage 3: bind every other modality to the anchor, with the variant's proxy term (frozen ones
    are recorded as they are)."""
    cfg = run.cfg
    for m in run.data:
        if m in (cfg.anchor, cfg.proxy) or m in run.frozen:
            if m in run.frozen and m not in run.config["heads"]:
                _record(run, m, (m, m), _fixed_start(run, m), {}, None)
            continue
        _bind(run, m)


def _bind(run: TrainRun, m: str) -> None:
    """Train m's head towards the anchor from where its encoder is, kept at its best validation step."""
    cfg, d, anchor = run.cfg, run.data[m], run.data[run.cfg.anchor]
    sampler = PairSampler(d, anchor, run.rng, f"{m}<->{cfg.anchor}")
    head, scale = run.modules.heads[m], run.modules.logit_scales[m]
    init = _start_head(run, m, cfg.anchor)
    # Selection scores what the user gets: reaching the anchor, and the proxy too where the
    # validation items relate m to it (by label): the pair the proxy term is there to improve.
    checks = [c for c in (run.check_for(m, cfg.anchor), run.check_for(m, cfg.proxy)) if c is not None]
    head.train()
    own_pairs = _oracle_pairs(m, d, run.data, run.modules, run.rng, cfg.anchor) if cfg.variant == "oracle" else []
    z_anchor, bank = run.z_anchor, run.bank

    def bind_loss(_: int) -> "torch.Tensor":
        rows, cols, pos = sampler.batch(cfg.batch_size)
        x = rows_tensor(d, rows)
        z_new, u = head(x), z_anchor[cols]
        loss = info_nce(z_new, u, scale.exp().clamp(max=100), pos)
        if cfg.keep_neighbours > 0:
            loss = loss + cfg.keep_neighbours * neighbour_loss(z_new, x)
        for other_sampler, z_other in own_pairs:  # oracle: this modality's own pairs with the others
            rows_o, cols_o, pos_o = other_sampler.batch(cfg.batch_size)
            loss = loss + info_nce(head(rows_tensor(d, rows_o)), z_other[cols_o], scale.exp().clamp(max=100), pos_o)
        if cfg.variant not in ("anchor", "oracle") and cfg.lambda_proxy > 0:
            p = bank[torch.as_tensor(cols), torch.randint(0, cfg.proxy_bank, (len(cols),))]
            loss = loss + cfg.lambda_proxy * proxy_loss(z_new, p, u if cfg.variant == "emergentbridge" else None)
        return loss

    result = optimise([*head.parameters(), scale], cfg.steps, cfg, bind_loss, f"bind/{m}-{cfg.anchor}", run.curves,
                      keep=[head], check=(lambda: pair_and_mean(checks, run.embed)) if checks else None,
                      anchored=list(head.parameters()) if cfg.head_init == "encoder" else None)
    head.eval()
    _record(run, m, (m, cfg.anchor), init, result, checks[0] if checks else None,
            also=checks[1] if len(checks) > 1 else None)
    _settle(run, m, result)
    run.config["paired"].append([m, cfg.anchor])


def _bind_instances(run: TrainRun) -> None:
    """Stage 4: each modality read by the anchor's encoder is also bound in that encoder's own geometry
    (an instance map into the anchor's raw features), where items are told apart, not only classed;
    a lent base trained with the same settings lends the maps it trained (`bridge.instance_maps`)."""
    for m in sorted(run.shares_anchor & set(run.data)):
        if not borrow_instance_map(run.base, run.modules, run.config, run.cfg, m, run.curves):
            bind_instance(run.modules, run.config, run.cfg, m, run.data, run.val, run.curves, run.rng)


# ------------------------------------------------------------------------------ 5. routes


def _apply_guard_scales(run: TrainRun) -> None:
    """Keep of each trained label-space head's learned part only the share the class guard found safe
    for the classes the pairs never showed (`residual_scale`: its MLP's output scaled down)."""
    for m, g in run.guard.items():
        head = run.modules.heads[m]
        scale = g.get("residual_scale", 1.0)
        if head.kind == "labelspace-residual" and 0.0 < scale < 1.0:
            head.scale_learned(scale)
            run.config["heads"].setdefault(m, {})["residual_scale"] = scale


def _choose_routes(run: TrainRun) -> Bridge:
    """Stage 5: the bridge, with each search's route chosen on validation and the validation R@1 in the curves."""
    config = run.config
    run.modules.eval()
    _apply_guard_scales(run)
    fixed = [m for m in config["feature_dims"] if config["head_kinds"].get(m) == "labelspace"]
    for i, a in enumerate(fixed):  # the pretrained space's own vectors meet as they did with no training
        for b in fixed[i + 1:]:
            if not any(sorted(p) == sorted([a, b]) for p in config["paired"]):
                config["paired"].append([a, b])
    bridge = Bridge(config, run.modules)
    same = choose_same_modality_routes(bridge, run.data, run.val)
    for m in bridge.modalities:
        if m not in run.data:  # carried with no data to judge by: the encoder's own features, as with no training
            same[f"{m}->{m}"] = {"route": "raw", "why": "no training data: the encoder's own features"}
    config["same_modality"] = same
    config["cross_modal"] = choose_cross_modal_routes(bridge, run.data, run.val, run.same_encoder)
    keep_instance_maps(bridge, run.modules, run.config, run.cfg, run.curves)
    drop_unused_instance_maps(bridge)
    write_route_table(config, {**same, **config["cross_modal"]})
    if run.val:
        run.curves["val"] = validate(bridge, run.val)
    return bridge


# ------------------------------------------------------------------------------ heads: start, record, settle


def _fixed_start(run: TrainRun, m: str) -> str:
    return "its label-space vector" if run.kinds[m] == "labelspace" else "identity"


def _start_head(run: TrainRun, m: str, target: str) -> str:
    """Put head m where its encoder is, relative to the (already placed) head of `target`; says where."""
    heads, data, anchor = run.modules.heads, run.data, run.cfg.anchor
    head, h_a = heads[m], heads[anchor]
    if m in run.shares_anchor and target == anchor and head.kind == h_a.kind == "labelspace-residual":
        # The anchor's fine-tuned head, as a trained base's heads start as a copy of its map:
        # on the anchor's backbone that is where this modality's items are nearest their partners.
        init_copy(head, h_a, data[m].features)
        return "copy of the anchor"
    if head.kind.startswith("labelspace"):
        return "its label-space vector"
    if head.kind != "residual":
        return "random" if head.kind == "mlp" else "identity"
    if m in run.shares_anchor and target == anchor:
        init_copy(head, h_a, data[m].features)
        return "copy of the anchor" if h_a.kind != "identity" else "identity (raw features)"
    sampler = PairSampler(data[m], data[target], run.rng, f"{m}<->{target}")
    with torch.no_grad():
        rows, targets = sampler.partner_means(heads[target](torch.as_tensor(data[target].features)))
    init_ridge(head, data[m].features, rows, targets)
    return "ridge fit to the anchor"


def _record(run: TrainRun, m: str, pair: tuple[str, str], init: str, result: dict[str, Any],
            check: PairCheck | None, also: PairCheck | None = None) -> None:
    """Write down (config["heads"]) and log where head m started, what was kept, and the raw baseline."""
    info: dict[str, Any] = {"init": init, "kind": run.modules.heads[m].kind}
    if check is not None and check.usable and "start_r1" in result:
        with torch.no_grad():
            run.modules.heads[m].eval()
            kept_r1 = check.score(run.embed)
        info.update(pair=f"{pair[0]}<->{pair[1]}", relevance=check.how, kept_step=result.get("best_step"),
                    start_r1=round(result.get("start_pair_r1", result["start_r1"]), 4), val_r1=round(kept_r1, 4))
        if run.same_encoder(*pair):
            info["raw_r1"] = round(check.raw(), 4)
        if also is not None:
            with torch.no_grad():
                info.update(selected_on=f"mean of {pair[0]}<->{pair[1]} and {also.a}<->{also.b}",
                            also_val_r1=round(also.score(run.embed), 4))
        kept = "the start (the encoder's geometry)" if not info["kept_step"] else f"step {info['kept_step']}"
        raw = f", raw features {info['raw_r1']:.3f}" if "raw_r1" in info else ""
        extra = f" ({also.a}<->{also.b} {info['also_val_r1']:.3f})" if also is not None else ""
        log.info("head %-8s %s val R@1: start %.3f, kept %.3f%s%s -> keeping %s", m, info["pair"],
                 info["start_r1"], info["val_r1"], extra, raw, kept)
    run.config["heads"][m] = info


def _settle(run: TrainRun, m: str, result: dict[str, Any]) -> None:
    """A label-space head whose start validation kept is that fixed map itself: the very vectors of
    the zero-training space, so an index built on it is extended, not re-embedded."""
    head = run.modules.heads[m]
    if head.kind != "labelspace-residual" or result.get("best_step", 0) != 0 or "best_r1" not in result:
        return
    last = head.net[-1]
    if bool(last.weight.any()) or bool(last.bias.any()):  # it started elsewhere (a copy of the anchor)
        return
    spread = head.labels.spread
    fixed = type(head)(run.config["feature_dims"][m], run.config["dim"], kind="labelspace",
                       classes=None if spread is None else int(spread.shape[0]))
    fixed.labels = head.labels  # the same fixed map (a concept space's spread included)
    run.modules.heads[m] = fixed.eval()
    run.kinds[m] = run.config["head_kinds"][m] = "labelspace"
    run.config["heads"].setdefault(m, {})["kind"] = "labelspace"
    log.info("head %s: validation kept its label-space start; it stays that fixed map", m)


# ------------------------------------------------------------------------------ the rest


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
