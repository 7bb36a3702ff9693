"""A small client for a running `ebridge serve`, on the standard library only (what `ebridge search
--server URL` and scripts/load_serve.py use).

Example:
    >>> hits = search("http://127.0.0.1:8000", text="seven", target=["audio"], k=3)   # doctest: +SKIP
    >>> hits[0]["modality"], hits[0]["route"]                                          # doctest: +SKIP
    ('audio', 'fused')
"""
from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.errors import EmergentBridgeError


class ServerError(EmergentBridgeError):
    """The server refused the request (its one-line reason included) or could not be reached."""


def search(url: str, *, text: str | None = None, file: str | Path | None = None, id: str | None = None,
           target: Sequence[str] | None = None, k: int = 10, filter: Mapping[str, str] | None = None,
           route: str = "auto", source: str | None = None, api_key: str | None = None,
           timeout: float = 120.0, level: str = "auto", per_file: int | None = None) -> list[dict[str, Any]]:
    """One search on the server at `url`: by text, an indexed id, or a file (uploaded). Returns the hits
    as dicts (id, path, modality, score, route, label, media, preview; a moment's start and end), best first."""
    body, content_type = search_body(text=text, file=file, id=id, target=target, k=k, filter=filter,
                                     route=route, source=source, level=level, per_file=per_file)
    return request(url, "/search", body, content_type, api_key=api_key, timeout=timeout)["hits"]


def search_body(*, text: str | None = None, file: str | Path | None = None, id: str | None = None,
                target: Sequence[str] | None = None, k: int = 10, filter: Mapping[str, str] | None = None,
                route: str = "auto", source: str | None = None, level: str = "auto",
                per_file: int | None = None) -> tuple[bytes, str]:
    """The /search request body and its content type: JSON for text and ids, multipart for a file."""
    if file is None:
        data = {"text": text, "id": id, "target": list(target) if target else None, "k": k,
                "filter": dict(filter or {}), "route": route, "level": level, "per_file": per_file}
        return json.dumps({key: v for key, v in data.items() if v is not None}).encode(), "application/json"
    path = Path(file)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ServerError(f"{path}: cannot read the query file ({exc.strerror})") from None
    fields: list[tuple[str, str]] = [("k", str(k)), ("route", route), ("level", level)]
    if per_file is not None:
        fields.append(("per_file", str(per_file)))
    fields += [("target", t) for t in target or []]
    fields += [("filter", f"{key}={v}") for key, v in (filter or {}).items()]
    if source:
        fields.append(("source", source))
    return multipart(fields, ("file", path.name, content))


def multipart(fields: Sequence[tuple[str, str]], file: tuple[str, str, bytes]) -> tuple[bytes, str]:
    """Encode form fields and one file as multipart/form-data -> (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    field, filename, content = file
    kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{safe}"\r\n'
                 f"Content-Type: {kind}\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(url: str, endpoint: str, body: bytes | None = None, content_type: str | None = None, *,
            api_key: str | None = None, timeout: float = 120.0) -> Any:
    """One call; the decoded JSON answer, or ServerError with the server's own message."""
    full = url.rstrip("/") + endpoint
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    if api_key:
        headers["X-API-Key"] = api_key
    req = urllib.request.Request(full, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            reason = exc.reason
        raise ServerError(f"{full}: {exc.code} {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise ServerError(f"cannot reach {url} ({why}); is `ebridge serve` running there?") from None
