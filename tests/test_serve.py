"""`ebridge serve`: every endpoint and every refusal, on a real small index (digits sample, tiny preset)."""
from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi", reason="pip install 'emergentbridge[serve]'")
pytest.importorskip("multipart", reason="pip install 'emergentbridge[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from query.cli import main as ebridge  # noqa: E402
from indexer.index import index_directory  # noqa: E402
from indexer.lock import IndexLockedError  # noqa: E402
from indexer.store import Point  # noqa: E402
from query.search import ROUTE_CHOICES, SEARCH_ROUTES, Index, IndexBusyError  # noqa: E402
from query.serve.app import create_app  # noqa: E402
from query.serve.service import SearchService, ServeSettings  # noqa: E402
from tests.serve_support import RunningServer, small_index  # noqa: E402

KEY = "s3cret-key"
LIMIT = 64 * 1024  # a small upload limit, so the oversized case stays cheap


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    index, data = small_index(tmp_path_factory)
    service = SearchService.open(index, ServeSettings(api_key=KEY, max_upload_bytes=LIMIT, workers=2))
    app = create_app(service)
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        yield {"client": client, "service": service, "app": app, "index": index, "data": data}
    service.close()


@pytest.fixture
def client(served):
    return served["client"]


def first(data, sub):
    return sorted((data / sub).iterdir())[0]


def error_of(resp, status):
    """The response has `status` and exactly one JSON field, `error`, a readable sentence."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and "Traceback" not in body["error"]
    return body["error"]


# ------------------------------------------------------------------------------------------ server


def test_health_needs_no_key_and_stats_describe_the_index(client, served):
    assert client.get("/health", headers={"X-API-Key": ""}).json() == {"status": "ok"}
    stats = client.get("/stats").json()
    assert stats["by_modality"] == {"audio": 40, "depth": 40, "image": 60, "text": 30, "thermal": 40}
    assert stats["points"] == 210
    assert stats["bridge_version"] == served["service"].index.bridge.version
    assert stats["routes"]["text->image"] == "direct" and stats["routes"]["text->audio"] == "fused"
    assert stats["limits"] == {"max_k": 100, "max_upload_bytes": LIMIT}


def test_openapi_docs_and_page_are_served(client):
    spec = client.get("/openapi.json").json()
    assert {"/search", "/items/{item_id}", "/items/{item_id}/media", "/items/{item_id}/preview", "/stats",
            "/health"} <= set(spec["paths"])
    assert set(spec["paths"]["/search"]["post"]["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert client.get("/docs").status_code == 200
    page = client.get("/", headers={"X-API-Key": ""})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and 'id="search-form"' in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_routes_are_the_search_modules_list_and_the_only_ones_accepted(client, served):
    anon = TestClient(served["app"])  # the list describes the code, not the index: no key needed
    listed = anon.get("/routes").json()["routes"]
    assert [r["name"] for r in listed] == list(ROUTE_CHOICES) == [r.name for r in SEARCH_ROUTES]
    assert listed[0]["name"] == "auto" and all(r["meaning"] for r in listed)
    assert {r["name"]: r["score_kind"] for r in listed}["fused"] == "rrf"
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["route"]["enum"] == list(ROUTE_CHOICES)
    for route in ("auto", "direct"):  # what the list names, the search takes; what it does not, it refuses
        assert client.post("/search", json={"text": "one", "k": 1, "route": route}).status_code == 200
    assert "route" in error_of(client.post("/search", json={"text": "one", "route": "sideways"}), 422)
    page = client.get("/", headers={"X-API-Key": ""}).text
    assert "<option" not in page.split('id="route"')[1].split("</select>")[0]  # the page types no route out


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}])
def test_wrong_or_missing_api_key_is_refused_everywhere_but_health(client, headers, served):
    hit = client.post("/search", json={"text": "one", "k": 1}).json()["hits"][0]
    anon = TestClient(served["app"], headers=headers)
    for method, path, kwargs in [("GET", "/stats", {}), ("POST", "/search", {"json": {"text": "one"}}),
                                 ("GET", f"/items/{hit['id']}", {}), ("GET", hit["media"], {}),
                                 ("GET", hit["preview"] or hit["media"], {})]:
        assert "API key" in error_of(anon.request(method, path, **kwargs), 401)
    assert anon.get("/health").status_code == 200


def test_the_key_may_come_as_the_page_cookie(served):
    anon = TestClient(served["app"], cookies={"ebridge_api_key": KEY})
    assert anon.get("/stats").status_code == 200


# ------------------------------------------------------------------------------------------ search


def assert_same_ranking(served_hits, expected):
    """The server's hits equal `Index.search`'s: same scores, same ids wherever a score is untied.

    Fused (RRF) scores tie often and the engine orders ties arbitrarily; the last hit is left out
    too, since a tie with the (unseen) k+1-th hit can swap it."""
    scores = [h.score for h in expected]
    assert [h["score"] for h in served_hits] == pytest.approx(scores, abs=1e-5)
    untied = [i for i, s in enumerate(scores) if sum(abs(s - o) < 1e-6 for o in scores) == 1 and i < len(scores) - 1]
    assert [served_hits[i]["id"] for i in untied] == [expected[i].id for i in untied]


def test_text_search_answers_like_index_search(client, served):
    resp = client.post("/search", json={"text": "seven", "target": ["audio"], "k": 5})
    assert resp.status_code == 200
    body = resp.json()
    assert {k: v for k, v in body["query"].items() if k != "cached"} == {"kind": "text", "text": "seven", "modality": "text"}
    expected = served["service"].index.search("seven", target="audio", k=5)
    assert_same_ranking(body["hits"], expected)
    assert {h["route"] for h in body["hits"]} == {"fused"} and {h["modality"] for h in body["hits"]} == {"audio"}
    assert all(h["media"] == f"/items/{h['id']}/media" and h["preview"] is None for h in body["hits"])


def test_repeated_text_queries_come_from_the_cache_with_the_same_answer(client):
    fresh = client.post("/search", json={"text": "eight, twice", "target": ["image"], "k": 5}).json()
    again = client.post("/search", json={"text": "eight, twice", "target": ["image"], "k": 5}).json()
    assert "cached" not in fresh["query"] and again["query"]["cached"] is True
    assert [h["id"] for h in again["hits"]] == [h["id"] for h in fresh["hits"]]
    assert [h["score"] for h in again["hits"]] == [h["score"] for h in fresh["hits"]]
    # a cached vector without its proxy view still serves a fused search (the view is computed then)
    fused = client.post("/search", json={"text": "eight, twice", "target": ["audio"], "k": 5}).json()
    assert "cached" not in fused["query"] and {h["route"] for h in fused["hits"]} == {"fused"}


def test_targets_filters_and_routes(client):
    body = client.post("/search", json={"text": "three", "target": "depth,thermal", "k": 10,
                                        "filter": {"label": "three"}}).json()
    assert body["hits"] and {h["modality"] for h in body["hits"]} <= {"depth", "thermal"}
    assert {h["label"] for h in body["hits"]} == {"three"}
    for route in ("direct", "proxy", "fused"):
        hits = client.post("/search", json={"text": "four", "target": ["image"], "k": 3, "route": route}).json()["hits"]
        assert len(hits) == 3 and {h["route"] for h in hits} == {route}
    everything = client.post("/search", json={"text": "four", "k": 30}).json()["hits"]
    assert len({h["modality"] for h in everything}) > 1  # no target: all modalities


def test_file_upload_search(client, served):
    wav = first(served["data"], "audio")
    resp = client.post("/search", files={"file": (wav.name, wav.read_bytes(), "audio/flac")},
                       data={"target": ["image", "depth"], "k": "4", "route": "auto"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["query"] == {"kind": "file", "name": wav.name, "modality": "audio"}
    expected = served["service"].index.search(wav, target=["image", "depth"], k=4)
    assert_same_ranking(body["hits"], expected)
    # the modality comes from the name, or from `source` when the name does not tell
    png = first(served["data"], "depth")
    by_name = client.post("/search", files={"file": ("scan_depth.png", png.read_bytes())}, data={"k": "1"}).json()
    assert by_name["query"]["modality"] == "depth"
    by_source = client.post("/search", files={"file": ("blob.png", png.read_bytes())},
                            data={"k": "1", "source": "thermal", "filter": "label=seven"}).json()
    assert by_source["query"]["modality"] == "thermal" and by_source["hits"][0]["label"] == "seven"


def test_id_search_is_more_like_this(client):
    top = client.post("/search", json={"text": "five", "target": ["depth"], "k": 1}).json()["hits"][0]
    body = client.post("/search", json={"id": top["id"], "target": ["depth"], "k": 3}).json()
    assert body["query"] == {"kind": "id", "id": top["id"], "modality": "depth"}
    assert body["hits"][0]["id"] == top["id"] and body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_concurrent_requests_get_the_serial_answers(served):
    import httpx

    app = served["app"]
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"] * 2
    queries = [{"text": w, "k": 5, "target": t} for w in words for t in (["image"], None)]

    def answer(resp):  # ids for the direct route; scores for all (fused RRF ties come back in any order,
        hits = resp.json()["hits"]  # serially too: qdrant-edge does not order equal fused scores)
        return {h["id"] for h in hits if h["route"] == "direct"}, [h["score"] for h in hits]

    serial = [answer(served["client"].post("/search", json=q)) for q in queries]

    async def many():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-API-Key": KEY}) as c:
            return await asyncio.gather(*[c.post("/search", json=q) for q in queries])

    answers = asyncio.run(many())  # the batcher embeds these together: batched maths may differ by ~1e-6
    assert [r.status_code for r in answers] == [200] * len(queries)
    for got, want in zip(answers, serial):
        ids, scores = answer(got)
        assert ids == want[0] and scores == pytest.approx(want[1], abs=1e-4)


# ------------------------------------------------------------------------------------------ search errors


def test_bad_uploads_get_one_clear_4xx(client):
    assert error_of(client.post("/search", files={"file": ("x.png", b"not a png")}), 400) == \
        "x.png: unknown or corrupt image format"
    assert "cannot tell its modality" in error_of(client.post("/search", files={"file": ("data.bin", b"\x00" * 10)}), 400)
    assert "empty file" in error_of(client.post("/search", files={"file": ("a.wav", b"")}), 400)
    assert "cannot decode audio" in error_of(client.post("/search", files={"file": ("a.wav", b"RIFF....junk")}), 400)
    # folders in the uploaded name are dropped: it is a name, never a path on the server
    msg = error_of(client.post("/search", files={"file": ("../../etc/x.png", b"junk")}), 400)
    assert msg.startswith("x.png:")


def test_oversized_uploads_are_refused_with_413(client):
    big = b"\x00" * (LIMIT + 200 * 1024)
    assert "upload too large" in error_of(client.post("/search", files={"file": ("big.wav", big)}), 413)

    def chunks():  # no Content-Length: the limit holds on the streamed bytes too
        for _ in range(40):
            yield b"\x00" * 8192

    resp = client.post("/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert "upload too large" in error_of(resp, 413)


@pytest.mark.parametrize("payload, status, words", [
    ({"text": "one", "target": ["smell"]}, 422, "unknown modality 'smell'"),
    ({"text": "one", "k": 0}, 422, "k must be between 1 and 100"),
    ({"text": "one", "k": 101}, 422, "k must be between 1 and 100"),
    ({"text": "one", "k": "many"}, 422, "k:"),
    ({"text": "one", "route": "sideways"}, 422, "route:"),
    ({"text": "one", "colour": "red"}, 422, "colour:"),
    ({"k": 3}, 422, "exactly one query"),
    ({"text": "one", "id": "x"}, 422, "exactly one query"),
    ({"text": "   "}, 400, "empty text"),
    ({"id": "not-a-uuid"}, 404, "no item with id"),
    ({"id": "00000000-0000-0000-0000-000000000000"}, 404, "no item with id"),
    (["a", "list"], 422, "send a JSON object"),
])
def test_search_errors(client, payload, status, words):
    assert words in error_of(client.post("/search", json=payload), status)


def test_bad_bodies(client):
    assert "not valid JSON" in error_of(client.post("/search", content=b"{nope", headers={"Content-Type": "application/json"}), 400)
    assert "unsupported content type" in error_of(client.post("/search", content=b"x", headers={"Content-Type": "text/plain"}), 415)
    assert "no such endpoint" in error_of(client.get("/nothing"), 404)


# ------------------------------------------------------------------------------------------ items


def hit_of(client, modality, text="six"):
    return client.post("/search", json={"text": text, "target": [modality], "k": 1}).json()["hits"][0]


@pytest.mark.parametrize("modality, content_type", [
    ("audio", "audio/flac"), ("image", "image/png"), ("depth", "image/png"), ("thermal", "image/png"),
    ("text", "text/plain"),
])
def test_item_media_is_the_file_with_its_content_type(client, served, modality, content_type):
    hit = hit_of(client, modality)
    item = client.get(f"/items/{hit['id']}").json()
    assert item["modality"] == modality and item["path"] == hit["path"] and "abs_path" not in item["payload"]
    media = client.get(hit["media"])
    assert media.status_code == 200 and media.headers["content-type"].startswith(content_type)
    assert media.content == (served["data"] / hit["path"]).read_bytes()


@pytest.mark.parametrize("modality", ["image", "depth", "thermal"])
def test_previews_are_pngs_and_depth_thermal_are_false_colour(client, modality):
    from PIL import Image

    hit = hit_of(client, modality)
    resp = client.get(hit["preview"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    im = np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGB")).astype(int)
    coloured = (np.abs(im[..., 0] - im[..., 1]) + np.abs(im[..., 1] - im[..., 2])).max() > 30
    assert coloured == (modality != "image")  # MNIST pictures are grey; the maps are not


def test_items_refuse_unknown_ids_and_audio_has_no_preview(client):
    assert "no item with id" in error_of(client.get("/items/1234"), 404)
    assert "no item with id" in error_of(client.get("/items/00000000-0000-0000-0000-000000000001/media"), 404)
    assert error_of(client.get("/items/..%2F..%2Fetc%2Fpasswd/media"), 404)
    audio = hit_of(client, "audio")
    assert "have no preview" in error_of(client.get(f"/items/{audio['id']}/preview"), 404)


def test_media_is_only_served_from_inside_the_indexed_root(client, served):
    store = served["service"].index.store
    evil = "00000000-0000-4000-8000-00000000e411"
    store.upsert([Point(evil, {name: np.ones(dim, np.float32) / np.sqrt(dim) for name, dim in store.spec.vectors.items()
                               if not name.startswith("raw_") or name == "raw_image"},
                        {"path": "../../../../etc/hostname", "modality": "image"})])
    try:
        assert "outside the indexed folder" in error_of(client.get(f"/items/{evil}/media"), 403)
        assert "outside the indexed folder" in error_of(client.get(f"/items/{evil}/preview"), 403)
    finally:
        store.delete([evil])


# ------------------------------------------------------------------------------------------ sharing


def test_an_indexer_and_a_cold_search_are_told_the_server_holds_the_index(served, capsys):
    with pytest.raises(IndexLockedError, match=r"in use by a server \(ebridge serve, pid \d+"):
        index_directory(served["data"], served["index"], progress=False)
    with pytest.raises(IndexBusyError, match=r"held by a running server .*--server URL"):
        Index.open(served["index"])
    assert ebridge(["search", "--index", str(served["index"]), "--text", "one"]) == 2
    assert "held by a running server" in capsys.readouterr().err
    # and the server still answers, the store unharmed
    assert served["client"].get("/stats").json()["points"] == 210


def test_cli_search_through_a_running_server(served, capsys):
    with RunningServer(served["app"]) as url:
        assert ebridge(["search", "--server", url, "--api-key", KEY, "--text", "seven", "--target", "audio",
                        "-k", "3", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert len(hits) == 3 and {h["modality"] for h in hits} == {"audio"}
        wav = first(served["data"], "audio")
        assert ebridge(["search", "--server", url, "--api-key", KEY, "--file", str(wav), "--target", "image", "-k", "2"]) == 0
        assert capsys.readouterr().out.count(" image ") == 2
        assert ebridge(["search", "--server", url, "--api-key", "wrong", "--text", "seven"]) == 2
        assert "401 missing or wrong API key" in capsys.readouterr().err
    assert ebridge(["search", "--server", url, "--api-key", KEY, "--text", "seven"]) == 2
    assert "is `ebridge serve` running there?" in capsys.readouterr().err


def test_a_server_will_not_start_while_an_indexer_writes(served, tmp_path_factory):
    from indexer.lock import IndexLock

    served["service"].lock.release()  # pretend the server is gone and an indexer took the folder
    try:
        with IndexLock(served["index"]):
            with pytest.raises(IndexLockedError, match=r"locked by another indexer \(pid \d+"):
                SearchService.open(served["index"], ServeSettings(warm=False))
    finally:
        served["service"].lock.acquire()


def test_the_verb_is_registered_and_its_parser_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, query.cli as c; p = c.build_parser(); a = p.parse_args(['serve', '--index', 'x']); "
            "assert a.host == '127.0.0.1' and a.port == 8000 and a.api_key is None and a.max_upload_mb == 50; "
            "import query.serve; print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'pydantic') if m in sys.modules))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "EBRIDGE_API_KEY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "torch" not in out and "fastapi" not in out and "uvicorn" not in out and "pydantic" not in out


def test_a_qdrant_server_collection_is_served_while_an_indexer_writes_to_it(served, tmp_path):
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")  # the same client calls a Qdrant server gets
    bridge = served["index"].parent / "bridge"
    index_directory(served["data"] / "audio", tmp_path / "q.index", bridge=bridge, qdrant_url=client,
                    collection="digits", progress=False)
    service = SearchService.open(tmp_path / "q.index", ServeSettings(warm=False), url=client, collection="digits")
    try:
        with TestClient(create_app(service)) as c:
            assert c.get("/stats").json()["by_modality"] == {"audio": 40}
            summary = index_directory(served["data"], tmp_path / "q.index", qdrant_url=client, collection="digits",
                                      replace=True, progress=False)  # not refused: Qdrant takes concurrent writes
            assert summary.points == 210 and c.get("/stats").json()["points"] == 210
            hits = c.post("/search", json={"text": "two", "target": ["image"], "k": 3}).json()["hits"]
            assert len(hits) == 3 and {h["modality"] for h in hits} == {"image"}
    finally:
        service.close()


def test_group_by_modality_gives_one_ranked_list_per_target_each_on_one_scale(client, served):
    body = client.post("/search", json={"text": "three", "group_by": "modality", "k": 4}).json()
    groups = body["groups"]
    assert set(groups) == set(client.get("/stats").json()["by_modality"])
    assert {g["score_kind"] for g in groups.values()} == {"cosine", "rrf"}  # both scales, never in one list
    for modality, group in groups.items():
        assert_same_ranking(group["hits"], served["service"].index.search("three", target=modality, k=4))
        assert group["score_kind"] == ("rrf" if group["route"] == "fused" else "cosine")
        assert all((h["modality"], h["route"], h["score_kind"]) == (modality, group["route"], group["score_kind"])
                   for h in group["hits"])
    assert body["hits"] == [h for g in groups.values() for h in g["hits"]]
    flat = client.post("/search", json={"text": "three", "k": 10}).json()  # ungrouped: each hit names its scale
    assert "groups" not in flat or flat["groups"] is None
    assert all(h["score_kind"] == ("rrf" if h["route"] == "fused" else "cosine") for h in flat["hits"])
    wav = first(served["data"], "audio")
    form = client.post("/search", files={"file": (wav.name, wav.read_bytes(), "audio/wav")},
                       data={"group_by": "modality", "target": "image,audio", "k": "3"}).json()
    assert set(form["groups"]) == {"image", "audio"} and all(len(g["hits"]) == 3 for g in form["groups"].values())
    assert "group_by" in error_of(client.post("/search", json={"text": "x", "group_by": "label"}), 422)
