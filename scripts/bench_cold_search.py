#!/usr/bin/env python
"""Cold `ebridge search`: wall time of a text and an image query, each from a fresh process, beside
`python -c "import torch"` on the same machine (what a query that loads torch pays before anything).

Each run starts new processes for: the text query, the image query, and `import torch`. With
`--before DIR` (a checkout of the code to compare with, e.g. `git worktree add /tmp/before main~3`)
the same queries run from that checkout too, interleaved with this one (A/B/A/B...), so load from
other programs falls on both alike; the report keeps each run's times, the medians and the load
average before and after. On a shared machine say the figures were measured under load.

The index is `--index`, or (default) the shipped photos and sounds indexed into the `offline`
preset's pretrained space in `--work` (what `ebridge demo` builds first), made before any timing;
one untimed warm-up run per checkout fills the OS file cache and any ONNX export cache.

Usage::

    python -m scripts.bench_cold_search --json docs/reports/cold-search.json
    python -m scripts.bench_cold_search --before /tmp/before --runs 5 --json cold-search-ab.json
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bridge.config import DEFAULT_PRESET

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench_cold_search")
TEXT_QUERY = "a ship at sea"


def build_index(work: Path) -> tuple[Path, Path]:
    """The shipped photos and sounds indexed with the offline preset (no training): (index, an image query)."""
    from indexer.index import index_directory
    from query.eval.demo import mixed_folder

    folder = mixed_folder(work / "mixed-folder")
    index = work / "mixed-index"
    if not (index / "bridge" / "config.json").is_file():
        index_directory(folder, index, preset=DEFAULT_PRESET, label_from_folder=True, exclude=["*.md"], progress=False)
    return index, sorted((folder / "photos" / "ship").iterdir())[0]


def timed(command: list[str], repo: Path) -> float:
    """Seconds from start to exit of `command`, run from `repo` with that checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    started = time.perf_counter()
    out = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} (from {repo}) failed with {out.returncode}:\n{out.stderr[-2000:]}")
    return seconds


def commands(index: Path, image: Path) -> dict[str, list[str]]:
    search = [sys.executable, "-m", "query.cli", "search", "--index", str(index), "--target", "image", "-k", "5"]
    return {"text": [*search, "--text", TEXT_QUERY], "image": [*search, "--file", str(image)],
            "import_torch": [sys.executable, "-c", "import torch"]}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, default=None, help="index to search (default: build the demo's photos)")
    p.add_argument("--image", type=Path, default=None, help="image query file (default: a shipped ship photo)")
    p.add_argument("--work", type=Path, default=Path("bench-out/cold-search"), help="where the default index is built")
    p.add_argument("--before", type=Path, default=None, help="a checkout of the code to compare with, run interleaved")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", type=Path, default=Path("bench-cold-search.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    index, image = build_index(args.work) if args.index is None else (args.index, args.image)
    if image is None:
        raise SystemExit("--index needs --image FILE (an image to query with)")
    checkouts = {"after": REPO, **({"before": args.before.resolve()} if args.before else {})}
    cmds = commands(index.resolve(), image.resolve())
    for name, repo in checkouts.items():  # warm-up: file cache, ONNX exports; not timed
        for what in ("text", "image"):
            timed(cmds[what], repo)
    times: dict[str, dict[str, list[float]]] = {name: {what: [] for what in cmds} for name in checkouts}
    load_before = loadavg()
    for run in range(args.runs):
        order = list(checkouts) if run % 2 == 0 else list(reversed(checkouts))  # A/B, then B/A
        for name in order:
            for what, cmd in cmds.items():
                if what == "import_torch" and name != "after":
                    continue  # one interpreter: its torch import is timed once per run
                times[name][what].append(round(timed(cmd, checkouts[name]), 3))
        log.info("run %d: %s", run + 1, {n: {w: t[-1] for w, t in v.items() if t} for n, v in times.items()})
    report: dict[str, Any] = {
        "what": "cold `ebridge search` (fresh process per query), seconds; median of runs",
        "index": str(index), "text_query": TEXT_QUERY, "image_query": str(image), "runs": args.runs,
        "interleaved": len(checkouts) > 1, "loadavg_before": load_before, "loadavg_after": loadavg(),
        "checkouts": {n: str(r) for n, r in checkouts.items()},
        "median_s": {n: {w: statistics.median(t) for w, t in v.items() if t} for n, v in times.items()},
        "times_s": times,
    }
    from bridge.provenance import write_json_report

    write_json_report(args.json, report)
    for name, medians in report["median_s"].items():
        print(f"{name:>6}: " + "  ".join(f"{w} {s:.2f} s" for w, s in medians.items()))
    print(f"load average {load_before} -> {report['loadavg_after']} ({os.cpu_count()} CPUs); report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
