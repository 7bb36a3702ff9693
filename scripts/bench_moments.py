"""What moments cost (issue 30, part 4): index size, build time and search latency for a folder of
long recordings, indexed with moments (bridge.moments) and without (every file one point, as before).

The recordings are the shipped ESC-10 clips (query/eval/samples/sounds) in a random order with
random pauses, `--minutes` long each; both indexes use the `offline` preset (no training).

    python -m scripts.bench_moments --files 4 --minutes 2 --json docs/reports/moments-cost.json
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOUNDS = REPO / "query" / "eval" / "samples" / "sounds"
QUERIES = ("dog barking", "rain", "baby crying", "chainsaw", "helicopter", "rooster crowing", "sea waves")
SR = 16_000
log = logging.getLogger("bench_moments")


def make_recordings(folder: Path, files: int, minutes: float, seed: int = 0, labels: bool = False) -> None:
    """`files` recordings of `minutes` each: clips in random order after pauses of 2-10 s; with
    `labels`, each with its `walk-NN.txt` of `onset<TAB>offset<TAB>class` lines (DCASE's format)."""
    import soundfile as sf

    paths = sorted(SOUNDS.glob("*/*.flac"))
    clips = [sf.read(p, dtype="float32")[0] for p in paths]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    end = int(minutes * 60 * SR)
    for i in range(files):
        parts, rows, n = [], [], 0
        while n < end:
            pause = np.zeros(int(rng.uniform(2, 10) * SR), np.float32)
            c = int(rng.integers(len(clips)))
            parts += [pause, clips[c]]
            n += pause.size
            if n < end:
                rows.append(f"{n / SR:.3f}\t{min(n + clips[c].size, end) / SR:.3f}\t{paths[c].parent.name}\n")
            n += clips[c].size
        sf.write(folder / f"walk-{i:02d}.wav", np.concatenate(parts)[:end], SR)
        if labels:
            (folder / f"walk-{i:02d}.txt").write_text("".join(rows), encoding="utf-8")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "bridge" not in p.relative_to(path).parts)


def build(src: Path, index: Path, moments: bool) -> dict[str, Any]:
    """Index `src` (moments on or off); wall and CPU seconds, points, bytes of the store and manifest."""
    import bridge.moments as bm
    from indexer.index import index_directory

    saved = dict(bm.MOMENT_SPECS)
    if not moments:  # every file one point: no file is long enough to be cut
        for m, spec in saved.items():
            bm.MOMENT_SPECS[m] = bm.MomentSpec(**{**spec.__dict__, "min_seconds": float("inf")})
    shutil.rmtree(index, ignore_errors=True)
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    try:
        summary = index_directory(src, index, preset="offline", workers=1, progress=False)
    finally:
        bm.MOMENT_SPECS.update(saved)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    from indexer.store import open_store
    from indexer.verify import point_vectors

    with open_store(index) as store:  # the store's files are preallocated: the vectors say what a point costs
        per_point = sum(store.spec.vectors[n] for n in point_vectors(store, "audio")) * 4
    return {"vector_bytes": summary.points * per_point, "vector_bytes_per_point": per_point,
            "build_wall_s": round(time.perf_counter() - t0, 2),
            "build_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
            "points": summary.points, "index_bytes_without_bridge": folder_bytes(index)}


def search_latency(index: Path, level: str, repeats: int) -> dict[str, float]:
    """Median and p90 milliseconds of one warm text search (k=10) at `level`."""
    from query.search import Index

    times = []
    with Index.open(index) as ix:
        ix.search(QUERIES[0], target="audio", level=level)  # warm-up
        for _ in range(repeats):
            for q in QUERIES:
                t0 = time.perf_counter()
                ix.search(q, target="audio", k=10, level=level)
                times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "p90_ms": round(float(np.percentile(times, 90)), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3, help="passes over the queries for the latency")
    p.add_argument("--work", type=Path, default=Path("bench-out/moments"))
    p.add_argument("--json", type=Path, default=Path("bench-moments.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    src = args.work / "src"
    shutil.rmtree(src, ignore_errors=True)
    make_recordings(src, args.files, args.minutes)
    load_before = os.getloadavg()
    runs: dict[str, Any] = {}
    for name, moments in (("without_moments", False), ("with_moments", True)):
        index = args.work / f"index-{name}"
        runs[name] = build(src, index, moments)
        levels = ("files", "auto", "moments") if moments else ("files",)
        runs[name]["search"] = {lv: search_latency(index, lv, args.repeats) for lv in levels}
    report = {"what": "moments' cost: offline preset, text queries k=10 on audio, one torch thread",
              "files": args.files, "minutes_each": args.minutes, "queries": list(QUERIES), "repeats": args.repeats,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(), **runs}
    from bridge.provenance import write_json_report

    write_json_report(args.json, report)
    for name in ("without_moments", "with_moments"):
        r = runs[name]
        print(f"{name:>16}: {r['points']:>5} points  vectors {r['vector_bytes'] / 2**10:8.1f} KiB  folder "
              f"{r['index_bytes_without_bridge'] / 2**20:7.2f} MiB  build "
              f"{r['build_wall_s']:.1f} s wall / {r['build_cpu_s']:.1f} s CPU  search "
              + "  ".join(f"{lv} {s['median_ms']:.1f} ms" for lv, s in r["search"].items()))
    print(f"load average {load_before} -> {report['loadavg_after']}; report: {args.json}")
    return 0


if __name__ == "__main__":
    from core.device import set_threads

    set_threads(1)
    sys.exit(main())
