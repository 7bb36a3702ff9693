"""ESC-50: environmental sounds, 50 classes, 5 folds."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from query.eval.datasets.common import (DatasetItem, _locate, _non_empty, _read_csv, _report_missing)

log = logging.getLogger(__name__)

ESC50_LAYOUT = """
  <root>/                      (a clone of github.com/karolpiczak/ESC-50)
    audio/1-100032-A-0.wav ...  (2000 five-second clips)
    meta/esc50.csv              (filename,fold,target,category,esc10,src_file,take)
"""


def esc50(root: Path, test_folds: Sequence[int] = (5,), val_folds: Sequence[int] = (4,)) -> list[DatasetItem]:
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
        records.append(DatasetItem(str(path), "audio", row["category"], None, None, split))
    _report_missing("esc50", missing, len(rows), root / "audio")
    return _non_empty(records, "esc50", root, "no clip listed in meta/esc50.csv is in audio/", ESC50_LAYOUT)


