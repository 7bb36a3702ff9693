"""The HTTP routes of `ebridge serve` (FastAPI): search, items, media, previews, stats, the web page."""
from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import shutil
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from bridge.modalities import MODALITIES
from core.errors import EmergentBridgeError, MissingDependencyError
from query.search import ROUTE_CHOICES, SEARCH_ROUTES, QueryError

from query.serve.errors import ApiError
from query.serve.service import (API_KEY_COOKIE, API_KEY_HEADER, ItemOut, STATIC_DIR, SearchRequest, SearchResponse, SearchService, ServeSettings, _safe_name)

log = logging.getLogger(__name__)


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
    """The ASGI app over an opened service; closing the app (lifespan end) closes the service.

    Example:
        uvicorn.run(create_app(SearchService.open(Path("my-index"), ServeSettings(api_key="s3cret"))))
    """
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="EmergentBridge", version="0.1.0", lifespan=lifespan,
                  description="Cross-modal search over one index: text, files or indexed ids; media and previews of hits.")
    app.state.service = service
    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes)
    _add_error_handlers(app)
    guarded = [Depends(_key_guard(settings))]
    for router in (_server_routes(service, guarded), _search_routes(service, guarded),
                   _item_routes(service, guarded), _page_routes()):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _key_guard(settings: ServeSettings) -> Any:
    """The dependency that refuses a request without the API key (when the server has one)."""
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="needed when the server was started with --api-key")

    async def require_key(request: Request, key: str | None = Depends(key_header)) -> None:
        if settings.api_key is None:
            return
        given = key or request.cookies.get(API_KEY_COOKIE) or ""
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header")

    return require_key


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answers `{"error": one line}` with its status; the unexpected ones are logged."""
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


def _server_routes(service: SearchService, guarded: list[Any]) -> APIRouter:
    """Liveness, the route menu and the index's stats."""
    router = APIRouter(tags=["server"])

    @router.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: answers without an API key."""
        return {"status": "ok"}

    @router.get("/routes")
    async def routes() -> dict[str, Any]:
        """The routes a search can ask for, each with what it does (the page's route menu). Needs no
        API key: it describes the server's code, not the index."""
        return {"routes": [r.to_json() for r in SEARCH_ROUTES]}

    @router.get("/stats", dependencies=guarded)
    async def stats() -> dict[str, Any]:
        """Points per modality, the bridge version and the route of every modality pair."""
        return await service.run(service.stats)
    return router


def _search_routes(service: SearchService, guarded: list[Any]) -> APIRouter:
    """Search by text, indexed id or uploaded file."""
    router = APIRouter(tags=["search"])

    @router.post("/search", dependencies=guarded, response_model=SearchResponse,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": SearchRequest.model_json_schema()},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"},
                      "target": {"type": "string", "description": "comma-separated, or repeat the field"},
                      "k": {"type": "integer"}, "route": {"type": "string", "enum": list(ROUTE_CHOICES)},
                      "source": {"type": "string", "enum": list(MODALITIES)},
                      "level": {"type": "string", "enum": ["auto", "files", "moments"]},
                      "per_file": {"type": "integer"},
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
    return router


def _item_routes(service: SearchService, guarded: list[Any]) -> APIRouter:
    """An indexed item's payload, its file and its preview."""
    router = APIRouter(tags=["items"])

    @router.get("/items/{item_id}", dependencies=guarded, response_model=ItemOut)
    async def item(item_id: str) -> dict[str, Any]:
        """An indexed item's payload (path relative to the indexed folder, modality, label...)."""
        return await service.run(service.item, item_id)

    @router.get("/items/{item_id}/media", dependencies=guarded,
             response_class=FileResponse)
    async def media(item_id: str) -> FileResponse:
        """The indexed file itself, streamed with its content type."""
        path, _ = await service.run(service.media_path, item_id)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "private, max-age=300"})

    @router.get("/items/{item_id}/preview", dependencies=guarded,
             responses={200: {"content": {"image/png": {}}}}, response_class=Response)
    async def preview(item_id: str) -> Response:
        """A PNG thumbnail: pictures as they are, depth and thermal in false colour."""
        png = await service.run(service.preview, item_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
    return router


def _page_routes() -> APIRouter:
    """The web page."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    return router


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

