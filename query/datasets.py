"""Adapters from the on-disk layouts of standard datasets to one list of `Record`s.

A user who has downloaded a dataset points `load_dataset` at its folder and gets records
the benchmark can embed, label and pair, without writing a loader:

| name        | modalities     | label              | pair key links         | splits                            |
|-------------|----------------|--------------------|------------------------|-----------------------------------|
| `esc50`     | audio          | category           | (none)                 | folds 1-3 train, 4 val, 5 test    |
| `nyu`       | image, depth   | scene (10 classes) | rgb + depth of a frame | `splits.mat` (795 / 654)          |
| `sunrgbd`   | image, depth   | scene (19 classes) | rgb + depth of a frame | `allsplit.mat` (train/val/test)   |
| `llvip`     | image, thermal | person crops only  | visible + infrared     | `train` / `test` folders          |
| `audiocaps` | audio, text    | (none)             | clip + its captions    | `train` / `val` / `test` csv      |
| `clotho`    | audio, text    | (none)             | clip + its 5 captions  | development / validation / evaluation |

Conventions shared by every adapter:
- `path` is absolute. Text records (captions) have `path=""` and the caption in `text`;
  `Record.source` is what to hand to `bridge.modalities.load` for any record.
- `pair` is prefixed with the dataset name (`"clotho:evaluation/x.wav"`) so records of
  several datasets can be mixed without accidental pairs.
- Depth maps the loaders cannot read as they are (NYU's MATLAB file, SUN RGB-D's
  bit-rotated PNGs) are converted once into a cache of 16-bit millimetre PNGs, the form
  `bridge.modalities.load_depth` reads; later calls reuse the cache.
- A folder that does not match raises `DatasetLayoutError`, whose message draws the
  expected layout.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.deps import require
from bridge.errors import EmergentBridgeError
from bridge.modalities import AUDIO_EXTS, MODALITIES

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
CACHE_DIRNAME = "ebridge_cache"  # made inside the dataset root unless `cache_dir` is given

# The scene classes of the papers' protocols. NYU: the 9 most frequent scene types plus
# "others" (Gupta et al., CVPR 2013; the setting Omnivore and ImageBind report). SUN RGB-D:
# the 19 scene types with more than 80 images (Song et al., CVPR 2015).
NYU_SCENES_10: tuple[str, ...] = (
    "bathroom", "bedroom", "bookstore", "classroom", "dining_room",
    "home_office", "kitchen", "living_room", "office",
)
NYU_OTHERS = "others"
SUNRGBD_SCENES_19: tuple[str, ...] = (
    "bathroom", "bedroom", "classroom", "computer_room", "conference_room", "corridor",
    "dining_area", "dining_room", "discussion_area", "furniture_store", "home_office",
    "kitchen", "lab", "lecture_theatre", "library", "living_room", "office", "rest_space",
    "study_space",
)
LLVIP_CLASSES: tuple[str, ...] = ("person", "background")


@dataclass(frozen=True)
class Record:
    """One item of a dataset, in the shape every adapter returns.

    Example:
        >>> r = Record(path="", modality="text", label=None, text="a dog barks", pair="clotho:x", split="test")
        >>> r.source
        'a dog barks'
    """

    path: str  # absolute file path; "" for a caption, whose words are in `text`
    modality: str  # one of bridge.modalities.MODALITIES
    label: str | None  # class name, for datasets with classes
    text: str | None  # the caption, on text records of captioned datasets
    pair: str | None  # records of different modalities with the same key are paired
    split: str  # "train" | "val" | "test"

    @property
    def source(self) -> str:
        """What `bridge.modalities.load(self.modality, ...)` decodes: the file, or the caption."""
        return self.path or (self.text or "")


class DatasetLayoutError(EmergentBridgeError, FileNotFoundError):
    """A dataset folder does not have the layout its adapter reads."""

    def __init__(self, dataset: str, root: str | Path, problem: str, expected: str):
        self.dataset, self.root = dataset, str(root)
        super().__init__(
            f"{root}: not a {dataset} folder ({problem}).\nExpected layout:\n{expected.strip(chr(10))}"
        )


# --------------------------------------------------------------------------- ESC-50

ESC50_LAYOUT = """
  <root>/                      (a clone of github.com/karolpiczak/ESC-50)
    audio/1-100032-A-0.wav ...  (2000 five-second clips)
    meta/esc50.csv              (filename,fold,target,category,esc10,src_file,take)
"""


def esc50(root: Path, test_folds: Sequence[int] = (5,), val_folds: Sequence[int] = (4,)) -> list[Record]:
    """ESC-50: one audio record per clip, labelled with its category.

    ESC-50 is meant for 5-fold cross-validation; for one fixed split we take fold 5 as
    test and fold 4 as val (change with `test_folds`, `val_folds`). Zero-shot papers
    (ImageBind) score all 2000 clips: use every record and ignore `split`.

    Example:
        >>> records = esc50(Path("ESC-50-master"))  # doctest: +SKIP
        >>> records[0].label, records[0].split  # doctest: +SKIP
        ('dog', 'train')
    """
    root = _locate(root, "meta/esc50.csv", "esc50", ESC50_LAYOUT)
    rows = _read_csv(root / "meta" / "esc50.csv", {"filename", "fold", "category"}, "esc50", ESC50_LAYOUT)
    records, missing = [], 0
    for row in rows:
        path = root / "audio" / row["filename"]
        if not path.is_file():
            missing += 1
            continue
        fold = int(row["fold"])
        split = "test" if fold in test_folds else "val" if fold in val_folds else "train"
        records.append(Record(str(path), "audio", row["category"], None, None, split))
    _report_missing("esc50", missing, len(rows), root / "audio")
    return _non_empty(records, "esc50", root, "no clip listed in meta/esc50.csv is in audio/", ESC50_LAYOUT)


# ----------------------------------------------------------------------- NYU-Depth v2

NYU_LAYOUT = """
  either the official files:
    <root>/nyu_depth_v2_labeled.mat   (MATLAB v7.3: images, depths, rawDepths, sceneTypes)
    <root>/splits.mat                 (trainNdxs, testNdxs; 1-based frame numbers)
  or the frames extracted by BTS' extract_official_train_test_set_from_mat.py:
    <root>/official_splits/{train,test}/<scene type>/rgb_00000.jpg, sync_depth_00000.png
"""


def nyu(root: Path, cache_dir: str | Path | None = None, scenes: str = "10", raw_depth: bool = False) -> list[Record]:
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


def _nyu_from_mat(root: Path, cache_dir: Path, raw_depth: bool) -> list[Record]:
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
        records.append(Record(str(_frame_file(rgb_dir, frame)), "image", scene, None, f"nyu:{frame}", split))
        records.append(Record(str(_frame_file(depth_dir, frame)), "depth", scene, None, f"nyu:{frame}", split))
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


def _nyu_from_extracted(split_root: Path) -> list[Record]:
    records = []
    for split in ("train", "test"):
        for rgb in sorted((split_root / split).glob("*/rgb_*.jpg")):
            index = rgb.stem.split("_")[-1]
            depth = rgb.with_name(f"sync_depth_{index}.png")
            if not depth.is_file():
                continue
            frame = int(index) + 1  # BTS numbers frames from 0; splits.mat and our cache from 1
            scene = rgb.parent.name
            records.append(Record(str(rgb.resolve()), "image", scene, None, f"nyu:{frame}", split))
            records.append(Record(str(depth.resolve()), "depth", scene, None, f"nyu:{frame}", split))
    return records


def _matlab_string(f: Any, ref: Any) -> str:
    # A MATLAB char array in a v7.3 file is a uint16 dataset of UTF-16 code units.
    return "".join(chr(int(c)) for c in np.asarray(f[ref]).ravel())


# ------------------------------------------------------------------------ SUN RGB-D

SUNRGBD_LAYOUT = """
  <root>/SUNRGBD/<sensor>/<...>/<frame dir>/    (the official SUNRGBD.zip)
      image/<name>.jpg
      depth/<name>.png  and  depth_bfx/<name>.png  (16-bit, bits rotated: see below)
      scene.txt                                   (the scene type, e.g. 'bedroom')
  <root>/SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat   (optional: the official split)
"""


def sunrgbd(root: Path, cache_dir: str | Path | None = None, scenes: str = "19",
            raw_depth: bool = False) -> list[Record]:
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
            _write_png(depth_mm, decode_sunrgbd_depth(_read_uint16_png(raw)))
        split = splits.get(key, "test") if splits else "test"
        records.append(Record(str(rgb.resolve()), "image", scene, None, f"sunrgbd:{key}", split))
        records.append(Record(str(depth_mm.resolve()), "depth", scene, None, f"sunrgbd:{key}", split))
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


# --------------------------------------------------------------------------- LLVIP

LLVIP_LAYOUT = """
  <root>/                       (github.com/bupt-ai-cz/LLVIP)
    visible/{train,test}/<id>.jpg
    infrared/{train,test}/<id>.jpg    (same <id> = the same moment, aligned)
    Annotations/<id>.xml              (person boxes; needed for person_crops=True)
"""


def llvip(root: Path, person_crops: bool = False, cache_dir: str | Path | None = None, seed: int = 0) -> list[Record]:
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
            records.append(Record(str(vis.resolve()), "image", None, None, key, split))
            records.append(Record(str(ir.resolve()), "thermal", None, None, key, split))
        return records
    return _llvip_crops(root, frames, (Path(cache_dir) if cache_dir else root / CACHE_DIRNAME) / "llvip_crops", seed)


def _llvip_crops(root: Path, frames: list[tuple[str, Path, Path]], out: Path, seed: int) -> list[Record]:
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
                records.append(Record(str(paths[0].resolve()), "image", label, None, key, split))
                records.append(Record(str(paths[1].resolve()), "thermal", label, None, key, split))
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


# ------------------------------------------------------------------------ AudioCaps

AUDIOCAPS_LAYOUT = """
  <root>/                             (a clone of github.com/cdjkim/audiocaps)
    dataset/{train,val,test}.csv      (audiocap_id,youtube_id,start_time,caption)
    audio/{train,val,test}/<youtube_id>.wav   (downloaded by you; also accepted:
                                      Y<youtube_id>.wav, <audiocap_id>.wav, .flac,
                                      or all clips directly in audio/)
"""


def audiocaps(root: Path) -> list[Record]:
    """AudioCaps: one audio record per clip and one text record per caption, paired by clip.

    The csv lists YouTube clips that users download themselves, and some always fail;
    rows without a file are skipped and counted in one warning per split. In val and
    test each clip has five captions (five rows, one youtube_id); in train one.

    Example:
        >>> records = audiocaps(Path("audiocaps"))  # doctest: +SKIP
        >>> [r.text for r in records if r.modality == "text"][:1]  # doctest: +SKIP
        ['A man speaks as birds chirp']
    """
    found = _find(root, "dataset/test.csv") or _find(root, "dataset/train.csv")
    if found is None:
        raise DatasetLayoutError("audiocaps", root, "no dataset/{train,val,test}.csv", AUDIOCAPS_LAYOUT)
    root = found
    records: list[Record] = []
    for split in SPLITS:
        table = root / "dataset" / f"{split}.csv"
        if not table.is_file():
            continue
        rows = _read_csv(table, {"audiocap_id", "youtube_id", "caption"}, "audiocaps", AUDIOCAPS_LAYOUT)
        # One listing per folder, not a stat per guessed name: train has 49k clips.
        audio_files = _audio_index([root / "audio" / split, root / "audio", root / split])
        clips: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in rows:
            clips[row["youtube_id"]].append(row)
        missing = 0
        for youtube_id, clip_rows in clips.items():
            names = [youtube_id, f"Y{youtube_id}", *(f"{youtube_id}_{r['start_time']}" for r in clip_rows),
                     *(r["audiocap_id"] for r in clip_rows)]
            audio = next((audio_files[n] for n in names if n in audio_files), None)
            if audio is None:
                missing += 1
                continue
            key = f"audiocaps:{youtube_id}"
            records.append(Record(str(audio.resolve()), "audio", None, None, key, split))
            for row in clip_rows:
                caption = row["caption"].strip()
                if caption:
                    records.append(Record("", "text", None, caption, key, split))
        _report_missing(f"audiocaps {split}", missing, len(clips), root / "audio" / split)
    return _non_empty(records, "audiocaps", root, "no clip of the csv files has an audio file", AUDIOCAPS_LAYOUT)


# --------------------------------------------------------------------------- Clotho

CLOTHO_LAYOUT = """
  <root>/                              (Clotho v2.1 from zenodo.org/records/4783391)
    clotho_captions_development.csv    (file_name,caption_1,...,caption_5)
    clotho_captions_validation.csv
    clotho_captions_evaluation.csv
    development/*.wav  validation/*.wav  evaluation/*.wav   (from the .7z archives)
  (csv files may also sit in clotho_csv_files/ and audio in clotho_audio_files/)
"""
_CLOTHO_SPLITS = {"development": "train", "validation": "val", "evaluation": "test"}


def clotho(root: Path) -> list[Record]:
    """Clotho v2.1: one audio record per clip and five caption records, paired by clip.

    Splits: development -> train, validation -> val, evaluation -> test (the set
    audio-retrieval papers report on).

    Example:
        >>> records = clotho(Path("clotho"))  # doctest: +SKIP
        >>> sum(r.modality == "text" for r in records if r.split == "test")  # doctest: +SKIP
        5225
    """
    records: list[Record] = []
    seen_csv = False
    for name, split in _CLOTHO_SPLITS.items():
        table = _first_existing([root, root / "clotho_csv_files"], [f"clotho_captions_{name}"], (".csv",))
        if table is None:
            continue
        seen_csv = True
        folders = [d for d in (root / name, root / "clotho_audio_files" / name) if d.is_dir()]
        rows = _read_csv(table, {"file_name", "caption_1"}, "clotho", CLOTHO_LAYOUT)
        missing = 0
        for row in rows:
            audio = next((d / row["file_name"] for d in folders if (d / row["file_name"]).is_file()), None)
            if audio is None:
                missing += 1
                continue
            key = f"clotho:{name}/{row['file_name']}"
            records.append(Record(str(audio.resolve()), "audio", None, None, key, split))
            for i in range(1, 6):
                caption = (row.get(f"caption_{i}") or "").strip()
                if caption:
                    records.append(Record("", "text", None, caption, key, split))
        _report_missing(f"clotho {name}", missing, len(rows), root / name)
    if not seen_csv:
        raise DatasetLayoutError("clotho", root, "no clotho_captions_<split>.csv", CLOTHO_LAYOUT)
    return _non_empty(records, "clotho", root, "no clip of the caption files has an audio file", CLOTHO_LAYOUT)


# ------------------------------------------------------------------- registry, prompts

ADAPTERS: dict[str, Callable[..., list[Record]]] = {
    "esc50": esc50,
    "nyu": nyu,
    "sunrgbd": sunrgbd,
    "llvip": llvip,
    "audiocaps": audiocaps,
    "clotho": clotho,
}
_ALIASES = {"esc-50": "esc50", "nyu-depth-v2": "nyu", "nyud": "nyu", "nyu-d": "nyu", "sun-rgbd": "sunrgbd",
            "sun-d": "sunrgbd", "sun": "sunrgbd"}


def load_dataset(name: str, root: str | Path, **options: Any) -> list[Record]:
    """Records of dataset `name` (a key of `ADAPTERS`) found under `root`.

    `options` go to the adapter (e.g. `cache_dir=`, `scenes="all"`, `person_crops=True`).

    Example:
        >>> records = load_dataset("esc50", "~/data/ESC-50-master")  # doctest: +SKIP
        >>> len(records)  # doctest: +SKIP
        2000
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in ADAPTERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(ADAPTERS)}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetLayoutError(key, path, "not a folder", _LAYOUTS[key])
    records = ADAPTERS[key](path.resolve(), **options)
    counts = defaultdict(int)
    for r in records:
        counts[(r.modality, r.split)] += 1
    log.info("%s: %d records from %s (%s)", key, len(records), path,
             ", ".join(f"{m}/{s}: {c}" for (m, s), c in sorted(counts.items())))
    return records


_LAYOUTS = {"esc50": ESC50_LAYOUT, "nyu": NYU_LAYOUT, "sunrgbd": SUNRGBD_LAYOUT, "llvip": LLVIP_LAYOUT,
            "audiocaps": AUDIOCAPS_LAYOUT, "clotho": CLOTHO_LAYOUT}

PROMPT_TEMPLATES: dict[str, str] = {
    "audio": "a sound of {}",
    "image": "a photo of {}",
    "depth": "a photo of {}",  # depth is bridged into the image space: describe the scene, not the sensor
    "thermal": "a photo of {}",
    "video": "a video of {}",
}
# Labels whose own words make a poor prompt.
_PROMPT_WORDS = {"background": "empty street", "others": "room"}
# Last words that take no "a": mass nouns and irregular plurals among ESC-50's categories.
_NO_ARTICLE = {"rain", "wind", "water", "fire", "teeth"}


def class_names(records: Iterable[Record]) -> list[str]:
    """The sorted class labels of `records`: the order `class_prompts` follows.

    Example:
        >>> class_names([Record("/a.wav", "audio", "dog", None, None, "test")])
        ['dog']
    """
    return sorted({r.label for r in records if r.label is not None})


def class_prompts(records: Iterable[Record], template: str | None = None, modality: str | None = None) -> list[str]:
    """One text prompt per class of `records`, in `class_names` order, for zero-shot scoring.

    The template defaults to one per modality of the labelled records (audio:
    "a sound of {}", pictures: "a photo of {}"); labels are turned into words
    ("crying_baby" -> "a crying baby", "office" -> "an office", "rain" -> "rain").

    Example:
        >>> rs = [Record("/a.wav", "audio", "crying_baby", None, None, "test")]
        >>> class_prompts(rs)
        ['a sound of a crying baby']
    """
    records = list(records)
    names = class_names(records)
    if template is None:
        kinds = sorted({r.modality for r in records if r.label is not None})
        kind = modality or (kinds[0] if kinds else "image")
        if modality is None and len(kinds) > 1:
            kind = next((k for k in kinds if k != "image"), kinds[0])  # the bridged modality names the task
        template = PROMPT_TEMPLATES.get(kind, "a photo of {}")
    return [template.format(_with_article(_PROMPT_WORDS.get(n, n.replace("_", " ").strip()))) for n in names]


def paired(records: Iterable[Record], a: str, b: str) -> list[tuple[Record, Record]]:
    """Every (a, b) pair of records of modalities `a` and `b` that share a pair key.

    Example:
        >>> rs = [Record("/x.wav", "audio", None, None, "k", "test"), Record("", "text", None, "hi", "k", "test")]
        >>> [(x.modality, y.text) for x, y in paired(rs, "audio", "text")]
        [('audio', 'hi')]
    """
    groups: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.pair is not None:
            groups[r.pair][r.modality].append(r)
    return [(x, y) for key in groups for x in groups[key][a] for y in groups[key][b]]


def _with_article(words: str) -> str:
    last = words.split()[-1] if words.split() else words
    if last.endswith("ing") or (last.endswith("s") and not last.endswith("ss")) or last in _NO_ARTICLE:
        return words  # "glass breaking", "footsteps", "rain": no article reads right
    return ("an " if words[:1].lower() in "aeiou" else "a ") + words


# ----------------------------------------------------------------------- file helpers


def _find(root: Path, marker: str) -> Path | None:
    """`root` if it holds `marker`, else the one child folder that does (archives add a top folder)."""
    if (root / marker).exists():
        return root
    if not root.is_dir():
        return None
    hits = [c for c in sorted(root.iterdir()) if c.is_dir() and (c / marker).exists()]
    return hits[0] if len(hits) == 1 else None


def _locate(root: Path, marker: str, dataset: str, layout: str) -> Path:
    found = _find(root, marker)
    if found is None:
        raise DatasetLayoutError(dataset, root, f"no {marker}", layout)
    return found


def _read_csv(path: Path, needed: set[str], dataset: str, layout: str) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        # Some Clotho csv releases are not UTF-8; latin-1 reads any byte, so captions survive.
        log.warning("%s is not UTF-8; reading it as latin-1", path)
        text = path.read_text(encoding="latin-1")
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or [])
    if not needed <= columns:
        raise DatasetLayoutError(dataset, path.parent, f"{path.name} lacks columns {sorted(needed - columns)}", layout)
    return [row for row in reader]


def _load_matlab(path: Path) -> dict[str, Any]:
    """A .mat file as a dict of plain values: scipy for v5 files, h5py for v7.3 (HDF5) ones."""
    sio = require("scipy.io", f"reading {path.name}")
    try:
        return sio.loadmat(str(path), simplify_cells=True)
    except NotImplementedError:  # scipy's answer to a v7.3 file
        h5py = require("h5py", f"reading {path.name}")
        with h5py.File(path, "r") as f:
            return {k: np.asarray(v) for k, v in f.items() if isinstance(v, h5py.Dataset)}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        return [str(v) for v in value.ravel()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [s for v in value for s in _strings(v)]
    return []


def _first_file(folder: Path, exts: tuple[str, ...]) -> Path | None:
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file())
    return files[0] if files else None


def _first_existing(folders: Sequence[Path], stems: Sequence[str], exts: Iterable[str]) -> Path | None:
    for folder in folders:
        for stem in stems:
            for ext in exts:
                path = folder / f"{stem}{ext}"
                if path.is_file():
                    return path
    return None


def _audio_index(folders: Sequence[Path]) -> dict[str, Path]:
    """File stem -> audio file, over `folders` in priority order (then .wav before .flac before the rest)."""
    rank = {ext: i for i, ext in enumerate((".wav", ".flac", *sorted(AUDIO_EXTS)))}
    index: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        found: dict[str, Path] = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                path = Path(entry.path)
                ext = path.suffix.lower()
                if ext not in rank or not entry.is_file():
                    continue
                if path.stem not in found or rank[ext] < rank[found[path.stem].suffix.lower()]:
                    found[path.stem] = path
        for stem, path in found.items():
            index.setdefault(stem, path)
    return index


def _frame_file(folder: Path, frame: int) -> Path:
    return folder / f"{frame:05d}.png"


def _metres_to_mm(depth_m: np.ndarray) -> np.ndarray:
    mm = np.round(np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0) * 1000.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)


def _read_uint16_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.dtype != np.uint16 and arr.dtype != np.int32:
        raise DatasetLayoutError("sunrgbd", path.parent, f"{path.name} is not a 16-bit depth PNG ({arr.dtype})",
                                 SUNRGBD_LAYOUT)
    return arr.astype(np.uint16)


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(Image.fromarray(array), path)


def _atomic_save(image: Any, path: Path) -> None:
    # Write then rename, so an interrupted extraction never leaves a truncated file that
    # the next run would take for a finished one.
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def _relabel(record: Record, label: str | None) -> Record:
    return Record(record.path, record.modality, label, record.text, record.pair, record.split)


def _report_missing(what: str, missing: int, total: int, where: Path) -> None:
    if missing:
        log.warning("%s: %d of %d clips have no audio file under %s; skipped", what, missing, total, where)


def _non_empty(records: list[Record], dataset: str, root: Path, problem: str, layout: str) -> list[Record]:
    if not records:
        raise DatasetLayoutError(dataset, root, problem, layout)
    bad = {r.modality for r in records} - set(MODALITIES)
    assert not bad, f"adapter {dataset} produced unknown modalities {bad}"
    return records
