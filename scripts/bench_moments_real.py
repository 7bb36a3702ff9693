"""Moment accuracy on real recordings with time-stamped labels (issue 30): does the top moment of a
class's words land on a labelled occurrence of that class?

The material is a folder of long recordings, each with its labels beside it in the DCASE / Audacity
text format (`onset<TAB>offset<TAB>label` a line, in seconds; a `NAME.ann`, `NAME.txt` or
`NAME.csv` beside `NAME.wav`, or TUT's `meta/<scene>/NAME.ann` tree). TUT Sound Events 2017 (real
street recordings, 3-5 min each, six classes) is read as it unpacks. The folder is indexed on the
`offline` preset (no training, nothing downloaded). For each recording and each class labelled in it,
the class's words are searched among that recording's moments (`level="moments"`, filtered to the
file). Reported per (recording, class):

- top-1: the best moment overlaps a labelled occurrence of the class; hit@k: one of the best k does;
- chance: the share of the recording's timeline its labels of that class cover (what a random
  instant hits), and the share of its moments that overlap one (what a random moment hits: the fair
  baseline for top-1, since a 3 s window catches a short event more often than an instant does).

    python -m scripts.bench_moments_real --data DIR --json docs/reports/moments-real.json

Without the folder the script says where to get material and exits 0 (nothing measured).
`--joined N` measures instead N recordings joined from the shipped ESC-10 clips with pauses
(scripts.bench_moments): a control with clean labels, not real material.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DATA_ENV = "EBRIDGE_MOMENTS_DATA"
DEFAULT_DATA = Path("bench-data/moments-real")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
LABEL_SUFFIXES = (".ann", ".txt", ".csv", ".tsv")
HOW_TO_GET = f"""no labelled recordings found at {{data}}.
Give a folder of long recordings with their labels (--data DIR or ${DATA_ENV}), e.g. TUT Sound Events 2017
(real street recordings, free for research; https://zenodo.org/record/814831):
  TUT-sound-events-2017-development.audio.1.zip, .audio.2.zip and .meta.zip, unzipped into DIR
  (DIR/TUT-sound-events-2017-development/audio/street/a001.wav with meta/street/a001.ann).
Any folder works where NAME.wav has NAME.ann / NAME.txt beside it (or under a meta/ tree) with
`onset<TAB>offset<TAB>label` lines in seconds (DCASE, Audacity's label export)."""
# What a user would type for a dataset's class names, where the name alone is not it (TUT Sound
# Events 2016/2017, DCASE 2016 task 2). Any other label is searched as written, '_' read as ' '.
QUERY_WORDS = {
    "car": "car passing by", "large vehicle": "bus or truck passing", "children": "children shouting",
    "people walking": "footsteps", "brakes squeaking": "brakes squealing", "people speaking": "people talking",
    "clearthroat": "throat clearing", "doorslam": "door slam", "keysdrop": "keys jangling", "keys": "keys jangling",
    "pageturn": "page turning", "phone": "telephone ringing", "keyboard": "typing on a keyboard",
    "knock": "knocking on a door", "drawer": "drawer opening", "object impact": "thud",
}
log = logging.getLogger("bench_moments_real")


@dataclass
class Result:
    """One (recording, class) query."""

    path: str
    label: str
    query: str
    events: int
    top1: bool
    hit_at_k: bool
    chance_timeline: float
    chance_moments: float
    top_start: float
    top_end: float


def read_labels(path: Path) -> list[tuple[float, float, str]]:
    """(onset, offset, label) rows of a DCASE / Audacity label file: the label is the last field,
    onset and offset the two numbers before it (TUT's meta lines lead with the file and scene)."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = [x.strip() for x in line.split("\t" if "\t" in line else ",") if x.strip()]
        if len(fields) < 3:
            continue
        try:
            onset, offset = float(fields[-3]), float(fields[-2])
        except ValueError:
            continue  # a header line
        if offset > onset:
            rows.append((onset, offset, fields[-1]))
    return rows


def find_material(data: Path) -> dict[Path, Path]:
    """Recording -> its label file: NAME.ann/.txt/.csv beside NAME.wav, or TUT's meta/ tree."""
    found = {}
    for audio in sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        for cand in [audio.with_suffix(s) for s in LABEL_SUFFIXES] + _tut_meta(audio):
            if cand.is_file():
                found[audio] = cand
                break
    return found


def _tut_meta(audio: Path) -> list[Path]:
    parts = audio.parts
    if "audio" not in parts:
        return []
    i = len(parts) - 1 - parts[::-1].index("audio")
    return [Path(*parts[:i], "meta", *parts[i + 1:]).with_suffix(".ann")]


def query_for(label: str) -> str:
    """The words searched for a dataset's class name.

    Example:
        >>> query_for("car"), query_for("crying_baby")
        ('car passing by', 'crying baby')
    """
    key = label.strip().lower()
    return QUERY_WORDS.get(key, re.sub(r"[_\s]+", " ", key))


def covered(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] inside the union of `intervals`.

    Example:
        >>> covered([(1.0, 3.0), (2.0, 4.0), (9.0, 12.0)], 0.0, 10.0)
        4.0
    """
    total, end = 0.0, lo
    for a, b in sorted(intervals):
        a, b = max(a, end), min(b, hi)
        if b > a:
            total += b - a
            end = b
    return total


def overlaps(start: float, end: float, intervals: list[tuple[float, float]]) -> bool:
    return any(a < end and start < b for a, b in intervals)


def evaluate(index: Path, material: dict[str, list[tuple[float, float, str]]], k: int) -> list[Result]:
    """Query each labelled class of each recording among that recording's moments."""
    from indexer.store import Filter
    from query.search import Index

    results = []
    with Index.open(index) as ix:
        for rel, rows in sorted(material.items()):
            moments = [(r.payload["start"], r.payload["end"]) for r in ix.store.scroll(Filter(must={"path": rel}))
                       if r.payload.get("segment") is not None]
            if not moments:
                log.warning("%s has no moments (shorter than a long file): left out", rel)
                continue
            span_end = max(e for _, e in moments)  # the part that is cut into moments
            by_class: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for onset, offset, label in rows:
                by_class[label].append((onset, offset))
            for label, spans in sorted(by_class.items()):
                q = query_for(label)
                hits = ix.search(q, target="audio", k=k, level="moments", per_file=k, filter={"path": rel})
                results.append(Result(
                    rel, label, q, len(spans), bool(hits) and overlaps(hits[0].start, hits[0].end, spans),
                    any(overlaps(h.start, h.end, spans) for h in hits),
                    round(covered(spans, 0.0, span_end) / span_end, 4),
                    round(sum(overlaps(a, b, spans) for a, b in moments) / len(moments), 4),
                    hits[0].start if hits else -1.0, hits[0].end if hits else -1.0))
    return results


def summarise(results: list[Result]) -> dict[str, Any]:
    """Means over (recording, class) queries, overall and per class."""
    def mean(rs: list[Result], key: str) -> float:
        return round(sum(float(getattr(r, key)) for r in rs) / len(rs), 4) if rs else 0.0

    keys = ("top1", "hit_at_k", "chance_timeline", "chance_moments")
    per_class = defaultdict(list)
    for r in results:
        per_class[r.label].append(r)
    return {"queries": len(results), **{k: mean(results, k) for k in keys},
            "per_class": {c: {"queries": len(rs), "query": rs[0].query, **{k: mean(rs, k) for k in keys}}
                          for c, rs in sorted(per_class.items())}}


def link_material(found: dict[Path, Path], data: Path, src: Path) -> dict[str, list[tuple[float, float, str]]]:
    """The recordings linked into `src` (the folder that is indexed) under their path in `data`."""
    shutil.rmtree(src, ignore_errors=True)
    material = {}
    for audio, labels in found.items():
        rel = audio.relative_to(data).as_posix()
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(audio.resolve(), src / rel)
        material[rel] = read_labels(labels)
    return material


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get(DATA_ENV, DEFAULT_DATA)))
    p.add_argument("-k", type=int, default=3, help="hit@k")
    p.add_argument("--limit", type=int, default=0, help="at most this many recordings (0: all)")
    p.add_argument("--name", default="", help="what the material is, for the report")
    p.add_argument("--joined", type=int, default=0, metavar="N",
                   help="measure N recordings joined from the shipped ESC-10 clips instead (a control, not real)")
    p.add_argument("--minutes", type=float, default=3.0, help="length of each joined recording")
    p.add_argument("--work", type=Path, default=Path("bench-out/moments-real"))
    p.add_argument("--json", type=Path, default=Path("bench-moments-real.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.joined:
        from scripts.bench_moments import make_recordings

        args.data = args.work / "joined"
        shutil.rmtree(args.data, ignore_errors=True)
        make_recordings(args.data, args.joined, args.minutes, seed=1, labels=True)
        args.name = args.name or (f"control: {args.joined} recordings of {args.minutes:g} min joined from the shipped "
                                  "ESC-10 clips with 2-10 s pauses (not real long recordings)")
    found = find_material(args.data) if args.data.is_dir() else {}
    if not found:
        print(HOW_TO_GET.format(data=args.data))
        return 0
    if args.limit:
        found = dict(list(found.items())[: args.limit])
    material = link_material(found, args.data, args.work / "src")
    from indexer.index import index_directory

    shutil.rmtree(args.work / "index", ignore_errors=True)
    t0, load_before = time.perf_counter(), os.getloadavg()
    summary = index_directory(args.work / "src", args.work / "index", preset="offline", workers=1, progress=False)
    build_s = round(time.perf_counter() - t0, 1)
    results = evaluate(args.work / "index", material, args.k)
    report = {"what": "moment accuracy on labelled real recordings: offline preset, text query of each labelled "
                      "class among that recording's moments", "material": args.name or str(args.data),
              "recordings": len(material), "k": args.k, "index": {"points": summary.points, "errors": summary.errors,
                                                                 "build_wall_s": build_s},
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(), **summarise(results),
              "results": [asdict(r) for r in results]}
    from bridge.provenance import write_json_report

    write_json_report(args.json, report)
    print_table(report)
    print(f"report: {args.json}")
    return 0


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['recordings']} recordings, {report['queries']} (recording, class) queries, k={report['k']}")
    print(f"{'class':<22} {'n':>3} {'top-1':>6} {'hit@k':>6} {'chance(time)':>13} {'chance(moment)':>15}")
    rows = [*report["per_class"].items(), ("all", {**report, "queries": report["queries"]})]
    for c, s in rows:
        print(f"{c:<22} {s['queries']:>3} {s['top1']:>6.2f} {s['hit_at_k']:>6.2f} {s['chance_timeline']:>13.2f} "
              f"{s['chance_moments']:>15.2f}")


if __name__ == "__main__":
    from core.device import set_threads

    set_threads(1)
    sys.exit(main())
