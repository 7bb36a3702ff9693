#!/usr/bin/env python
"""The README's "Bind a new modality" journey, measured: does binding thermal keep what the encoder sees?

As a user would, with the real CLI: (1) `ebridge index F --index I` on a folder of test photos and
their thermal frames (photos placed in the pretrained space, thermal skipped); (2) `ebridge train
pairs.csv --out B` with the README's manifest shape (image-thermal pairs, default roles and base);
(3) `ebridge index F --index I --bridge B` (the photos' vectors stay bit for bit, thermal is added).
Then each test thermal frame searches the photos: R@1 of the extended index as routed, of the raw
encoder features (`--route raw`), and of a bridge trained from scratch on the same pairs (`--anchor
image --proxy thermal`, features base); text->image and text->thermal zero-shot before and after.

The pairs (development data, tunable; the road-scene set of issue 32 is held out): CIFAR-10 test
photos (../shared/data/cifar10) and a thermal frame rendered from each (`render_thermal`: white-hot
heat from the scene's warm colours and brightness, diffused, on an ambient gradient, with sensor
noise and column stripes), paired one to one: instance-level matching, as RGB-thermal rigs give.

Usage::

    python -m scripts.bench_bind_journey --data ../shared/data --out journey-out --json journey.json
    python -m scripts.bench_bind_journey --data ../shared/data --train 300 --steps 200 --json quick.json
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from bridge.config import DEFAULT_PRESET
from bridge.route_table import route_table
from query.eval.shared_data import shared_data_dir

log = logging.getLogger("bench_bind_journey")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SIZE = 96  # CIFAR's 32 px upscaled, as a small camera frame


def render_thermal(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A white-hot 8-bit thermal frame of an RGB photo (H, W, 3) uint8: heat is a mix of the red,
    warm and bright parts of the scene (no camera sees visible light as heat; this is a stand-in
    with the same kind of gap: grey, blurred, another contrast), diffused, on an ambient gradient,
    plus sensor noise and fixed column stripes."""
    x = photo.astype(np.float32) / 255.0
    warm = np.clip(x[..., 0] - 0.5 * x[..., 2], 0, 1)
    heat = 0.5 * warm + 0.35 * x.mean(2) + 0.15 * (1 - x[..., 1])
    img = Image.fromarray(np.round(heat * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
    heat = np.asarray(img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.0))), np.float32) / 255.0
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    temp = 20 + rng.uniform(-2, 2) * xx + rng.uniform(-2, 2) * yy + heat * rng.uniform(8, 14)
    temp += rng.normal(0, 0.25, temp.shape) + rng.normal(0, 0.2, (1, SIZE))
    lo, hi = temp.min(), temp.max()
    return np.round((temp - lo) / (hi - lo) * 255).astype(np.uint8)


def build_pairs(data: Path, out: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Write photos/, thermal/ and pairs.csv (pair keys; train, val, test) under `out`; the test
    split's files also go to `out/folder`, the folder the user indexes. Returns pairs.csv."""
    files = sorted((data / "cifar10" / "test").glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no CIFAR-10 photos under {data}/cifar10/test: pass --data ../shared/data")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    rows, labels, start = ["modality,path,pair,split"], {}, 0
    for split, n in counts.items():
        for i in order[start:start + n]:
            key, label = f"c{i:05d}", files[i].parent.name
            photo = np.asarray(Image.open(files[i]).convert("RGB"))
            where = out / ("folder" if split == "test" else split)
            (where / "photos").mkdir(parents=True, exist_ok=True)
            (where / "thermal").mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo).resize((SIZE, SIZE), Image.BICUBIC).save(where / "photos" / f"{key}.png")
            Image.fromarray(render_thermal(photo, np.random.default_rng([seed, int(i)]))).save(
                where / "thermal" / f"{key}_ir.png")
            labels[key] = label  # for the text figures only: pairs go by key, as in the README's manifest
            if split != "test":
                rows += [f"image,{split}/photos/{key}.png,{key},{split}", f"thermal,{split}/thermal/{key}_ir.png,{key},{split}"]
        start += n
    (out / "pairs.csv").write_text("\n".join(rows) + "\n")
    (out / "labels.json").write_text(json.dumps(labels))
    return out / "pairs.csv"


def cli(*argv: str) -> None:
    from query.cli import main

    log.info("$ ebridge %s", " ".join(argv))
    if main(list(argv)) != 0:
        raise SystemExit(f"ebridge {argv[0]} failed")


def thermal_to_image(index_dir: Path, folder: Path, route: str) -> float:
    """R@1 of every thermal frame of the folder searching the photos (its own photo is the one right answer)."""
    from query import Index

    frames = sorted((folder / "thermal").glob("*.png"))
    with Index.open(index_dir) as index:
        hits = index.search_batch(frames, target="image", k=1, route=route)
    return float(np.mean([bool(h) and Path(h[0].path).stem == f.stem.replace("_ir", "") for h, f in zip(hits, frames)]))


def text_precision(index_dir: Path, labels: dict[str, str], target: str, k: int = 10) -> float | None:
    """Mean precision@k of the class names ("a photo of a cat") searching `target`: the concept side."""
    from query import Index

    with Index.open(index_dir) as index:
        if target not in index.bridge.modalities:
            return None
        hits = index.search_batch([f"a photo of a {c}" for c in CLASSES], target=target, k=k, source="text")
    return float(np.mean([np.mean([labels.get(Path(h.path).stem.replace("_ir", "")) == c for h in hs]) if hs else 0.0
                          for c, hs in zip(CLASSES, hits)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_data_dir(),
                    help="the shared data folder (default: ../shared/data, or $EBRIDGE_SHARED_DATA)")
    ap.add_argument("--out", type=Path, default=Path("journey-out"))
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--val", type=int, default=150)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--proxy-steps", type=int, default=2000)
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    out = args.out
    pairs = build_pairs(args.data, out, {"train": args.train, "val": args.val, "test": args.test})
    labels = json.loads((out / "labels.json").read_text())
    folder, idx, scratch_idx = out / "folder", out / "photos.index", out / "scratch.index"
    common = ["--steps", str(args.steps), "--proxy-steps", str(args.proxy_steps), "--preset", args.preset]
    # 1. zero training: photos placed in the pretrained space, thermal skipped
    cli("index", str(folder), "--index", str(idx), "--preset", args.preset, "--json")
    before = {"text->image_p@10": text_precision(idx, labels, "image")}
    # 2. bind thermal with the README's manifest shape, default roles and base
    cli("train", str(pairs), "--out", str(out / "bridge"), *common)
    # 3. extend the index
    cli("index", str(folder), "--index", str(idx), "--bridge", str(out / "bridge"), "--json")
    # The from-scratch comparison: thermal as the proxy, a base trained on the features
    cli("train", str(pairs), "--out", str(out / "scratch"), "--anchor", "image", "--proxy", "thermal",
        "--base", "trained", *common)
    cli("index", str(folder), "--index", str(scratch_idx), "--bridge", str(out / "scratch"), "--json")
    from bridge.space import Bridge

    bound = Bridge.load(out / "bridge")
    report: dict[str, Any] = {
        "dataset": {"name": "cifar10-pseudo-thermal", "pairs": {"train": args.train, "val": args.val, "test": args.test},
                    "note": "CIFAR-10 test photos and thermal frames rendered from them (render_thermal); dev data"},
        "thermal->image_r1": {
            "extended_index_routed": thermal_to_image(idx, folder, "auto"),
            "raw_features": thermal_to_image(idx, folder, "raw"),
            "through_the_space": thermal_to_image(idx, folder, "direct"),
            "from_scratch_direct": thermal_to_image(scratch_idx, folder, "direct"),
            "from_scratch_routed": thermal_to_image(scratch_idx, folder, "auto")},
        "route": route_table(bound.config).get("thermal->image"), "cross_modal_val": bound.config.get("cross_modal"),
        "text": {"before": before, "after": {"text->image_p@10": text_precision(idx, labels, "image"),
                                             "text->thermal_p@10": text_precision(idx, labels, "thermal")}},
        "settings": vars(args) | {"data": str(args.data), "out": str(out), "json": str(args.json)},
        "seconds": round(time.perf_counter() - t0, 1)}
    log.info("%s", json.dumps({k: report[k] for k in ("thermal->image_r1", "route", "text")}, indent=1))
    if args.json:
        from bridge.provenance import write_json_report

        write_json_report(args.json, report)


if __name__ == "__main__":
    main()
