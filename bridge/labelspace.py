"""Label-space alignment: images and texts in one space through an image classifier's classes, no pairs.

Offline, no CLIP weights can be had, but the image backbone we ship (EfficientNet-Lite0) carries
its own 1000-way ImageNet classifier, and the text encoder (MiniLM) can read the class names.
Both sides are put in the classifier's label space:

- image: `sqrt(softmax(logits / T_image))`, the classifier head's class distribution;
- text:  `sqrt(softmax(cos(text, class prompt) / T_text))`, where a class prompt is the mean of
  the text encoder's embeddings of the class name in a few templates ("a photo of a {}.").

Square roots of distributions are unit vectors, so cosine similarity is their Bhattacharyya
coefficient: a text query finds the photos whose class distribution overlaps its own. This
"both sides in label space" form beat ConSE (Norouzi et al., ICLR 2014: the image as the
probability-weighted mean of class-name embeddings, in the text encoder's space) on the CIFAR-10
validation split, so it is the one the presets use; `scripts/bench_zero_shot.py` measures both
and chooses the temperatures and templates there (docs/results.md).

The class-prompt matrix costs one text-encoder pass per (class, template): it is computed once
and kept in a cache folder keyed by the text encoder's fingerprint, the classes and the templates.

Example:
    >>> spec = LabelSpaceSpec.from_preset({"classes": ["cat", "dog"], "templates": ["a photo of a {}."]})
    >>> spec.prompts("cat")
    ['a photo of a cat.']
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.files import atomic_path

log = logging.getLogger(__name__)

# Named template sets: "simple" is open_clip's 7 simple ImageNet templates, "openai" the 80 of CLIP's
# paper, both shipped in bridge/data/templates.json (made from open_clip_torch by
# scripts/make_label_data.py, so no open_clip is needed at run time); "photo" is the single classic prompt.
TEMPLATE_SETS = ("simple", "openai", "photo")
CLASS_SETS = ("imagenet",)


@dataclass
class LabelSpaceSpec:
    """A preset's `"label_space"` entry: which classes, which prompt templates, which temperatures."""

    classes: str | list[str] = "imagenet"
    templates: str | list[str] = "simple"
    image_temperature: float = 1.0
    text_temperature: float = 0.05

    @classmethod
    def from_preset(cls, entry: dict[str, Any]) -> "LabelSpaceSpec":
        known = set(cls.__dataclass_fields__)
        unknown = set(entry) - known
        if unknown:
            raise ValueError(f"label_space: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        spec = cls(**entry)
        if isinstance(spec.classes, str) and spec.classes not in CLASS_SETS:
            raise ValueError(f"label_space classes {spec.classes!r}: one of {CLASS_SETS} or a list of class names")
        if isinstance(spec.templates, str) and spec.templates not in TEMPLATE_SETS:
            raise ValueError(f"label_space templates {spec.templates!r}: one of {TEMPLATE_SETS} or a list of "
                             "format strings with one {}")
        if not (spec.image_temperature > 0 and spec.text_temperature > 0):
            raise ValueError("label_space temperatures must be positive")
        return spec

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def class_names(self) -> list[str]:
        if isinstance(self.classes, list):
            return [str(c) for c in self.classes]
        from bridge.data import read_lines

        return read_lines("imagenet_classes.txt")  # open_clip's IMAGENET_CLASSNAMES, shipped as data

    def prompts(self, name: str) -> list[str]:
        if isinstance(self.templates, list):
            return [t.format(name) for t in self.templates]
        if self.templates == "photo":
            return [f"a photo of a {name}."]
        from bridge.data import read_json

        return [t.format(name) for t in read_json("templates.json")[self.templates]]


def _cache_dir() -> Path:
    root = os.environ.get("EBRIDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "emergentbridge")
    return Path(root) / "labelspace"


def class_prompt_matrix(spec: LabelSpaceSpec, text_encoder: Any, fingerprint: str) -> np.ndarray:
    """(classes, text dim) unit rows: each class's mean prompt embedding, cached on disk.

    `text_encoder.encode(list[str])` gives the text features; `fingerprint` names that encoder
    (its preset entry's hash), so another text encoder never reuses the matrix."""
    names = spec.class_names()
    key = hashlib.sha256(json.dumps({"enc": fingerprint, "names": names, "templates": spec.templates},
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir() / f"prompts-{key}.npy"
    try:
        matrix = np.load(path)
        if matrix.shape[0] == len(names):
            return matrix
    except (OSError, ValueError):
        pass
    prompts = [spec.prompts(n) for n in names]
    per_class = len(prompts[0])
    log.info("label space: embedding %d class prompts (%d classes x %d templates), once", len(names) * per_class,
             len(names), per_class)
    flat = text_encoder.encode([p for group in prompts for p in group])
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    matrix = flat.reshape(len(names), per_class, -1).mean(axis=1)
    matrix = (matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, matrix)
    except OSError as exc:  # a read-only home still works, only slower next time
        log.info("label space: cannot cache the class prompts in %s (%s)", path.parent, exc)
    return matrix


def label_maps(preset: Any, modalities: list[str]) -> dict[str, dict[str, np.ndarray | float | bool]]:
    """The fixed maps that place each of `modalities` in the preset's label space.

    Returns per modality the arguments of `bridge.model.LabelMap`: `weight` (classes, in_dim),
    `bias`, `scale` (1 / temperature) and `cosine` (True for text: cosine to the class prompts;
    False for pixels: the classifier head's logits)."""
    spec = LabelSpaceSpec.from_preset(preset.spec["label_space"])
    out: dict[str, dict[str, Any]] = {}
    for m in modalities:
        if m == "text":
            matrix = class_prompt_matrix(spec, preset.encoder("text"), preset.modality_fingerprint("text"))
            out[m] = {"weight": matrix, "bias": np.zeros(len(matrix), np.float32),
                      "scale": 1.0 / spec.text_temperature, "cosine": True}
        else:
            weight, bias = preset.encoder(m).backbone.classifier(len(spec.class_names()))
            out[m] = {"weight": weight, "bias": bias, "scale": 1.0 / spec.image_temperature, "cosine": False}
    return out


def to_label_space(logits: np.ndarray) -> np.ndarray:
    """Numpy twin of `LabelMap`'s last step: sqrt(softmax(logits)) per row (unit vectors)."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return np.sqrt(p).astype(np.float32)


def supplies_proxy(preset_info: dict[str, Any], anchor: str, proxy: str, base: str = "auto") -> bool:
    """Whether a manifest may leave out the proxy's rows: a label-space preset brings its own text
    side (the class prompts), so images can be bound to with no text at all (thermal-image, depth-image
    or audio-image pairs bind to the pretrained space as they come)."""
    return bool(preset_info.get("label_space")) and (anchor, proxy) == ("image", "text") and base != "trained"


def class_prompt_items(preset: Any) -> Any:
    """The label space's class prompts as the proxy's training items (text features, one per class,
    labelled with the class name): what G learns to predict from images when the manifest has no text."""
    from bridge.pairs import ModalityData

    spec = LabelSpaceSpec.from_preset(preset.spec["label_space"])
    names = spec.class_names()
    matrix = class_prompt_matrix(spec, preset.encoder("text"), preset.modality_fingerprint("text"))
    return ModalityData(ids=[f"class prompt: {n}" for n in names], features=matrix, labels=names,
                        pairs=[None] * len(names))
