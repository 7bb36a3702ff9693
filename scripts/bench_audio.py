#!/usr/bin/env python
"""Audio encoders side by side: 1-NN accuracy by class and embedding time per clip.

Two corpora:

* **FSDD** (`../shared/data/fsdd/recordings`, real spoken digits): label = the digit,
  1-NN leave-one-speaker-out (a clip's neighbour is searched among the *other* speakers).
* **Made sounds**: real audio rendered here by `sox` (sine / square / sawtooth tones,
  white / pink / brown noise, rising and falling chirps, tremolo tones) and `espeak-ng`
  (three words, several voices, speeds and pitches), each class with random frequencies,
  durations, levels and voices; 1-NN leave-one-out. Needs `sox` and `espeak-ng` on PATH.

Cosine similarity on the encoders' raw features (no head). Time per clip = wall time of
`Encoder.encode` over the whole corpus (preprocessing + forward, batches of the encoder's
`batch_size`) / clips, after one warm-up batch.

Usage::

    OMP_NUM_THREADS=1 python -m scripts.bench_audio --presets offline offline-sound --json audio.json
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bridge.validation import recall_at_1
from core.cli import add_threads_option
from core.device import set_threads
from query.eval.shared_data import shared_data_dir

log = logging.getLogger("bench_audio")


def make_sounds(folder: Path, per_class: int = 16, seed: int = 0) -> list[tuple[Path, str]]:
    """Render labelled sounds with sox and espeak-ng into `folder`; returns (path, class)."""
    for tool in ("sox", "espeak-ng"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install -y sox espeak-ng")
    rng = np.random.default_rng(seed)
    out: list[tuple[Path, str]] = []

    def sox(name: str, label: str, *synth: str, extra: tuple[str, ...] = ()) -> None:
        path = folder / f"{label}_{name}.wav"
        dur, skip = rng.uniform(0.4, 2.0), rng.uniform(0.0, 3.0)
        gain = f"{rng.uniform(-18, -3):.1f}"
        # -R makes sox's noise repeat run to run (so do the figures); each clip then starts at its
        # own offset into that noise (`trim`), so clips of one class are not the same samples.
        subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(path), "synth", f"{dur + skip:.2f}",
                        *synth, *extra, "trim", f"{skip:.2f}", "gain", gain], check=True, capture_output=True)
        out.append((path, label))

    for i in range(per_class):
        f = lambda lo, hi: f"{rng.uniform(lo, hi):.0f}"  # noqa: E731
        sox(str(i), "sine", "sine", f(200, 2000))
        sox(str(i), "square", "square", f(100, 1000))
        sox(str(i), "sawtooth", "sawtooth", f(100, 1000))
        sox(str(i), "whitenoise", "whitenoise")
        sox(str(i), "pinknoise", "pinknoise")
        sox(str(i), "brownnoise", "brownnoise")
        sox(str(i), "chirpup", "sine", f"{f(100, 500)}-{f(1500, 4000)}")
        sox(str(i), "chirpdown", "sine", f"{f(1500, 4000)}-{f(100, 500)}")
        sox(str(i), "tremolo", "sine", f(300, 1200), extra=("tremolo", f(4, 12), "90"))
    voices = ["en", "en-us", "en+f3", "en+m3", "en-gb-x-rp", "en+f5", "en+m7", "en-us+f2"]
    for word in ("water", "thunder", "bicycle"):
        for i in range(per_class):
            path = folder / f"word-{word}_{i}.wav"
            wav = folder / f"raw-{word}-{i}.wav"
            subprocess.run(["espeak-ng", "-v", voices[i % len(voices)], "-s", f"{rng.integers(110, 220)}",
                            "-p", f"{rng.integers(20, 80)}", "-w", str(wav), word], check=True, capture_output=True)
            subprocess.run(["sox", str(wav), "-r", "16000", "-c", "1", "-b", "16", str(path)], check=True, capture_output=True)
            out.append((path, f"word-{word}"))
    return out


def one_nn(feats: np.ndarray, labels: list[str], groups: list[str] | None = None) -> float:
    """Leave-one-out 1-NN accuracy by cosine; with `groups`, neighbours come from other groups only."""
    x = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    g = list(groups) if groups is not None else list(range(len(labels)))  # the clip itself is never its neighbour
    return recall_at_1(x, labels, x, labels, query_groups=g, corpus_groups=g)


def embed_timed(preset_name: str, waves: list[np.ndarray]) -> tuple[np.ndarray, float]:
    from bridge.encoders import load_preset

    enc = load_preset(preset_name).encoder("audio")
    enc.encode(waves[: enc.batch_size])  # warm-up: weights load, first batch
    start = time.perf_counter()
    feats = enc.encode(waves)
    return feats, (time.perf_counter() - start) / len(waves)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["offline-small", "offline", "offline-sound"])
    ap.add_argument("--fsdd-limit", type=int, default=0, help="use every n-th FSDD file to reach about this many (0 = all)")
    ap.add_argument("--per-class", type=int, default=16, help="made sounds per class")
    ap.add_argument("--corpora", nargs="+", choices=["fsdd", "made"], default=["fsdd", "made"])
    ap.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data folder (FSDD)")
    add_threads_option(ap, 1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_threads(args.threads)
    from bridge.modalities import load

    corpora: dict[str, tuple[list[np.ndarray], list[str], list[str] | None]] = {}
    fsdd = sorted((args.data / "fsdd" / "recordings").glob("*.wav")) if "fsdd" in args.corpora else []
    if fsdd:
        if args.fsdd_limit:
            fsdd = fsdd[:: max(1, len(fsdd) // args.fsdd_limit)]
        corpora["fsdd"] = ([load("audio", p) for p in fsdd], [p.name[0] for p in fsdd], [p.stem.split("_")[1] for p in fsdd])
    elif "fsdd" in args.corpora:
        log.warning("FSDD not found under %s: skipping it", args.data)
    if "made" in args.corpora:
        with tempfile.TemporaryDirectory() as tmp:
            made = make_sounds(Path(tmp), args.per_class)
            corpora["made"] = ([load("audio", p) for p, _ in made], [c for _, c in made], None)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for corpus, (waves, labels, groups) in corpora.items():
        secs = [len(w) / 16000 for w in waves]
        log.info("%s: %d clips, %d classes, %.2f s mean length", corpus, len(waves), len(set(labels)), float(np.mean(secs)))
        for name in args.presets:
            feats, per_clip = embed_timed(name, waves)
            acc = one_nn(feats, labels, groups)
            report.setdefault(corpus, {})[name] = {"one_nn": round(acc, 4), "ms_per_clip": round(per_clip * 1000, 2),
                                                   "clips": len(waves), "dim": int(feats.shape[1])}
            log.info("  %-14s 1-NN %.3f   %.1f ms/clip   dim %d", name, acc, per_clip * 1000, feats.shape[1])
    print(json.dumps(report, indent=2))
    if args.json:
        from bridge.provenance import write_json_report

        write_json_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
