"""SUN RGB-D: RGB-D frames from four sensors, 19 scene types."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from query.eval.datasets.common import (CACHE_DIRNAME, DatasetItem, DatasetLayoutError, SUNRGBD_SCENES_19, _find,
                                        _first_file, _load_matlab, _non_empty,
                                        _read_uint16_png, _strings, _write_png)

log = logging.getLogger(__name__)

SUNRGBD_LAYOUT = """
  <root>/SUNRGBD/<sensor>/<...>/<frame dir>/    (the official SUNRGBD.zip)
      image/<name>.jpg
      depth/<name>.png  and  depth_bfx/<name>.png  (16-bit, bits rotated: see below)
      scene.txt                                   (the scene type, e.g. 'bedroom')
  <root>/SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat   (optional: the official split)
"""


def sunrgbd(root: Path, cache_dir: str | Path | None = None, scenes: str = "19",
            raw_depth: bool = False) -> list[DatasetItem]:
    """SUN RGB-D (10,335 frames): an image and a depth record per frame, labelled from scene.txt.

    SUN RGB-D's depth PNGs store millimetres rotated left by 3 bits; the official toolbox
    (read3dPoints.m) decodes `bitor(bitshift(d,-3), bitshift(d,16-3))`. Our depth loader
    reads 16-bit PNGs as plain millimetres, so each map is decoded once into
    `cache_dir/sunrgbd/<frame dir>/depth_mm.png` (default cache under `<root>/ebridge_cache`).
    `depth_bfx/` (the toolbox's hole-filled maps, the default) or `depth/` with `raw_depth=True`.

    Splits come from `allsplit.mat` (alltest -> test, trainvalsplit.val -> val, the rest of
    alltrain -> train); without it every frame is marked "test" with a warning.
    `scenes="19"` keeps only frames of the 19-class protocol; `scenes="all"` keeps all.

    Example:
        >>> records = sunrgbd(Path("sunrgbd"))  # doctest: +SKIP
        >>> records[0].label  # doctest: +SKIP
        'bathroom'
    """
    if scenes not in ("19", "all"):
        raise ValueError(f"scenes must be '19' or 'all', got {scenes!r}")
    base = _find(root, "SUNRGBD")
    if base is None and root.name == "SUNRGBD" and root.is_dir():
        base = root.parent
    if base is None:
        raise DatasetLayoutError("sunrgbd", root, "no SUNRGBD/ folder", SUNRGBD_LAYOUT)
    sun = base / "SUNRGBD"
    cache = (Path(cache_dir) if cache_dir else base / CACHE_DIRNAME) / "sunrgbd"
    splits = _sunrgbd_splits(base, root)
    records, dropped, no_depth = [], 0, 0
    for frame_dir in _sunrgbd_frame_dirs(sun):
        key = "SUNRGBD/" + frame_dir.relative_to(sun).as_posix()
        scene = (frame_dir / "scene.txt").read_text(encoding="utf-8", errors="replace").strip()
        if scenes == "19" and scene not in SUNRGBD_SCENES_19:
            dropped += 1
            continue
        rgb = _first_file(frame_dir / "image", (".jpg", ".jpeg", ".png"))
        raw = None
        for folder in (("depth",) if raw_depth else ("depth_bfx", "depth")):
            raw = _first_file(frame_dir / folder, (".png",))
            if raw is not None:
                break
        if rgb is None or raw is None:
            no_depth += 1
            continue
        depth_mm = cache / key / ("raw_depth_mm.png" if raw_depth else "depth_mm.png")
        if not depth_mm.is_file() or depth_mm.stat().st_mtime < raw.stat().st_mtime:
            _write_png(depth_mm, decode_sunrgbd_depth(_read_uint16_png(raw, SUNRGBD_LAYOUT)))
        split = splits.get(key, "test") if splits else "test"
        records.append(DatasetItem(str(rgb.resolve()), "image", scene, None, f"sunrgbd:{key}", split))
        records.append(DatasetItem(str(depth_mm.resolve()), "depth", scene, None, f"sunrgbd:{key}", split))
    if dropped:
        log.info("sunrgbd: %d frames outside the 19 scene classes left out (scenes='all' keeps them)", dropped)
    if no_depth:
        log.warning("sunrgbd: %d frame folders lack an image/ or depth file and were skipped", no_depth)
    return _non_empty(records, "sunrgbd", root, "no frame folder with scene.txt, image/ and depth", SUNRGBD_LAYOUT)


def decode_sunrgbd_depth(raw: np.ndarray) -> np.ndarray:
    """SUN RGB-D depth PNG values -> uint16 millimetres: a 16-bit rotate right by 3 bits.

    Example:
        >>> decode_sunrgbd_depth(np.array([[1234 << 3]], dtype=np.uint16))
        array([[1234]], dtype=uint16)
    """
    raw = np.asarray(raw).astype(np.uint16)
    return ((raw >> 3) | (raw << 13)).astype(np.uint16)


def _sunrgbd_frame_dirs(sun: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(sun):
        if "scene.txt" in filenames and "image" in dirnames:
            found.append(Path(dirpath))
            dirnames[:] = []  # a frame folder holds annotations and fullres/, never another frame
        else:
            dirnames.sort()
    return sorted(found)


def _sunrgbd_splits(base: Path, root: Path) -> dict[str, str]:
    candidates = [base / "SUNRGBDtoolbox" / "traintestSUNRGBD" / "allsplit.mat", base / "allsplit.mat",
                  root / "allsplit.mat"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        log.warning("sunrgbd: no allsplit.mat (looked for %s), so every frame is marked 'test'; "
                    "it comes with SUNRGBDtoolbox.zip", candidates[0])
        return {}
    mat = _load_matlab(path)

    def keys(value: Any) -> list[str]:
        # Entries are absolute paths on the authors' machine, e.g. /n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU0001
        out = []
        for s in _strings(value):
            s = s.replace("\\", "/").rstrip("/")
            at = s.find("SUNRGBD/")
            if at >= 0:
                out.append(s[at:])
        return out

    split: dict[str, str] = {}
    for k in keys(mat.get("alltrain", [])):
        split[k] = "train"
    trainval = mat.get("trainvalsplit")
    if isinstance(trainval, dict):
        for k in keys(trainval.get("val", [])):
            split[k] = "val"
    for k in keys(mat.get("alltest", [])):
        split[k] = "test"
    if not split:
        raise DatasetLayoutError("sunrgbd", root, f"{path} has no alltrain/alltest lists", SUNRGBD_LAYOUT)
    return split


