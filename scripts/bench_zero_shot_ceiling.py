#!/usr/bin/env python
"""How far CIFAR-10 zero-shot top-1 can go in the offline pretrained space with no training: upper bounds.

The offline space reads a photo as EfficientNet-Lite0's 1000 ImageNet class probabilities carried onto
WordNet concepts, and a word as its concept ("car" -> the mass under car, auto). On the same photos and
split as `scripts/bench_zero_shot.py` (CIFAR-10 test, `--val-per-class` photos per class to choose on,
the rest to report), this script measures:

(a) `today`: the preset as shipped, through the engine (`Bridge.embed_features` / `Bridge.embed` of the
    bare words), top-1 and text->image P@10;
(b) oracles that use the validation labels (upper bounds, not methods): every ImageNet class mapped to
    one CIFAR class learned on validation, photo -> the map of its top class (`argmax map`) or -> the
    CIFAR class with the most summed mass (`mass map`), and that map with one prior weight per CIFAR
    class fitted on validation too (`mass map + class priors`: the best a hard map and a per-word prior
    can do); today's WordNet map with one scale per word fitted on validation (`wordnet + word scales`:
    the best any word prior can do on today's map);
(c) the plain classifier read through WordNet: the top class -> the word whose concept holds it (a photo
    whose top class is under none is wrong), the top class among those under some word, and the word
    with the most mass under its concept (no prior);
(d) a prior with no labels: each word's score divided by its mean score over the validation photos
    (unlabelled), the image temperature chosen on validation;
and, for context only, a logistic regression on the 1000 log-probabilities (training, not zero-shot).

Each row gives validation and test top-1; rows that choose (a temperature, a map, weights) choose on
validation. Several `--val-per-class` values show whether an oracle is limited by the photos it learns on.

Usage::

    OMP_NUM_THREADS=1 python -m scripts.bench_zero_shot_ceiling --val-per-class 100 500 \
        --json docs/reports/zero-shot-ceiling-offline.json
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bridge.config import DEFAULT_PRESET
from bridge.provenance import write_json_report
from core.files import user_cache_dir
from scripts.bench_pretrained_space import CIFAR_WORDS, precision_at_10, space
from scripts.bench_zero_shot import ready_to_run
from scripts.bench_zero_shot import CIFAR, photos, softmax, validation_split

log = logging.getLogger("bench_zero_shot_ceiling")
TEMPERATURES = (0.3, 0.5, 1.0, 1.5, 2.0, 3.0)


def top1(pred: np.ndarray, y: np.ndarray, val: np.ndarray) -> dict[str, float]:
    """Top-1 on the validation photos and on the test photos (the rest)."""
    return {split: round(float(np.mean(pred[m] == y[m])), 4) for split, m in (("val", val), ("test", ~val))}


def fit_class_weights(log_scores: np.ndarray, y: np.ndarray, passes: int = 3) -> np.ndarray:
    """One additive log-weight per class maximising top-1 on these photos (coordinate ascent over a grid):
    the prior an oracle would give each word."""
    b = np.zeros(log_scores.shape[1])
    grid = np.linspace(-4, 4, 161)
    for _ in range(passes):
        for c in range(len(b)):
            accs = []
            for v in grid:
                b[c] = v
                accs.append(np.mean((log_scores + b).argmax(1) == y))
            b[c] = grid[int(np.argmax(accs))]
    return b


def best_temperature(make: Callable[[float], dict[str, float]]) -> dict[str, Any]:
    """`make(T)` for every image temperature; the row whose validation top-1 is highest, with its T."""
    rows = [{**make(t), "image_temperature": t} for t in TEMPERATURES]
    return max(rows, key=lambda r: r["val"])


def oracle_maps(logits: np.ndarray, y: np.ndarray, val: np.ndarray) -> dict[str, dict[str, Any]]:
    """(b) maps of the 1000 ImageNet classes onto the 10 CIFAR classes, learned from validation labels."""
    top = logits.argmax(1)
    hits = np.zeros((logits.shape[1], 10))
    np.add.at(hits, (top[val], y[val]), 1)
    mean_mass = np.stack([softmax(logits[val][y[val] == c]).mean(0) for c in range(10)], 1)
    argmax_map = np.where(hits.sum(1) > 0, hits.argmax(1), mean_mass.argmax(1))

    def mass_map(t: float) -> np.ndarray:
        p = softmax(logits / t)
        owner = np.stack([p[val][y[val] == c].mean(0) for c in range(10)], 1).argmax(1)
        return np.log(p @ np.eye(10)[owner] + 1e-12)  # (n, 10): log summed mass per CIFAR class

    def with_priors(t: float) -> dict[str, float]:
        m = mass_map(t)
        return top1((m + fit_class_weights(m[val], y[val])).argmax(1), y, val)

    return {"argmax map": top1(argmax_map[top], y, val),
            "mass map": best_temperature(lambda t: top1(mass_map(t).argmax(1), y, val)),
            "mass map + class priors": best_temperature(with_priors)}


def wordnet_reads(logits: np.ndarray, y: np.ndarray, val: np.ndarray) -> dict[str, dict[str, Any]]:
    """(c) the classifier read through the shipped concept table: each word's concept and what lies under it."""
    from bridge.concepts import concept_table

    table = concept_table()
    under = table.spread("imagenet")[:, [table.lookup(CIFAR_WORDS[c]) for c in sorted(CIFAR_WORDS)]]  # (1000, 10)
    word_of = np.where(under.any(1), under.argmax(1), -1)  # a class under two words (minivan) takes the first
    top = logits.argmax(1)
    mapped = np.where(under.any(1), logits, -np.inf).argmax(1)
    unmapped = round(float(np.mean(word_of[top] < 0)), 4)
    return {"wordnet argmax (unmapped top class = wrong)": {**top1(word_of[top], y, val),
                                                            "photos whose top class is under no word": unmapped},
            "wordnet argmax among mapped classes": top1(word_of[mapped], y, val),
            "wordnet summed mass, no prior": best_temperature(
                lambda t: top1((softmax(logits / t) @ under).argmax(1), y, val)),
            "classes under each word": {c: int(n) for c, n in zip(sorted(CIFAR_WORDS), under.sum(0))}}


def space_rows(preset: Any, feats: np.ndarray, y: np.ndarray, val: np.ndarray) -> dict[str, dict[str, Any]]:
    """(a) today through the engine; (b) its WordNet map with an oracle scale per word; (d) a label-free prior."""
    words = [CIFAR_WORDS[c] for c in sorted(CIFAR_WORDS)]

    def scores(settings: dict[str, Any]) -> np.ndarray:
        bridge = space(preset, settings)
        return bridge.embed_features("image", feats) @ bridge.embed("text", words).T

    shipped = scores({})
    today = {**top1(shipped.argmax(1), y, val),
             "text->image P@10 bare test": round(precision_at_10(shipped[~val].T, list(range(10)), list(y[~val])), 4)}

    def no_word_prior(t: float) -> np.ndarray:  # the words' own prior off: only their concepts' mass is compared
        return np.log(np.maximum(scores({"image_temperature": t, "text_prior": 0.0}), 1e-9))

    def oracle(t: float) -> dict[str, float]:
        s = no_word_prior(t)
        return top1((s + fit_class_weights(s[val], y[val])).argmax(1), y, val)

    def label_free(t: float) -> dict[str, float]:
        s = no_word_prior(t)
        return top1((s - np.log(np.exp(s[val]).mean(0))).argmax(1), y, val)

    return {"today": today, "wordnet + word scales": best_temperature(oracle),
            "label-free prior: mean score over the validation photos": best_temperature(label_free)}


def linear_probe(logits: np.ndarray, y: np.ndarray, val: np.ndarray) -> dict[str, Any]:
    """Context, not zero-shot: a logistic regression on the log-probabilities, trained on validation."""
    from sklearn.linear_model import LogisticRegression

    x = np.log(softmax(logits) + 1e-12)
    rows = []
    for c in (0.01, 0.1, 1.0):
        model = LogisticRegression(C=c, max_iter=3000).fit(x[val], y[val])
        rows.append({**top1(model.predict(x), y, val), "C": c})
    return max(rows, key=lambda r: r["test"]) | {"note": "C chosen on test: context only"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--data", type=Path, default=CIFAR, help="CIFAR-10 test folder: {class}/NNNN.jpg")
    ap.add_argument("--limit", type=int, default=None, help="at most this many photos per class")
    ap.add_argument("--val-per-class", type=int, nargs="+", default=[100])
    ap.add_argument("--cache", type=Path, default=user_cache_dir("features"), help="frozen-feature cache folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not ready_to_run(args):
        return 0
    from bridge.encoders import load_preset

    preset = load_preset(args.preset)
    classes, files, labels, feats, _ = photos(args, preset)
    if classes != sorted(CIFAR_WORDS):
        raise SystemExit(f"{args.data}: expected the CIFAR-10 class folders {sorted(CIFAR_WORDS)}, found {classes}")
    y = np.array([classes.index(c) for c in labels])
    weight, bias = preset.encoder("image").backbone.classifier(1000)
    logits = feats @ weight.T + bias
    report: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "preset": args.preset, "photos": len(files),
                              "chance": 0.1, "splits": {}}
    for n in args.val_per_class:
        val = validation_split(labels, classes, n, args.seed)
        block = {"validation": int(val.sum()), "test": int((~val).sum()), **space_rows(preset, feats, y, val),
                 **oracle_maps(logits, y, val), **wordnet_reads(logits, y, val),
                 "context: linear probe on log-probabilities (training)": linear_probe(logits, y, val)}
        report["splits"][f"val {n} per class"] = block
        log.info("validation %d per class:", n)
        for name, row in block.items():
            if isinstance(row, dict) and "test" in row:
                log.info("  %-58s val %.3f  test %.3f", name, row["val"], row["test"])
    if args.json:
        write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
