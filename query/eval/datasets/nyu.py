"""NYU-Depth v2: RGB-D frames of indoor scenes, scene-type labels."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require

from query.eval.datasets.common import (CACHE_DIRNAME, DatasetItem, DatasetLayoutError, NYU_OTHERS, NYU_SCENES_10,
                                        _find, _frame_file, _load_matlab,
                                        _metres_to_mm, _non_empty, _relabel,
                                        _write_png)

log = logging.getLogger(__name__)

NYU_LAYOUT = """
  either the official files:
    <root>/nyu_depth_v2_labeled.mat   (MATLAB v7.3: images, depths, rawDepths, sceneTypes)
    <root>/splits.mat                 (trainNdxs, testNdxs; 1-based frame numbers)
  or the frames extracted by BTS' extract_official_train_test_set_from_mat.py:
    <root>/official_splits/{train,test}/<scene type>/rgb_00000.jpg, sync_depth_00000.png
"""


def nyu(root: Path, cache_dir: str | Path | None = None, scenes: str = "10", raw_depth: bool = False) -> list[DatasetItem]:
    """NYU-Depth v2 labelled set (1449 frames): an image and a depth record per frame.

    From `nyu_depth_v2_labeled.mat` the frames are extracted once into `cache_dir`
    (default `<root>/ebridge_cache/nyu_depth_v2/`): `rgb/00001.png` (8-bit RGB) and
    `depth/00001.png` (16-bit millimetres; `depths`, or the sensor's `rawDepths` with
    `raw_depth=True`). Frame numbers are the 1-based indices `splits.mat` uses; without
    `splits.mat` every frame is marked "test" (a warning says so).

    `scenes="10"` maps the 27 scene types to the 10-class protocol (`NYU_SCENES_10` and
    "others"); `scenes="all"` keeps them as they are.

    Example:
        >>> records = nyu(Path("nyu"), cache_dir="/tmp/nyu-frames")  # doctest: +SKIP
        >>> {r.modality for r in records}  # doctest: +SKIP
        {'image', 'depth'}
    """
    if scenes not in ("10", "all"):
        raise ValueError(f"scenes must be '10' or 'all', got {scenes!r}")
    mat_root = _find(root, "nyu_depth_v2_labeled.mat")
    if mat_root is not None:
        records = _nyu_from_mat(mat_root, Path(cache_dir) if cache_dir else mat_root / CACHE_DIRNAME, raw_depth)
    else:
        extracted = _find(root, "official_splits")
        if extracted is None:
            raise DatasetLayoutError("nyu", root, "found neither nyu_depth_v2_labeled.mat nor official_splits/",
                                     NYU_LAYOUT)
        records = _nyu_from_extracted(extracted / "official_splits")
    if scenes == "10":
        records = [_relabel(r, r.label if r.label in NYU_SCENES_10 else NYU_OTHERS) for r in records]
    return _non_empty(records, "nyu", root, "no frames found", NYU_LAYOUT)


def _nyu_from_mat(root: Path, cache_dir: Path, raw_depth: bool) -> list[DatasetItem]:
    h5py = require("h5py", "reading NYU-Depth v2's MATLAB v7.3 file")
    mat = root / "nyu_depth_v2_labeled.mat"
    depth_key = "rawDepths" if raw_depth else "depths"
    out = cache_dir / "nyu_depth_v2"
    rgb_dir, depth_dir = out / "rgb", out / ("raw_depth" if raw_depth else "depth")
    try:
        f = h5py.File(mat, "r")
    except OSError as exc:
        problem = f"{mat.name} is not a MATLAB v7.3 (HDF5) file: {exc}"
        raise DatasetLayoutError("nyu", root, problem, NYU_LAYOUT) from None
    with f:
        for key in ("images", depth_key, "sceneTypes"):
            if key not in f:
                raise DatasetLayoutError("nyu", root, f"{mat.name} has no '{key}' dataset", NYU_LAYOUT)
        images, depths = f["images"], f[depth_key]
        n = images.shape[0]
        # MATLAB stores column-major, so h5py sees images as (N, 3, W, H) and depths as (N, W, H).
        if images.ndim != 4 or images.shape[1] != 3 or depths.shape != (n, images.shape[2], images.shape[3]):
            raise DatasetLayoutError(
                "nyu", root, f"unexpected shapes images {images.shape}, {depth_key} {depths.shape}", NYU_LAYOUT
            )
        scene_types = [_matlab_string(f, ref) for ref in np.asarray(f["sceneTypes"]).ravel()]
        if len(scene_types) != n:
            raise DatasetLayoutError("nyu", root, f"{len(scene_types)} sceneTypes for {n} frames", NYU_LAYOUT)
        todo = [i for i in range(n)
                if not (_frame_file(rgb_dir, i + 1).is_file() and _frame_file(depth_dir, i + 1).is_file())]
        if todo:
            log.info("nyu: extracting %d of %d frames from %s into %s (once)", len(todo), n, mat, out)
            rgb_dir.mkdir(parents=True, exist_ok=True)
            depth_dir.mkdir(parents=True, exist_ok=True)
            for i in todo:
                _write_png(_frame_file(rgb_dir, i + 1), np.ascontiguousarray(images[i].transpose(2, 1, 0)))
                _write_png(_frame_file(depth_dir, i + 1), _metres_to_mm(np.asarray(depths[i]).T))
    splits = _nyu_splits(root, n)
    records = []
    for i, scene in enumerate(scene_types):
        frame, split = i + 1, splits[i]
        records.append(DatasetItem(str(_frame_file(rgb_dir, frame)), "image", scene, None, f"nyu:{frame}", split))
        records.append(DatasetItem(str(_frame_file(depth_dir, frame)), "depth", scene, None, f"nyu:{frame}", split))
    return records


def _nyu_splits(root: Path, n: int) -> list[str]:
    path = root / "splits.mat"
    if not path.is_file():
        log.warning("nyu: %s not found, so every frame is marked 'test'; get splits.mat (trainNdxs/testNdxs) "
                    "from the NYU-Depth v2 page to tell train from test", path)
        return ["test"] * n
    mat = _load_matlab(path)
    if "trainNdxs" not in mat or "testNdxs" not in mat:
        raise DatasetLayoutError("nyu", root, "splits.mat has no trainNdxs/testNdxs", NYU_LAYOUT)
    split = ["train"] * n  # frames in neither list (none, in the official file) count as train
    for frame in np.asarray(mat["testNdxs"]).ravel().astype(int):
        if not 1 <= frame <= n:
            raise DatasetLayoutError("nyu", root, f"splits.mat names frame {frame}, outside 1..{n}", NYU_LAYOUT)
        split[frame - 1] = "test"
    return split


def _nyu_from_extracted(split_root: Path) -> list[DatasetItem]:
    records = []
    for split in ("train", "test"):
        for rgb in sorted((split_root / split).glob("*/rgb_*.jpg")):
            index = rgb.stem.split("_")[-1]
            depth = rgb.with_name(f"sync_depth_{index}.png")
            if not depth.is_file():
                continue
            frame = int(index) + 1  # BTS numbers frames from 0; splits.mat and our cache from 1
            scene = rgb.parent.name
            records.append(DatasetItem(str(rgb.resolve()), "image", scene, None, f"nyu:{frame}", split))
            records.append(DatasetItem(str(depth.resolve()), "depth", scene, None, f"nyu:{frame}", split))
    return records


def _matlab_string(f: Any, ref: Any) -> str:
    # A MATLAB char array in a v7.3 file is a uint16 dataset of UTF-16 code units.
    return "".join(chr(int(c)) for c in np.asarray(f[ref]).ravel())


