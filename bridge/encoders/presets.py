"""Presets: named JSON files (`bridge/encoders/presets/*.json`) that say which backbone, weights
and preprocessing facts each modality uses; `load_preset` validates one and builds its encoders lazily.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config import DEFAULT_PRESET  # public here too: bridge.encoders.DEFAULT_PRESET
from bridge.encoders.base import BACKBONES, Backbone, PresetError
from bridge.encoders.preprocess import _ENCODERS, Encoder
from bridge.modalities import MODALITIES

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).with_name("presets")
# Bumped whenever preprocessing code changes what an encoder outputs, so cached features
# computed by older code stop matching the fingerprint instead of being silently reused.
# 2: open_clip entries use open_clip's own eval transform (resize mode, interpolation, crop).
ENCODER_CODE_VERSION = 2

# What kind of input each modality hands its backbone.
def shares_encoder(info: dict[str, Any], a: str, b: str, *, aligned: bool = True) -> bool:
    """Do modalities `a` and `b` go through one encoder into one feature space? The one definition:
    the raw-feature baseline, head starts and training's raw R@1 all ask it.

    `info` is `Preset.info()` (what training records about the preset). True when both have the same
    `encoder_key` (one network, one kind of input: image, depth and thermal through one CNN), or,
    with `aligned`, when their encoders are joined by a pair the preset declares aligned (CLIP's
    image and text towers: then depth, read by the image tower, meets text too). `aligned=False`
    asks only the first question: can one head's map be copied to the other (same input statistics).

    Example:
        >>> info = {"backbones": {"image": "k1:pixels", "depth": "k1:pixels", "text": "k1:text"},
        ...         "aligned": [["image", "text"]]}
        >>> shares_encoder(info, "depth", "text"), shares_encoder(info, "depth", "text", aligned=False)
        (True, False)
    """
    keys = info.get("backbones") or {}
    key_a, key_b = keys.get(a), keys.get(b)
    if key_a is None or key_b is None:  # a modality the preset lacks
        return False
    if key_a == key_b:
        return True
    if not aligned or info.get("label_space"):  # label-space alignment joins the two through the classes,
        return False  # not one feature space: image and text features stay incomparable as they are
    return any({key_a, key_b} == {keys.get(x), keys.get(y)} for x, y in (info.get("aligned") or []))


_INPUT_KIND = {"text": "text", "image": "pixels", "depth": "pixels", "thermal": "pixels", "video": "pixels", "audio": "audio"}


@dataclass
class Preset:
    """A loaded preset: the spec, and encoders built (and backbones loaded) on first use.

    Example:
        >>> p = load_preset("tiny")
        >>> p.modalities
        ('text', 'image', 'audio', 'depth', 'thermal', 'video')
        >>> len(p.fingerprint)
        12
    """

    name: str
    spec: dict[str, Any]
    source: Path | None = None
    _backbones: dict[str, Backbone] = field(default_factory=dict, repr=False)
    _encoders: dict[str, Encoder] = field(default_factory=dict, repr=False)
    _device: Any = field(default=None, repr=False)

    def to(self, device: Any) -> "Preset":
        """Run every encoder of this preset on `device` ("auto", "cpu", "cuda", "mps"); loaded
        networks move now, the others when they load. Features still come back float32 numpy.

        Example:
            >>> load_preset("tiny").to("cpu").encoder("text").backbone.device.type
            'cpu'
        """
        from core.device import resolve_device

        self._device = resolve_device(device)
        for backbone in self._backbones.values():
            backbone.to(self._device)
        return self

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.spec["encoders"])

    @property
    def aligned_pairs(self) -> list[tuple[str, str]]:
        """Modality pairs whose encoders are already aligned by pretraining (CLIP image/text, CLAP
        audio/text), from the preset's `"aligned"` field. Training keeps such a pair's encoders
        frozen as the base space instead of learning one.

        Example:
            >>> load_preset("clip-vit-b-32").aligned_pairs
            [('image', 'text')]
            >>> load_preset("offline").aligned_pairs   # through the image classifier's label space
            [('image', 'text')]
            >>> load_preset("tiny").aligned_pairs
            []
        """
        return [(str(a), str(b)) for a, b in self.spec.get("aligned", [])]

    @property
    def fingerprint(self) -> str:
        """Short hash of all encoder entries (not the name): the cache key for features."""
        return _hash({"v": ENCODER_CODE_VERSION, "encoders": self.spec["encoders"]})

    def modality_fingerprint(self, modality: str) -> str:
        """Hash of one modality's entry: changing the audio encoder keeps cached image features."""
        return _hash({"v": ENCODER_CODE_VERSION, modality: self._entry(modality)})

    def dim(self, modality: str) -> int:
        """Feature size of `modality`'s encoder, without loading any network."""
        return self._backbone(modality).dim

    def encoder(self, modality: str) -> Encoder:
        """The modality's encoder (built once; its backbone loads on the first `encode`)."""
        if modality not in self._encoders:
            self._encoders[modality] = _ENCODERS[modality](modality, self._entry(modality), self._backbone(modality))
        return self._encoders[modality]

    def backbone_key(self, modality: str) -> str:
        """Equal for modalities read by one network (image, depth and thermal through one CNN)."""
        entry = self._entry(modality)
        probe = BACKBONES[entry["backbone"]](entry)
        return _hash({"backbone": entry["backbone"], **{k: entry.get(k) for k in probe.identity_keys}})

    def encoder_key(self, modality: str) -> str:
        """Equal for modalities whose features are comparable as they are: one network, one kind
        of input (depth and thermal through the image CNN; not text and audio through `tiny`)."""
        return f"{self.backbone_key(modality)}:{_INPUT_KIND[modality]}"

    def shares_encoder(self, a: str, b: str, *, aligned: bool = True) -> bool:
        """Whether the raw features of `a` and `b` can be compared as they are (see `shares_encoder`).

        Example:
            >>> load_preset("offline").shares_encoder("depth", "image")
            True
        """
        return shares_encoder(self.info(), a, b, aligned=aligned)

    def supplies_proxy(self, anchor: str, proxy: str, base: str = "auto") -> bool:
        """Whether a manifest may leave out the proxy's rows: a label-space preset brings its own text
        side (the class prompts), so images can be bound to with no text at all (thermal-image,
        depth-image or audio-image pairs bind to the pretrained space as they come).

        Example:
            >>> load_preset("offline").supplies_proxy("image", "text"), load_preset("tiny").supplies_proxy("image", "text")
            (True, False)
        """
        return bool(self.spec.get("label_space")) and (anchor, proxy) == ("image", "text") and base != "trained"

    def info(self) -> dict[str, Any]:
        """What training records about the preset: name, fingerprint, aligned pairs, shared backbones.

        Example:
            >>> load_preset("tiny").info()["aligned"]
            []
        """
        return {"name": self.name, "fingerprint": self.fingerprint, "aligned": [list(p) for p in self.aligned_pairs],
                "backbones": {m: self.encoder_key(m) for m in self.modalities},
                "label_space": self.spec.get("label_space"), "dims": {m: self.dim(m) for m in self.modalities},
                "places": self.places()}

    def places(self) -> list[str]:
        """What the preset's pretrained space places with no training: the modalities of its aligned
        pairs, and video when its frames go through the same image network as an aligned image. A
        concept space (`label_space.concepts`) also places audio read by a tagger with named classes
        (or by a network with an ImageNet head, `label_family`), and depth and thermal read by the
        image classifier (a thermal frame as a grey photo).

        Example:
            >>> load_preset("offline").places()
            ['text', 'image', 'audio', 'depth', 'thermal', 'video']
        """
        from bridge.modalities import MODALITIES

        placed = {m for pair in self.aligned_pairs for m in pair}
        concepts = bool((self.spec.get("label_space") or {}).get("concepts"))
        if "image" in placed:
            by_image = ("video", "depth", "thermal") if concepts else ("video",)
            placed |= {m for m in by_image if m in self.modalities and self.backbone_key(m) == self.backbone_key("image")}
        audio = self.encoder("audio").backbone if concepts and "audio" in self.modalities else None
        if audio is not None and (hasattr(audio, "class_map") or getattr(audio, "label_family", None)):
            placed.add("audio")
        return [m for m in MODALITIES if m in placed]

    def _entry(self, modality: str) -> dict[str, Any]:
        if modality not in self.spec["encoders"]:
            raise PresetError(f"preset {self.name!r} has no {modality!r} encoder (it has: {', '.join(self.modalities)})")
        return self.spec["encoders"][modality]

    def _backbone(self, modality: str) -> Backbone:
        key = self.backbone_key(modality)
        if key not in self._backbones:
            entry = self._entry(modality)
            backbone = BACKBONES[entry["backbone"]](entry)
            if self._device is not None:
                backbone.to(self._device)
            self._backbones[key] = backbone
        return self._backbones[key]


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def list_presets() -> list[str]:
    """Names of the presets shipped in `bridge/encoders/presets/`.

    Example:
        >>> "offline" in list_presets()
        True
    """
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str | Path = DEFAULT_PRESET) -> Preset:
    """Load a shipped preset by name, or a user's preset JSON by path, and validate it.

    Relative `weights` / `arch_config` paths are read from the preset file's folder.

    Example:
        >>> import numpy as np
        >>> load_preset("tiny").encoder("audio").encode([np.zeros(16000, np.float32)]).shape
        (1, 64)
    """
    path = Path(name_or_path).expanduser()
    if not (path.suffix == ".json" or path.is_file()):
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise PresetError(
            f"unknown preset {str(name_or_path)!r}: not a file, and not one of the shipped presets "
            f"({', '.join(list_presets())})"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: not valid JSON ({exc})") from None
    spec = _validate(spec, path)
    log.debug("preset %s loaded from %s", spec["name"], path)
    return Preset(name=spec["name"], spec=spec, source=path)


def preset_from_spec(spec: dict[str, Any], base_dir: str | Path | None = None) -> Preset:
    """Build a preset from an in-memory dict (same schema as the JSON files).

    Example:
        >>> preset_from_spec({"name": "t", "encoders": {"text": {"backbone": "tiny"}}}).dim("text")
        64
    """
    spec = _validate(json.loads(json.dumps(spec)), Path(base_dir or ".") / "<spec>")
    return Preset(name=spec["name"], spec=spec)


def _validate_aligned(spec: dict[str, Any], path: Path) -> None:
    """`"aligned"`: pairs of modalities of this preset that one pretrained model embeds into one
    space, so both entries must name the same backbone and weights."""
    aligned = spec.setdefault("aligned", [])
    if not isinstance(aligned, list):
        raise PresetError(f"{path}: \"aligned\" must be a list of modality pairs, e.g. [[\"image\", \"text\"]]")
    for pair in aligned:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(m, str) for m in pair)):
            raise PresetError(f"{path}: each \"aligned\" entry must be a pair of modality names, got {pair!r}")
        missing = [m for m in pair if m not in spec["encoders"]]
        if missing:
            raise PresetError(f"{path}: \"aligned\" pair {list(pair)} names {', '.join(missing)}, which the preset has no encoder for")
        a, b = (spec["encoders"][m] for m in pair)
        if "label_space" in spec:  # aligned through the image classifier's classes, not one model's towers
            if sorted(pair) != ["image", "text"]:
                raise PresetError(f"{path}: a label-space preset aligns image and text, not {list(pair)}")
            continue
        if (a.get("backbone"), a.get("weights")) != (b.get("backbone"), b.get("weights")):
            raise PresetError(
                f"{path}: \"aligned\" pair {list(pair)} uses different networks ({a.get('backbone')} {a.get('weights')!r} vs "
                f"{b.get('backbone')} {b.get('weights')!r}); only the two towers of one pretrained model are aligned"
            )


def _validate(spec: Any, path: Path) -> dict[str, Any]:
    if not isinstance(spec, dict) or not isinstance(spec.get("encoders"), dict):
        raise PresetError(f"{path}: a preset needs an \"encoders\" object mapping modality -> encoder entry")
    spec.setdefault("name", path.stem)
    _validate_aligned(spec, path)
    if "label_space" in spec:
        from bridge.labelspace import LabelSpaceSpec

        try:
            LabelSpaceSpec.from_preset(spec["label_space"])
        except (TypeError, ValueError) as exc:
            raise PresetError(f"{path}: {exc}") from None
    for modality, entry in spec["encoders"].items():
        if modality not in MODALITIES:
            raise PresetError(f"{path}: unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
        if not isinstance(entry, dict) or "backbone" not in entry:
            raise PresetError(f"{path}: the {modality} entry needs a \"backbone\"")
        backbone = entry["backbone"]
        if backbone not in BACKBONES:
            raise PresetError(
                f"{path}: unknown backbone {backbone!r} for {modality}; registered: {', '.join(sorted(BACKBONES))} "
                "(add your own with bridge.encoders.register_backbone)"
            )
        accepts = BACKBONES[backbone]({}).inputs if isinstance(BACKBONES[backbone], type) else None
        if accepts is not None and _INPUT_KIND[modality] not in accepts:
            raise PresetError(f"{path}: backbone {backbone!r} cannot encode {modality} (it reads {', '.join(sorted(accepts))})")
        for key in ("weights", "arch_config"):
            value = entry.get(key)
            if isinstance(value, str) and not value.startswith("pypi:"):
                local = (path.parent / value).expanduser()
                if not Path(value).is_absolute() and local.exists():
                    entry[key] = str(local.resolve())
    return spec
