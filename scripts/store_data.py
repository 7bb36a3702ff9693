"""The data of the store benchmark (`scripts.bench_store`): clustered unit vectors shaped like
bridged embeddings, their payloads and ids, the exact top-10 they are scored against, and a reader
that hands them to an engine one upsert batch at a time.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from indexer.store import point_id

log = logging.getLogger("bench_store")
MODALITIES = ("image", "audio", "depth", "thermal", "text")


def make_vectors(n: int, dim: int, clusters: int, spread: float, noise: float, rank: int,
                 seed: int) -> np.ndarray:
    """Unit vectors around `clusters` random centres, with a low intrinsic dimension.

    Each cluster varies along its own random `rank`-dimensional subspace (norm `spread`
    relative to the unit centre) plus a little isotropic noise (norm `noise`). Real
    embedding spaces look like this: estimates of the intrinsic dimension of CLIP-like
    embeddings are a few tens, far below 256. Isotropic 256-d noise alone would make every
    neighbour nearly tied with the next and HNSW recall meaninglessly low.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, rank, dim)).astype(np.float32) / np.sqrt(dim)
    # Uneven cluster sizes (Zipf-like, capped so no cluster swallows the corpus), as real classes are.
    sizes = np.minimum(rng.zipf(1.5, clusters), 50).astype(np.float64)
    assign = rng.choice(clusters, size=n, p=sizes / sizes.sum())
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):  # chunked to keep the temporaries small at 1M
        stop = min(n, start + 50_000)
        a = assign[start:stop]
        z = rng.standard_normal((stop - start, rank)).astype(np.float32) * (spread / np.sqrt(rank))
        x = centres[a] + np.einsum("nr,nrd->nd", z, bases[a])
        x += noise / np.sqrt(dim) * rng.standard_normal((stop - start, dim)).astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the exact top-k by dot product (= cosine on unit vectors).

    Chunked over both queries and base so the score blocks stay ~25 MB: the peak RSS we
    report should be the store's, not this reference's.
    """
    out = np.empty((len(queries), k), np.int64)
    for q0 in range(0, len(queries), 250):
        qs = queries[q0:q0 + 250]
        best_s = np.full((len(qs), k), -np.inf, np.float32)
        best_i = np.zeros((len(qs), k), np.int64)
        for start in range(0, len(base), 25_000):
            s = qs @ base[start:start + 25_000].T
            part = np.argpartition(-s, k, axis=1)[:, :k]
            cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
            cand_i = np.concatenate([best_i, part + start], axis=1)
            top = np.argpartition(-cand_s, k, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
        out[q0:q0 + len(qs)] = best_i
    return out


FILTER_MODALITY = "depth"  # the filtered queries keep modality == this (every fifth point)
FILTER_REM = MODALITIES.index(FILTER_MODALITY)


def payload_of(i: int) -> dict[str, Any]:
    """The payload the store holds for point `i`: what the indexer writes (path, modality, label)."""
    mod = MODALITIES[i % 5]
    return {"path": f"data/{mod}/{i // 1000:04d}/{i:07d}.bin", "modality": mod, "label": f"c{i % 100}"}


def id_of(i: int) -> str:
    return point_id(payload_of(i)["path"])


def read_chunks(path: Path, n: int, dim: int, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, rows) of the base vectors, `batch` rows at a time, read (not mapped) from `path`.

    Plain reads keep the file's pages in the page cache, outside the reader's RSS, so a
    child's RSS is its engine's, not the benchmark's copy of the data.
    """
    buf = np.empty((batch, dim), np.float32)
    with open(path, "rb") as f:
        for lo in range(0, n, batch):
            rows = min(batch, n - lo)
            view = buf[:rows]
            f.readinto(memoryview(view).cast("B"))
            yield lo, view


def prepare_data(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Write the base vectors (raw float32), queries and exact top-10 (plain and filtered) to `workdir`."""
    t0 = time.perf_counter()
    allv = make_vectors(args.n + args.queries, args.dim, args.clusters, args.spread, args.noise, args.rank, args.seed)
    base, queries = allv[: args.n], allv[args.n:]  # held-out queries from the same clusters
    base.tofile(workdir / "base.f32")
    np.save(workdir / "queries.npy", queries)
    np.save(workdir / "truth.npy", exact_top_k(base, queries, 10))
    keep = np.arange(FILTER_REM, args.n, 5)
    np.save(workdir / "truth_filtered.npy", keep[exact_top_k(base[keep], queries, 10)])
    log.info("data: %d x %d (+%d queries) and exact top-10 in %.1fs", args.n, args.dim, args.queries,
             time.perf_counter() - t0)
    return {"raw_vector_bytes": int(base.nbytes)}

