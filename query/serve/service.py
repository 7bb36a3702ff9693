"""The search service behind `ebridge serve`: one process holds an index open with warm encoders and answers
search, item, media and preview requests, plus the web page at `/`.

Sharing an embedded index: the server takes the index folder's lock (`index.lock`, the one
`ebridge index` takes) with role "server" for as long as it runs, so an indexer started meanwhile
stops at once with "in use by a server (pid N)" instead of a WAL traceback, and the server never
sees a half-written store. To re-index: stop the server, index, start it again, or start it with
`watch=DIR` (`--watch DIR`): the server is then the index's writer and keeps it up to date with DIR
in a background thread (indexer/watch.py), through its own open store, while it answers searches.

Concurrency: one event loop takes the requests; decoding uploads, store calls and previews run in
a thread pool, and queries are embedded by a batcher per modality (`workers` threads, torch at
`torch_threads` each) that encodes whatever queries are waiting in one pass of encoder, head and
G: on a small machine a crowd of queries costs little more than one. qdrant-edge's shard answers
reads from many threads at once (checked: 8 threads x 1000 queries gave the serial answers), and
also while the watcher's thread upserts (serve --watch; checked: concurrent upserts and queries in
one process, no errors), so the store needs no lock of ours. What does stall requests is the
engine's flush and HNSW build holding the GIL: see indexer/watch.py for how the watcher keeps
them short or waits for a quiet moment.

Example:
    >>> from query.serve.app import create_app
from query.serve.service import SearchService, ServeSettings   # doctest: +SKIP
    >>> service = SearchService.open("runs/digits-index", ServeSettings())      # doctest: +SKIP
    >>> app = create_app(service)  # an ASGI app: uvicorn.run(app)             # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.modalities import MODALITIES, check_modality, detect_modality
from core.device import set_threads
from core.errors import InputError
from indexer.lock import IndexLock
from indexer.store import Filter, Range, store_in_folder
from query.moments import LEVELS
from query.search import PROXY_ROUTES, ROUTE_CHOICES, Index, QueryError, score_kind

from query.serve.batching import Batcher, LruCache
from query.serve.errors import ApiError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
API_KEY_HEADER = "X-API-Key"
API_KEY_COOKIE = "ebridge_api_key"  # the web page sets it, so <img>/<audio> requests carry the key too


@dataclass
class ServeSettings:
    """What a server allows and how it spends the machine."""

    api_key: str | None = None
    max_upload_bytes: int = 50 * 2**20
    max_k: int = 100
    workers: int = 2  # threads that encode queries and render previews
    torch_threads: int = 1  # torch intra-op threads per worker: the workers, not OpenMP, use the cores
    warm: bool = True  # run every encoder once at start, so the first request is not the cold one
    text_cache: int = 4096  # embedded text queries kept (popular queries repeat); 0: none


# ---------------------------------------------------------------------------------------- models


class SearchRequest(BaseModel):
    """One query: exactly one of `text` or `id` (or an uploaded file, in a multipart request)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="a text query", examples=["seven"])
    id: str | None = Field(None, description="search with an indexed item's stored vector ('more like this')")
    target: list[str] | None = Field(None, description="modalities to return (default: all)", examples=[["audio"]])
    k: int = Field(10, description="number of hits")
    filter: dict[str, str] = Field(default_factory=dict, description="payload filter, e.g. {'label': 'seven'}")
    route: Literal[ROUTE_CHOICES] = Field("auto", description="a route of GET /routes; auto: the index's route table")
    source: str | None = Field(None, description="an uploaded file's modality, when its name does not tell")
    level: Literal[LEVELS] = Field("auto", description="files: whole files only; moments: the moments of long "
                                   "recordings and videos only; auto: both, a long file by its best moments")
    per_file: int | None = Field(None, ge=1, le=1000, description="at most this many hits (moments) of one file, "
                                 "never two that overlap (default: 1 on level auto, no limit on level moments)")
    group_by: Literal["modality"] | None = Field(
        None, description="'modality': one ranked list of k hits per target modality in `groups` (each list on one "
                          "route, so its scores compare); default: one list, ranked across routes by rank")

    @field_validator("target", mode="before")
    @classmethod
    def _split_target(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("target")
    @classmethod
    def _known_targets(cls, value: list[str] | None) -> list[str] | None:
        for t in value or []:
            check_modality(t)
        return value or None

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str | None) -> str | None:
        return check_modality(value) if value else None


class HitOut(BaseModel):
    id: str
    path: str | None
    modality: str
    score: float
    score_kind: Literal["cosine", "rrf"] = Field(description="the score's scale: cosine similarity, or RRF fusion")
    route: str
    label: str | None
    media: str
    preview: str | None
    start: float | None = Field(None, description="a moment's start in seconds into the file (absent for a file)")
    end: float | None = Field(None, description="a moment's end in seconds")
    file_id: str | None = Field(None, description="a moment's file: the id of its whole-file point")


class GroupOut(BaseModel):
    route: str
    score_kind: Literal["cosine", "rrf"]
    hits: list[HitOut]


class SearchResponse(BaseModel):
    query: dict[str, Any]
    hits: list[HitOut] = Field(description="the ranked hits; with group_by, every group's hits, group after group")
    groups: dict[str, GroupOut] | None = Field(None, description="with group_by=modality: modality -> its ranked hits")
    took_ms: float


class ItemOut(BaseModel):
    id: str
    path: str | None
    modality: str
    label: str | None
    payload: dict[str, Any]
    media: str
    preview: str | None



# ---------------------------------------------------------------------------------------- service


class SearchService:
    """An opened index kept warm, and what the HTTP layer asks of it. Thread-safe for reads."""

    def __init__(self, index: Index, index_dir: Path, settings: ServeSettings, lock: IndexLock | None = None):
        self.index = index
        self.watcher: Any = None  # an indexer.watch.FolderWatcher when serving with --watch
        self.last_request = 0.0  # time.monotonic() of the last search: the watcher builds graphs when quiet
        self.index_dir = index_dir
        self.settings = settings
        self.lock = lock
        self.root = _indexed_root(index_dir)
        # decoding uploads, store calls and previews; encoders run in the batchers' own threads
        self.pool = ThreadPoolExecutor(max(4, 2 * settings.workers), thread_name_prefix="ebridge-serve")
        self._batchers: dict[str, Batcher] = {}
        self._batchers_lock = threading.Lock()
        self.text_cache = LruCache(settings.text_cache)
        self.upload_dir = Path(tempfile.mkdtemp(prefix=f"ebridge-serve-{os.getpid()}-"))
        self.started = time.time()

    @classmethod
    def open(cls, index_dir: str | Path, settings: ServeSettings | None = None, *, url: str | None = None,
             collection: str | None = None, watch: str | Path | None = None,
             watch_settings: Any = None) -> "SearchService":
        """Lock the index folder for this server, open it and warm its encoders; with `watch`, start
        keeping the index up to date with that folder (a catch-up run, then its changes) in the background.

        Raises IndexLockedError (an indexer runs there) or IndexBusyError (another process has the store)."""
        settings = settings or ServeSettings()
        index_dir = Path(index_dir).resolve()
        if url is None and not index_dir.is_dir():
            raise QueryError(f"index {index_dir} not found; build it with `ebridge index DIR --index {index_dir}`")
        watch = Path(watch).resolve() if watch is not None else None
        # The embedded store is one process's at a time: hold the folder's lock so an indexer is told
        # so. A Qdrant server collection takes concurrent writes itself: no lock, the indexer may run,
        # unless this server writes (watch): the manifest in the index folder has one writer.
        locked = watch is not None or (url is None and store_in_folder(index_dir))
        lock = IndexLock(index_dir, role="server", watch=str(watch) if watch else None) if locked else None
        if lock is not None:
            lock.acquire()
        try:
            set_threads(max(1, settings.torch_threads))
            index = Index.open(index_dir, url=url, collection=collection, read_lock=False)
            service = cls(index, index_dir, settings, lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if settings.warm:
            service.warm()
        if watch is not None:
            from indexer.watch import FolderWatcher

            watcher = FolderWatcher(watch, index_dir, store=index.store, bridge=index.bridge, settings=watch_settings,
                                    last_request=lambda: service.last_request, qdrant_url=url, collection=collection)
            try:
                watcher.start()
            except BaseException:
                service.close()
                raise
            service.watcher = watcher
            if service.root is None:
                service.root = watch
        return service

    def close(self) -> None:
        if self.watcher is not None:  # first: its run writes to the store closed below
            self.watcher.stop()
            self.watcher = None
        with self._batchers_lock:
            for batcher in self._batchers.values():
                batcher.close()
            self._batchers.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)
        try:
            self.index.close()
        finally:
            if self.lock is not None:
                self.lock.release()
            shutil.rmtree(self.upload_dir, ignore_errors=True)

    def warm(self) -> None:
        """Run every encoder, head and G once on a made-up item: loads the weights now, not on a request."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        samples = {
            "text": "warm up", "image": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
            "audio": (rng.standard_normal(16_000) * 0.01).astype(np.float32),
            "depth": rng.uniform(0.5, 3.0, (32, 32)).astype(np.float32),
            "thermal": rng.uniform(0, 1, (32, 32)).astype(np.float32),
            "video": rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8),
        }
        bridge = self.index.bridge
        for modality in bridge.modalities:
            try:
                z = bridge.embed_features(modality, bridge.encode(modality, [samples[modality]]))
                if bridge.has_proxy:
                    bridge.proxy_view(z)
            except Exception as exc:  # a modality that cannot warm still serves the others
                log.warning("could not warm the %s encoder (%s); its first query will be slow or fail", modality, exc)
        log.info("warmed %s in %.1fs", ", ".join(bridge.modalities), time.perf_counter() - t0)

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    # -- items

    def record(self, item_id: str) -> dict[str, Any]:
        """The payload of an indexed id, or ApiError 404."""
        try:
            records = self.index.store.retrieve([item_id])
        except (ValueError, TypeError):
            records = []
        if not records:
            raise ApiError(404, f"no item with id {item_id!r} in this index")
        return dict(records[0].payload or {})

    def item(self, item_id: str) -> dict[str, Any]:
        payload = self.record(item_id)
        payload.pop("abs_path", None)  # the server's own folders are nobody's business
        modality = payload.get("modality", "?")
        return {"id": item_id, "path": payload.get("path"), "modality": modality, "label": payload.get("label"),
                "payload": payload, **_links(item_id, modality)}

    def media_path(self, item_id: str) -> tuple[Path, str]:
        """The file of an indexed id, only if it lies inside the indexed root; and its modality."""
        payload = self.record(item_id)
        if self.root is None:
            raise ApiError(404, f"{self.index_dir} records no indexed folder (index.json); re-run `ebridge index` on it")
        rel = payload.get("path")
        if not isinstance(rel, str) or not rel:
            raise ApiError(404, f"item {item_id} has no path")
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            log.warning("refused %s: its path %r leaves the indexed root %s", item_id, rel, self.root)
            raise ApiError(403, f"item {item_id}'s file lies outside the indexed folder; it is not served")
        if not path.is_file():
            raise ApiError(410, f"item {item_id}'s file {rel} is gone from the indexed folder; re-run `ebridge index`")
        return path, str(payload.get("modality", ""))

    def preview(self, item_id: str) -> bytes:
        from query.serve.preview import PREVIEW_MODALITIES, render_preview

        path, modality = self.media_path(item_id)
        if modality not in PREVIEW_MODALITIES:
            raise ApiError(404, f"{modality} items have no preview; fetch /items/{item_id}/media")
        try:
            return render_preview(modality, path)
        except InputError as exc:
            raise ApiError(422, f"item {item_id}: {exc.reason}") from None

    # -- search

    async def search(self, req: SearchRequest, upload: Path | None, upload_name: str | None) -> dict[str, Any]:
        """Decode (pool) -> embed with whatever else is waiting (batcher) -> store search (pool)."""
        t0 = time.perf_counter()
        self.last_request = time.monotonic()
        source, item, z, features, query = await self.run(self._prepare, req, upload, upload_name)
        view = None
        if z is None:
            need_view = req.route in PROXY_ROUTES or (req.route == "auto" and any(
                self.index.route_for(source, t) in PROXY_ROUTES for t in (req.target or MODALITIES)))
            cached = self.text_cache.get(item) if source == "text" else None
            if cached is not None and (cached[1] is not None or not need_view):
                z, view, features = cached
                query["cached"] = True
            else:
                z, view, features = await asyncio.wrap_future(self._batcher(source).submit(item, need_view))
                if source == "text":
                    self.text_cache.put(item, (z, view, features))
        if req.group_by == "modality":
            groups = await self.run(self._search_groups, source, z, view, req, features)
            return {"query": query, "hits": [h for g in groups.values() for h in g["hits"]], "groups": groups,
                    "took_ms": round(1000 * (time.perf_counter() - t0), 3)}
        hits = await self.run(self._search_vector, source, z, view, req, features)
        return {"query": query, "hits": [_hit_json(h) for h in hits],
                "took_ms": round(1000 * (time.perf_counter() - t0), 3)}

    def _prepare(self, req: SearchRequest, upload: Path | None,
                 upload_name: str | None) -> tuple[str, Any, np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        """(query modality, canonical item to encode or None, stored vector and raw features or None,
        query description)."""
        from bridge.modalities import load

        bridge = self.index.bridge
        if req.id is not None:
            self.record(req.id)  # 404 before anything else
            source, z, features = self.index.embed_query_features({"id": req.id})
            return source, None, z, features, {"kind": "id", "id": req.id, "modality": source}
        if upload is not None:
            source = req.source or _upload_modality(upload)
            if source is None:
                raise ApiError(400, f"{upload_name}: cannot tell its modality from the name; send source=image, "
                                    "audio, depth, thermal, video or text with the file")
            try:
                item = load(source, upload)
            except InputError as exc:
                raise ApiError(400, f"{upload_name}: {exc.reason}") from None
            query = {"kind": "file", "name": upload_name, "modality": source}
        else:
            # The string is embedded as text, never read as a file name (Index.embed_query would).
            item = (req.text or "").strip()
            if not item:
                raise ApiError(400, "empty text query; type some words")
            source, query = "text", {"kind": "text", "text": item, "modality": "text"}
        if source not in bridge.modalities:
            raise ApiError(400, f"this index's bridge has no {source} head (it knows {', '.join(bridge.modalities)})")
        return source, item, None, None, query

    def _search_vector(self, source: str, z: np.ndarray, view: np.ndarray | None, req: SearchRequest,
                       features: np.ndarray | None = None) -> list[Any]:
        views = None if view is None else view[None, :]
        return self.index.search_vectors(source, z[None, :], req.target, req.k, req.filter or None, req.route,
                                         views=views, features=None if features is None else features[None, :],
                                         level=req.level, per_file=req.per_file)[0]

    def _search_groups(self, source: str, z: np.ndarray, view: np.ndarray | None, req: SearchRequest,
                       features: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
        """One ranked list per target modality (each on its own route and score scale); empty ones left out."""
        targets = req.target or [m for m in MODALITIES if m in self.index.bridge.modalities]
        views = None if view is None else view[None, :]
        feats = None if features is None else features[None, :]
        groups = {}
        for target in targets:
            if req.route == "raw" and not self.index.shares_encoder(source, target):
                continue  # the raw route compares what one encoder reads only
            if req.route == "instance" and not self.index.bridge.has_instance(source, target):
                continue  # no instance map between the two
            hits = self.index.search_vectors(source, z[None, :], [target], req.k, req.filter or None, req.route,
                                             views=views, features=feats, level=req.level,
                                             per_file=req.per_file)[0]
            if hits:
                route = hits[0].route
                groups[target] = {"route": route, "score_kind": score_kind(route), "hits": [_hit_json(h) for h in hits]}
        return groups

    def _batcher(self, modality: str) -> "Batcher":
        with self._batchers_lock:
            if modality not in self._batchers:
                self._batchers[modality] = Batcher(self.index.bridge, modality, self.settings.workers)
            return self._batchers[modality]

    def stats(self) -> dict[str, Any]:
        store, bridge = self.index.store, self.index.bridge
        points = store.count()
        # Files, not points: a long recording is one file however many moments (points) it is cut into.
        whole = {"segment": Range(gte=0)}
        by_modality = {m: store.count(Filter(must={"modality": m}, must_not=whole)) for m in MODALITIES}
        files = sum(by_modality.values())
        return {
            "index": str(self.index_dir),
            "points": points,  # files and moments
            "files": files,
            "moments": points - files,
            "by_modality": {m: n for m, n in by_modality.items() if n},  # files of each modality
            "bridge_version": bridge.version,
            "bridge_modalities": bridge.modalities,
            "routes": {f"{s}->{t}": self.index.route_for(s, t) for s in bridge.modalities for t in bridge.modalities},
            "route_overrides": self.index.routes,
            "uptime_s": round(time.time() - self.started, 1),
            "limits": {"max_k": self.settings.max_k, "max_upload_bytes": self.settings.max_upload_bytes},
            # queued, done, errors, last_error... of the folder this server keeps indexed (--watch)
            "indexing": self.watcher.status() if self.watcher is not None else None,
        }



def _hit_json(hit: Any) -> dict[str, Any]:
    return {**hit.to_json(), **_links(hit.id, hit.modality)}  # to_json names the score's scale


def _links(item_id: str, modality: str) -> dict[str, Any]:
    from query.serve.preview import PREVIEW_MODALITIES

    return {"media": f"/items/{item_id}/media",
            "preview": f"/items/{item_id}/preview" if modality in PREVIEW_MODALITIES else None}


def _indexed_root(index_dir: Path) -> Path | None:
    try:
        root = json.loads((index_dir / "index.json").read_text(encoding="utf-8"))["root"]
        return Path(root).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s/index.json names no indexed folder: media and previews will answer 404", index_dir)
        return None


def _upload_modality(path: Path) -> str | None:
    """Modality of an uploaded file from its own name (the random temp folder's letters must not count:
    `ir` or `depth` there would mislead detection), and 16-bit grey pictures as depth."""
    from PIL import Image

    modality = detect_modality(PurePosixPath("upload") / path.name)  # words only; that relative path is no file
    if modality == "image" and path.suffix.lower() in {".png", ".tif", ".tiff"}:
        try:
            with Image.open(path) as im:
                if im.mode in {"I;16", "I;16B", "I;16L", "I"}:
                    return "depth"
        except Exception:  # the loader reports what is wrong with the file
            pass
    return modality


def _safe_name(name: str | None) -> str:
    """An uploaded file's name without folders or odd characters (its extension tells the modality)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[-100:]
    return base or "upload"


