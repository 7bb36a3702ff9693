#!/usr/bin/env python
"""Binding sounds to words on the pretrained space: does the bridge keep what the space knew?

The README's labelled-sound recipe on the default preset: audio-text pairs only, trained with
`--anchor text --proxy audio`, classes held out of training (`--unseen`). Compared on the test
clips (never used to train or choose) with the zero-training space (`Bridge.from_preset`):

* audio->text top-1 against the bare class words, seen and held-out classes apart;
* text->audio P@10 (bare class words);
* audio->image P@10 on CIFAR-10 photos of the class a sound's maker belongs to (dog bark -> dog),
  which no pair ever taught: the photos are reached through the space the words share with them.

Sounds: an ESC-10 / ESC-50 style folder `DIR/<class>/<fold>-<id>-<take>.wav` (never UrbanSound8K:
it is held out); folds 1-3 train, 4 validation, 5 test.

Usage::

    OMP_NUM_THREADS=1 python -m scripts.bench_bind_sounds --sounds ESC10_DIR --unseen dog,rain,helicopter \
        --json docs/reports/bind-sounds-offline-esc10.json
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from bridge.config import DEFAULT_PRESET
from bridge.provenance import write_json_report
from bridge.validation import recall_at_1
from query.eval.shared_data import shared_data_dir
from scripts.bench_pretrained_space import SOUND_CLASSES, load_photos, log_figures, precision_at_10

log = logging.getLogger("bench_bind_sounds")
SPLITS = {"1": "train", "2": "train", "3": "train", "4": "val", "5": "test"}


def sound_rows(root: Path) -> list[tuple[Path, str, str]]:
    """(file, class, split) for every clip of a known class, split by its fold (the name's first digit)."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name in SOUND_CLASSES):
        for f in sorted(d.glob("*.wav")):
            out.append((f, d.name, SPLITS.get(f.name.split("-")[0], "train")))
    return out


def training_data(rows: list[tuple[Path, str, str]], split: str, unseen: set[str], preset: Any) -> dict:
    """Audio clips paired with their class word (by label), and the words themselves."""
    from bridge.modalities import load
    from bridge.pairs import ModalityData

    clips = [(f, c) for f, c, s in rows if s == split and c not in unseen]
    classes = sorted({c for _, c in clips})
    words = [SOUND_CLASSES[c][0] for c in classes]
    texts = words + [f"the sound of {w}" for w in words]
    text_labels = classes + classes
    audio = preset.encoder("audio").encode([load("audio", f) for f, _ in clips])
    return {"audio": ModalityData(ids=[str(f) for f, _ in clips], features=audio, labels=[c for _, c in clips],
                                  pairs=[None] * len(clips)),
            "text": ModalityData(ids=texts, features=preset.encoder("text").encode(texts), labels=text_labels,
                                 pairs=[None] * len(texts))}


def evaluate(bridge: Any, audio: np.ndarray, labels: list[str], photos: dict, photo_z: np.ndarray,
             unseen: set[str]) -> dict[str, float]:
    names = sorted(set(labels))
    z = bridge.embed_features("audio", audio)
    t = bridge.embed("text", [SOUND_CLASSES[c][0] for c in names])
    out: dict[str, float] = {}
    for part, keep in (("seen", [c not in unseen for c in labels]), ("unseen", [c in unseen for c in labels])):
        rows = np.flatnonzero(keep)
        if len(rows):
            out[f"audio->text top-1 {part}"] = recall_at_1(z[rows], [labels[i] for i in rows], t, names)
    out["audio->text top-1"] = recall_at_1(z, labels, t, names)
    out["text->audio P@10"] = precision_at_10(t @ z.T, names, labels)
    makers = np.array([i for i, c in enumerate(labels) if SOUND_CLASSES[c][1]])
    if len(makers):
        wanted = [set(SOUND_CLASSES[labels[i]][1]) for i in makers]
        out["audio->image P@10"] = precision_at_10(z[makers] @ photo_z.T, wanted, photos["labels"])
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sounds", type=Path, required=True)
    ap.add_argument("--unseen", default="", help="comma-separated classes left out of training")
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--per-class", type=int, default=60, help="CIFAR-10 photos per class for audio->image")
    ap.add_argument("--start-decay", type=float, default=None, help="TrainConfig.start_decay (default: its own)")
    ap.add_argument("--keep-neighbours", type=float, default=None, help="TrainConfig.keep_neighbours")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    from bridge.config import TrainConfig
    from bridge.encoders import load_preset
    from bridge.modalities import load
    from bridge.space import Bridge
    from bridge.train import train

    torch.set_num_threads(1)
    cifar = shared_data_dir() / "cifar10" / "test"
    if not cifar.is_dir() or not args.sounds.is_dir():
        print(f"skipped: need {cifar} (../shared/data) and --sounds {args.sounds}")
        return 0
    unseen = {c for c in args.unseen.split(",") if c}
    preset = load_preset(args.preset)
    rows = sound_rows(args.sounds)
    data, val = (training_data(rows, s, unseen, preset) for s in ("train", "val"))
    test = [(f, c) for f, c, s in rows if s == "test"]
    test_audio = preset.encoder("audio").encode([load("audio", f) for f, _ in test])
    labels = [c for _, c in test]
    photos = load_photos(cifar, args.per_class)
    photo_feats = preset.encoder("image").encode(photos.pop("items"))

    zero = Bridge.from_preset(preset)
    report: dict[str, Any] = {"what": "binding sounds to words on the pretrained space (audio-text pairs only, "
                                      "--anchor text --proxy audio), against the zero-training space",
                              "preset": args.preset, "sounds": str(args.sounds), "unseen": sorted(unseen),
                              "train_clips": len(data["audio"].ids), "test_clips": len(test),
                              "photos": len(photos["labels"]), "steps": args.steps,
                              "start_decay": args.start_decay, "keep_neighbours": args.keep_neighbours,
                              "zero-training": evaluate(zero, test_audio, labels, photos,
                                                        zero.embed_features("image", photo_feats), unseen)}
    runs = []
    for seed in range(args.seeds):
        for guarded in (True, False):
            extra = {k: v for k, v in (("start_decay", args.start_decay), ("keep_neighbours", args.keep_neighbours))
                     if v is not None}
            cfg = TrainConfig(preset=args.preset, anchor="text", proxy="audio", steps=args.steps,
                              proxy_steps=args.steps, seed=seed, class_guard=guarded, **extra)
            bridge, _ = train(cfg, data, val=val, preset=preset)
            assert "image" in bridge.modalities, "the bound bridge dropped the photos"
            got = evaluate(bridge, test_audio, labels, photos, bridge.embed_features("image", photo_feats), unseen)
            runs.append({"seed": seed, "class_guard": guarded, "base": bridge.config["base"],
                         "guard": bridge.config.get("class_guard"), "audio_head": bridge.config["head_kinds"]["audio"],
                         "modalities": bridge.modalities, **got})
    report["bound"] = runs
    keys = [k for k in report["zero-training"]]
    report["mean"] = {f"bound, class guard {'on' if g else 'off'}": {
        k: round(float(np.mean([r[k] for r in runs if r["class_guard"] == g])), 4) for k in keys} for g in (True, False)}
    for name, figures in [("zero-training", report["zero-training"]), *report["mean"].items()]:
        log_figures(name, figures)
    if args.json:
        write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
