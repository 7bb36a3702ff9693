"""The HTTP side of `ebridge serve`: one process holds an index open with warm encoders and answers
search, item, media and preview requests, plus the web page at `/`.

Sharing an embedded index: the server takes the index folder's lock (`index.lock`, the one
`ebridge index` takes) with role "server" for as long as it runs, so an indexer started meanwhile
stops at once with "in use by a server (pid N)" instead of a WAL traceback, and the server never
sees a half-written store. To re-index: stop the server, index, start it again.

Concurrency: one event loop takes the requests; decoding uploads, store calls and previews run in
a thread pool, and queries are embedded by a batcher per modality (`workers` threads, torch at
`torch_threads` each) that encodes whatever queries are waiting in one pass of encoder, head and
G: on a small machine a crowd of queries costs little more than one. qdrant-edge's shard answers
reads from many threads at once (checked: 8 threads x 1000 queries gave the serial answers), and
the server never writes, so the store needs no lock of ours.

Example:
    >>> from query.serve_app import SearchService, ServeSettings, create_app   # doctest: +SKIP
    >>> service = SearchService.open("runs/digits-index", ServeSettings())      # doctest: +SKIP
    >>> app = create_app(service)  # an ASGI app: uvicorn.run(app)             # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, AsyncIterator, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException

from bridge.errors import EmergentBridgeError, InputError, MissingDependencyError
from bridge.modalities import MODALITIES, check_modality, detect_modality
from indexer.lock import IndexLock
from indexer.record import store_in_folder
from indexer.store import Filter
from query.search import ROUTES, Index, QueryError

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


class ApiError(Exception):
    """An answer other than 200, with the one sentence the client gets as `{"error": ...}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------- models


class SearchRequest(BaseModel):
    """One query: exactly one of `text` or `id` (or an uploaded file, in a multipart request)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="a text query", examples=["seven"])
    id: str | None = Field(None, description="search with an indexed item's stored vector ('more like this')")
    target: list[str] | None = Field(None, description="modalities to return (default: all)", examples=[["audio"]])
    k: int = Field(10, description="number of hits")
    filter: dict[str, str] = Field(default_factory=dict, description="payload filter, e.g. {'label': 'seven'}")
    route: Literal["auto", "direct", "proxy", "fused"] = "auto"
    source: str | None = Field(None, description="an uploaded file's modality, when its name does not tell")

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
    route: str
    label: str | None
    media: str
    preview: str | None


class SearchResponse(BaseModel):
    query: dict[str, Any]
    hits: list[HitOut]
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
        self.index_dir = index_dir
        self.settings = settings
        self.lock = lock
        self.root = _indexed_root(index_dir)
        # decoding uploads, store calls and previews; encoders run in the batchers' own threads
        self.pool = ThreadPoolExecutor(max(4, 2 * settings.workers), thread_name_prefix="ebridge-serve")
        self._batchers: dict[str, _Batcher] = {}
        self._batchers_lock = threading.Lock()
        self.text_cache = _LruCache(settings.text_cache)
        self.upload_dir = Path(tempfile.mkdtemp(prefix=f"ebridge-serve-{os.getpid()}-"))
        self.started = time.time()

    @classmethod
    def open(cls, index_dir: str | Path, settings: ServeSettings | None = None, *, url: str | None = None,
             collection: str | None = None) -> "SearchService":
        """Lock the index folder for this server, open it and warm its encoders.

        Raises IndexLockedError (an indexer runs there) or IndexBusyError (another process has the store)."""
        settings = settings or ServeSettings()
        index_dir = Path(index_dir).resolve()
        if url is None and not index_dir.is_dir():
            raise QueryError(f"index {index_dir} not found; build it with `ebridge index DIR --index {index_dir}`")
        # The embedded store is one process's at a time: hold the folder's lock so an indexer is told
        # so. A Qdrant server collection takes concurrent writes itself: no lock, the indexer may run.
        lock = IndexLock(index_dir, role="server") if url is None and store_in_folder(index_dir) else None
        if lock is not None:
            lock.acquire()
        try:
            _set_torch_threads(settings.torch_threads)
            index = Index.open(index_dir, url=url, collection=collection, read_lock=False)
            service = cls(index, index_dir, settings, lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if settings.warm:
            service.warm()
        return service

    def close(self) -> None:
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
        from query.preview import PREVIEW_MODALITIES, render_preview

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
        source, item, z, query = await self.run(self._prepare, req, upload, upload_name)
        view = None
        if z is None:
            need_view = req.route in ("proxy", "fused") or (req.route == "auto" and any(
                self.index.route_for(source, t) != "direct" for t in (req.target or MODALITIES)))
            cached = self.text_cache.get(item) if source == "text" else None
            if cached is not None and (cached[1] is not None or not need_view):
                z, view = cached
                query["cached"] = True
            else:
                z, view = await asyncio.wrap_future(self._batcher(source).submit(item, need_view))
                if source == "text":
                    self.text_cache.put(item, (z, view))
        hits = await self.run(self._search_vector, source, z, view, req)
        return {"query": query, "hits": [{**h.to_json(), **_links(h.id, h.modality)} for h in hits],
                "took_ms": round(1000 * (time.perf_counter() - t0), 3)}

    def _prepare(self, req: SearchRequest, upload: Path | None,
                 upload_name: str | None) -> tuple[str, Any, np.ndarray | None, dict[str, Any]]:
        """(query modality, canonical item to encode or None, stored vector or None, query description)."""
        from bridge.modalities import load

        bridge = self.index.bridge
        if req.id is not None:
            self.record(req.id)  # 404 before anything else
            source, z = self.index.embed_query({"id": req.id})
            return source, None, z, {"kind": "id", "id": req.id, "modality": source}
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
        return source, item, None, query

    def _search_vector(self, source: str, z: np.ndarray, view: np.ndarray | None, req: SearchRequest) -> list[Any]:
        views = None if view is None else view[None, :]
        return self.index.search_vectors(source, z[None, :], req.target, req.k, req.filter or None, req.route,
                                         views=views)[0]

    def _batcher(self, modality: str) -> "_Batcher":
        with self._batchers_lock:
            if modality not in self._batchers:
                self._batchers[modality] = _Batcher(self.index.bridge, modality, self.settings.workers)
            return self._batchers[modality]

    def stats(self) -> dict[str, Any]:
        store, bridge = self.index.store, self.index.bridge
        by_modality = {m: store.count(Filter(must={"modality": m})) for m in MODALITIES}
        return {
            "index": str(self.index_dir),
            "points": store.count(),
            "by_modality": {m: n for m, n in by_modality.items() if n},
            "bridge_version": bridge.version,
            "bridge_modalities": bridge.modalities,
            "routes": {f"{s}->{t}": self.index.route_for(s, t) for s in bridge.modalities for t in bridge.modalities},
            "route_overrides": self.index.routes,
            "uptime_s": round(time.time() - self.started, 1),
            "limits": {"max_k": self.settings.max_k, "max_upload_bytes": self.settings.max_upload_bytes},
        }


class _LruCache:
    """A small thread-safe LRU map (text query -> its vector and proxy view)."""

    def __init__(self, size: int):
        from collections import OrderedDict

        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key not in self.data:
                return None
            self.data.move_to_end(key)
            return self.data[key]

    def put(self, key: Any, value: Any) -> None:
        if self.size <= 0:
            return
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


class _Batcher:
    """Concurrent queries of one modality embedded together: encoder, head and G each run once per
    batch instead of once per query. Each of `threads` threads takes whatever is waiting (up to
    `max_batch`) as one batch, so a lone query waits for nobody and a crowd shares the passes.

    Example::

        z, view = _Batcher(bridge, "text", threads=2).submit("seven", need_view=True).result()
    """

    def __init__(self, bridge: Any, modality: str, threads: int = 2, max_batch: int = 32):
        self.bridge, self.modality, self.max_batch = bridge, modality, max_batch
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._loop, name=f"ebridge-{modality}-{i}", daemon=True)
                        for i in range(max(1, threads))]
        for t in self.threads:
            t.start()

    def submit(self, item: Any, need_view: bool) -> Future:
        """Future of (bridged vector, its proxy view or None) for one canonical item."""
        fut: Future = Future()
        self.queue.put((item, need_view, fut))
        return fut

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:  # closing: finish this batch, then stop
                    self.queue.put(None)
                    break
                batch.append(nxt)
            self._run(batch)

    def _run(self, batch: list[tuple[Any, bool, Future]]) -> None:
        live = [b for b in batch if b[2].set_running_or_notify_cancel()]
        if not live:
            return
        try:
            z, views = self._embed([b[0] for b in live], any(b[1] for b in live))
        except Exception:
            if len(live) > 1:  # find the culprit: each query on its own, each gets its own answer
                for one in live:
                    self._run_one(one)
                return
            live[0][2].set_exception(_as_api_error(sys.exc_info()[1]))
            return
        for j, (_, need_view, fut) in enumerate(live):
            fut.set_result((z[j], views[j] if views is not None and need_view else None))

    def _run_one(self, one: tuple[Any, bool, Future]) -> None:
        try:
            z, views = self._embed([one[0]], one[1])
            one[2].set_result((z[0], views[0] if views is not None else None))
        except Exception as exc:
            one[2].set_exception(_as_api_error(exc))

    def _embed(self, items: list[Any], need_view: bool) -> tuple[np.ndarray, np.ndarray | None]:
        b = self.bridge
        z = b.embed_features(self.modality, b.encode(self.modality, items))
        return z, (b.proxy_view(z) if need_view else None)


def _as_api_error(exc: BaseException | None) -> BaseException:
    if isinstance(exc, InputError):
        return ApiError(400, exc.reason)
    return exc if exc is not None else RuntimeError("encoding failed")


def _links(item_id: str, modality: str) -> dict[str, Any]:
    from query.preview import PREVIEW_MODALITIES

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


def _set_torch_threads(n: int) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, n))


def _safe_name(name: str | None) -> str:
    """An uploaded file's name without folders or odd characters (its extension tells the modality)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[-100:]
    return base or "upload"


# ---------------------------------------------------------------------------------------- the app


class _BodyLimit:
    """Refuse a request body over the limit with 413: at once when Content-Length says so, else as soon
    as the streamed bytes pass it (so a huge upload is never spooled to disk whole)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        # multipart framing adds a little; the file part itself is what the limit is about
        if declared is not None and declared.isdigit() and int(declared) > self.limit + 64 * 1024:
            return await _send_json(send, 413, _too_large(self.limit))
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit + 64 * 1024:
                    raise HTTPException(413, _too_large(self.limit))
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> str:
    return f"upload too large: the limit is {limit / 2**20:.1f} MB (server option --max-upload-mb)"


async def _send_json(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(service: SearchService) -> FastAPI:
    """The ASGI app over an opened service; closing the app (lifespan end) closes the service."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="EmergentBridge", version="0.1.0", lifespan=lifespan,
                  description="Cross-modal search over one index: text, files or indexed ids; media and previews of hits.")
    app.state.service = service
    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes)

    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="needed when the server was started with --api-key")

    async def require_key(request: Request, key: str | None = Depends(key_header)) -> None:
        if settings.api_key is None:
            return
        given = key or request.cookies.get(API_KEY_COOKIE) or ""
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint {request.url.path}; see /docs"
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _one_line(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)

    guarded = [Depends(require_key)]

    @app.get("/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """Liveness: answers without an API key."""
        return {"status": "ok"}

    @app.get("/stats", tags=["server"], dependencies=guarded)
    async def stats() -> dict[str, Any]:
        """Points per modality, the bridge version and the route of every modality pair."""
        return await service.run(service.stats)

    @app.post("/search", tags=["search"], dependencies=guarded, response_model=SearchResponse,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": SearchRequest.model_json_schema()},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"},
                      "target": {"type": "string", "description": "comma-separated, or repeat the field"},
                      "k": {"type": "integer"}, "route": {"type": "string", "enum": ["auto", *ROUTES]},
                      "source": {"type": "string", "enum": list(MODALITIES)},
                      "filter": {"type": "string", "description": "FIELD=VALUE, repeatable"}}}}}}})
    async def search(request: Request) -> dict[str, Any]:
        """Search by text or indexed id (JSON), or by an uploaded file (multipart field `file`).

        Same semantics as `Index.search`: `target` modalities, `k`, payload `filter`, `route`."""
        req, upload, name = await _read_search_request(request, service)
        try:
            return await service.search(req, upload, name)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from None
        except MissingDependencyError as exc:
            raise ApiError(501, str(exc)) from None
        except (EmergentBridgeError, ValueError) as exc:
            raise ApiError(400, str(exc)) from None
        finally:
            if upload is not None:
                shutil.rmtree(upload.parent, ignore_errors=True)

    @app.get("/items/{item_id}", tags=["items"], dependencies=guarded, response_model=ItemOut)
    async def item(item_id: str) -> dict[str, Any]:
        """An indexed item's payload (path relative to the indexed folder, modality, label...)."""
        return await service.run(service.item, item_id)

    @app.get("/items/{item_id}/media", tags=["items"], dependencies=guarded,
             response_class=FileResponse)
    async def media(item_id: str) -> FileResponse:
        """The indexed file itself, streamed with its content type."""
        path, _ = await service.run(service.media_path, item_id)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "private, max-age=300"})

    @app.get("/items/{item_id}/preview", tags=["items"], dependencies=guarded,
             responses={200: {"content": {"image/png": {}}}}, response_class=Response)
    async def preview(item_id: str) -> Response:
        """A PNG thumbnail: pictures as they are, depth and thermal in false colour."""
        png = await service.run(service.preview, item_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _read_search_request(request: Request, service: SearchService) -> tuple[SearchRequest, Path | None, str | None]:
    """JSON or multipart -> (validated request, uploaded file saved to a private temp folder, its name)."""
    settings = service.settings
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload_path: Path | None = None
    name: str | None = None
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=50)
        fields: dict[str, Any] = {}
        filters = [v for v in form.getlist("filter") if isinstance(v, str)]
        for key in form.keys():
            if key in ("file", "filter"):
                continue
            values = [v for v in form.getlist(key) if isinstance(v, str)]
            fields[key] = ",".join(values) if key == "target" else (values[-1] if values else None)
        if filters:
            from query.search import parse_filters

            try:
                fields["filter"] = parse_filters(filters)
            except QueryError as exc:
                raise ApiError(422, str(exc)) from None
        file = form.get("file")
        if file is not None and not isinstance(file, str):
            name = _safe_name(file.filename)
            folder = service.upload_dir / uuid.uuid4().hex
            folder.mkdir()
            upload_path = folder / name
            size = 0
            with open(upload_path, "wb") as out:
                while chunk := await file.read(1 << 20):
                    size += len(chunk)
                    if size > settings.max_upload_bytes:
                        shutil.rmtree(folder, ignore_errors=True)
                        raise ApiError(413, _too_large(settings.max_upload_bytes))
                    out.write(chunk)
            await file.close()
            if size == 0:
                shutil.rmtree(folder, ignore_errors=True)
                raise ApiError(400, f"{name}: empty file (0 bytes)")
        data = fields
    elif kind in ("application/json", ""):
        try:
            data = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise ApiError(400, f"the body is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ApiError(422, 'send a JSON object, e.g. {"text": "seven", "target": ["audio"], "k": 10}')
    else:
        raise ApiError(415, f"unsupported content type {kind!r}: send application/json or multipart/form-data")
    try:
        req = SearchRequest.model_validate(data)
    except ValidationError as exc:
        _drop(upload_path)
        raise ApiError(422, _one_line(exc.errors())) from None
    given = sum(x is not None for x in (req.text, req.id, upload_path))
    if given != 1:
        _drop(upload_path)
        raise ApiError(422, "give exactly one query: text, id, or a file (multipart field 'file')")
    if not 1 <= req.k <= settings.max_k:
        _drop(upload_path)
        raise ApiError(422, f"k must be between 1 and {settings.max_k}, got {req.k}")
    return req, upload_path, name


def _drop(upload: Path | None) -> None:
    if upload is not None:
        shutil.rmtree(upload.parent, ignore_errors=True)


def _one_line(errors: Any) -> str:
    """Pydantic's error list -> one readable sentence: 'k: Input should be a valid integer; ...'."""
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def settings_dict(settings: ServeSettings) -> dict[str, Any]:
    out = asdict(settings)
    out["api_key"] = "***" if settings.api_key else None
    return out
