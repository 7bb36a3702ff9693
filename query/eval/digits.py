"""The digits world: a small real multimodal benchmark that runs offline on a CPU.

Spoken digits (FSDD, real recordings), handwritten digits (MNIST test set, real), digit
text prompts, and depth and thermal views rendered by our own seeded renderer from
*other* MNIST samples. It is written to disk as an ordinary dataset folder (plus a
`manifest.csv` sidecar), so the real indexer reads it like any user's folder.

Pairing follows the paper's regime: image-text (class names), audio-image (same digit),
depth-image and thermal-image (the image each view was rendered from). Never paired:
audio<->depth, audio<->thermal, depth<->thermal, audio/depth/thermal<->text.
Splits are by FSDD speaker and by MNIST index, so no test item is seen in training.

Example:
    >>> root = build_digits_world("digits", scale="quick")    # doctest: +SKIP
"""
from __future__ import annotations

import csv
import gzip
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

log = logging.getLogger(__name__)

# The preset the digits world is benchmarked with (`ebridge bench`, `ebridge demo`, bench_space.py):
# offline's image and text at 128 px with speech_embedding audio, which hears spoken words.
DIGITS_PRESET = "offline-small"

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Training and evaluation prompts use different wordings, so zero-shot text is not memorised.
TRAIN_TEMPLATES = ["{w}", "the digit {w}", "a handwritten {w}", "a spoken {w}", "the number {w}", "{n}"]
EVAL_TEMPLATES = ["a picture of the digit {w}", "someone saying {w}", "the numeral {n}"]
SPEAKERS = {"train": ["george", "jackson", "lucas", "yweweler"], "val": ["nicolas"], "test": ["theo"]}
MNIST_RANGES = {"train": (0, 6000), "val": (6000, 7500), "test": (7500, 10000)}
SAMPLE_DIR = Path(__file__).resolve().parent / "samples" / "digits"


@dataclass(frozen=True)
class Scale:
    """How many items of each kind per split: (images, depth views, thermal views, audio takes per digit & speaker)."""

    images: dict[str, int]
    views: dict[str, int]
    takes: int


SCALES = {
    "full": Scale({"train": 2000, "val": 500, "test": 800}, {"train": 1200, "val": 300, "test": 500}, 50),
    "quick": Scale({"train": 800, "val": 200, "test": 300}, {"train": 500, "val": 150, "test": 200}, 12),
    "sample": Scale({"train": 200, "val": 60, "test": 60}, {"train": 120, "val": 40, "test": 40}, 4),
}


# ------------------------------------------------------------------------- sources


def read_idx(path: Path) -> np.ndarray:
    """Read an MNIST IDX file (optionally gzipped) into a numpy array."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_sources(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
    """MNIST images, labels and original test-set indices, and the FSDD recordings folder:
    from ../shared/data when given, else from the sample this package ships (CREDITS.md)."""
    if data_dir is not None:
        mnist, fsdd = data_dir / "mnist", data_dir / "fsdd" / "recordings"
        for need in (mnist / "t10k-images-idx3-ubyte.gz", fsdd):
            if not need.exists():
                raise FileNotFoundError(f"{need} not found: --data must hold mnist/ and fsdd/recordings/")
        images = read_idx(mnist / "t10k-images-idx3-ubyte.gz")
        return images, read_idx(mnist / "t10k-labels-idx1-ubyte.gz"), np.arange(len(images)), fsdd
    sample = np.load(SAMPLE_DIR / "mnist_sample.npz")
    return sample["images"], sample["labels"], sample["source_index"], SAMPLE_DIR / "fsdd"


# ------------------------------------------------------------------------- renderer


def render_depth(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An embossed digit seen by a depth sensor: uint16 millimetres, 0 = no reading.

    A tilted background plane about a metre away, the strokes raised up to ~12 cm with
    soft edges, Kinect-like noise growing with depth squared, quantisation to whole mm,
    and holes: random dropout blobs and missing readings on steep edges.
    """
    size = 56
    height = np.asarray(Image.fromarray(digit).resize((size, size), Image.BILINEAR)
                        .filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32) / 255.0
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(900, 1400) + rng.uniform(-120, 120) * xx + rng.uniform(-120, 120) * yy
    depth = base - height * rng.uniform(80, 140)
    depth += rng.normal(0, 1, depth.shape) * 1.5e-6 * depth**2  # ~1.5 mm at 1 m
    gy, gx = np.gradient(height)
    holes = (np.hypot(gx, gy) > 0.22) & (rng.random(depth.shape) < 0.5)
    for _ in range(rng.integers(1, 4)):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [rng.uniform(2, 6)]
        holes |= (yy * size - cy) ** 2 + (xx * size - cx) ** 2 < r * r
    depth[holes] = 0
    return np.clip(np.round(depth), 0, 65535).astype(np.uint16)


def render_thermal(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A warm digit on a cooler background, as a white-hot thermal camera shows it: heat
    diffuses (strong blur), the ambient has a gradient, the sensor adds noise and fixed
    column stripes. uint8 grey, the way 8-bit thermal exports are stored."""
    size = 56
    heat = np.asarray(Image.fromarray(digit).resize((size, size), Image.BILINEAR)
                      .filter(ImageFilter.GaussianBlur(rng.uniform(2.0, 3.5))), dtype=np.float32) / 255.0
    yy, xx = np.mgrid[0:size, 0:size] / size
    ambient = 20 + rng.uniform(-3, 3) * xx + rng.uniform(-3, 3) * yy
    temp = ambient + heat * rng.uniform(8, 15) + rng.normal(0, 0.3, heat.shape) + rng.normal(0, 0.2, (1, size))
    lo, hi = temp.min(), temp.max()
    return np.round((temp - lo) / (hi - lo) * 255).astype(np.uint8)


# ------------------------------------------------------------------------- the world


def _prompts(templates: list[str]) -> list[tuple[str, str]]:
    return [(t.format(w=w, n=d), w) for d, w in enumerate(WORDS) for t in templates]


def build_digits_world(out: str | Path, scale: str = "quick", data_dir: str | Path | None = None,
                       seed: int = 0) -> Path:
    """Write the digits world under `out` and return it; rebuilt only if missing or different.

    `data_dir` is ../shared/data (the full sources); None uses the shipped sample.
    The folder holds one folder per split (train/, val/, test/, each with image/, depth/,
    thermal/, audio/, text/ and the indexer's metadata.csv sidecar), so a split can be
    indexed on its own, and the training manifest manifest.csv with columns path,
    modality, label, pair, split (label = the digit's word).
    """
    out = Path(out)
    spec = SCALES[scale]
    stamp = f"digits-world v3 scale={scale} seed={seed} data={'shared' if data_dir else 'sample'}"
    if (out / "manifest.csv").exists() and (out / "WORLD").exists() and (out / "WORLD").read_text() == stamp:
        log.info("digits world already at %s (%s)", out, stamp)
        return out
    if out.exists():
        shutil.rmtree(out)
    images, labels, mnist_index, fsdd = load_sources(Path(data_dir) if data_dir else None)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    for split in SPEAKERS:
        for sub in ("image", "depth", "thermal", "audio", "text"):
            (out / split / sub).mkdir(parents=True, exist_ok=True)

    for split, (lo, hi) in MNIST_RANGES.items():
        order = rng.permutation(np.flatnonzero((mnist_index >= lo) & (mnist_index < hi)))
        n_img, n_view = spec.images[split], spec.views[split]
        img_idx, depth_idx, thermal_idx = order[:n_img], order[n_img : n_img + n_view], order[n_img + n_view : n_img + 2 * n_view]
        if len(thermal_idx) < n_view:
            raise ValueError(f"not enough MNIST digits for scale {scale!r} in split {split}")
        # In training, each view's source image is an image item too (the depth-image pair);
        # in val/test the views come from other digits than the image items.
        image_items = list(img_idx) + (list(depth_idx) + list(thermal_idx) if split == "train" else [])
        for i in image_items:
            rel = f"{split}/image/mnist_{mnist_index[i]:05d}.png"
            Image.fromarray(images[i]).save(out / rel)
            rows.append({"path": rel, "modality": "image", "label": WORDS[labels[i]], "pair": f"mnist_{mnist_index[i]:05d}", "split": split})
        for kind, idx, render in (("depth", depth_idx, render_depth), ("thermal", thermal_idx, render_thermal)):
            for i in idx:
                j = int(mnist_index[i])
                rel = f"{split}/{kind}/{kind}_{j:05d}.png"
                Image.fromarray(render(images[i], np.random.default_rng([seed, j, len(kind)]))).save(out / rel)
                rows.append({"path": rel, "modality": kind, "label": WORDS[labels[i]], "pair": f"mnist_{j:05d}", "split": split})

    for split, speakers in SPEAKERS.items():
        for speaker in speakers:
            for digit in range(10):
                for take in range(spec.takes):
                    src = next((p for p in (fsdd / f"{digit}_{speaker}_{take}.wav", fsdd / f"{digit}_{speaker}_{take}.flac") if p.exists()), None)
                    if src is None:
                        continue
                    rel = f"{split}/audio/{src.name}"
                    shutil.copyfile(src, out / rel)
                    rows.append({"path": rel, "modality": "audio", "label": WORDS[digit], "pair": "", "split": split})

    for split, templates in (("train", TRAIN_TEMPLATES), ("val", EVAL_TEMPLATES), ("test", EVAL_TEMPLATES)):
        for k, (text, word) in enumerate(_prompts(templates)):
            rel = f"{split}/text/{word}_{k % len(templates)}.txt"
            (out / rel).write_text(text + "\n", encoding="utf-8")
            rows.append({"path": rel, "modality": "text", "label": word, "pair": "", "split": split})

    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "modality", "label", "pair", "split"])
        writer.writeheader()
        writer.writerows(rows)
    # Each split folder gets the indexer's sidecar (labels and pair keys, paths relative to it).
    for split in SPEAKERS:
        with open(out / split / "metadata.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "pair"])
            writer.writerows([r["path"].split("/", 1)[1], r["label"], r["pair"]] for r in rows if r["split"] == split)
    (out / "WORLD").write_text(stamp)
    counts = {m: sum(r["modality"] == m for r in rows) for m in ("image", "depth", "thermal", "audio", "text")}
    log.info("digits world (%s) written to %s: %s", scale, out, counts)
    return out
