"""Folders -> Qdrant points. It imports `bridge` only.

    indexer/scan.py       walk a folder: which files, which modality, labels from sidecars
    indexer/pipeline.py   read -> embed -> write, with decode workers
    indexer/ledger.py     the manifest (Parquet + journal) and the errors report
    indexer/record.py     index.json: format version, root, where the store is
    indexer/lock.py       one writer per index
    indexer/store/        the storage layer: types, the embedded and server backends, open_store
    indexer/index.py      `index_directory`: one run, from a folder to an up-to-date index
    indexer/cli.py        `ebridge index`

Example:
    >>> from indexer import index_directory                                        # doctest: +SKIP
    >>> index_directory("data/photos", "runs/photos.index", bridge="runs/bridge")  # doctest: +SKIP
"""
from __future__ import annotations

from core.deps import lazy_attributes

_PUBLIC = {"index_directory": "indexer.index", "IndexSummary": "indexer.index", "open_store": "indexer.store"}
__all__ = list(_PUBLIC)

__getattr__ = lazy_attributes('indexer', _PUBLIC)
