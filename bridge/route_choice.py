"""Which route each search takes, chosen on validation once a bridge is trained: search by example
through the space or the encoder's raw features, and between two modalities on one encoder through
the space, the raw features or an instance map. What is chosen is written in the checkpoint's config.

Example:
    >>> same = choose_same_modality_routes(bridge, data, val)   # doctest: +SKIP
    >>> same["audio->audio"]["route"]                           # doctest: +SKIP
    'raw'
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from bridge.pairs import ModalityData, TrainingSet
from bridge.space import Bridge
from bridge.validation import PairCheck, clearly_better, hits_at_1, unit_rows

log = logging.getLogger(__name__)


def choose_same_modality_routes(bridge: Bridge, data: TrainingSet, val: TrainingSet | None = None) -> dict[str, Any]:
    """Search by example through the space or through the encoder's own features (`raw`), per modality.

    Each validation item (else each training item) queries a gallery of validation and training
    items of its modality, itself left out; relevance is the label. The space is kept only where it
    beats the raw features: a head trained to reach another modality can pull items onto their
    classes and lose what told them apart. Without labels there is no evidence, and the encoder it
    stands on is the safe side: `raw`.
    """
    out: dict[str, Any] = {}
    for m in bridge.modalities:
        if m not in data:
            continue
        held = val.get(m) if val else None
        gallery = data[m] if held is None else ModalityData(
            ids=held.ids + data[m].ids, features=np.concatenate([held.features, data[m].features]),
            labels=list(held.labels) + list(data[m].labels), pairs=list(held.pairs) + list(data[m].pairs))
        n_queries = len(gallery.ids) if held is None else len(held.ids)
        labels = list(gallery.labels)
        pair = f"{m}->{m}"
        labelled = np.array([x is not None for x in labels[:n_queries]])
        if n_queries < 2 or not labelled.any():
            out[pair] = {"route": "raw", "why": "no labelled items to judge by: the encoder's own features"}
            continue
        raw = gallery.features / np.maximum(np.linalg.norm(gallery.features, axis=1, keepdims=True), 1e-12)

        def loo_hits(vectors: np.ndarray) -> np.ndarray:  # each labelled query's own row left out
            return hits_at_1(vectors[:n_queries], labels[:n_queries], vectors, labels,
                             query_groups=range(n_queries), corpus_groups=range(len(labels)))[labelled]

        hit_bridge, hit_raw = loo_hits(bridge.embed_features(m, gallery.features)), loo_hits(raw)
        scores = {"bridge_r1": float(hit_bridge.mean()), "raw_r1": float(hit_raw.mean())}
        wins, losses = int((hit_bridge & ~hit_raw).sum()), int((hit_raw & ~hit_bridge).sum())
        route = "direct" if clearly_better(wins, losses) else "raw"
        out[pair] = {"route": route, **{k: round(v, 4) for k, v in scores.items()}, "queries": int(len(hit_raw)),
                     "space_only": wins, "raw_only": losses,
                     "on": "validation" if held is not None else "training items"}
        log.info("search by example %-8s R@1 through the space %.3f, raw features %.3f -> route %s", m,
                 scores["bridge_r1"], scores["raw_r1"], route)
    return out


def choose_cross_modal_routes(bridge: Bridge, data: TrainingSet, val: TrainingSet,
                              same_encoder: Callable[[str, str], bool]) -> dict[str, Any]:
    """Per ordered pair of two modalities read by one encoder (image, depth, thermal on one CNN),
    searched directly: through the space, the encoder's raw features (`raw`), or the instance map into
    the target's raw features (`instance`), chosen on validation as search by example is.

    The raw features are the floor: the instance map replaces them only where it wins clearly (sign
    test, `clearly_better`), and the space replaces the better of the two only where it wins clearly
    over it. A head bound into the label space matches classes; the raw features match the scene.
    Pairs the bridge searches through G (never paired) are left to their default route.
    """
    out: dict[str, Any] = {}
    heads = lambda m, x: bridge.embed_features(m, x)  # noqa: E731
    for a, b in ((a, b) for i, a in enumerate(bridge.modalities) for b in bridge.modalities[i + 1:]):
        if a not in data or b not in data or not same_encoder(a, b):
            continue
        if bridge.has_proxy and not bridge.is_paired(a, b):
            continue
        check = PairCheck(a, b, data, val)
        for s in check.queries if check.usable else ():
            t = b if s == a else a
            hits = {"direct": check.hits(s, heads), "raw": check.hits(s, unit_rows)}
            if bridge.has_instance(s, t):
                hits["instance"] = check.hits(s, lambda m, x, s=s, t=t: bridge.instance_embed(s, t, x) if m == s
                                              else unit_rows(m, x), unit_rows)
            route, why = "raw", {}
            for challenger in ("instance", "direct"):
                if challenger not in hits:
                    continue
                wins, losses = int((hits[challenger] & ~hits[route]).sum()), int((hits[route] & ~hits[challenger]).sum())
                why[f"{challenger}_vs_{route}"] = [wins, losses]
                if clearly_better(wins, losses):
                    route = challenger
            out[f"{s}->{t}"] = {"route": route, **{f"{r}_r1": round(float(h.mean()), 4) for r, h in hits.items()},
                                "queries": int(len(hits["raw"])), "relevance": check.how, "wins_losses": why,
                                "on": "validation"}
            log.info("%s->%s val R@1 through the space %.3f, raw features %.3f%s -> route %s", s, t,
                     hits["direct"].mean(), hits["raw"].mean(),
                     f", instance map {hits['instance'].mean():.3f}" if "instance" in hits else "", route)
    return out


def drop_unused_instance_maps(bridge: Bridge) -> None:
    """Instance maps no pair's route takes are not saved (the checkpoint stays as a reader before them reads it)."""
    maps = bridge.config.get("instance_maps") or {}
    taken = {pair for pair, info in bridge.config.get("cross_modal", {}).items() if info["route"] == "instance"}
    used = {k for k, m in maps.items() if {f"{m['source']}->{m['target']}", f"{m['target']}->{m['source']}"} & taken}
    for key in [k for k in maps if k not in used]:
        del bridge.modules.instance[key]
        del maps[key]
    if not maps:
        bridge.config.pop("instance_maps", None)
