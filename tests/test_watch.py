"""`ebridge serve --watch DIR`: a server that keeps a folder indexed while it answers searches.

Real parts throughout: the tiny-preset bridge of the indexer tests, the embedded store, watchdog's
inotify observer, the FastAPI app, and for the crash tests the real CLI in a process that
SIGKILLs itself at the indexer's own crash points.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi", reason="pip install 'emergentbridge[serve]'")
pytest.importorskip("watchdog", reason="pip install 'emergentbridge[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from indexer.index import index_directory  # noqa: E402
from indexer.ledger import INDEXED, Manifest  # noqa: E402
from indexer.lock import IndexLockedError  # noqa: E402
from indexer.reader import hash_file  # noqa: E402
from indexer.record import read_record  # noqa: E402
from indexer.store import point_id  # noqa: E402
from indexer.watch import WatchSettings  # noqa: E402
from query.serve.app import create_app  # noqa: E402
from query.serve.service import SearchService, ServeSettings  # noqa: E402
from tests.serve_support import free_port  # noqa: E402
from tests.test_indexer import REPO, bridge_dir, make_corpus, run_index, stored, write_png, write_wav  # noqa: E402,F401

FAST = dict(settle_s=0.3, debounce_s=0.1, rescan_s=60.0, quiet_s=3600.0, batch_size=2)


def on_disk(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def found(client: TestClient, target: str) -> list[str]:
    """Paths of every `target` item a search returns (k above the item count): each must come once."""
    resp = client.post("/search", json={"text": "a spoken seven", "target": [target], "k": 100})
    assert resp.status_code == 200, resp.text
    return [h["path"] for h in resp.json()["hits"]]


class Hammer:
    """Searches in a loop from another thread while the folder changes; every answer must be a 200."""

    def __init__(self, client: TestClient):
        self.client, self.codes, self.errors, self.stop = client, [], [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            resp = self.client.post("/search", json={"text": "cat", "k": 5})
            self.codes.append(resp.status_code)
            if resp.status_code != 200:
                self.errors.append(resp.text)
            time.sleep(0.01)

    def __enter__(self) -> "Hammer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def watched(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=4, sounds=2, texts=1)
    run_index(src, idx, bridge=bridge_dir)
    write_png(src / "cat" / "new-while-down.png", 50)  # added while no server ran: the catch-up finds it
    with watching(src, idx) as w:
        yield w


@contextlib.contextmanager
def watching(src, idx):
    """A server watching `src` into the index `idx`, once its catch-up is done."""
    service = SearchService.open(idx, ServeSettings(warm=False, workers=1), watch=src,
                                 watch_settings=WatchSettings(**FAST))
    with TestClient(create_app(service)) as client:
        assert service.watcher.wait_idle(60)
        yield {"src": src, "idx": idx, "service": service, "client": client, "watcher": service.watcher}
    service.close()


def settle(w) -> dict:
    time.sleep(0.5)  # events of the change reach the observer, the debounce passes
    assert w["watcher"].wait_idle(60), w["watcher"].status()
    return w["watcher"].status()


def test_added_changed_renamed_deleted_files_and_folders_follow_the_folder_exactly_once(watched, tmp_path):
    w, src, client = watched, watched["src"], watched["client"]
    status = w["watcher"].status()
    assert "new-while-down.png" in " ".join(found(client, "image")) and status["indexed"] == 1

    with Hammer(client) as hammer:
        write_png(src / "dog" / "added.png", 60)
        s = settle(w)
        assert s["indexed"] == 2 and sorted(found(client, "image")) == sorted(p for p in on_disk(src) if p.endswith(".png"))

        write_png(src / "dog" / "added.png", 61, size=14)  # changed bytes
        s = settle(w)
        item = client.get(f"/items/{point_id('dog/added.png')}").json()
        assert s["indexed"] == 3 and item["payload"]["content_hash"] == hash_file(src / "dog" / "added.png")[1]

        vec_before = w["service"].index.store.retrieve([point_id("dog/added.png")], with_vectors=True)[0].vectors
        os.rename(src / "dog" / "added.png", src / "cat" / "renamed.png")
        s = settle(w)
        assert (s["indexed"], s["moved"]) == (3, 1)  # carried over, not embedded again
        assert client.get(f"/items/{point_id('dog/added.png')}").status_code == 404
        moved = w["service"].index.store.retrieve([point_id("cat/renamed.png")], with_vectors=True)[0]
        assert moved.payload["path"] == "cat/renamed.png"
        assert all((moved.vectors[k] == vec_before[k]).all() for k in ("bridged", "proxy"))

        (src / "cat" / "renamed.png").unlink()
        s = settle(w)
        assert s["removed"] == 1 and client.get(f"/items/{point_id('cat/renamed.png')}").status_code == 404

        outside = tmp_path / "incoming" / "birds"  # a whole folder moved in at once
        for i in range(3):
            write_png(outside / f"b{i}.png", 70 + i)
        write_wav(outside / "song.wav", 80)
        shutil.move(str(outside), str(src / "birds"))
        s = settle(w)
        assert s["indexed"] == 7 and sum(p.startswith("birds/") for p in found(client, "image")) == 3
        assert found(client, "audio").count("birds/song.wav") == 1

        shutil.rmtree(src / "birds")  # and removed whole
        s = settle(w)
        assert not any(p.startswith("birds/") for p in found(client, "image") + found(client, "audio"))
    assert hammer.codes and set(hammer.codes) == {200}, f"{len(hammer.codes)} requests: {set(hammer.codes)}"

    files = on_disk(src)
    for target, ext in (("image", ".png"), ("audio", ".wav"), ("text", ".txt")):
        paths = found(client, target)
        assert len(paths) == len(set(paths)) and set(paths) == {p for p in files if p.endswith(ext)}, target
    stats = client.get("/stats").json()
    assert stats["points"] == len(files) and stats["indexing"]["errors"] == 0
    assert {"queued", "done", "errors", "last_error", "state"} <= set(stats["indexing"])
    rows = Manifest(w["idx"]).rows
    assert set(rows) == files and all(r.status == INDEXED for r in rows.values())


def test_an_indexer_is_told_the_server_indexes_the_folder_already(watched):
    with pytest.raises(IndexLockedError, match=r"server that is indexing .*src already"):
        index_directory(watched["src"], watched["idx"], progress=False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "query.cli", "index", str(watched["src"]), "--index",
                          str(watched["idx"])], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "indexing" in out.stderr and "already" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_half_copied_file_is_indexed_once_and_complete(watched, tmp_path):
    w, src = watched, watched["src"]
    data = write_png(tmp_path / "big.png", 90, size=64).read_bytes()
    before = w["watcher"].status()
    target = src / "cat" / "copying.png"
    with open(target, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(1.0)  # well past settle_s: only the open writer tells it is not done
        w["watcher"].poke()
        # the watcher's pass runs when it gets a core: wait for it rather than for a fixed time
        assert _wait(lambda: w["watcher"].status()["deferred"] == 1, 30), w["watcher"].status()
        s = w["watcher"].status()
        assert s["deferred"] == 1 and s["queued"] >= 1 and s["indexed"] == before["indexed"]
        assert w["client"].get(f"/items/{point_id('cat/copying.png')}").status_code == 404
        f.write(data[len(data) // 2:])
    s = settle(w)
    assert s["indexed"] == before["indexed"] + 1 and s["errors"] == 0 and s["deferred"] == 0
    item = w["client"].get(f"/items/{point_id('cat/copying.png')}").json()
    assert item["payload"]["size"] == len(data) and item["payload"]["content_hash"] == hash_file(target)[1]


def test_without_inotify_the_rescan_finds_changes(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=0, texts=0)
    run_index(src, idx, bridge=bridge_dir)
    service = SearchService.open(idx, ServeSettings(warm=False, workers=1), watch=src, watch_settings=WatchSettings(
        **{**FAST, "rescan_s": 0.5, "use_inotify": False, "quiet_s": 0.5}))
    try:
        write_png(src / "late.png", 5)
        assert _wait(lambda: service.index.store.count() == 3, 30)
        assert "rescan" in service.watcher.status()["mode"]
        # no request for quiet_s: the server builds the search graph of the new point and records it
        assert _wait(lambda: read_record(idx)["optimized"] is True and not service.watcher.status()["graph_pending"], 30)
    finally:
        service.close()


# ------------------------------------------------------------------------------ kill -9 mid-batch


def _serve(idx: Path, src: Path, port: int, kill_at: str | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("EBRIDGE_TEST_KILL_AT", None)
    if kill_at:
        env["EBRIDGE_TEST_KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, "-m", "query.cli", "serve", "--index", str(idx), "--watch", str(src),
                             "--port", str(port), "--no-warm", "--workers", "1", "--watch-batch", "2",
                             "--settle", "0.2"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _wait(pred, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("stage, when", [("batch", "watching"), ("pipeline", "catch-up"), ("compact", "catch-up")])
def test_a_kill_during_a_watched_batch_loses_nothing_and_the_next_start_resumes(tmp_path, bridge_dir, stage, when):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=3, sounds=0, texts=1)
    run_index(src, idx, bridge=bridge_dir)
    new = [write_png(src / "new" / f"{i}.png", 200 + i) for i in range(5)]
    if when == "watching":
        for p in new:
            p.rename(tmp_path / p.name)  # they arrive once the server watches
    port = free_port()
    proc = _serve(idx, src, port, stage)
    try:
        if when == "watching":
            assert _wait(lambda: _get(f"http://127.0.0.1:{port}/health") is not None or proc.poll() is not None)
            assert proc.poll() is None, proc.stderr.read()
            for p in new:
                shutil.copy(tmp_path / p.name, p)
        proc.wait(120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    if stage == "batch":  # a batch of 2 was durable when it died, the rest not yet
        assert 0 < sum(r.startswith("new/") for r in Manifest(idx).rows) < 5

    proc = _serve(idx, src, port, None)
    try:
        def caught_up() -> bool:
            s = _get(f"http://127.0.0.1:{port}/stats")
            return bool(s and s["indexing"]["runs"] >= 1 and s["indexing"]["state"] == "watching"
                        and s["indexing"]["queued"] == 0 and s["points"] == len(on_disk(src)))
        assert _wait(caught_up), _get(f"http://127.0.0.1:{port}/stats")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    points = stored(idx)
    files = on_disk(src)
    assert set(points) == files and len({p["_id"] for p in points.values()}) == len(files)
    rows = Manifest(idx).rows
    assert set(rows) == files and all(r.status == INDEXED for r in rows.values())
    assert (idx / "errors.jsonl").read_text() == ""  # nothing half-read was reported as broken


# ------------------------------------------------------------------------------ Qdrant server mode

QDRANT_URL = os.environ.get("QDRANT_URL")


@pytest.mark.parametrize("kind", ["client", pytest.param("server", marks=pytest.mark.skipif(
    not QDRANT_URL, reason="set QDRANT_URL=http://host:6333 to run the watch test against a real Qdrant server"))])
def test_watch_on_a_qdrant_collection_while_other_servers_serve_it(tmp_path, bridge_dir, kind):
    import uuid

    from qdrant_client import QdrantClient

    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=3, sounds=0, texts=1)
    # qdrant-client's local mode makes the calls a server gets; a real server when QDRANT_URL is set
    url = QdrantClient(":memory:") if kind == "client" else QDRANT_URL
    collection = f"eb-watch-{uuid.uuid4().hex[:10]}"
    run_index(src, idx, bridge=bridge_dir, qdrant_url=url, collection=collection)
    writer = SearchService.open(idx, ServeSettings(warm=False, workers=1), url=url, collection=collection,
                                watch=src, watch_settings=WatchSettings(**FAST))
    readers = []
    try:
        if kind == "server":  # another server on the same collection, not watching: it only reads
            readers.append(SearchService.open(idx, ServeSettings(warm=False, workers=1), url=url,
                                              collection=collection))
        assert writer.watcher.wait_idle(60)
        with TestClient(create_app(writer)) as client, Hammer(client) as hammer:
            write_png(src / "cat" / "late.png", 33)
            assert settle({"watcher": writer.watcher})["indexed"] == 1
            (src / "notes" / "0.txt").unlink()
            settle({"watcher": writer.watcher})
            assert "cat/late.png" in found(client, "image") and found(client, "text") == []
            for service in (writer, *readers):
                assert service.index.store.count() == len(on_disk(src))
            with pytest.raises(IndexLockedError, match="indexing .* already"):
                index_directory(src, idx, qdrant_url=url, collection=collection, progress=False)
        assert set(hammer.codes) == {200}, hammer.errors[:3]  # (leaving the client closed the app and the writer)
    finally:
        for service in (writer, *readers):
            service.close()
        if kind == "server":
            QdrantClient(QDRANT_URL).delete_collection(collection)


def test_a_plain_index_run_also_keeps_the_vectors_of_a_renamed_file(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=1, texts=1)
    run_index(src, idx, bridge=bridge_dir)
    before = stored(idx)
    (src / "archive").mkdir()
    os.rename(src / "sounds" / "0.wav", src / "archive" / "kept.wav")
    os.rename(src / "notes" / "0.txt", src / "archive" / "kept.txt")
    s = run_index(src, idx)
    assert (s.indexed, s.moved, s.removed) == (0, 2, 0)
    after = stored(idx)
    assert set(after) == on_disk(src) and after["archive/kept.txt"]["text"] == before["notes/0.txt"]["text"]
    assert after["archive/kept.wav"]["_id"] == point_id("archive/kept.wav")
    rows = Manifest(idx).rows
    assert rows["archive/kept.wav"].content_hash == before["sounds/0.wav"]["content_hash"]
