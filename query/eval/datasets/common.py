"""What every dataset adapter shares: the item type, the layout error, splits, prompts and file helpers."""
from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.modalities import AUDIO_EXTS, MODALITIES
from core.deps import require
from core.errors import EmergentBridgeError
from core.files import atomic_path

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
class DatasetItem:
    """One item of a dataset, in the shape every adapter returns.

    Example:
        >>> r = DatasetItem(path="", modality="text", label=None, text="a dog barks", pair="clotho:x", split="test")
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


def class_names(records: Iterable[DatasetItem]) -> list[str]:
    """The sorted class labels of `records`: the order `class_prompts` follows.

    Example:
        >>> class_names([DatasetItem("/a.wav", "audio", "dog", None, None, "test")])
        ['dog']
    """
    return sorted({r.label for r in records if r.label is not None})


def class_prompts(records: Iterable[DatasetItem], template: str | None = None, modality: str | None = None) -> list[str]:
    """One text prompt per class of `records`, in `class_names` order, for zero-shot scoring.

    The template defaults to one per modality of the labelled records (audio:
    "a sound of {}", pictures: "a photo of {}"); labels are turned into words
    ("crying_baby" -> "a crying baby", "office" -> "an office", "rain" -> "rain").

    Example:
        >>> rs = [DatasetItem("/a.wav", "audio", "crying_baby", None, None, "test")]
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


def paired(records: Iterable[DatasetItem], a: str, b: str) -> list[tuple[DatasetItem, DatasetItem]]:
    """Every (a, b) pair of records of modalities `a` and `b` that share a pair key.

    Example:
        >>> rs = [DatasetItem("/x.wav", "audio", None, None, "k", "test"), DatasetItem("", "text", None, "hi", "k", "test")]
        >>> [(x.modality, y.text) for x, y in paired(rs, "audio", "text")]
        [('audio', 'hi')]
    """
    groups: dict[str, dict[str, list[DatasetItem]]] = defaultdict(lambda: defaultdict(list))
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


def _read_uint16_png(path: Path, layout: str = "") -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.dtype != np.uint16 and arr.dtype != np.int32:
        raise DatasetLayoutError("sunrgbd", path.parent, f"{path.name} is not a 16-bit depth PNG ({arr.dtype})",
                                 layout)
    return arr.astype(np.uint16)


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(Image.fromarray(array), path)


def _atomic_save(image: Any, path: Path) -> None:
    # Write then rename, so an interrupted extraction never leaves a truncated file that
    # the next run would take for a finished one.
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _relabel(record: DatasetItem, label: str | None) -> DatasetItem:
    return DatasetItem(record.path, record.modality, label, record.text, record.pair, record.split)


def _report_missing(what: str, missing: int, total: int, where: Path) -> None:
    if missing:
        log.warning("%s: %d of %d clips have no audio file under %s; skipped", what, missing, total, where)


def _non_empty(records: list[DatasetItem], dataset: str, root: Path, problem: str, layout: str) -> list[DatasetItem]:
    if not records:
        raise DatasetLayoutError(dataset, root, problem, layout)
    bad = {r.modality for r in records} - set(MODALITIES)
    assert not bad, f"adapter {dataset} produced unknown modalities {bad}"
    return records
