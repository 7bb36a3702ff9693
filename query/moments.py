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
    """The best `k` hits, at most `per_file` of one file and never two moments of a file that overlap
    (windows overlap by their hop: the next-best window of one event is that event again); on level
    "auto" a long file's whole-file hit gives way to its moments when any of them is among the
    candidates (they say where).

    Example:
        >>> from query.search import SearchHit
        >>> def moment(id, score, start):
        ...     return SearchHit(id, "a.wav", "audio", score, "direct",
        ...                      payload={"moment": True, "file_id": "f", "start": start, "end": start + 3.0})
        >>> b = SearchHit("f", "a.wav", "audio", 0.8, "direct", payload={"moments": 4})
        >>> [h.id for h in collapse([moment("m1", 0.9, 3.0), b], k=5, per_file=1)]
        ['m1']
        >>> [h.id for h in collapse([moment("m1", 0.9, 3.0), moment("m2", 0.85, 4.5), moment("m3", 0.7, 9.0)],
        ...                         k=5, per_file=5)]
        ['m1', 'm3']
    """
    with_moments = {h.file_id for h in hits if h.start is not None}
    kept: list[Any] = []
    spans: dict[str, list[tuple[float, float]]] = {}
    for h in hits:
        if level == "auto" and h.start is None and h.file_id in with_moments:
            continue
        taken = spans.setdefault(h.file_id, [])
        if len(taken) >= per_file or (h.start is not None and _overlaps(h, taken)):
            continue
        taken.append((h.start, h.end) if h.start is not None else (0.0, 0.0))
        kept.append(h)
        if len(kept) == k:
            break
    return kept


def _overlaps(hit: Any, spans: list[tuple[float, float]]) -> bool:
    end = hit.end if hit.end is not None else hit.start
    return any(hit.start < e and s < end for s, e in spans)


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
