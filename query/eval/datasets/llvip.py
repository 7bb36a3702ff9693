"""LLVIP: visible/infrared image pairs of street scenes, person crops."""
from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from query.eval.datasets.common import (CACHE_DIRNAME, DatasetItem, DatasetLayoutError, LLVIP_CLASSES, _atomic_save,
                                        _locate, _non_empty)

log = logging.getLogger(__name__)

LLVIP_LAYOUT = """
  <root>/                       (github.com/bupt-ai-cz/LLVIP)
    visible/{train,test}/<id>.jpg
    infrared/{train,test}/<id>.jpg    (same <id> = the same moment, aligned)
    Annotations/<id>.xml              (person boxes; needed for person_crops=True)
"""


def llvip(root: Path, person_crops: bool = False, cache_dir: str | Path | None = None, seed: int = 0) -> list[DatasetItem]:
    """LLVIP: aligned visible (image) and infrared (thermal) frames paired by file name.

    By default one image and one thermal record per frame, `label=None` (nearly every
    LLVIP frame shows people, so a frame-level label would say nothing): the records
    for infrared <-> visible retrieval.

    With `person_crops=True` (the zero-shot "infrared top-1" of ImageBind-style papers):
    every person box of `Annotations/<id>.xml` is cut from both frames, plus one
    background box per frame of the size of a person box but touching none, placed by
    a seeded draw. Crops go to `cache_dir/llvip_crops/` (default under
    `<root>/ebridge_cache`), labelled "person" or "background"; each crop's visible and
    infrared cut share a pair key. `class_prompts` turns the labels into
    "a photo of a person" / "a photo of an empty street".

    Example:
        >>> records = llvip(Path("LLVIP"))  # doctest: +SKIP
        >>> sorted({r.modality for r in records})  # doctest: +SKIP
        ['image', 'thermal']
    """
    root = _locate(root, "infrared", "llvip", LLVIP_LAYOUT)
    if not (root / "visible").is_dir():
        raise DatasetLayoutError("llvip", root, "no visible/ folder", LLVIP_LAYOUT)
    frames: list[tuple[str, Path, Path]] = []
    unpaired = 0
    for folder, split in (("train", "train"), ("test", "test")):
        for ir in sorted((root / "infrared" / folder).glob("*.jpg")):
            vis = root / "visible" / folder / ir.name
            if vis.is_file():
                frames.append((split, vis, ir))
            else:
                unpaired += 1
    if unpaired:
        log.warning("llvip: %d infrared frames have no visible frame of the same name; skipped", unpaired)
    if not frames:
        raise DatasetLayoutError("llvip", root, "no infrared/<split>/*.jpg with a visible twin", LLVIP_LAYOUT)
    if not person_crops:
        records = []
        for split, vis, ir in frames:
            key = f"llvip:{split}/{ir.stem}"
            records.append(DatasetItem(str(vis.resolve()), "image", None, None, key, split))
            records.append(DatasetItem(str(ir.resolve()), "thermal", None, None, key, split))
        return records
    return _llvip_crops(root, frames, (Path(cache_dir) if cache_dir else root / CACHE_DIRNAME) / "llvip_crops", seed)


def _llvip_crops(root: Path, frames: list[tuple[str, Path, Path]], out: Path, seed: int) -> list[DatasetItem]:
    from PIL import Image

    records, unannotated = [], 0
    for split, vis, ir in frames:
        xml = root / "Annotations" / f"{ir.stem}.xml"
        if not xml.is_file():
            unannotated += 1
            continue
        boxes = _voc_boxes(xml, "person")
        # A fresh generator per frame, seeded by its name, so a frame's background box
        # does not move when other frames are added or removed.
        rng = np.random.default_rng([seed, int(hashlib.sha1(ir.stem.encode()).hexdigest()[:8], 16)])
        with Image.open(vis) as vim, Image.open(ir) as iim:
            width, height = iim.size
            person, background_label = LLVIP_CLASSES
            crops = [(f"p{k}", person, box) for k, box in enumerate(boxes)]
            background = _background_box(boxes, width, height, rng)
            if background is not None:
                crops.append(("bg", background_label, background))
            for tag, label, box in crops:
                key = f"llvip:{split}/{ir.stem}/{tag}"
                paths = []
                for im, kind in ((vim, "visible"), (iim, "infrared")):
                    # the background box depends on the seed, so its file name carries it
                    name = f"{ir.stem}_{tag}.png" if label == person else f"{ir.stem}_{tag}_seed{seed}.png"
                    path = out / split / kind / name
                    if not path.is_file():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        _atomic_save(im.crop(box), path)
                    paths.append(path)
                records.append(DatasetItem(str(paths[0].resolve()), "image", label, None, key, split))
                records.append(DatasetItem(str(paths[1].resolve()), "thermal", label, None, key, split))
    if unannotated:
        log.warning("llvip: %d frames have no Annotations/<id>.xml; left out of the crops", unannotated)
    return _non_empty(records, "llvip", root, "no annotated frames for person_crops", LLVIP_LAYOUT)


def _voc_boxes(xml: Path, name: str) -> list[tuple[int, int, int, int]]:
    boxes = []
    for obj in ET.parse(xml).getroot().iter("object"):
        if (obj.findtext("name") or "").strip() != name:
            continue
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (int(float(bb.findtext(t) or 0)) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x1 - x0 >= 2 and y1 - y0 >= 2:  # degenerate boxes make crops the loaders refuse
            boxes.append((x0, y0, x1, y1))
    return boxes


def _background_box(boxes: list[tuple[int, int, int, int]], width: int, height: int,
                    rng: np.random.Generator, tries: int = 50) -> tuple[int, int, int, int] | None:
    if boxes:  # a person-sized box, so size alone does not give the class away
        x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
        w, h = x1 - x0, y1 - y0
    else:
        w, h = width // 8, height // 4
    if w >= width or h >= height:
        return None
    for _ in range(tries):
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        if all(x + w <= a or x >= c or y + h <= b or y >= d for a, b, c, d in boxes):
            return (x, y, x + w, y + h)
    return None


