#!/usr/bin/env python
"""Memory of the per-modality store's write phase: Python's allocations against the engine's heap.

Writes `--n` points shaped as `bench_store.py` makes them (same generator, payload and ids) into a
fresh `PartitionedEdgeStore` with the optimizer off, so every point stays in the appendable
(unindexed) segments, and reports: the process's RSS / anonymous RSS after imports, Python's own
allocations (`tracemalloc`: current and peak), and RSS / anonymous RSS / high-water mark after the
last write. Run it with different `--spec` overrides to see what a setting costs while unindexed
(docs/store-benchmark.md, "Where a build's peak goes": the payload indexes' share was measured so).

Usage::

    python -m scripts.store_write_memory --n 100000
    python -m scripts.store_write_memory --n 100000 --spec '{"payload_indexes": {"path": "prefix"}}'
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import shutil
import sys
import tempfile
import tracemalloc
from pathlib import Path

from bridge.provenance import write_json_report
from indexer.store import PartitionedEdgeStore, Point
from scripts import store_data, store_engines, store_procs

log = logging.getLogger("store_write_memory")
MIB = 2 ** 20


def _write_vectors(path: Path, n: int, dim: int) -> None:
    store_data.make_vectors(n, dim, 300, 0.8, 0.2, 16, 0).tofile(path)  # bench_store's defaults and seed


def measure(n: int, dim: int, overrides: dict, workdir: Path, batch: int = 1000) -> dict[str, float]:
    """Write `n` points with the optimizer off into a store under `workdir`; figures in MiB."""
    data = workdir / "base.f32"
    # Made in another process: the generator's temporaries would otherwise stay in this one's heap.
    proc = mp.get_context("spawn").Process(target=_write_vectors, args=(data, n, dim))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"making the vectors failed (exit code {proc.exitcode})")
    out: dict[str, float] = {f"after_imports_{k}_mib": v / MIB for k, v in store_procs.proc_status().items()}
    args = argparse.Namespace(dim=dim, m=16, ef_construct=100, threads=1, edge_presets={})
    spec = dataclasses.replace(store_engines.edge_spec(args, "default"), optimize_every=None, **overrides)
    tracemalloc.start()
    store = PartitionedEdgeStore(workdir / "store")
    store.create(spec)
    for lo, rows in store_data.read_chunks(data, n, dim, batch):
        vecs = rows.tolist()
        store.upsert((Point(store_data.id_of(lo + j), {"bridged": v}, store_data.payload_of(lo + j)) for j, v in enumerate(vecs)),
                     batch=batch)
        del vecs  # before the next batch's lists exist: one batch at a time
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out.update({f"after_writes_{k}_mib": v / MIB for k, v in store_procs.proc_status().items()})
    out.update(python_current_mib=current / MIB, python_peak_mib=peak / MIB)
    store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--spec", default="{}", help="CollectionSpec fields over bench_store's edge:default, as JSON")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="store_write_memory-"))
    try:
        res = {"n": args.n, "spec": json.loads(args.spec), **measure(args.n, args.dim, json.loads(args.spec), workdir)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for key, value in res.items():
        log.info("%s: %s", key, f"{value:.1f}" if isinstance(value, float) else value)
    if args.json:
        write_json_report(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
