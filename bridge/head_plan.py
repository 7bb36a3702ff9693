"""Which head each modality of a run gets, and where the base space comes from: frozen aligned
encoders, modalities the pretrained space carries with no pairs, each head's kind, the label maps
its label-space heads stand on, and a base lent by another run (`BASE_KEYS` must agree).

Each takes `preset_info`, what training records about the preset (`preset_record`: `Preset.info()`).

Example:
    >>> info = preset_record(load_preset("tiny"), "tiny")               # doctest: +SKIP
    >>> frozen = frozen_modalities(cfg, info, data)                     # doctest: +SKIP
    >>> kinds = base_kinds(cfg, info, data, frozen, set())              # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from bridge.config import TrainConfig
from bridge.pairs import TrainingSet

if TYPE_CHECKING:
    from bridge.encoders.presets import Preset
    from bridge.model import BridgeModules
    from bridge.space import Bridge

# Settings that must agree for a bridge's base space and G to be reused by another run.
BASE_KEYS = ("preset", "base", "dim", "anchor", "proxy", "proxy_model", "proxy_sigma", "diffusion_steps",
             "diffusion_timesteps", "diffusion_depth", "hidden", "dropout", "batch_size", "steps", "proxy_steps", "lr",
             "weight_decay", "temperature", "head_init", "start_decay", "select", "eval_every", "patience",
             "val_fraction", "seed", "keep_neighbours")


def preset_record(preset: Preset | None, name: str) -> dict[str, Any]:
    """What training records about the preset (`Preset.info()`: name, fingerprint, aligned pairs,
    backbones, label space, dims, places). A run given no preset knows only its name: features
    made elsewhere, so no pair is aligned, no head stands on a label space, every head is trained."""
    return preset.info() if preset is not None else {"name": name, "fingerprint": None}


def frozen_modalities(cfg: TrainConfig, preset_info: dict[str, Any], data: TrainingSet) -> set[str]:
    """Modalities whose bridged vectors are their encoders' own outputs, or their label-space map
    (a pretrained aligned base). `--base finetune` (and `auto` on a label-space base) starts there
    and is trained instead: then none is frozen."""
    aligned = [tuple(p) for p in preset_info.get("aligned") or []]
    holding_anchor = [p for p in aligned if cfg.anchor in p and all(m in data for m in p)]
    if (on_label_space(preset_info) and cfg.base in ("auto", "frozen") and not holding_anchor
            and any(cfg.anchor in p for p in aligned)):
        # The manifest binds to one side of the pretrained space (audio-text pairs, `--anchor text`):
        # that side stays the space's own, and its partners (the photos) are carried with it.
        return {cfg.anchor}
    if cfg.base == "finetune" and not (on_label_space(preset_info) and holding_anchor):
        raise ValueError(f"--base finetune needs a label-space preset whose aligned pair holds {cfg.anchor} (the "
                         f"offline presets); preset {preset_info.get('name')!r}: use --base frozen or trained")
    if cfg.base in ("trained", "finetune") or (cfg.base == "auto" and (not holding_anchor or on_label_space(preset_info))):
        return set()
    if not holding_anchor:
        raise ValueError(f"--base frozen needs a preset that declares {cfg.anchor} aligned with another modality; "
                         f"preset {preset_info.get('name')!r} declares {aligned or 'none'}: use --base trained")
    frozen = {m for p in aligned if all(x in data for x in p) for m in p}
    dims = {m: int(data[m].features.shape[1]) for m in frozen}
    if not on_label_space(preset_info) and len(set(dims.values())) != 1:
        raise ValueError(f"the aligned encoders' outputs differ in size ({dims}); they cannot form one frozen space")
    return frozen


def on_label_space(preset_info: dict[str, Any]) -> bool:
    """Whether the preset's space is a classifier's label (or concept) space."""
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
    on_labels = on_label_space(preset_info) and cfg.base != "trained" and (cfg.anchor in frozen or any(
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


def label_maps_for(preset: Callable[[], Any], kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The label-space maps of the heads that stand on one (`preset()` loads the preset's classifier and
    text encoder; not called when no head needs them)."""
    wanted = [m for m, k in kinds.items() if k.startswith("labelspace")]
    if not wanted:
        return {}
    from bridge.labelspace import label_maps

    # A modality read by the image backbone (depth, thermal, video) uses the image classifier's head.
    return label_maps(preset(), wanted)


def adopt_base(modules: BridgeModules, base: Bridge, config: dict[str, Any]) -> None:
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
