#!/usr/bin/env python
"""Peak memory and CPU of building an index of photo-shaped points, per chunk setting (issue 29).

A photo point of a real index carries every named vector the indexer writes (`indexer.pipeline`:
``bridged``, ``proxy`` where the bridge has G, ``raw_image``), in a collection that declares the
vectors `indexer.index` declares (``bridged``, ``proxy``, ``raw_<modality>`` of every modality of the
preset). The shapes are taken from the preset's zero-training bridge (`Bridge.from_preset`, what
`ebridge index` uses with no trained bridge) or given with ``--dims``. Each (n, setting) is built in a
fresh process through the real store (`PartitionedEdgeStore`, the index's own spec with the setting's
fields over it), unit random vectors, then ``optimize()`` as the end of an indexing run does; the
process reports its high-water RSS (VmHWM), CPU seconds (user + system, every engine thread) and the
segments each partition ends with.

Usage (the runs of docs/reports/store-chunk-photos.json; the two settings ran side by side)::

    python -m scripts.store_chunk_memory --n 20000,100000 --json docs/reports/store-chunk-photos.json \
        --setting 'unindexed={"optimize_every": null, "optimize_every_kb": null, "writes_only": true}'
    python -m scripts.store_chunk_memory --n 200000 --append --json docs/reports/store-chunk-photos.json \
        --setting 'unindexed={"optimize_every": null, "optimize_every_kb": null, "writes_only": true}'
    python -m scripts.store_chunk_memory --n 30000 --append --json docs/reports/store-chunk-photos.json \
        --setting 'points={"optimize_every": 300000, "optimize_every_kb": null}'
    python -m scripts.store_chunk_memory --n 30000 --append --json docs/reports/store-chunk-photos.json \
        --setting 'bytes={"optimize_every": 300000, "optimize_every_kb": 300000}'
    python -m scripts.store_chunk_memory --n 100000 --append --json docs/reports/store-chunk-photos.json \
        --setting 'bytes={"optimize_every": 300000, "optimize_every_kb": 300000}'
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bridge.provenance import provenance, write_json_report

log = logging.getLogger("store_chunk_memory")
MIB = 2 ** 20


def photo_dims(preset: str) -> tuple[dict[str, int], list[str]]:
    """(the collection's declared vectors, the names a photo point carries) for `preset`'s
    zero-training bridge, as `indexer.vectors.store_vectors` and `indexer.pipeline` make them."""
    from bridge.space import Bridge
    from indexer.vectors import store_vectors

    bridge = Bridge.from_preset(preset)
    declared = store_vectors(bridge, grows=True)  # the embedded store (PartitionedEdgeStore)
    carried = ["bridged", *(["proxy"] if bridge.has_proxy else []), "raw_image"]
    return declared, carried


def _points(n: int, declared: dict[str, int], carried: list[str], batch: int, seed: int):
    """Photo points in batches: unit random vectors, the payload fields the indexer writes."""
    from indexer.store import Point, point_id

    for lo in range(0, n, batch):
        rng = np.random.default_rng(seed + lo)
        size = min(batch, n - lo)
        vecs = {}
        for name in carried:
            v = rng.standard_normal((size, declared[name]), dtype=np.float32)
            vecs[name] = v / np.linalg.norm(v, axis=1, keepdims=True)
        out = []
        for j in range(size):
            i = lo + j
            path = f"photos/{i // 1000:04d}/{i:07d}.jpg"
            out.append(Point(point_id(path), {k: vecs[k][j] for k in carried},
                             {"path": path, "modality": "image", "label": f"c{i % 100}",
                              "folder": f"photos/{i // 1000:04d}", "segment": 0}))
        yield out


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def build_once(n: int, declared: dict[str, int], carried: list[str], overrides: dict[str, Any],
               workdir: str, queue: Any) -> None:
    """Child process: build the store and put its figures on `queue`. Settings with
    ``"optimize_every": null`` and ``"writes_only": true`` keep every point unindexed (no build)."""
    overrides = dict(overrides)
    writes_only = overrides.pop("writes_only", False)
    from indexer.index import PAYLOAD_INDEXES
    from indexer.store import CollectionSpec, PartitionedEdgeStore
    from scripts.store_procs import proc_status

    spec = CollectionSpec(vectors=declared, payload_indexes=dict(PAYLOAD_INDEXES), indexing_threads=1,
                          search_threads=1, **overrides)
    base_rss = proc_status()["VmHWM"]
    t0, c0 = time.perf_counter(), _cpu_s()
    store = PartitionedEdgeStore(Path(workdir) / "store")
    store.create(spec)
    for pts in _points(n, declared, carried, 1000, 0):
        store.upsert(pts, batch=1000)
        store.flush()  # as the indexer does after every batch
    t1, c1 = time.perf_counter(), _cpu_s()
    hwm_writes = proc_status()["VmHWM"]
    if not writes_only:
        store.optimize()
    segs = {name: part._live().info().segments_count for name, part in store._open_parts()}
    store.close()
    queue.put({"n": n, "settings": overrides, "writes_only": writes_only, "peak_mib": proc_status()["VmHWM"] / MIB,
               "peak_after_writes_mib": hwm_writes / MIB, "after_imports_mib": base_rss / MIB,
               "cpu_s": _cpu_s() - c0, "writes_cpu_s": c1 - c0, "final_optimize_cpu_s": _cpu_s() - c1,
               "wall_s": time.perf_counter() - t0, "segments": segs})


def measure(n: int, declared: dict[str, int], carried: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    workdir = tempfile.mkdtemp(prefix="store_chunk_memory-")
    queue = ctx.Queue()
    try:
        proc = ctx.Process(target=build_once, args=(n, declared, carried, overrides, workdir, queue))
        proc.start()
        res = queue.get()
        proc.join()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="100000,200000", help="point counts, comma-separated")
    ap.add_argument("--preset", default="offline", help="the preset whose zero-training bridge gives the shapes")
    ap.add_argument("--dims", default=None, help='declared vectors as JSON instead, e.g. {"bridged": 256, '
                    '"proxy": 256, "raw_image": 1280}; a point carries bridged, proxy and raw_image')
    ap.add_argument("--setting", action="append", default=[], metavar='NAME={"field": value}',
                    help="CollectionSpec fields over the index's spec; repeat for several")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--append", action="store_true", help="add this run to the report --json already holds")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.dims:
        declared = json.loads(args.dims)
        carried = [k for k in ("bridged", "proxy", "raw_image") if k in declared]
    else:
        declared, carried = photo_dims(args.preset)
    settings = dict(s.split("=", 1) for s in args.setting) or {"default": "{}"}
    runs = []
    for n in (int(x) for x in args.n.split(",")):
        for name, over in settings.items():
            res = {"setting": name, **measure(n, declared, carried, json.loads(over))}
            log.info("%s", json.dumps(res))
            runs.append(res)
    if args.json:
        save(args.json, {"declared_vectors": declared, "carried_vectors": carried,
                         "carried_bytes_per_point": 4 * sum(declared[k] for k in carried), "runs": runs},
             append=args.append)
    return 0


def save(path: Path, report: dict[str, Any], append: bool = False) -> None:
    """Write `report` (with its provenance) to `path`, as one of its ``parts``; `append` keeps the
    parts already there, so runs made one after another (or side by side) share one report."""
    parts = json.loads(path.read_text())["parts"] if append and path.is_file() else []
    write_json_report(path, {"parts": [*parts, {**report, "provenance": provenance()}]})


if __name__ == "__main__":
    sys.exit(main())
