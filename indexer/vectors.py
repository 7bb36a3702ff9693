"""The named vectors an index's collection declares, and whether a collection fits a bridge.

`bridged` (the bridge's space), `proxy` (G's view of it, where the bridge has G) and `raw_<modality>`
(each modality's encoder features, the `raw` route). `indexer.index` creates or checks the store with
these; an index made by an older version (a `proxy` it never wrote, no raw vectors) keeps working.
"""
from __future__ import annotations

import logging
from typing import Any

from indexer.store import Store

log = logging.getLogger(__name__)


def raw_vectors(bridge: Any) -> dict[str, int]:
    """The `raw_<modality>` named vectors: each modality's own encoder features (the `raw` route of
    search by example), declared for every modality of the preset so that a bridge binding more
    modalities later never changes the collection's layout."""
    preset = bridge.preset
    return {f"raw_{m}": int(preset.dim(m)) for m in preset.modalities}


def store_vectors(bridge: Any, grows: bool) -> dict[str, int]:
    """The named vectors a new collection declares: `bridged`, the `raw_<modality>` ones, and `proxy`
    (G's view) where the bridge has G. A zero-training bridge has no G: its points never hold a proxy
    view, and declaring one cost about 9 KiB per unindexed point (2,324 dims on the offline preset).
    A store that cannot declare it later (`grows`: the store's `Store.grows_vectors`, false for a
    server's collections) still declares it, so that a bridge with G can extend the index."""
    proxy = {"proxy": bridge.dim} if bridge.has_proxy or not grows else {}
    return {"bridged": bridge.dim, **proxy, **raw_vectors(bridge)}


def layout_fits(store: Store, wanted: dict[str, int], where: str) -> bool:
    """Whether the store's collection can hold this bridge's points (`wanted`, `store_vectors`). A
    `proxy` declared and never written (a zero-training index made before issue 29) fits; one missing
    fits where the store can add it (`grow_proxy`). An index from before the raw route fits too: it
    still searches by its bridged vectors, and its points get raw vectors when --reembed rewrites them."""
    declared = dict(store.spec.vectors)
    if "proxy" in wanted and declared.get("proxy", wanted["proxy"]) != wanted["proxy"]:
        return False
    if "proxy" in wanted and "proxy" not in declared and not store.grows_vectors:
        return False
    declared.pop("proxy", None)
    wanted = {k: v for k, v in wanted.items() if k != "proxy"}
    if declared == wanted:
        return True
    if declared == {"bridged": wanted["bridged"]}:
        log.info("%s: made before raw vectors were stored; search by example uses the bridged vectors "
                 "(re-index with --reembed to add them)", where)
        return True
    return False


def grow_proxy(store: Store, bridge: Any, where: str) -> None:
    """A bridge with G on an index that declares no `proxy` (a zero-training index it extends): the
    store declares it now, rebuilding what was built without it (`Store.add_vectors`); the points get
    their proxy views from `_adopt_extension`, or when they are embedded."""
    if not bridge.has_proxy or "proxy" in store.spec.vectors or not store.grows_vectors:
        return  # (a store that cannot grow declared it from the start: `store_vectors`)
    log.info("%s: this bridge has G; adding the proxy vector to the store", where)
    store.add_vectors({"proxy": bridge.dim})
