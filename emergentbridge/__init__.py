"""EmergentBridge under its distribution's name: the version and the public API in one import.

The code lives in three packages (`bridge`: the space, `indexer`: folders -> points, `query`:
questions -> hits); this one re-exports their public names, lazily, so that
`import emergentbridge` stays as light as they are (no torch until used).

Example:
    >>> import emergentbridge
    >>> emergentbridge.__version__ == __import__("bridge").__version__
    True
    >>> from emergentbridge import Bridge, index_directory, Index     # doctest: +SKIP
"""
from __future__ import annotations

from bridge import __version__
from core.deps import lazy_attributes

_PUBLIC = {
    "Bridge": "bridge.space",
    "TrainConfig": "bridge.config",
    "train": "bridge.train",
    "load_preset": "bridge.encoders",
    "read_manifest": "bridge.pairs",
    "EmergentBridgeError": "core.errors",
    "index_directory": "indexer.index",
    "IndexSummary": "indexer.index",
    "Index": "query.search",
    "SearchHit": "query.search",
}
__all__ = ["__version__", *_PUBLIC]

__getattr__ = lazy_attributes("emergentbridge", _PUBLIC)
