"""Adapters from the on-disk layouts of standard datasets to one list of `DatasetItem`s.

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
  `DatasetItem.source` is what to hand to `bridge.modalities.load` for any record.
- `pair` is prefixed with the dataset name (`"clotho:evaluation/x.wav"`) so records of
  several datasets can be mixed without accidental pairs.
- Depth maps the loaders cannot read as they are (NYU's MATLAB file, SUN RGB-D's
  bit-rotated PNGs) are converted once into a cache of 16-bit millimetre PNGs, the form
  `bridge.modalities.load_depth` reads; later calls reuse the cache.
- A folder that does not match raises `DatasetLayoutError`, whose message draws the
  expected layout.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from query.eval.datasets.audiocaps import AUDIOCAPS_LAYOUT, audiocaps
from query.eval.datasets.clotho import CLOTHO_LAYOUT, clotho
from query.eval.datasets.common import (SPLITS, DatasetItem, DatasetLayoutError, class_names, class_prompts,
                                        paired)
from query.eval.datasets.esc50 import ESC50_LAYOUT, esc50
from query.eval.datasets.llvip import LLVIP_LAYOUT, llvip
from query.eval.datasets.nyu import NYU_LAYOUT, nyu
from query.eval.datasets.sunrgbd import SUNRGBD_LAYOUT, sunrgbd

log = logging.getLogger(__name__)


ADAPTERS: dict[str, Callable[..., list[DatasetItem]]] = {
    "esc50": esc50,
    "nyu": nyu,
    "sunrgbd": sunrgbd,
    "llvip": llvip,
    "audiocaps": audiocaps,
    "clotho": clotho,
}
_ALIASES = {"esc-50": "esc50", "nyu-depth-v2": "nyu", "nyud": "nyu", "nyu-d": "nyu", "sun-rgbd": "sunrgbd",
            "sun-d": "sunrgbd", "sun": "sunrgbd"}


def load_dataset(name: str, root: str | Path, **options: Any) -> list[DatasetItem]:
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

__all__ = ["ADAPTERS", "SPLITS", "DatasetItem", "DatasetLayoutError", "class_names", "class_prompts", "load_dataset",
           "paired", "esc50", "nyu", "sunrgbd", "llvip", "audiocaps", "clotho"]
