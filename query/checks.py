"""A search request's checks: each bad part (k, filter, level, targets, the query file) becomes one
`QueryError` that says what to give instead, before the store is asked anything.

Example:
    >>> parse_filters(["label=seven", "path_prefix=audio/"])
    {'label': 'seven', 'path_prefix': 'audio/'}
    >>> with_modality({"label": "seven"}, ["audio"]).must
    {'label': 'seven', 'modality': 'audio'}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bridge.modalities import MODALITIES, check_modality, file_kind
from core.errors import EmergentBridgeError
from indexer.store import Filter, Range
from query.moments import LEVELS


class QueryError(EmergentBridgeError, ValueError):
    """A query that cannot run: unknown modality, unreadable file, empty text, unknown id..."""


def checked_per_file(level: Any, per_file: Any, k: int) -> int:
    """The checked `per_file`; None means 1 on level "auto" (a file by its best moment) and no limit on
    level "moments" (the k best moments, wherever they are)."""
    if level not in LEVELS:
        raise QueryError(f"level={level!r}: choose {', '.join(LEVELS)} (files: whole files only; moments: the "
                         "moments of long recordings and videos only; auto: both, a long file by its best moments)")
    if per_file is None:
        return k if level == "moments" else 1
    if isinstance(per_file, bool) or not isinstance(per_file, (int, np.integer)) or not 1 <= per_file <= 1000:
        raise QueryError(f"per_file={per_file!r}: the number of moments shown per file must be an integer from 1 "
                         "to 1000")
    return int(per_file)


def check_query_file(path: Path) -> None:
    """A query file must be a regular file: a named pipe would block the search forever."""
    import os
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        raise QueryError(f"{path}: cannot open the query file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise QueryError(f"{path}: not a regular file (a {file_kind(st.st_mode)}); give a saved file as the query")


def check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 100_000:
        raise QueryError(f"k={k!r}: the number of hits must be an integer from 1 to 100000")


def check_filter(filter: Any) -> None:
    """Each filter value must be a str/int/bool, a non-empty list of strs or of ints, or a Range:
    checked here so a bad value is one QueryError, not a TypeError from the store's client."""
    if filter is None or isinstance(filter, Filter):
        return
    if not isinstance(filter, Mapping):
        raise QueryError(f"filter {filter!r}: give a mapping FIELD -> value (e.g. {{'label': 'seven'}})")
    for key, value in filter.items():
        if not isinstance(key, str) or not key:
            raise QueryError(f"filter field {key!r}: field names are non-empty strings")
        if key == "path_prefix":
            if not isinstance(value, str):
                raise QueryError(f"filter path_prefix={value!r}: a path prefix is a string")
            continue
        if isinstance(value, (str, int, bool, Range)):
            continue
        if isinstance(value, (list, tuple)) and value and (
                all(isinstance(v, str) for v in value)
                or all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            continue
        hint = " (a float matches only through a Range, e.g. Range(gte=0.5))" if isinstance(value, float) else ""
        raise QueryError(f"filter {key}={value!r}: a value must be a str, int or bool, a non-empty list of strs "
                         f"or of ints, or a Range{hint}")


def parse_targets(target: str | Sequence[str] | None) -> list[str]:
    if target is None:
        return list(MODALITIES)
    if not isinstance(target, (str, list, tuple)):
        raise QueryError(f"target={target!r}: give a modality or a list of them ({', '.join(MODALITIES)})")
    targets = [target] if isinstance(target, str) else list(target)
    if not targets:
        raise QueryError(f"target=[] names no modality; give one or more of {', '.join(MODALITIES)} or None for all")
    for t in targets:
        if not isinstance(t, str):
            raise QueryError(f"target {t!r} is not a modality name; known: {', '.join(MODALITIES)}")
        try:
            check_modality(t)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
    return targets


def with_modality(filter: Mapping[str, Any] | Filter | None, targets: list[str]) -> Filter:
    """The caller's filter plus `modality in targets` (an index-backed keyword match)."""
    if isinstance(filter, Filter):
        must, must_not, prefix = dict(filter.must), dict(filter.must_not), filter.path_prefix
    else:
        must, must_not, prefix = dict(filter or {}), {}, None
        prefix = must.pop("path_prefix", None)
    must["modality"] = targets[0] if len(targets) == 1 else targets
    return Filter(must=must, must_not=must_not, path_prefix=prefix)


def parse_filters(pairs: Sequence[str]) -> dict[str, Any]:
    """`["label=seven", "path_prefix=audio/"]` -> {"label": "seven", "path_prefix": "audio/"}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QueryError(f"bad filter {pair!r}: use FIELD=VALUE")
        out[key] = value
    return out
