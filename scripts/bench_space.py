#!/usr/bin/env python
"""Does the bridge earn its place? Raw frozen features vs the bridge's heads, pair by pair.

On the digits world (real spoken and written digits, rendered depth/thermal views) this trains
the three variants twice: with heads that start at the encoder's geometry and are selected on
validation (`--head-init encoder`, the default), and with MLP heads from scratch (`random`, the
old way). It scores every ordered pair on the test split by exact search on the embeddings
(no index, so the figures isolate the space), beside the raw features where both sides share an
encoder, and zero-shot top-1 against the class prompts.

`--unseen 7 8 9` also trains on a class-disjoint split (those digits removed from training and
validation) and reports zero-shot top-1 on the test items of seen and of unseen classes apart,
against all ten prompts: the open-vocabulary check.

Usage::

    python -m scripts.bench_space --data ../shared/data --json space.json
    python -m scripts.bench_space --world bench-out/world --cache bench-out/cache --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bridge.validation import recall_at_1
from core.cli import add_threads_option
from core.device import set_threads
from query.eval.digits import DIGITS_PRESET

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CROSS = ("audio", "image", "depth", "thermal")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def zero_shot(z: np.ndarray, labels: list, prompts: np.ndarray, prompt_labels: list, keep: set[str]) -> float | None:
    from query.eval.metrics import class_embeddings, zero_shot_accuracy

    classes, names = class_embeddings(prompts, prompt_labels)
    rows = [i for i, y in enumerate(labels) if y in keep]
    if not rows:
        return None
    return zero_shot_accuracy(z[rows], [labels[i] for i in rows], classes, names, ks=(1,))["top1"]


def evaluate(embed, test: dict[str, Any], unseen: set[str], comparable=lambda s, t: True) -> dict[str, Any]:
    z = {m: embed(m, d.features) for m, d in test.items()}
    out: dict[str, Any] = {"pairs": {}, "zero_shot": {}}
    for s in CROSS:
        for t in CROSS:
            if s != t and s in z and t in z and comparable(s, t):
                out["pairs"][f"{s}->{t}"] = recall_at_1(z[s], test[s].labels, z[t], test[t].labels)
        if s in z and "text" in z:
            seen = set(WORDS) - unseen
            out["zero_shot"][s] = {"seen": zero_shot(z[s], test[s].labels, z["text"], test["text"].labels, seen),
                                   "unseen": zero_shot(z[s], test[s].labels, z["text"], test["text"].labels, unseen)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="../shared/data (FSDD + MNIST); default: the shipped sample")
    parser.add_argument("--world", type=Path, help="an existing digits world folder (skips building one)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/bench-space"), help="frozen-feature cache")
    parser.add_argument("--preset", default=DIGITS_PRESET)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--proxy-steps", type=int, default=600)
    parser.add_argument("--unseen", nargs="*", default=["seven", "eight", "nine"], help="classes held out of training")
    add_threads_option(parser, 1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from bridge.config import TrainConfig
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache
    from bridge.pairs import in_split, read_manifest, training_set
    from bridge.train import train
    from query.eval.digits import build_digits_world

    set_threads(args.threads)
    t0 = time.perf_counter()
    world = args.world or build_digits_world(args.cache / "world", scale="quick" if args.data else "sample",
                                             data_dir=args.data)
    preset = load_preset(args.preset)
    cache = FeatureCache(args.cache if not args.world else args.cache)
    rows = read_manifest(Path(world) / "manifest.csv")
    sets = {s: training_set(in_split(rows, s), preset, cache) for s in ("train", "val", "test")}
    unseen = set(args.unseen)

    def raw_embed(m: str, x: np.ndarray) -> np.ndarray:
        return unit(x)

    raw = evaluate(raw_embed, {m: d for m, d in sets["test"].items() if m != "text"}, unseen,
                   comparable=preset.shares_encoder)
    raw.pop("zero_shot")

    def drop(data: dict[str, Any]) -> dict[str, Any]:
        from bridge.validation import subset

        return {m: subset(d, np.array([y not in unseen for y in d.labels])) for m, d in data.items()}

    results: dict[str, Any] = {"raw": raw, "runs": {}}
    for split_name, (train_set, val_set) in {"all classes": (sets["train"], sets["val"]),
                                             "class-disjoint": (drop(sets["train"]), drop(sets["val"]))}.items():
        if split_name == "class-disjoint" and not unseen:
            continue
        for head_init in ("encoder", "random"):
            bases: dict[int, Any] = {}  # the variants of one seed share the base space and G
            for variant in ("anchor", "naive-proxy", "emergentbridge"):
                for seed in args.seeds:
                    cfg = TrainConfig(preset=args.preset, variant=variant, seed=seed, head_init=head_init,
                                      steps=args.steps, proxy_steps=args.proxy_steps)
                    bridge, _ = train(cfg, train_set, val=val_set, preset=preset, base=bases.get(seed))
                    bases.setdefault(seed, bridge)
                    key = f"{split_name} | {head_init} | {variant}"
                    results["runs"].setdefault(key, []).append(evaluate(bridge.embed_features, sets["test"], unseen))
                    print(f"{time.perf_counter() - t0:7.0f}s  {key} seed {seed}", flush=True)
    results["settings"] = {"preset": args.preset, "seeds": args.seeds, "steps": args.steps,
                           "proxy_steps": args.proxy_steps, "unseen": sorted(unseen), "world": str(world),
                           "seconds": round(time.perf_counter() - t0, 1)}
    print_table(results)
    if args.json:
        from bridge.provenance import write_json_report

        write_json_report(args.json, results)
    return 0


def print_table(results: dict[str, Any]) -> None:
    def mean(runs: list, get) -> float:
        vals = [get(r) for r in runs]
        vals = [v for v in vals if v is not None]
        return 100 * float(np.mean(vals)) if vals else float("nan")

    pairs = sorted(next(iter(results["runs"].values()))[0]["pairs"])
    print("\nR@1 % on the test split (exact search on embeddings); raw = frozen features, where comparable")
    print(f"{'run':<48}" + "".join(f"{p:>16}" for p in pairs))
    print(f"{'raw features':<48}" + "".join(f"{100 * results['raw']['pairs'][p]:>16.1f}" if p in results['raw']['pairs']
                                            else f"{'-':>16}" for p in pairs))
    for key, runs in results["runs"].items():
        print(f"{key:<48}" + "".join(f"{mean(runs, lambda r: r['pairs'][p]):>16.1f}" for p in pairs))
    print("\nzero-shot top-1 % against all ten prompts (seen / unseen classes)")
    for key, runs in results["runs"].items():
        cells = [f"{m}: {mean(runs, lambda r: r['zero_shot'][m]['seen']):.1f} / "
                 f"{mean(runs, lambda r: r['zero_shot'][m]['unseen']):.1f}" for m in CROSS]
        print(f"{key:<48}" + "   ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
