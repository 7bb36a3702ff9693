"""`IndexOptions`: every setting of one indexing run, with the defaults `ebridge index` has.

`index_directory(root, index, bridge, **settings)` builds one from its keywords; `ebridge index`
and a watching server (`indexer.watch`) build one too, so a setting has one name and one default.
One default differs on purpose: `device` is None here (a given bridge stays where it is), where the
command line, which loads its own bridge, says `--device auto`.
Light on purpose: the command line reads its defaults from here without loading the engine.

Example:
    >>> opts = IndexOptions(exclude=["*.md"], label_from_folder=True)
    >>> opts.batch_size, opts.decode
    (64, 'auto')
    >>> index_directory("photos", "runs/photos.index", options=opts)   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from indexer.scan import ShardSpec


def default_workers() -> int:
    """Reader threads by default: four, fewer on a machine with fewer cores."""
    return min(4, os.cpu_count() or 1)


@dataclass
class IndexOptions:
    """How a run indexes a folder (the folder, the index and the bridge are `index_directory`'s arguments).

    The space: `preset` (for a new index with no bridge: whose pretrained space; default
    `bridge.config.DEFAULT_PRESET`), `reembed` (re-embed every file; needed to switch the index to
    another bridge), `replace` (the index was built from another folder: drop its points and index this one).
    What to index: `exclude` (globs), `modality` (force one for every file), `sidecar` (a table of
    labels and captions), `label_from_folder`, `shard` (`"i/N"` or a `ShardSpec`: only that shard's files).
    Throughput: `batch_size`, `workers` (reader threads), `decode` (auto, threads, processes),
    `torch_threads`, `device` (None keeps the bridge where it is), `feature_cache` (a
    `FeatureCache` folder; default the one the bridge was trained with), `optimize` (build the HNSW
    graph at the end).
    Server or cluster: `qdrant_url` (an http(s) URL, ":memory:", a folder for qdrant-client's local
    mode, or a `QdrantClient`, left open), `api_key`, `collection`, and on creation `shards`,
    `replication`, `quantization` ("int8").
    The run: `progress` (a progress bar), `wait_for_readers` (seconds to wait for open searches).
    """

    preset: str | None = None
    reembed: bool = False
    replace: bool = False
    exclude: Iterable[str] = ()
    modality: str | None = None
    sidecar: str | Path | None = None
    label_from_folder: bool = False
    shard: ShardSpec | str | None = None
    batch_size: int = 64
    workers: int = field(default_factory=default_workers)
    decode: str = "auto"
    torch_threads: int | None = None
    device: Any = None
    feature_cache: str | Path | None = None
    optimize: bool = True
    qdrant_url: Any = None
    api_key: str | None = None
    collection: str | None = None
    shards: int = 1
    replication: int = 1
    quantization: str | None = None
    progress: bool = True
    wait_for_readers: float = 30.0

    @classmethod
    def build(cls, options: IndexOptions | None = None, **settings: Any) -> IndexOptions:
        """`options` (default: the defaults) with `settings` over it; an unknown name raises TypeError.

        Example:
            >>> IndexOptions.build(IndexOptions(workers=2), batch_size=32).workers
            2
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unknown indexing setting(s) {', '.join(unknown)}; the settings are IndexOptions' "
                            f"fields: {', '.join(sorted(names))}")
        return dataclasses.replace(options or cls(), **settings)
