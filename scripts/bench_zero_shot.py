#!/usr/bin/env python
"""Zero training on real photos: CIFAR-10 searched by text through a preset's pretrained space.

No pairs, no `ebridge train`. Measures, on the CIFAR-10 test photos (`../shared/data/cifar10/test`):

* zero-shot top-1: each photo classified against the ten class queries "a photo of a {class}.";
* text->image P@10: each class query's ten nearest photos, the share of its class;
* image->image R@1 and P@10 (search by example, the photo itself left out), through the space and
  through the image encoder's own features (the `raw` route's baseline), whole and PCA-reduced.

The label-space settings (form, templates, temperatures) are chosen on a validation split of
`--val-per-class` photos per class (seeded); the figures are reported on the other photos (test),
never used to choose. Three forms are compared (see `bridge.labelspace`), each with the
prompt templates `photo`, `simple` (7) and `openai` (80):

* `labelspace`: image sqrt(p(class | image)), text sqrt(softmax(cos(text, class prompts) / tau));
* `conse`: image = the p-weighted mean of the top-T class prompt embeddings (Norouzi et al. 2014),
  text = the text encoder's own embedding;
* `mix`: both in one vector, `[sqrt(w) labelspace, sqrt(1 - w) conse]` (score = w BC + (1 - w) cos).

The report also says where each class lands: its query's heaviest classifier classes and its photos'.

Usage::

    OMP_NUM_THREADS=1 python -m scripts.bench_zero_shot --preset offline --json docs/reports/zero-shot-offline.json
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bridge.config import DEFAULT_PRESET
from core.files import user_cache_dir
from query.eval.shared_data import shared_data_dir

log = logging.getLogger("bench_zero_shot")
CIFAR = shared_data_dir() / "cifar10" / "test"
QUERY = "a photo of a {}."


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def scores(images: np.ndarray, texts: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Zero-shot top-1 (photo -> class query) and text->image P@10 (class query -> photos)."""
    sim = images @ texts.T  # (n photos, n classes)
    y = np.array([classes.index(c) for c in labels])
    top1 = float(np.mean(sim.argmax(1) == y))
    top10 = np.argsort(-sim, axis=0)[:10]  # (10, classes)
    p10 = float(np.mean([np.mean(y[top10[:, c]] == c) for c in range(len(classes))]))
    return {"zero_shot_top1": round(top1, 4), "text_to_image_p10": round(p10, 4)}


def by_example(vectors: np.ndarray, labels: np.ndarray, chunk: int = 2048) -> dict[str, float]:
    """Image->image R@1 and P@10 by class, every photo a query against all the others."""
    v = unit(vectors)
    r1, p10 = [], []
    for s in range(0, len(v), chunk):
        sim = v[s:s + chunk] @ v.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf  # not the photo itself
        top = np.argpartition(-sim, 10, axis=1)[:, :10]
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(sim, top, 1), axis=1), 1)
        same = labels[order] == labels[s:s + chunk, None]
        r1.append(same[:, 0])
        p10.append(same.mean(1))
    return {"r1": round(float(np.concatenate(r1).mean()), 4), "p10": round(float(np.concatenate(p10).mean()), 4)}


def label_space(logits: np.ndarray, q_cos: np.ndarray, t_img: float, t_txt: float) -> tuple[np.ndarray, np.ndarray]:
    """Both sides in label space: sqrt of the class distributions (see `bridge.labelspace`)."""
    return np.sqrt(softmax(logits / t_img)), np.sqrt(softmax(q_cos / t_txt))


def conse(logits: np.ndarray, prompts: np.ndarray, queries: np.ndarray, t_img: float, top: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """ConSE: the photo as the p-weighted mean of its top classes' prompt embeddings; queries as they are."""
    p = softmax(logits / t_img)
    keep = np.argsort(-p, axis=1)[:, :top]
    w = np.zeros_like(p)
    np.put_along_axis(w, keep, np.take_along_axis(p, keep, 1), 1)
    return unit(w @ prompts), queries


def mix(logits: np.ndarray, q_cos: np.ndarray, prompts: np.ndarray, queries: np.ndarray, t_img: float,
        t_txt: float, w: float) -> tuple[np.ndarray, np.ndarray]:
    img, txt = label_space(logits, q_cos, t_img, t_txt)
    c_img, c_txt = conse(logits, prompts, queries, t_img, 1000)
    a, b = np.sqrt(w), np.sqrt(1 - w)
    return np.hstack([a * img, b * c_img]).astype(np.float32), np.hstack([a * txt, b * c_txt]).astype(np.float32)


def landing(best: dict, logits: np.ndarray, queries: np.ndarray, text_enc: Any, preset: Any, labels: np.ndarray,
            classes: list[str], img_test: np.ndarray, txt: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """Where each class lands in the classifier's classes, under the chosen settings: the query's three
    heaviest classes, the test photos' three heaviest (mean distribution), and the class's test top-1."""
    from bridge.labelspace import LabelSpaceSpec, class_prompt_matrix

    spec = LabelSpaceSpec(templates=best["templates"])
    names = spec.class_names()
    q = softmax(queries @ class_prompt_matrix(spec, text_enc, preset.modality_fingerprint("text")).T
                / best.get("text_temperature", 0.02))
    p = softmax(logits[test] / best["image_temperature"])
    y = np.array([classes.index(c) for c in labels[test]])
    pred = (img_test @ txt.T).argmax(1)
    out = {}
    for c, cls in enumerate(classes):
        mean_p = p[y == c].mean(0)
        out[cls] = {"test_top1": round(float(np.mean(pred[y == c] == c)), 3),
                    "query": [(names[i], round(float(q[c, i]), 3)) for i in np.argsort(-q[c])[:3]],
                    "photos": [(names[i], round(float(mean_p[i]), 3)) for i in np.argsort(-mean_p)[:3]]}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--data", type=Path, default=CIFAR, help="CIFAR-10 test folder: {class}/NNNN.jpg")
    ap.add_argument("--limit", type=int, default=None, help="at most this many photos per class")
    ap.add_argument("--val-per-class", type=int, default=100)
    ap.add_argument("--cache", type=Path, default=user_cache_dir("features"),
                    help="frozen-feature cache folder (default: the user's, shared by every checkout)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def photos(args: argparse.Namespace, preset: Any) -> tuple[list[str], list[Path], np.ndarray, np.ndarray, float]:
    """The classes, the photo files, their labels, their image features (through the cache) and the encoding time."""
    from bridge.features import FeatureCache
    from bridge.modalities import load

    classes = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    files = [f for c in classes for f in sorted((args.data / c).glob("*.jpg"))[:args.limit]]
    labels = np.array([f.parent.name for f in files])
    t0 = time.perf_counter()
    feats = FeatureCache(args.cache).get_or_compute(
        preset, "image", [str(f.relative_to(args.data)) for f in files],
        lambda ids: [load("image", args.data / i) for i in ids])
    return classes, files, labels, feats, time.perf_counter() - t0


def validation_split(labels: np.ndarray, classes: list[str], per_class: int, seed: int) -> np.ndarray:
    """`per_class` photos of each class (at most half of them), seeded: the photos settings are chosen on."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        val[rng.choice(idx, size=min(per_class, len(idx) // 2), replace=False)] = True
    return val


def candidates(logits: np.ndarray, queries: np.ndarray, text_enc: Any, preset: Any) -> list[tuple[dict, Any]]:
    """Every setting tried: (settings, a function giving (image vectors, query vectors)), built on demand."""
    from bridge.labelspace import LabelSpaceSpec, class_prompt_matrix

    out = []
    for templates in ("photo", "simple", "openai"):
        prompts = class_prompt_matrix(LabelSpaceSpec(templates=templates), text_enc,
                                      preset.modality_fingerprint("text"))
        q_cos = queries @ prompts.T
        for t_img, t_txt in itertools.product((0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0), (0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)):
            out.append(({"form": "labelspace", "templates": templates, "image_temperature": t_img,
                         "text_temperature": t_txt},
                        functools.partial(label_space, logits, q_cos, t_img, t_txt)))
        for t_img, top in itertools.product((0.5, 1.0, 2.0), (1, 5, 10, 1000)):
            out.append(({"form": "conse", "templates": templates, "image_temperature": t_img, "top": top},
                        functools.partial(conse, logits, prompts, queries, t_img, top)))
        # Both in one vector: [sqrt(w) label space, sqrt(1 - w) ConSE] is a unit vector whose dot
        # product is w * Bhattacharyya + (1 - w) * cosine in the text encoder's space.
        for t_img, t_txt, w in itertools.product((0.3, 0.5, 1.0), (0.01, 0.02, 0.05), (0.25, 0.5, 0.75)):
            out.append(({"form": "mix", "templates": templates, "image_temperature": t_img,
                         "text_temperature": t_txt, "label_weight": w},
                        functools.partial(mix, logits, q_cos, prompts, queries, t_img, t_txt, w)))
    return out


def choose(tried: list[tuple[dict, Any]], labels: np.ndarray, classes: list[str], val: np.ndarray,
           shipped: dict[str, Any]) -> tuple[list[dict], dict, dict[str, dict]]:
    """Every candidate scored on validation, the best, and the rows reported on test: the best of each
    form and the preset's own settings (`as_shipped`, what a user of the preset gets)."""
    test = ~val
    rows = []
    for settings, make in tqdm(tried, desc="candidates on validation", disable=None):
        img, txt = make()
        rows.append({**settings, "val": scores(img[val], txt, labels[val], classes)})
    key = lambda r: r["val"]["zero_shot_top1"] + r["val"]["text_to_image_p10"]  # noqa: E731
    best = max(rows, key=key)
    best_form = {f: max((r for r in rows if r["form"] == f), key=key) for f in ("labelspace", "conse", "mix")}
    reported = {}
    for form, row in best_form.items():
        img, txt = tried[rows.index(row)][1]()
        reported[form] = {**{k: v for k, v in row.items() if k != "val"}, "val": row["val"],
                          "test": scores(img[test], txt, labels[test], classes),
                          "all": scores(img, txt, labels, classes)}
    as_shipped = {"form": "labelspace", "templates": shipped.get("templates"),
                  "image_temperature": shipped.get("image_temperature"), "text_temperature": shipped.get("text_temperature")}
    for i, row in enumerate(rows):
        if {k: row.get(k) for k in as_shipped} == as_shipped:
            img, txt = tried[i][1]()
            reported["as_shipped"] = {**as_shipped, "val": row["val"], "test": scores(img[test], txt, labels[test], classes),
                                      "all": scores(img, txt, labels, classes)}
    return rows, best, reported


def image_to_image(feats: np.ndarray, space: np.ndarray, labels: np.ndarray, val: np.ndarray,
                   pca_dim: int = 256) -> dict[str, dict[str, float]]:
    """Search by example on the test photos: through the space, the raw features, and those PCA-reduced
    (the basis fitted on validation)."""
    test = ~val
    centred = feats - feats[val].mean(0)
    basis = np.linalg.svd(centred[val], full_matrices=False)[2][:pca_dim]
    return {"space": by_example(space[test], labels[test]), "raw": by_example(feats[test], labels[test]),
            f"raw_pca{pca_dim}": by_example(centred[test] @ basis.T, labels[test])}


def print_report(report: dict[str, Any]) -> None:
    print(f"preset {report['preset']}: chosen on validation {report['chosen_on_validation']}")
    for form, r in report["best_of_each_form"].items():
        print(f"  {form:10s} test: zero-shot top-1 {r['test']['zero_shot_top1']:.3f}, text->image P@10 "
              f"{r['test']['text_to_image_p10']:.3f}   (all {report['photos']}: {r['all']['zero_shot_top1']:.3f} / "
              f"{r['all']['text_to_image_p10']:.3f})")
    for c, w in report["where_each_class_lands"].items():
        print(f"  {c:10s} test top-1 {w['test_top1']:.2f}; query -> {', '.join(f'{n} {m:.2f}' for n, m in w['query'])}; "
              f"photos -> {', '.join(f'{n} {m:.2f}' for n, m in w['photos'])}")
    print("  image->image on test (R@1 / P@10): " + ", ".join(
        f"{k} {v['r1']:.3f} / {v['p10']:.3f}" for k, v in report["image_to_image_test"].items()))


def ready_to_run(args: argparse.Namespace) -> bool:
    """Logging and one torch thread for a CIFAR-10 bench; False, having said why, when the CIFAR-10 test
    folders are not at `args.data` (the bench then skips)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.data.is_dir():
        print(f"skipped: {args.data} not found (CIFAR-10 test as JPEG folders, see ../shared/data/README.md)")
        return False
    import torch

    torch.set_num_threads(1)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not ready_to_run(args):
        return 0
    from bridge.encoders import load_preset
    from bridge.provenance import provenance

    prov = provenance()  # at the start: the code that runs
    preset = load_preset(args.preset)
    classes, files, labels, feats, encode_s = photos(args, preset)
    val = validation_split(labels, classes, args.val_per_class, args.seed)
    test = ~val
    log.info("%d photos: %d validation, %d test (encoded in %.0f s)", len(files), val.sum(), test.sum(), encode_s)

    weight, bias = preset.encoder("image").backbone.classifier(1000)
    logits = feats @ weight.T + bias
    text_enc = preset.encoder("text")
    queries = unit(text_enc.encode([QUERY.format(c) for c in classes]))
    tried = candidates(logits, queries, text_enc, preset)
    rows, best, reported = choose(tried, labels, classes, val, preset.spec.get("label_space") or {})
    best_img, best_txt = tried[rows.index(best)][1]()
    where = landing(best, logits, queries, text_enc, preset, labels, classes, best_img[test], best_txt, test)
    report = {
        "what": "zero-training CIFAR-10: text->image and zero-shot through the preset's pretrained space",
        "preset": args.preset, "photos": len(files), "validation": int(val.sum()), "test": int(test.sum()),
        "query": QUERY, "chosen_on_validation": {k: v for k, v in best.items() if k != "val"},
        "chosen": reported[best["form"]], "best_of_each_form": reported, "every_candidate_on_validation": rows,
        "image_to_image_test": image_to_image(feats, best_img, labels, val), "where_each_class_lands": where,
        "encode_seconds": round(encode_s, 1), "provenance": prov,
    }
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
