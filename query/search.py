"""Any-to-any search over an index, with unpaired pairs routed through the proxy anchor.

Routes (which one a pair takes is data: the index's route table, overridable per call; the list
with a line on each is `SEARCH_ROUTES`):
- `direct`: nearest `bridged` vectors to the query's bridged embedding. Right for pairs
  trained with paired data (image<->text, audio<->image, ...).
- `proxy`: nearest `proxy` vectors (G's view of each item) to G's view of the query: both
  sides are compared as text-like proxy embeddings.
- `fused`: both searches fused by weighted reciprocal-rank fusion in ONE Qdrant Query API
  call (prefetch + fusion). The default for pairs that never had paired data.
- `raw`: search through the encoder's own features, stored beside each point as `raw_<modality>`:
  search by example, and between two modalities read by one encoder (thermal -> image on one CNN).
  Taken where validation says the encoder beats the space (always for search by example on a
  zero-training space, whose vectors are a function of those features), so a search is never worse
  than the encoder it stands on.
- `instance`: between two modalities read by one encoder, the query through the bridge's instance
  map (trained on the pairs, starting at the identity) against the target's stored `raw_<modality>`
  vectors: the encoder's geometry, where scenes are told apart, not only classed.

Example:
    >>> index = Index.open("digits.index")                                  # doctest: +SKIP
    >>> hits = index.search("audio/7_theo_3.wav", target="depth", k=5)      # doctest: +SKIP
    >>> hits[0].path, hits[0].route                                         # doctest: +SKIP
    ('depth/depth_07713.png', 'fused')
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bridge.modalities import check_modality, detect_modality, load, names_a_file
from bridge.moments import clock
from bridge.route_table import route_table
from core.errors import BridgeMismatchError, EmergentBridgeError
from indexer.lock import IndexBusyError, ReadLock  # noqa: F401  (IndexBusyError: part of this API)
from indexer.record import read_record, unfinished_first_run
from indexer.store import Filter, Hit, Prefetch, RankedIds, Store, open_store, store_in_folder
from indexer.store.types import StoreUnreadableError
from indexer.verify import StoreDamagedError, check_page
from query.checks import (QueryError, check_filter, check_k, check_query_file, checked_per_file,  # noqa: F401
                          parse_filters, parse_targets, with_modality)  # (QueryError, parse_filters: part of this API)
from query.moments import MOMENT_OVERFETCH, at_level as _at_level, collapse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """One route a search can take: its name, what it does in a line, and how it is used.

    `family`: "table" (auto: the index's route table picks per pair), "cross" (through the bridged
    space, between any two modalities) or "feature" (against the target's stored encoder features,
    `raw_<modality>`). `score_kind`: the scale of its scores (None: each hit says). `uses_proxy`:
    it needs G's view of the query. `same_modality`: a route a search within one modality takes.

    Example:
        >>> [r.name for r in SEARCH_ROUTES if r.family == "cross"]
        ['direct', 'proxy', 'fused']
    """

    name: str
    meaning: str
    family: str
    score_kind: str | None = "cosine"
    uses_proxy: bool = False
    same_modality: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "meaning": self.meaning, "family": self.family, "score_kind": self.score_kind}


# The one list of routes: the CLI's --route choices, the server's validation and the page's menu
# (GET /routes) are read from it.
SEARCH_ROUTES: tuple[Route, ...] = (
    Route("auto", "the index's route table: the route chosen for each pair of modalities", "table", score_kind=None),
    Route("direct", "nearest bridged vectors to the query's bridged embedding", "cross", same_modality=True),
    Route("proxy", "G's view of the query against G's view of each item", "cross", uses_proxy=True),
    Route("fused", "direct and proxy fused by reciprocal rank (ranks, not a similarity)", "cross", score_kind="rrf",
          uses_proxy=True),
    Route("raw", "the encoder's own features (same modality, or two read by one encoder: thermal->image)", "feature",
          same_modality=True),
    Route("instance", "the query through the bridge's instance map into the target's encoder features", "feature"),
)
ROUTE_CHOICES = tuple(r.name for r in SEARCH_ROUTES)  # what a caller may ask for: auto and every route
CROSS_ROUTES = tuple(r.name for r in SEARCH_ROUTES if r.family == "cross")  # between two modalities
FEATURE_ROUTES = tuple(r.name for r in SEARCH_ROUTES if r.family == "feature")  # the target's `raw_<modality>`
ROUTES = (*CROSS_ROUTES, *FEATURE_ROUTES)  # what a hit can have come through (auto resolves to one of them)
SAME_MODALITY_ROUTES = tuple(r.name for r in SEARCH_ROUTES if r.same_modality)  # within one modality
PROXY_ROUTES = tuple(r.name for r in SEARCH_ROUTES if r.uses_proxy)
SCORE_KINDS = {r.name: r.score_kind for r in SEARCH_ROUTES if r.score_kind}


def score_kind(route: str) -> str:
    """The scale a route's scores are on: "rrf" for fused ranks, "cosine" for every single-vector route.
    Scores on two scales are never compared (the page and `group_by` keep one route per list)."""
    return SCORE_KINDS.get(route, "cosine")
BRIDGE_DIR = "bridge"


@dataclass
class SearchHit:
    id: str
    path: str | None
    modality: str
    score: float
    route: str
    label: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def score_kind(self) -> str:
        """The scale of `score`: "cosine" (direct, proxy, raw) or "rrf" (fused ranks): never compare across."""
        return score_kind(self.route)

    @property
    def file_id(self) -> str:
        """The id of the file's whole-file point (a moment's own id differs)."""
        return str(self.payload.get("file_id") or self.id) if self.payload.get("moment") is True else str(self.id)

    @property
    def start(self) -> float | None:
        """Seconds into the file where a moment hit begins (None for a whole-file hit)."""
        return float(self.payload["start"]) if self.payload.get("moment") is True else None

    @property
    def end(self) -> float | None:
        return float(self.payload["end"]) if self.payload.get("moment") is True else None

    def where(self) -> str:
        """`path`, or `path @ mm:ss-mm:ss` for a moment: what the CLI prints."""
        if self.start is None:
            return str(self.path)
        return f"{self.path} @ {clock(self.start)}-{clock(self.end or self.start)}"

    def to_json(self) -> dict[str, Any]:
        out = {"id": str(self.id), "path": self.path, "modality": self.modality, "score": round(self.score, 6),
               "route": self.route, "score_kind": self.score_kind, "label": self.label}
        if self.start is not None:
            out.update(start=self.start, end=self.end, file_id=self.file_id)
        return out




@dataclass
class FusionSettings:
    """Weighted RRF of the direct and proxy searches; `depth` candidates from each."""

    direct_weight: float = 1.0
    proxy_weight: float = 1.0
    depth: int = 100


class Index:
    """An opened index: its store, its bridge and its route table."""

    def __init__(self, store: Store, bridge: Any, fusion: FusionSettings | None = None):
        self.store = store
        self.bridge = bridge
        self.fusion = fusion or FusionSettings()
        self._read_lock: ReadLock | None = None  # set by `open` for a store that lives in the index folder
        self.repair_hint = "re-run `ebridge index` on its folder to check and repair it"  # `open` names them
        self.rebuild_hint = "re-run `ebridge index` on its folder: it moves the damaged store aside and rebuilds it"
        meta = store.metadata
        if meta.get("bridge_version") and meta["bridge_version"] != bridge.version:
            raise BridgeMismatchError(
                f"the index was built with bridge {meta['bridge_version']} but {bridge.version} was given; "
                "search with the index's own bridge (omit --bridge) or re-index with --reembed"
            )

    @classmethod
    def open(cls, path: str | Path, url: str | None = None, collection: str | None = None,
             bridge: str | Path | Any | None = None, read_lock: bool = True, device: Any = None) -> "Index":
        """Open an index folder: its store is wherever the index's record says (embedded, a server
        or qdrant-client local mode) unless `url`/`collection` say otherwise. `bridge` defaults to the
        copy kept in `<path>/bridge/`.

        A store inside the index folder is never opened while an indexer writes it (loading it
        beside the writer would break the writer's run): that raises IndexBusyError naming the
        indexer's pid; try again when it finishes. The index stays read-locked until `close`
        (`read_lock=False` for a caller that already holds the folder's lock, as `ebridge serve` does).
        `device` ("auto", "cpu", "cuda", "mps"; None = leave the bridge where it is) is where queries
        are embedded.
        """
        if device is not None and not (isinstance(device, str) and device.strip().lower() == "cpu"):
            from core.device import resolve_device

            device = resolve_device(device)
        else:
            device = None  # the CPU, where a loaded bridge already is: resolving it would import torch
        path = Path(path)
        if url is None and not path.exists():
            raise QueryError(f"index {path} not found; build it with `ebridge index DIR --index {path}`")
        lock = None
        if read_lock and url is None and store_in_folder(path):
            lock = ReadLock(path)
            lock.acquire()  # before the bridge copy too: a --reembed run replaces it
        try:
            index = cls._open_unlocked(path, url, collection, bridge, device)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        index._read_lock = lock
        return index

    @classmethod
    def _open_unlocked(cls, path: Path, url: str | None, collection: str | None, bridge: Any,
                       device: Any = None) -> "Index":
        from bridge.space import Bridge

        if bridge is None:
            bridge = path / BRIDGE_DIR
            if not (bridge / "config.json").is_file():
                unfinished = unfinished_first_run(path)
                if unfinished:  # the first run failed before it wrote the bridge copy: no checkpoint to ask for
                    raise QueryError(unfinished)
                raise QueryError(f"{path} holds no bridge ({bridge}/config.json missing); pass --bridge CKPT_DIR (the "
                                 "checkpoint it was built with), or restore the copy with `ebridge index DIR --index "
                                 f"{path} --bridge CKPT_DIR`")
        if isinstance(bridge, (str, Path)):
            bridge = Bridge.load(bridge)
        if device is not None:
            bridge.to(device)
        try:
            store = open_store(path, url=url, collection=collection)
        except FileNotFoundError as exc:
            raise QueryError((url is None and unfinished_first_run(path)) or str(exc)) from None
        except StoreDamagedError as exc:  # the engine cannot load the store at all: one sentence, the fix
            raise _unloadable(path, exc) from None
        try:
            index = cls(store, bridge)
            root = (read_record(path) or {}).get("root", "DIR")
            index.repair_hint = (f"run `ebridge index {root} --index {path}`: it checks every point and embeds the "
                                 "damaged ones again")
            index.rebuild_hint = _rebuild_hint(path)
            try:
                check = check_page(store)
            except StoreUnreadableError as exc:  # a partition the engine cannot load (opened as it is read)
                raise _unloadable(path, exc) from None
            if not check.ok:
                raise StoreDamagedError(f"index {path}: its store is damaged ({check.summary()}); {index.repair_hint}")
            unfinished = unfinished_first_run(path) if url is None else None
            if unfinished:  # killed mid-way through its first run: searchable, but only what was embedded so far
                log.warning("%s; until then it holds %d of the folder's files", unfinished, store.count())
            return index
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            if self._read_lock is not None:
                self._read_lock.release()
                self._read_lock = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ routing

    @property
    def routes(self) -> dict[str, str]:
        return route_table(self.store.metadata)

    def route_for(self, source: str, target: str) -> str:
        """The index's route table (calibrated by the benchmark), else the bridge's own (chosen on
        validation at training: `raw` where the encoder beats the space for a same-modality pair),
        else `direct` for paired pairs and `fused` for unpaired ones (`direct` without G)."""
        pair = f"{source}->{target}"
        chosen = self.routes.get(pair) or route_table(self.bridge.config).get(pair)
        if chosen in FEATURE_ROUTES and not self.has_raw(target):
            chosen = None  # an index made before raw vectors were stored
        if chosen == "instance" and not self.bridge.has_instance(source, target):
            chosen = None  # an index-level table naming a map this bridge lacks
        if chosen:
            return chosen
        if self.bridge.is_paired(source, target) or not self.bridge.has_proxy:
            return "direct"
        return "fused"

    def shares_encoder(self, a: str, b: str) -> bool:
        """Whether `a` and `b` are read by one encoder, so their raw features compare as they are."""
        return a == b or self.bridge.preset.shares_encoder(a, b, aligned=False)

    def has_raw(self, modality: str) -> bool:
        """Whether this index stores `modality`'s own encoder features (the raw route)."""
        return f"raw_{modality}" in self.store.spec.vectors

    # ------------------------------------------------------------------ queries

    def embed_query(self, query: Any, source: str | None = None) -> tuple[str, np.ndarray]:
        """A query -> (its modality, its bridged vector). See `embed_query_features` for the rest."""
        modality, z, _ = self.embed_query_features(query, source)
        return modality, z

    def embed_query_features(self, query: Any, source: str | None = None) -> tuple[str, np.ndarray, np.ndarray | None]:
        """A query -> (its modality, its bridged vector, its encoder features: the raw route's query).

        A query is a file path, raw text, an array (give `source`), or `{"id": point_id}` for
        an item already in the index (its stored vector is used). A `pathlib.Path` is always a
        file; a `str` is a file only when it names an existing file (so a long text is never
        probed into an OSError), and `source="text"` makes any str a text."""
        if isinstance(query, Mapping) and "id" in query:
            pid = query["id"]
            if pid is None or (isinstance(pid, str) and not pid.strip()):
                raise QueryError("an id query needs a point id: the `id` of a search hit (a UUID), "
                                 "e.g. --id 0b7f9d2e-...")
            try:
                records = self.store.retrieve([pid], with_vectors=True)
            except StoreUnreadableError as exc:  # a partition the engine cannot load, met as it opens
                raise StoreDamagedError(f"{exc}; {self.rebuild_hint}") from None
            except (ValueError, TypeError) as exc:
                raise QueryError(f"--id {pid!r}: not a point id ({exc})") from None
            if not records:
                raise QueryError(f"no point with id {query['id']!r} in this index")
            rec = records[0]
            modality = rec.payload["modality"]
            raw = (rec.vectors or {}).get(f"raw_{modality}")
            return (modality, np.asarray(rec.vectors["bridged"], dtype=np.float32),
                    None if raw is None else np.asarray(raw, dtype=np.float32))
        if isinstance(query, Path) or (isinstance(query, str) and source != "text" and names_a_file(query)):
            path = Path(query)
            check_query_file(path)
            modality = source or detect_modality(path)
            if modality is None:
                raise QueryError(f"{path}: cannot tell its modality from the name; pass source=/--source")
            item = load(check_modality(modality), path)
        elif isinstance(query, str):
            if source not in (None, "text"):
                raise QueryError(f"{query}: file not found (a {source} query must be a readable file)")
            modality, item = "text", load("text", query)
        elif isinstance(query, np.ndarray):
            if source is None:
                raise QueryError("an array query needs its modality: source='image' / 'audio' / ...")
            modality, item = check_modality(source), load(source, query)
        else:
            raise QueryError(f"unsupported query type {type(query).__name__}: give a path, text, array or {{'id': ...}}")
        if modality not in self.bridge.modalities:
            raise QueryError(f"this index's bridge has no {modality} head (it knows {', '.join(self.bridge.modalities)})")
        features = self.bridge.encode(modality, [item])
        return modality, self.bridge.embed_features(modality, features)[0], features[0]

    def search(self, query: Any, target: str | Sequence[str] | None = None, k: int = 10,
               filter: Mapping[str, Any] | Filter | None = None, route: str = "auto",
               source: str | None = None, *, level: str = "auto", per_file: int | None = None) -> list[SearchHit]:
        """Top-k items of the target modality(ies) for one query, best first.

        A long recording or video is found by its moments (`hit.start`, `hit.end` in seconds), at most
        `per_file` of them per file (default: 1 on level "auto", no limit on level "moments"), never two
        that overlap; `level="files"` searches whole files only, `level="moments"` moments only (see
        `LEVELS`).

        Example:
            >>> index.search("seven", target="audio", k=3, filter={"label": "seven"})   # doctest: +SKIP
            >>> index.search("dog barking", target="audio", per_file=3)[0].where()      # doctest: +SKIP
            'field/walk.wav @ 02:13-02:16'
        """
        modality, z, features = self.embed_query_features(query, source)
        return self.search_vectors(modality, z[None, :], target, k, filter, route,
                                   features=None if features is None else features[None, :],
                                   level=level, per_file=per_file)[0]

    def search_batch(self, queries: Sequence[Any], target: str | Sequence[str] | None = None, k: int = 10,
                     filter: Mapping[str, Any] | Filter | None = None, route: str = "auto",
                     source: str | None = None, *, level: str = "auto", per_file: int | None = None) -> list[list[SearchHit]]:
        """Many queries of one modality at once (one backend call per route)."""
        if not queries:
            return []
        embedded = [self.embed_query_features(q, source) for q in queries]
        modalities = {m for m, _, _ in embedded}
        if len(modalities) > 1:
            raise QueryError(f"a batch must hold one query modality, got {sorted(modalities)}")
        features = None if any(f is None for _, _, f in embedded) else np.stack([f for _, _, f in embedded])
        return self.search_vectors(modalities.pop(), np.stack([z for _, z, _ in embedded]), target, k, filter, route,
                                   features=features, level=level, per_file=per_file)

    def search_vectors(self, source: str, vectors: np.ndarray, target: str | Sequence[str] | None = None,
                       k: int = 10, filter: Mapping[str, Any] | Filter | None = None,
                       route: str = "auto", views: np.ndarray | None = None,
                       features: np.ndarray | None = None, *, level: str = "auto",
                       per_file: int | None = None) -> list[list[SearchHit]]:
        """Search with bridged vectors already computed (what the benchmark uses); `views`,
        their proxy views if already computed (G costs a few denoiser passes per query);
        `features`, the queries' encoder features (the raw route; without them it is not taken);
        `level` and `per_file` as in `search`."""
        targets = parse_targets(target)
        check_k(k)
        check_filter(filter)
        per_file = checked_per_file(level, per_file, k)
        by_route = self._plan(source, targets, route, features)
        if views is None and {r for r, _ in by_route} & set(PROXY_ROUTES):
            views = self.bridge.proxy_view(vectors)
        flt = _at_level(filter, level)
        depth = k if level == "files" else min(100_000, k * per_file * MOMENT_OVERFETCH)
        while True:
            per_route = [[[_hit(h, r) for h in hits] for hits in self._ask_store(r, ts, vectors, views, depth, flt,
                                                                                 features, source, lean=False)]
                         for (r, _), ts in by_route.items()]
            merged = per_route[0] if len(per_route) == 1 else _interleave(per_route, depth)
            if level == "files":
                return merged
            out = [collapse(hits, k, per_file, level) for hits in merged]
            # A list cut short by the file limit while the store had more candidates: look deeper.
            if depth >= 100_000 or all(len(o) == k or len(h) < depth for o, h in zip(out, merged)):
                return out
            depth = min(100_000, depth * 4)

    def search_ids(self, source: str, vectors: np.ndarray, target: str, k: int = 10, route: str = "auto",
                   views: np.ndarray | None = None, features: np.ndarray | None = None) -> tuple[str, list[RankedIds]]:
        """`search_vectors(..., level="files")` of one target as ids and scores only: (the route
        taken, one `RankedIds` per query). The same ranking with no payload read and no hit object
        made per point: what an evaluation asks, whose every query ranks the whole gallery.

        Example:
            >>> route, ranked = index.search_ids("audio", z, "depth", k=200)            # doctest: +SKIP
            >>> route, ranked[0].ids[:2], ranked[0].scores[:2]                          # doctest: +SKIP
            ('fused', ['0b7f9d2e-...', '5c1e...'], array([0.0328, 0.0323]))
        """
        targets = parse_targets(target)
        check_k(k)
        if len(targets) != 1:
            raise QueryError(f"search_ids ranks one target modality, not {', '.join(targets)}")
        ((r, _), ts), = self._plan(source, targets, route, features).items()
        if views is None and r in PROXY_ROUTES:
            views = self.bridge.proxy_view(vectors)
        return r, self._ask_store(r, ts, vectors, views, k, _at_level(None, "files"), features, source, lean=True)

    def _plan(self, source: str, targets: list[str], route: str, features: np.ndarray | None
              ) -> dict[tuple[str, str], list[str]]:
        """The route each target is searched by, grouped: {(route, target for a feature route else ""): targets}.
        Refuses a route this index or query cannot take."""
        if route not in ROUTE_CHOICES:
            raise QueryError(f"unknown route {route!r}; choose {', '.join(ROUTE_CHOICES)}")
        if route == "raw" and any(t != source and not self.shares_encoder(source, t) for t in targets):
            raise QueryError(f"route raw compares encoder features as they are: it searches {source} and what the "
                             f"same encoder reads, not {', '.join(t for t in targets if not self.shares_encoder(source, t))}")
        if route == "instance" and any(not self.bridge.has_instance(source, t) for t in targets):
            raise QueryError(f"route instance needs an instance map between {source} and "
                             f"{', '.join(t for t in targets if not self.bridge.has_instance(source, t))}, and this "
                             f"index's bridge ({self.bridge.version}) has none: use route auto")
        if route in PROXY_ROUTES and not self.bridge.has_proxy:
            raise QueryError(f"route {route} needs G, and this index's space ({self.bridge.version}) has none: it "
                             "was indexed with no training; use route direct (or bind modalities with `ebridge train`)")
        by_route: dict[tuple[str, str], list[str]] = {}
        for t in targets:
            r = self.route_for(source, t) if route == "auto" else route
            if r in FEATURE_ROUTES and (features is None or not self.has_raw(t)):
                if route in FEATURE_ROUTES:
                    raise QueryError(f"route {route} needs the query's encoder features and an index that stores "
                                     f"raw_{t} vectors (re-index with --reembed to add them)")
                r = "direct"
            # A feature route searches one target's own `raw_<modality>` vectors: one search per target.
            by_route.setdefault((r, t) if r in FEATURE_ROUTES else (r, ""), []).append(t)
        return by_route

    def _ask_store(self, route: str, targets: list[str], vectors: np.ndarray, views: np.ndarray | None,
                   k: int, filter: Mapping[str, Any] | Filter | None, features: np.ndarray | None = None,
                   source: str = "", *, lean: bool = False) -> list[list[Hit]] | list[RankedIds]:
        """The store's answer for one route: hits, or (`lean`) ids and scores only (`Store.search_ids`)."""
        flt = with_modality(filter, targets)
        search = self.store.search_ids if lean else self.store.search_batch
        try:
            if route == "direct":
                results = search("bridged", vectors, k, flt)
            elif route == "raw":
                unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
                results = search(f"raw_{targets[0]}", unit, k, flt)
            elif route == "instance":
                results = search(f"raw_{targets[0]}", self.bridge.instance_embed(source, targets[0], features), k, flt)
            elif route == "proxy":
                results = search("proxy", views, k, flt)
            else:
                f = self.fusion
                depth = max(f.depth, k)  # each side must offer at least k candidates
                fused = self.store.search_fused_ids if lean else self.store.search_fused
                results = [fused([Prefetch("bridged", v, depth, f.direct_weight),
                                  Prefetch("proxy", g, depth, f.proxy_weight)], k, flt) for v, g in zip(vectors, views)]
        except StoreUnreadableError as exc:  # a partition the engine cannot load, met as it opens
            raise StoreDamagedError(f"{exc}; {self.rebuild_hint}") from None
        except (EmergentBridgeError, ValueError, KeyError, TypeError):
            raise  # our own checks of the request
        except Exception as exc:  # the engine could not read the store (e.g. an LZ4 decode error)
            raise StoreDamagedError(f"the store failed to answer ({str(exc).strip()[:300]}); it may be damaged: "
                                    f"{self.repair_hint}") from exc
        finite = all(np.isfinite(r.scores).all() for r in results) if lean else \
            all(np.isfinite(h.score) for hits in results for h in hits)
        if not finite:
            raise StoreDamagedError(f"the store holds garbage vectors (non-finite scores); {self.repair_hint}")
        return results


def _interleave(per_route: list[list[list[SearchHit]]], k: int) -> list[list[SearchHit]]:
    """Scores of different routes are not comparable (cosine vs fusion): interleave by rank."""
    merged = []
    for lists in zip(*per_route):
        ranked = sorted((rank, j, h) for j, hits in enumerate(lists) for rank, h in enumerate(hits))
        merged.append([h for _, _, h in ranked][:k])
    return merged


def _unloadable(path: Path, exc: Exception) -> StoreDamagedError:
    """A store the engine cannot load, as one sentence with the command that rebuilds it."""
    return StoreDamagedError(f"index {path} is damaged: {exc}; {_rebuild_hint(path)}")


def _rebuild_hint(path: Path) -> str:
    """What rebuilds a damaged index from its source files (the indexed folder, from its record)."""
    try:
        root = (read_record(path) or {}).get("root", "DIR")
    except EmergentBridgeError:
        root = "DIR"
    return (f"run `ebridge index {root} --index {path}`: it moves the damaged store aside and rebuilds it "
            "from the source files")


def _hit(h: Any, route: str) -> SearchHit:
    p = h.payload or {}
    return SearchHit(id=str(h.id), path=p.get("path"), modality=p.get("modality", "?"), score=float(h.score),
                     route=route, label=p.get("label"), payload=p)

