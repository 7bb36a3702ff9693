"""Frozen-feature cache: encoder outputs stored once, reused by every training run and index.

Rows are keyed by (item id, encoder fingerprint, modality) and live in Parquet part files:

    <cache dir>/<modality>/<fingerprint>/part-<time>-<random>.parquet   columns: id, vector

`fingerprint` is `Preset.modality_fingerprint(modality)`: a hash of that modality's encoder
entry (backbone, weights, preprocessing) and the encoder code version, so changing the
audio encoder of a preset leaves its cached image features valid, and two presets with
the same image entry share them. Each computed batch is written as its own part (to a
temporary name, then renamed), so a crash loses at most the batch in flight and a
half-written file is never read.

The item id is the caller's identity for the content (the indexer uses path + content
hash), so an edited file gets a new id rather than a stale vector.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.modalities import check_modality
from core.files import atomic_path

if TYPE_CHECKING:  # a type only: importing the encoders here closed a cycle (encoders -> labelspace -> pairs -> here)
    from bridge.encoders import Preset

log = logging.getLogger(__name__)


class FeatureCache:
    """Parquet-backed store of frozen encoder features.

    Example:
        >>> from bridge.encoders import load_preset
        >>> cache = FeatureCache(tmp_dir)  # doctest: +SKIP
        >>> feats = cache.get_or_compute(load_preset("tiny"), "text", ["a", "b"],
        ...                              load_fn=lambda ids: [f"text {i}" for i in ids])  # doctest: +SKIP
        >>> feats.shape  # doctest: +SKIP
        (2, 64)
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        # (modality, fingerprint) -> {id: vector}; read from disk once per process.
        self._memory: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def folder(self, preset: Preset, modality: str) -> Path:
        """Where this encoder's parts live."""
        return self.directory / modality / preset.modality_fingerprint(modality)

    def get_or_compute(
        self,
        preset: Preset,
        modality: str,
        ids: Sequence[str],
        load_fn: Callable[[list[str]], list[Any]],
        batch_size: int = 64,
        progress: bool = True,
    ) -> np.ndarray:
        """Features for `ids` in order, float32 (len(ids), dim); only missing ids are computed.

        `load_fn(batch_ids)` returns the canonical items (see `bridge.modalities`) for those
        ids, one per id, in order. An exception from it or the encoder propagates; batches
        written before it stay cached, so the re-run resumes.

        Example:
            >>> cache.get_or_compute(preset, "image", ["mnist/0", "mnist/1"], load_images)  # doctest: +SKIP
        """
        check_modality(modality)
        tqdm = _tqdm()
        ids = [str(i) for i in ids]
        known = self._known(preset, modality)
        missing = list(dict.fromkeys(i for i in ids if i not in known))  # unique, first-seen order
        if missing:
            log.info("%s features: %d cached, %d to compute (%s)", modality, len(ids) - len(missing), len(missing), preset.name)
            encoder = preset.encoder(modality)
            folder = self.folder(preset, modality)
            folder.mkdir(parents=True, exist_ok=True)
            with tqdm(total=len(missing), desc=f"{modality} features", unit="item", disable=not progress) as bar:
                for start in range(0, len(missing), batch_size):
                    batch = missing[start : start + batch_size]
                    items = load_fn(batch)
                    if len(items) != len(batch):
                        raise ValueError(f"load_fn returned {len(items)} items for {len(batch)} ids")
                    vectors = encoder.encode(items)
                    _write_part(folder, batch, vectors)
                    known.update(zip(batch, vectors))
                    bar.update(len(batch))
        dim = preset.dim(modality)
        if not ids:
            return np.zeros((0, dim), np.float32)
        return np.stack([known[i] for i in ids]).astype(np.float32, copy=False)

    def cached_ids(self, preset: Preset, modality: str) -> set[str]:
        """Ids whose features are stored for this preset's `modality` encoder."""
        return set(self._known(preset, modality))

    def _known(self, preset: Preset, modality: str) -> dict[str, np.ndarray]:
        key = (modality, preset.modality_fingerprint(modality))
        if key not in self._memory:
            self._memory[key] = _read_parts(self.folder(preset, modality))
        return self._memory[key]


def content_id(item: Any) -> str:
    """The identity of a canonical item: a hash of its decoded content (text, or array
    bytes with dtype and shape). The same content has the same id wherever it was read
    from; an edited file gets a new one.

    Example:
        >>> content_id("seven") == content_id("seven") != content_id("eight")
        True
    """
    h = hashlib.blake2b(digest_size=16)
    if isinstance(item, str):
        h.update(b"text:" + item.encode("utf-8"))
    else:
        arr = np.ascontiguousarray(item)
        h.update(f"{arr.dtype.str}{arr.shape}:".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def encode_cached(cache: FeatureCache, preset: Preset, modality: str, items: Sequence[Any],
                  batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """`preset.encoder(modality).encode(items)`, through the cache, keyed by `content_id`."""
    ids = [content_id(it) for it in items]
    by_id = dict(zip(ids, items))
    return cache.get_or_compute(preset, modality, ids, lambda batch: [by_id[i] for i in batch],
                                batch_size=batch_size, progress=progress)


def _write_part(folder: Path, ids: list[str], vectors: np.ndarray) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    values = pa.array(vectors.reshape(-1), type=pa.float32())
    table = pa.table({"id": pa.array(ids, pa.string()), "vector": pa.FixedSizeListArray.from_arrays(values, vectors.shape[1])})
    name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_path(folder / name) as tmp:  # readers see a whole part or none
        pq.write_table(table, tmp)
    return folder / name


def _read_parts(folder: Path) -> dict[str, np.ndarray]:
    if not folder.is_dir():
        return {}
    import pyarrow.parquet as pq

    rows: dict[str, np.ndarray] = {}
    for part in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(part)
        column = table.column("vector").combine_chunks()
        dim = column.type.list_size
        vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
        rows.update(zip(table.column("id").to_pylist(), vectors))
    return rows


def _tqdm():
    from tqdm.auto import tqdm

    return tqdm
