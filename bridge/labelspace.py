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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.files import atomic_path, user_cache_dir

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
    # Concepts (`bridge.concepts`): lay the space over ImageNet's classes, their WordNet ancestors and
    # AudioSet's classes, so a word reads as a concept and an audio tagger's sounds are placed too.
    concepts: bool = False
    audio_temperature: float = 1.0
    # Concept spaces: a short query that names a concept ("dog", "the sound of rain") is read as that
    # concept's own prompt (`read_as_concept`); False leaves every query to the text encoder.
    lexicon: bool = True
    # Concept spaces: the share of a text's mass spread over its concepts' ancestors (`ConceptTable.spread`).
    text_ancestor_weight: float = 0.25
    # Concept spaces: a concept's mass in a photo or sound is divided by (its classes)^concept_prior.
    concept_prior: float = 0.0
    # Concept spaces: the same prior on the words' side only. A word's coordinate on a concept keeps
    # (classes under it)^(-text_prior/2) of its length, the rest goes to a slack coordinate that no
    # photo or sound fills (`ConceptTable.spread`), so "dog" stops winning every doubtful photo while
    # photo and sound vectors, and the order in which a one-concept word ranks them, stay as they are.
    text_prior: float = 0.0

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
        if not (spec.image_temperature > 0 and spec.text_temperature > 0 and spec.audio_temperature > 0):
            raise ValueError("label_space temperatures must be positive")
        if spec.text_prior < 0 or spec.concept_prior < 0:
            raise ValueError("label_space text_prior and concept_prior must be >= 0")
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
    return user_cache_dir("labelspace")


def class_prompt_matrix(spec: LabelSpaceSpec, text_encoder: Any, fingerprint: str) -> np.ndarray:
    """(classes, text dim) unit rows: each class's mean prompt embedding, cached on disk.

    `text_encoder.encode(list[str])` gives the text features; `fingerprint` names that encoder
    (its preset entry's hash), so another text encoder never reuses the matrix. A concept space's
    rows are its concepts (`concept_prompts`)."""
    names = spec.class_names()
    if spec.concepts:
        return prompt_matrix(concept_prompts(spec), text_encoder, fingerprint)
    key = hashlib.sha256(json.dumps({"enc": fingerprint, "names": names, "templates": spec.templates},
                                    sort_keys=True).encode()).hexdigest()[:16]
    return _cached_prompt_matrix(key, [spec.prompts(n) for n in names], text_encoder)


def prompt_matrix(prompts: list[list[str]], text_encoder: Any, fingerprint: str) -> np.ndarray:
    """(rows, text dim) unit rows, each the mean embedding of its prompts, cached on disk by content."""
    key = hashlib.sha256(json.dumps({"enc": fingerprint, "prompts": prompts}).encode()).hexdigest()[:16]
    return _cached_prompt_matrix(key, prompts, text_encoder)


def _cached_prompt_matrix(key: str, prompts: list[list[str]], text_encoder: Any) -> np.ndarray:
    path = _cache_dir() / f"prompts-{key}.npy"
    try:
        matrix = np.load(path)
        if matrix.shape[0] == len(prompts):
            return matrix
    except (OSError, ValueError):
        pass
    per_class = len(prompts[0])
    log.info("label space: embedding %d class prompts (%d classes x %d templates), once", len(prompts) * per_class,
             len(prompts), per_class)
    flat = text_encoder.encode([p for group in prompts for p in group])
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    matrix = flat.reshape(len(prompts), per_class, -1).mean(axis=1)
    matrix = (matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, matrix)
    except OSError as exc:  # a read-only home still works, only slower next time
        log.info("label space: cannot cache the class prompts in %s (%s)", path.parent, exc)
    return matrix


SOUND_TEMPLATE = "the sound of {}."


def concept_prompts(spec: LabelSpaceSpec) -> list[list[str]]:
    """Each concept's prompts: an ImageNet class by its curated name, a WordNet concept by its first
    name, both in the spec's templates; a sound-only concept (AudioSet) as "the sound of {name}."."""
    from bridge.concepts import concept_table

    names = spec.class_names()
    return [concept_prompt(spec, i, names) for i in range(concept_table().size)]


def concept_prompt(spec: LabelSpaceSpec, node: int, names: list[str] | None = None) -> list[str]:
    """One concept's prompts (see `concept_prompts`); `names`, the spec's class names, if at hand."""
    from bridge.concepts import concept_table

    entry = concept_table().nodes[node]
    if entry["family"] == "audio":
        return [SOUND_TEMPLATE.format(entry["name"].lower())] * len(spec.prompts("x"))
    names = spec.class_names() if names is None else names
    return spec.prompts(names[node] if node < len(names) else entry["name"])


def label_maps(preset: Any, modalities: list[str]) -> dict[str, dict[str, np.ndarray | float | int]]:
    """The fixed maps that place each of `modalities` in the preset's label space.

    Returns per modality the arguments of `bridge.model.LabelMap.set`: `weight` (classes, in_dim),
    `bias`, `scale` (1 / temperature), `cosine` (the input mode: 1 for text, cosine to the class
    prompts; 0 for pixels, the classifier head's logits, and for a backbone whose `label_family` is
    "imagenet" (SoundNet's ImageNet logits of a sound); 2 for an audio tagger's class probabilities)
    and, in a concept space, `family`: which rows of the concept table spread its classes over the
    concepts (`ConceptTable.spread`). A modality whose encoder has no classes of its own is left out."""
    spec = LabelSpaceSpec.from_preset(preset.spec["label_space"])
    table = None
    if spec.concepts:
        from bridge.concepts import concept_table

        table = concept_table()
    slack = "+slack" if spec.text_prior else ""  # the words' prior needs the slack coordinate in every family

    def classes_of(family: str) -> str:  # a classifier's classes, each concept's mass over its class count^A
        return (f"{family}:{spec.concept_prior:g}" if spec.concept_prior else family) + slack

    def identity(n: int, temperature: float, mode: int, family: str) -> dict[str, Any]:
        """A map that reads `n` class scores as they come (the encoder already outputs its classes)."""
        out = {"weight": np.eye(n, dtype=np.float32), "bias": np.zeros(n, np.float32), "scale": 1.0 / temperature,
               "cosine": mode}
        return {**out, "family": classes_of(family)} if table is not None else out

    out: dict[str, dict[str, Any]] = {}
    for m in modalities:
        backbone = preset.encoder(m).backbone
        if m == "text":
            matrix = class_prompt_matrix(spec, preset.encoder("text"), preset.modality_fingerprint("text"))
            out[m] = {"weight": matrix, "bias": np.zeros(len(matrix), np.float32),
                      "scale": 1.0 / spec.text_temperature, "cosine": 1}
            if table is not None:
                prior = f":{spec.text_prior:g}" if spec.text_prior else ""
                out[m]["family"] = f"concepts:{spec.text_ancestor_weight:g}{prior}{slack}"
        elif getattr(backbone, "label_family", None) == "imagenet":  # a sound read as ImageNet logits (soundnet)
            out[m] = identity(backbone.dim, spec.audio_temperature, 0, "imagenet")
        elif hasattr(backbone, "class_map"):  # an audio tagger: its own classes, AudioSet's in a concept space
            out[m] = identity(len(backbone.class_map()), spec.audio_temperature, 2, "audioset")
        elif hasattr(backbone, "classifier"):
            weight, bias = backbone.classifier(len(spec.class_names()))
            out[m] = {"weight": weight, "bias": bias, "scale": 1.0 / spec.image_temperature, "cosine": 0}
            if table is not None:
                out[m]["family"] = classes_of("imagenet")
    return out


def space_dim(maps: dict[str, dict[str, Any]]) -> int:
    """The size of the space the maps place into: their concepts, else their classes."""
    args = next(iter(maps.values()))
    if args.get("family"):
        from bridge.concepts import concept_table

        return int(concept_table().spread(args["family"]).shape[1])  # the concepts, and a slack coordinate if any
    return len(args["bias"])


def read_as_concept(spec_entry: dict[str, Any] | None, texts: list[str]) -> list[str]:
    """Queries as a concept space reads them: a text that names one concept ("dog", "a photo of
    deer") becomes that concept's own prompt, so it lands on the concept and not on a spelling
    neighbour ("hot dog"); other texts stay as written. Identity for other spaces.

    Example:
        >>> read_as_concept({"concepts": True, "templates": "photo"}, ["deer", "a dog chasing a ball"])
        ['a photo of a ruminant.', 'a dog chasing a ball']
    """
    if not spec_entry or not spec_entry.get("concepts"):
        return list(texts)
    from bridge.concepts import concept_table

    spec = LabelSpaceSpec.from_preset(spec_entry)
    if not spec.lexicon:
        return list(texts)
    table = concept_table()
    nodes = [table.lookup(t) if isinstance(t, str) else None for t in texts]
    return [t if node is None else concept_prompt(spec, node)[0] for t, node in zip(texts, nodes)]


def to_label_space(logits: np.ndarray, spread: np.ndarray | None = None) -> np.ndarray:
    """Numpy twin of `LabelMap`'s last step: sqrt(softmax(logits)) per row (unit vectors); with a
    concept space's `spread` (classes, concepts), the mass under each concept, square-rooted and
    normalised."""
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if spread is None:
        return np.sqrt(p).astype(np.float32)
    q = np.sqrt(np.maximum(p @ spread, 0))
    return (q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def class_prompt_items(preset: Any) -> Any:
    """The label space's class prompts as the proxy's training items (text features, one per class,
    labelled with the class name): what G learns to predict from images when the manifest has no text."""
    from bridge.pairs import ModalityData

    spec = LabelSpaceSpec.from_preset(preset.spec["label_space"])
    names = spec.class_names()
    # A concept space's first rows are the classifier's own classes (then their ancestors, then sounds).
    matrix = class_prompt_matrix(spec, preset.encoder("text"), preset.modality_fingerprint("text"))[:len(names)]
    return ModalityData(ids=[f"class prompt: {n}" for n in names], features=matrix, labels=names,
                        pairs=[None] * len(names))


def label_classes(maps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The config entry that tells `build_modules` which label maps spread a classifier's classes over
    concepts (their class count); empty for a plain label space, so older configs read the same."""
    families = {m: a["family"] for m, a in maps.items() if a.get("family")}
    if not families:
        return {}
    from bridge.concepts import concept_table

    return {"label_classes": families, "concepts_sha256": concept_table().sha256}
