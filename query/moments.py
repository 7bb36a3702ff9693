"""Moments in search: a long recording or video is indexed as its whole-file point plus one point
per window (bridge.moments); these helpers say which of them a search returns (`LEVELS`) and
collapse a ranked list so one recording's many windows do not fill it (`collapse`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from indexer.store import Filter, Range

# What a search returns (`level`): "auto" ranks whole files and moments together, a long file shown by
# its best moments (at most `per_file` of them); "files" only whole files (as before moments
# existed); "moments" only the windows of long files (bridge.moments).
LEVELS = ("auto", "files", "moments")
MOMENT_OVERFETCH = 8  # candidates fetched per hit asked, so one recording's many windows cannot crowd the k out


def collapse(hits: Sequence[Any], k: int, per_file: int, level: str = "auto") -> list[Any]:
    """The best `k` hits, at most `per_file` of one file; on level "auto" a long file's whole-file hit
    gives way to its moments when any of them is among the candidates (they say where).

    Example:
        >>> from query.search import SearchHit
        >>> a = SearchHit("m1", "a.wav", "audio", 0.9, "direct", payload={"moment": True, "file_id": "f", "start": 3.0})
        >>> b = SearchHit("f", "a.wav", "audio", 0.8, "direct", payload={"moments": 4})
        >>> [h.id for h in collapse([a, b], k=5, per_file=1)]
        ['m1']
    """
    with_moments = {h.file_id for h in hits if h.start is not None}
    kept: list[Any] = []
    per: dict[str, int] = {}
    for h in hits:
        if level == "auto" and h.start is None and h.file_id in with_moments:
            continue
        if per.get(h.file_id, 0) >= per_file:
            continue
        per[h.file_id] = per.get(h.file_id, 0) + 1
        kept.append(h)
        if len(kept) == k:
            break
    return kept


def at_level(filter: Mapping[str, Any] | Filter | None, level: str) -> Mapping[str, Any] | Filter | None:
    """The caller's filter, limited to whole files or to moments (the points with a `segment` number)."""
    if level == "auto":
        return filter
    if isinstance(filter, Filter):
        must, must_not, prefix = dict(filter.must), dict(filter.must_not), filter.path_prefix
    else:
        must, must_not = dict(filter or {}), {}
        prefix = must.pop("path_prefix", None)
    # A moment's `segment` number (>= 0): the engine's boolean match does not find `moment: true`.
    (must if level == "moments" else must_not)["segment"] = Range(gte=0)
    return Filter(must=must, must_not=must_not, path_prefix=prefix)
