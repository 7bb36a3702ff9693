"""AudioCaps: AudioSet clips with human captions (pairs, no classes)."""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from query.eval.datasets.common import (DatasetItem, DatasetLayoutError, SPLITS, _audio_index, _find, _non_empty,
                                        _read_csv, _report_missing)

log = logging.getLogger(__name__)

AUDIOCAPS_LAYOUT = """
  <root>/                             (a clone of github.com/cdjkim/audiocaps)
    dataset/{train,val,test}.csv      (audiocap_id,youtube_id,start_time,caption)
    audio/{train,val,test}/<youtube_id>.wav   (downloaded by you; also accepted:
                                      Y<youtube_id>.wav, <audiocap_id>.wav, .flac,
                                      or all clips directly in audio/)
"""


def audiocaps(root: Path) -> list[DatasetItem]:
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
    records: list[DatasetItem] = []
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
            records.append(DatasetItem(str(audio.resolve()), "audio", None, None, key, split))
            for row in clip_rows:
                caption = row["caption"].strip()
                if caption:
                    records.append(DatasetItem("", "text", None, caption, key, split))
        _report_missing(f"audiocaps {split}", missing, len(clips), root / "audio" / split)
    return _non_empty(records, "audiocaps", root, "no clip of the csv files has an audio file", AUDIOCAPS_LAYOUT)


