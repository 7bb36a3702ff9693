"""Clotho: sound clips with five captions each (pairs, no classes)."""
from __future__ import annotations

import logging
from pathlib import Path

from query.eval.datasets.common import (DatasetItem, DatasetLayoutError, _first_existing, _non_empty, _read_csv,
                                        _report_missing)

log = logging.getLogger(__name__)

CLOTHO_LAYOUT = """
  <root>/                              (Clotho v2.1 from zenodo.org/records/4783391)
    clotho_captions_development.csv    (file_name,caption_1,...,caption_5)
    clotho_captions_validation.csv
    clotho_captions_evaluation.csv
    development/*.wav  validation/*.wav  evaluation/*.wav   (from the .7z archives)
  (csv files may also sit in clotho_csv_files/ and audio in clotho_audio_files/)
"""
_CLOTHO_SPLITS = {"development": "train", "validation": "val", "evaluation": "test"}


def clotho(root: Path) -> list[DatasetItem]:
    """Clotho v2.1: one audio record per clip and five caption records, paired by clip.

    Splits: development -> train, validation -> val, evaluation -> test (the set
    audio-retrieval papers report on).

    Example:
        >>> records = clotho(Path("clotho"))  # doctest: +SKIP
        >>> sum(r.modality == "text" for r in records if r.split == "test")  # doctest: +SKIP
        5225
    """
    records: list[DatasetItem] = []
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
            records.append(DatasetItem(str(audio.resolve()), "audio", None, None, key, split))
            for i in range(1, 6):
                caption = (row.get(f"caption_{i}") or "").strip()
                if caption:
                    records.append(DatasetItem("", "text", None, caption, key, split))
        _report_missing(f"clotho {name}", missing, len(rows), root / name)
    if not seen_csv:
        raise DatasetLayoutError("clotho", root, "no clotho_captions_<split>.csv", CLOTHO_LAYOUT)
    return _non_empty(records, "clotho", root, "no clip of the caption files has an audio file", CLOTHO_LAYOUT)


