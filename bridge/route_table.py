"""The route table: which route a search from one modality to another takes, pair by pair
(`{"image->text": "direct", "audio->audio": "raw"}`).

A bridge carries its own in its config: chosen on validation when it is trained
(`bridge.route_choice`), or the encoders' own features for search by example in a pretrained
space with no training (`Bridge.from_preset`). An index may carry one in its store's metadata that
overrides the bridge's: calibrated through the real index by `ebridge bench`, and emptied by the
indexer when the index changes bridge. Every one of them is written by `write_route_table` and
read by `route_table`; `query.search.Index.route_for` picks the route from them.

Example:
    >>> meta = write_route_table({}, {"audio->audio": "raw", "image->text": {"route": "direct", "why": "paired"}})
    >>> route_table(meta)
    {'audio->audio': 'raw', 'image->text': 'direct'}
"""
from __future__ import annotations

from typing import Any, Mapping, MutableMapping

ROUTE_TABLE_KEY = "routes"  # where the table sits in a bridge's config and in an index store's metadata


def route_table(meta: Mapping[str, Any]) -> dict[str, str]:
    """The route table of a bridge's config or an index store's metadata; empty when it has none."""
    return dict(meta.get(ROUTE_TABLE_KEY) or {})


def write_route_table(meta: MutableMapping[str, Any], routes: Mapping[str, Any]) -> MutableMapping[str, Any]:
    """Set the route table of `meta` (a bridge's config being built, or a patch for an index store's
    `update_metadata`) to `routes` and return `meta`. `routes` maps "source->target" to a route
    name, or to a choice that names one (`{"route": "raw", "why": ...}`, as route choice writes them).

    Example:
        >>> write_route_table({}, {"image": "direct"})
        Traceback (most recent call last):
        ...
        ValueError: route table: 'image' is not a 'source->target' pair of modalities
    """
    table = {}
    for pair, route in routes.items():
        source, arrow, target = str(pair).partition("->")
        if not (arrow and source and target):
            raise ValueError(f"route table: {pair!r} is not a 'source->target' pair of modalities")
        table[f"{source}->{target}"] = str(route["route"] if isinstance(route, Mapping) else route)
    meta[ROUTE_TABLE_KEY] = table
    return meta
