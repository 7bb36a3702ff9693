"""Moments in a watched folder (`ebridge serve --watch DIR`, issue 30): a long recording dropped in
gets its whole-file point and one point per window; replaced by a shorter one it has exactly the new
set; deleted, none. Real parts as in tests/test_watch.py: the tiny-preset bridge, the embedded store,
watchdog's observer and the FastAPI app.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi", reason="pip install 'emergentbridge[serve]'")
pytest.importorskip("watchdog", reason="pip install 'emergentbridge[serve]'")

from bridge.moments import MOMENT_SPECS, window_starts  # noqa: E402
from indexer.ledger import Manifest  # noqa: E402
from indexer.store import moment_id, point_id  # noqa: E402
from tests.test_indexer import bridge_dir, make_corpus, run_index, write_wav  # noqa: E402,F401
from tests.test_watch import settle, watching  # noqa: E402


@pytest.fixture
def watched(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=1, texts=0)
    run_index(src, idx, bridge=bridge_dir)
    with watching(src, idx) as w:
        yield w


def ids_of(w: dict, rel: str) -> set[str]:
    """Every point of the store whose path is `rel`: the file's own and its moments'."""
    from indexer.store import Filter

    return {str(r.id) for r in w["service"].index.store.scroll(Filter(must={"path": rel}))}


def drop(tmp: Path, dest: Path, seconds: float, seed: int) -> None:
    """A recording written beside the folder and moved in whole, as a copy tool finishes it."""
    os.replace(write_wav(tmp / f"incoming-{seed}.wav", seed, seconds=seconds), dest)


def test_a_long_recording_in_a_watched_folder_gets_its_moments_replaced_and_removed_whole(watched, tmp_path):
    w, src, client = watched, watched["src"], watched["client"]
    pid, spec = point_id("field/walk.wav"), MOMENT_SPECS["audio"]
    (src / "field").mkdir()

    drop(tmp_path, src / "field" / "walk.wav", 40.0, seed=7)
    s = settle(w)
    n_long = len(window_starts(40.0, spec))
    assert s["errors"] == 0 and Manifest(w["idx"]).rows["field/walk.wav"].moments == n_long
    assert ids_of(w, "field/walk.wav") == {pid} | {moment_id(pid, k) for k in range(n_long)}
    hits = client.post("/search", json={"text": "a long walk", "target": ["audio"], "k": 5, "level": "moments",
                                        "filter": {"path": "field/walk.wav"}}).json()["hits"]
    assert hits and all(h["start"] is not None and h["file_id"] == pid for h in hits)
    stats = client.get("/stats").json()
    assert (stats["files"], stats["moments"], stats["by_modality"]) == (4, n_long, {"audio": 2, "image": 2})

    drop(tmp_path, src / "field" / "walk.wav", 20.0, seed=8)  # replaced by a shorter recording
    s = settle(w)
    n_short = len(window_starts(20.0, spec))
    assert 0 < n_short < n_long and s["errors"] == 0
    assert Manifest(w["idx"]).rows["field/walk.wav"].moments == n_short
    assert ids_of(w, "field/walk.wav") == {pid} | {moment_id(pid, k) for k in range(n_short)}
    assert client.get("/stats").json()["moments"] == n_short

    (src / "field" / "walk.wav").unlink()
    s = settle(w)
    assert ids_of(w, "field/walk.wav") == set() and "field/walk.wav" not in Manifest(w["idx"]).rows
    stats = client.get("/stats").json()
    assert (stats["points"], stats["files"], stats["moments"]) == (3, 3, 0)
