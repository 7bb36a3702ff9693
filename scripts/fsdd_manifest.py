#!/usr/bin/env python
"""A labelled sound set as a pairs manifest: the Free Spoken Digit Dataset, split by speaker.

Writes a manifest that `ebridge train` and `ebridge bench --dataset manifest` read: every
recording as an audio row labelled with its digit's name, and a few text prompts per class
("seven", "the number seven", "a spoken seven") in the training split. Speakers are split so no
test voice is heard in training: four speakers train, one validates, one tests.

It is how the search-by-example check of docs/results.md was run (a head trained only to put each
clip near its class prompt, classes held out of training, audio->audio through the space against
the encoder's own features):

    python -m scripts.fsdd_manifest ../shared/data/fsdd/recordings fsdd.csv
    ebridge bench --dataset manifest --data fsdd.csv --anchor text --proxy audio --preset offline \\
        --unseen three,five,eight --gallery test+train --out bench-fsdd
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PROMPTS = ["{}", "the number {}", "a spoken {}"]
SPLITS = {"george": "train", "jackson": "train", "lucas": "train", "nicolas": "train", "theo": "val",
          "yweweler": "test"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recordings", type=Path, help="FSDD's recordings/ folder ({digit}_{speaker}_{take}.wav)")
    ap.add_argument("out", type=Path, help="the manifest CSV to write")
    args = ap.parse_args(argv)
    files = sorted(args.recordings.glob("*.wav"))
    if not files:
        raise SystemExit(f"{args.recordings}: no .wav recordings (expected FSDD's recordings/ folder)")
    rows = []
    for f in files:
        digit, speaker, _take = f.stem.split("_")
        if speaker not in SPLITS:
            raise SystemExit(f"{f.name}: unknown speaker {speaker!r}; known: {', '.join(SPLITS)}")
        rows.append({"modality": "audio", "path": str(f.resolve()), "text": "", "label": DIGITS[int(digit)],
                     "split": SPLITS[speaker]})
    for name in DIGITS:
        rows += [{"modality": "text", "path": "", "text": p.format(name), "label": name, "split": "train"}
                 for p in PROMPTS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["modality", "path", "text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}: {len(files)} recordings, {len(DIGITS) * len(PROMPTS)} prompts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
