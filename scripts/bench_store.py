#!/usr/bin/env python
"""Scale benchmark of the embedded store (qdrant-edge) beside FAISS, hnswlib and exact numpy.

Vectors are shaped like bridged embeddings: unit-norm and clustered (a few hundred
centres on the sphere plus noise), not uniform noise, which would make HNSW look worse
and quantization look better than on real data. Recall@10 is measured against exact
top-10 computed with numpy on the same vectors; filtered recall against the exact top-10
among the points whose ``modality`` is ``depth`` (a fifth of them).

Every engine is built in its own child process, then opened and queried in another, so
neither phase's memory hides inside the other's: build peak RSS (the kernel's high-water
mark, file-backed mmap pages included) and the peak of its anonymous part (sampled by the
parent every 50 ms: what cannot be paged out), open time, steady-state RSS while serving,
p50/p95 latency, recall@10. The children read the vectors from a file one upsert batch at
a time (no mmap), so the figures are the engine's, not a copy of the data set held by the
benchmark. Threads: one per engine by default (``--threads``), as the machine is shared.

Engines: ``edge:<preset>`` (the project's store; presets below, ``default`` being
CollectionSpec's own defaults and ``old`` the settings before issue 15), ``faiss-hnsw``,
``faiss-sq8`` (HNSW over 8-bit scalar-quantized vectors), ``hnswlib``, ``numpy`` (exact).
Peers need the ``bench`` extra: ``pip install -e '.[bench]'``.

Modules: ``scripts.store_data`` (vectors, payloads, exact top-10), ``scripts.store_engines`` (how
each engine is built, opened and searched), ``scripts.store_procs`` (the child processes and what
is measured of them: CPU time, RSS, smaps); this one is the command line and the tables.

Usage::

    python -m scripts.bench_store                       # 100k x 256-d, every engine
    python -m scripts.bench_store --n 300000 --json bench-300k.json
    python -m scripts.bench_store --engines edge:default,edge:old --edge-custom 'capped={"max_segment_size_kb": 50000}'
"""


from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bridge.provenance import provenance, write_json_report
from scripts.store_data import prepare_data
from scripts.store_engines import EDGE_PRESETS, child_main
from scripts.store_procs import run_child

log = logging.getLogger("bench_store")

def engine_path(workdir: Path, engine: str) -> Path:
    return workdir / engine.replace(":", "-")


def print_table(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    mib, raw = 1024 ** 2, meta["raw_vector_bytes"]
    print(f"\nn={meta['n']:,} dim={meta['dim']} m={meta['m']} ef_construct={meta['ef_construct']} "
          f"raw vectors {raw / mib:,.0f} MiB | threads per engine={meta['threads']} | cpus={meta['cpus']} "
          f"| load avg at start {meta['loadavg_start']} end {meta['loadavg_end']} (shared machine)")
    head = (f"{'engine':<17} {'build s':>8} {'cpu s':>7} {'peak MiB':>9} {'(x raw)':>7} {'-base x':>7} {'anon x':>6} {'disk MiB':>8} "
            f"{'open s':>6} {'serve MiB':>9} {'ef':>4} {'p50 ms':>7} {'p95 ms':>7} {'R@10':>6} "
            f"{'filt p50':>8} {'filt p95':>8} {'filt R@10':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['engine']:<17} failed: {r['error'].splitlines()[0]}")
            continue
        plain = [s for s in r["search"] if not s["filtered"]]
        filt = {s["ef"]: s for s in r["search"] if s["filtered"]}
        for i, s in enumerate(plain):
            left = (f"{r['engine']:<17} {r['build_s']:>8.1f} {r.get('build_cpu_s', float('nan')):>7.1f} "
                    f"{r['build_peak_rss_bytes'] / mib:>9.0f} "
                    f"{r['build_peak_rss_bytes'] / raw:>7.2f} "
                    f"{(r['build_peak_rss_bytes'] - r['build_baseline_rss_bytes']) / raw:>7.2f} "
                    f"{r['build_peak_anon_bytes'] / raw:>6.2f} "
                    f"{r['disk_bytes'] / mib:>8.0f} {r['open_s']:>6.2f} {r['serve_rss_bytes'] / mib:>9.0f}"
                    if i == 0 else " " * 103)
            f = filt.get(s["ef"])
            fs = (f"{f['p50_ms']:>8.2f} {f['p95_ms']:>8.2f} {f['recall_at_10']:>9.4f}" if f
                  else f"{'n/a':>8} {'n/a':>8} {'n/a':>9}")
            ef = "-" if s["ef"] is None else str(s["ef"])
            print(f"{left} {ef:>4} {s['p50_ms']:>7.2f} {s['p95_ms']:>7.2f} {s['recall_at_10']:>6.4f} {fs}")
    print("build s = wall, cpu s = the build process's CPU time (every thread; on a shared machine its own cost); "
          "peak = build process high-water RSS (VmHWM, file-backed pages included); -base x = the same less the "
          "interpreter + imports measured before building, / raw; anon x = sampled anonymous peak / raw; "
          "serve = RSS the opened index adds while answering queries")


def at_recall(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Per case (plain / filtered): the smallest swept ef whose recall@10 reaches `target`, with its
    p50 (None when no ef does: then the best recall's row, marked)."""
    out: dict[str, Any] = {}
    for filtered in (False, True):
        cand = sorted((r for r in rows if r["filtered"] == filtered), key=lambda r: (r["ef"] or 0))
        hit = next((r for r in cand if r["recall_at_10"] >= target), None)
        best = hit or max(cand, key=lambda r: r["recall_at_10"], default=None)
        out["filtered" if filtered else "plain"] = None if best is None else {
            "ef": best["ef"], "p50_ms": best["p50_ms"], "p95_ms": best["p95_ms"],
            "recall_at_10": best["recall_at_10"], "reached": hit is not None}
    return out


def print_equal_recall(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    target = meta["target_recall"]
    print(f"\nat equal recall: the smallest ef with recall@10 >= {target} ('*' = not reached: best recall shown)")
    print(f"{'engine':<17} {'plain ef':>8} {'p50 ms':>7} {'R@10':>6}   {'filt ef':>7} {'p50 ms':>7} {'R@10':>6}  "
          f"{'filt/plain':>10}")
    for r in results:
        eq = r.get("at_target_recall")
        if not eq or not eq["plain"] or not eq["filtered"]:
            continue
        p, f = eq["plain"], eq["filtered"]
        mark = {True: " ", False: "*"}
        print(f"{r['engine']:<17} {str(p['ef']):>8} {p['p50_ms']:>7.2f} {p['recall_at_10']:>6.3f}{mark[p['reached']]}  "
              f"{str(f['ef']):>7} {f['p50_ms']:>7.2f} {f['recall_at_10']:>6.3f}{mark[f['reached']]} "
              f"{f['p50_ms'] / p['p50_ms']:>10.2f}")


def _git_commit() -> str | None:
    import subprocess

    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("qdrant-edge-py", "qdrant-client", "numpy", "faiss-cpu", "hnswlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="points in the store")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=300)
    ap.add_argument("--spread", type=float, default=0.8, help="within-cluster spread (norm, relative to 1)")
    ap.add_argument("--rank", type=int, default=16, help="intrinsic dimension of each cluster")
    ap.add_argument("--noise", type=float, default=0.2, help="isotropic noise norm, relative to 1")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries")
    ap.add_argument("--m", type=int, default=16, help="HNSW m (every engine)")
    ap.add_argument("--ef-construct", type=int, default=100, help="HNSW ef_construct (every engine)")
    ap.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64, 128],
                    help="comma-separated search ef values to sweep")
    ap.add_argument("--engines", default="edge:default,edge:single,faiss-hnsw,faiss-hnsw-pm,hnswlib,hnswlib-pm",
                    help="comma-separated: edge:<preset>, faiss-hnsw, faiss-sq8, hnswlib, numpy, and "
                         "faiss-hnsw-pm / hnswlib-pm (one index per modality)")
    ap.add_argument("--target-recall", type=float, default=0.98,
                    help="the summary compares engines at the smallest swept ef reaching this recall@10")
    ap.add_argument("--edge-custom", action="append", default=[], metavar="NAME=JSON",
                    help="an extra edge preset: CollectionSpec fields over the defaults, "
                         "e.g. 'cap50={\"max_segment_size_kb\": 50000}'; run it as edge:NAME")
    ap.add_argument("--threads", type=int, default=1, help="threads per engine (build and search)")
    ap.add_argument("--batch", type=int, default=1000, help="points per upsert / add call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="where data and indexes go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built indexes")
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    args = ap.parse_args(argv)
    args.edge_presets = {}  # travels to the children with args
    for item in args.edge_custom:
        name, _, raw = item.partition("=")
        args.edge_presets[name] = json.loads(raw)
    return args


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_engine(engine: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build `engine` in one child process, serve it in another; its figures, or its error."""
    known = {**EDGE_PRESETS, **args.edge_presets}
    if engine.startswith("edge:") and engine.split(":", 1)[1] not in known:
        raise SystemExit(f"unknown edge preset {engine!r}; known: {sorted(known)} (add one with --edge-custom)")
    out = engine_path(workdir, engine)
    shutil.rmtree(out, ignore_errors=True)
    log.info("building %s", engine)
    load_before = loadavg()
    try:
        res = {"engine": engine, "loadavg_build_start": load_before,
               **run_child(child_main, "build", engine, args, workdir, out)}
        log.info("built %s in %.1fs, %.1f CPU s (peak %.0f MiB); serving", engine, res["build_s"],
                 res["build_cpu_s"], res["build_peak_rss_bytes"] / 2 ** 20)
        res["loadavg_serve_start"] = loadavg()
        res.update(run_child(child_main, "serve", engine, args, workdir, out))
        res["loadavg_end"] = loadavg()
        res["at_target_recall"] = at_recall(res["search"], args.target_recall)
    except (RuntimeError, ImportError) as e:
        log.error("%s failed: %s", engine, e)
        res = {"engine": engine, "error": str(e)}
    if not args.keep:
        for p in (out, out.with_suffix(".npy")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Children inherit these: BLAS / OpenMP stay within --threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store-"))
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {"n": args.n, "dim": args.dim, "m": args.m, "ef_construct": args.ef_construct, "threads": args.threads,
            "cpus": os.cpu_count(), "loadavg_start": loadavg(),
            "argv": sys.argv[1:], "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "shared_machine_note": "load average shows other users' work on the same CPUs",
            "commit": _git_commit(), "versions": _versions(), "python": platform.python_version(),
            "target_recall": args.target_recall}
    meta.update(prepare_data(args, workdir))
    prov = provenance()  # once, at the start: the load average before the engines ran
    results = []
    for engine in args.engines.split(","):
        results.append(run_engine(engine, args, workdir))
        meta["loadavg_end"] = loadavg()
        if args.json:  # after every engine, so a long run that dies keeps what it measured
            write_json_report(args.json, {"meta": meta, "results": results, "provenance": prov})
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, meta)
    print_equal_recall(results, meta)
    if args.json:
        log.info("wrote %s", args.json)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
