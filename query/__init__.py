"""Questions -> ranked hits, and their measurement. It may import `bridge` and `indexer`.

    query/search.py        `Index`: any-to-any search with direct, proxy and fused routes
    query/cli.py           the `ebridge` command line (assembles every verb) and `ebridge search`
    query/eval/            metrics, the digits world, standard dataset adapters, the benchmark, the demo

Example:
    >>> from query import Index                                         # doctest: +SKIP
    >>> with Index.open("runs/data.index") as index:                    # doctest: +SKIP
    ...     hits = index.search("a spoken seven", target="audio", k=5)
"""
from __future__ import annotations

from core.deps import lazy_attributes

_PUBLIC = {"Index": "query.search", "SearchHit": "query.search", "QueryError": "query.search"}
__all__ = list(_PUBLIC)

__getattr__ = lazy_attributes('query', _PUBLIC)
