"""The pairs manifest: which items exist, of what modality, paired with what, in which split.

A manifest is a CSV or Parquet table, one row per item, with columns
`path` (relative to the manifest's folder) or `text` (for inline text items), `modality`,
and optionally `label`, `pair` (items of different modalities with the same pair key are
paired) and `split`. Items of two modalities without shared pair keys are paired by
shared label (e.g. an image and the prompts of its class name).

Example:
    >>> rows = in_split(read_manifest("digits/manifest.csv"), "train")   # doctest: +SKIP
    >>> data = training_set(rows, load_preset("offline"), FeatureCache("cache"))  # doctest: +SKIP
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.features import content_id, encode_cached
from bridge.modalities import check_modality, load
from core.errors import EmergentBridgeError

log = logging.getLogger(__name__)
CHUNK = 1024


@dataclass
class ModalityData:
    """Frozen features of one modality, with what pairs them to other modalities."""

    ids: list[str]
    features: np.ndarray  # (n, in_dim) float32
    labels: list[str | None] = field(default_factory=list)
    pairs: list[str | None] = field(default_factory=list)  # explicit pair keys
    # the FeatureCache folder the features came from: training records it in the checkpoint, so
    # `ebridge index` reuses these features instead of encoding the same files again
    feature_cache: str | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.labels = self.labels or [None] * n
        self.pairs = self.pairs or [None] * n
        if not (self.features.shape[0] == len(self.labels) == len(self.pairs) == n):
            raise ValueError("ids, features, labels and pairs must have the same length")


TrainingSet = dict[str, ModalityData]


def pair_keys(a: ModalityData, b: ModalityData) -> tuple[list[str | None], list[str | None], str]:
    """Keys that pair items of a with items of b: explicit pair keys when the two share
    any, else shared labels (e.g. an image and the text of its class name)."""
    shared = {p for p in a.pairs if p is not None} & {p for p in b.pairs if p is not None}
    if shared:
        return a.pairs, b.pairs, "pair"
    if {x for x in a.labels if x is not None} & {x for x in b.labels if x is not None}:
        return a.labels, b.labels, "label"
    return [], [], "none"


@dataclass(frozen=True)
class Row:
    modality: str
    source: str  # absolute path, or the text itself for inline text
    label: str | None
    pair: str | None
    split: str | None
    inline: bool = False


def read_manifest(path: str | Path) -> list[Row]:
    """All rows of a CSV/Parquet manifest (see `in_split` to pick a split)."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    if "modality" not in frame.columns or not ({"path", "text"} & set(frame.columns)):
        raise ValueError(f"{path}: a manifest needs a 'modality' column and a 'path' or 'text' column; has {frame.columns}")
    rows = []
    for rec in frame.iter_rows(named=True):
        modality = check_modality(str(rec["modality"]).strip())
        text = rec.get("text")
        inline = bool(text) and not rec.get("path")
        source = str(text) if inline else str((path.parent / str(rec["path"])).resolve())
        rows.append(Row(modality, source, _clean(rec.get("label")), _clean(rec.get("pair")), _clean(rec.get("split")), inline))
    if not rows:
        raise ValueError(f"{path}: the manifest has no items")
    return rows


def in_split(rows: list[Row], split: str, include_unsplit: bool = False) -> list[Row]:
    """Rows of one split; rows with no split belong to training (`include_unsplit`)."""
    return [r for r in rows if r.split == split or (include_unsplit and r.split is None)]


def _clean(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)


def training_set(rows: list[Row], preset: Any, cache: Any, batch_size: int = 32) -> dict[str, Any]:
    """Frozen features for every row, grouped by modality (cached by decoded content, so
    the indexer's cached encodes and these are one and the same)."""
    out = {}
    for modality in sorted({r.modality for r in rows}):
        group = [r for r in rows if r.modality == modality]
        ids, feats = [], []
        for start in range(0, len(group), CHUNK):  # decoded items are large: hold one chunk at a time
            items = [load(modality, r.source) for r in group[start : start + CHUNK]]
            ids += [content_id(it) for it in items]
            feats.append(encode_cached(cache, preset, modality, items, batch_size=batch_size, progress=True))
        out[modality] = ModalityData(ids=ids, features=np.concatenate(feats),
                                     labels=[r.label for r in group], pairs=[r.pair for r in group],
                                     feature_cache=str(Path(cache.directory).resolve()) if cache is not None else None)
        log.info("%s: %d items, features %s", modality, len(ids), out[modality].features.shape)
    return out


class RoleError(EmergentBridgeError, ValueError):
    """The manifest cannot train with the chosen anchor and proxy roles."""


def _keys(rows: list[Row], modality: str) -> tuple[set[str], set[str]]:
    group = [r for r in rows if r.modality == modality]
    return {r.pair for r in group if r.pair}, {r.label for r in group if r.label}


def pairable(rows: list[Row], a: str, b: str) -> bool:
    """True when items of a and b are paired: shared pair keys, else shared labels."""
    (pairs_a, labels_a), (pairs_b, labels_b) = _keys(rows, a), _keys(rows, b)
    return bool(pairs_a & pairs_b) or bool(labels_a & labels_b)


def check_roles(rows: list[Row], anchor: str, proxy: str, val_rows: list[Row] | None = None,
                source: str = "the manifest", proxy_from_preset: bool = False) -> None:
    """Fail before any encoder runs, with every problem at once and roles that would work.

    Each modality must pair with the anchor (shared pair keys or labels) and the proxy must be
    present. A validation split need not hold every modality: training judges a modality it
    lacks on held-out training pairs, or against its training items (class prompts), with one
    warning. `val_rows` is accepted for callers that pass it; it cannot make roles fail.

    Example:
        >>> rows = [Row("image", "/a.png", "cat", None, "train"), Row("text", "a cat", "cat", None, "train", True)]
        >>> check_roles(rows, "image", "text")
    """
    present = sorted({r.modality for r in rows})
    # A label-space preset brings the proxy's side itself (its class prompts): `proxy_from_preset`.
    problems = [f"no {m} rows (the {role})" for m, role in ((anchor, "anchor"), (proxy, "proxy"))
                if m not in present and not (role == "proxy" and proxy_from_preset)]
    if anchor == proxy:
        problems.append("the anchor and the proxy must be two different modalities")
    if anchor in present:
        problems += [f"{m} rows share no pair key or label with the {anchor} rows (the anchor)"
                     for m in present if m != anchor and not pairable(rows, m, anchor)]
    if not problems:
        return
    raise RoleError(f"{source} cannot train with --anchor {anchor} --proxy {proxy}: " + "; ".join(problems) +
                    f".\nIt holds {', '.join(present)}; " + _role_hint(rows, present, (anchor, proxy)) + ".")


def _role_hint(rows: list[Row], present: list[str], refused: tuple[str, str], most: int = 3) -> str:
    """At most `most` anchor/proxy choices that pass the role rules, never the refused one."""
    working = []
    for a in present:
        partners = [m for m in present if m != a and pairable(rows, m, a)]
        if len(partners) != len(present) - 1:  # every other modality must pair with the anchor
            continue
        for p in sorted(partners, key=lambda m: (m != "text", m)):
            if (a, p) != refused:
                working.append(f"--anchor {a} --proxy {p}")
    if working:
        return "roles that would work here: " + "; ".join(working[:most]) + ("; ..." if len(working) > most else "")
    if len(present) < 2:
        return "a bridge needs items of at least two modalities, paired by pair keys or labels"
    return "no modality pairs with all the others: add pair keys or labels that link each modality to one anchor"
