"""Reliability, part two (issue 16): modality from the indexed root only, readers never break a
writer, store damage never silent, long texts, truncated WAVs, checkpoint modes, messages.

All on the `tiny` preset with a bridge trained here and corpora the tests write themselves.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.modalities import detect_modality, load_audio, names_a_file
from core.errors import CheckpointError, InputError
from indexer.ledger import JOURNAL_FILE, read_errors_report
from indexer.lock import IndexBusyError, IndexLock, IndexLockedError, ReadLock
from indexer.scan import scan_directory
from indexer.store import open_store, point_id
from indexer.verify import StoreDamagedError
from tests.conftest import slow_indexer_script
from tests.test_indexer import REPO, bridge_dir, make_corpus, run_index, stored, write_png, write_wav  # noqa: F401

PY = sys.executable


def ebridge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh process (this worktree's packages first)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([PY, "-m", "query.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------ modality from the indexed root only


def test_modality_ignores_folders_above_the_indexed_root(tmp_path, bridge_dir):
    for above in ("ir-archive", "depth_project", "thermal-scans"):
        root = tmp_path / above / "photos"
        write_png(root / "beach.png", 1)
        write_png(root / "thermal" / "hot.png", 2)  # a word below the root still counts
        mods = {f.rel_path: f.modality for f in scan_directory(root).files}
        assert mods == {"beach.png": "image", "thermal/hot.png": "thermal"}, above
    assert detect_modality("/x/depth_project/photos/a.png", root="/x/depth_project/photos") == "image"
    assert detect_modality("scans/depth/0001.png") == "depth"  # no root: the whole path, as before

    root = tmp_path / "depth_project" / "photos"
    (root / "thermal" / "hot.png").unlink()
    s = run_index(root, tmp_path / "idx", bridge=bridge_dir)
    assert (s.indexed, s.errors) == (1, 0)  # was: "failed as depth" (the bridge has no depth head)
    assert stored(tmp_path / "idx")["beach.png"]["modality"] == "image"


# ------------------------------------------------------------------ readers never break a writer


def test_searches_during_a_reembed_never_break_the_indexer(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=110, sounds=4, texts=2)
    run_index(src, idx, bridge=bridge_dir)
    script = slow_indexer_script(tmp_path / "slow_indexer.py", 0.3)  # long enough for a search to overlap it under load
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    writer = subprocess.Popen([PY, str(script), "index", str(src), "--index", str(idx), "--reembed",
                               "--batch-size", "4", "--workers", "1", "--decode", "threads", "--no-progress"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = idx / JOURNAL_FILE
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline and \
            not (journal.is_file() and journal.stat().st_size > 0):
        time.sleep(0.02)  # the writer holds the lock and is writing points
    searches = []
    while writer.poll() is None:
        searches.append(ebridge("search", "--index", str(idx), "--text", "seven", "-k", "3"))
    out, err = writer.communicate()
    assert writer.returncode == 0, err[-3000:]
    assert searches, "the indexer finished before any search could overlap it; make its run longer"
    for r in searches:
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        assert r.returncode == 0 or (r.returncode == 2 and f"being written by an indexer (pid {writer.pid}"
                                     in r.stderr and "try again when it finishes" in r.stderr), r.stderr[-2000:]
    assert any(r.returncode == 2 for r in searches)  # at least one really ran beside the writer
    points = stored(idx)
    assert set(points) == set(rels) and {p["_id"] for p in points.values()} == {point_id(r) for r in rels}
    after = ebridge("search", "--index", str(idx), "--text", "seven", "-k", "3")
    assert after.returncode == 0 and after.stdout.count("\n") == 3, after.stderr[-2000:]


def test_an_indexer_waits_for_a_reader_that_holds_the_index_open(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=3, sounds=1, texts=1)
    run_index(src, idx, bridge=bridge_dir)
    reader = subprocess.Popen(
        [PY, "-c", "import sys, time; from query.search import Index; ix = Index.open(sys.argv[1]); "
         "print('open', flush=True); time.sleep(2); ix.close()", str(idx)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(IndexLockedError, match="held open by a reader"):
            IndexLock(idx, reader_wait_s=0.2).acquire()
        t0 = time.monotonic()
        write_png(src / "new.png", 99)
        s = run_index(src, idx)  # waits for the reader, then runs alone
        assert s.indexed == 1 and s.points == len(rels) + 1 and time.monotonic() - t0 > 0.5
    finally:
        reader.kill()
        reader.wait()


def test_a_reader_is_refused_while_an_indexer_holds_the_index(tmp_path, bridge_dir):
    from query.search import Index

    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=0, texts=1)
    run_index(src, idx, bridge=bridge_dir)
    with IndexLock(idx):
        with pytest.raises(IndexBusyError, match=rf"being written by an indexer \(pid {os.getpid()} .*try again"):
            Index.open(idx)
    with ReadLock(idx), ReadLock(idx):  # readers share
        pass
    with Index.open(idx) as index:
        assert index.search("seven", k=1)


# ------------------------------------------------------------------ store damage is never silent


def _garble(idx: Path, part: str, offset: int = 0, size: int = 2048) -> Path:
    """Overwrite bytes of the image partition's vector chunk or payload page (qdrant-edge 0.9 layout)."""
    pattern = {"vectors": "vector_storage-bridged/vectors/chunk_0.mmap", "payloads": "payload_storage/page_0.dat"}[part]
    shard = idx / "modalities" / "image" / "shard"
    files = glob.glob(str(shard / "segments" / "*" / pattern))
    assert len(files) == 1, f"expected one {pattern} under {shard} (engine layout changed?)"
    with open(files[0], "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    return Path(files[0])


@pytest.mark.parametrize("part", ["vectors", "payloads"])
def test_garbled_store_is_reported_to_readers_and_repaired_by_the_next_run(tmp_path, bridge_dir, part):
    from query.search import Index

    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=8, sounds=2, texts=2)
    run_index(src, idx, bridge=bridge_dir)
    _garble(idx, part)

    r = ebridge("search", "--index", str(idx), "--text", "seven")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"index {idx}: its store is damaged" in r.stderr and f"ebridge index {src} --index {idx}" in r.stderr

    s = run_index(src, idx)  # was: exit 0, everything "unchanged"
    assert s.repaired > 0 and s.indexed == s.repaired and s.unchanged == len(rels) - s.repaired
    assert s.points == len(rels)
    with open_store(idx) as store:
        recs = list(store.scroll(with_vectors=True))
    assert sorted(rec.payload["path"] for rec in recs) == rels
    for rec in recs:
        for v in rec.vectors.values():
            assert np.isfinite(v).all() and abs(np.linalg.norm(v) - 1) < 1e-3
    with Index.open(idx) as index:
        assert len(index.search("seven", k=len(rels))) == len(rels)
    assert run_index(src, idx).repaired == 0


def test_damage_found_only_by_a_search_is_one_clear_message(tmp_path, bridge_dir):
    from indexer.store import open_store
    from query.search import Index

    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=6, sounds=0, texts=2)
    run_index(src, idx, bridge=bridge_dir)
    _garble(idx, "payloads")
    from bridge.space import Bridge

    index = Index(open_store(idx), Bridge.load(idx / "bridge"))  # no open-time check: the search meets it
    try:
        with pytest.raises(StoreDamagedError, match="may be damaged.*ebridge index"):
            index.search("seven", target="image", k=6, route="direct")
    finally:
        index.close()


# ------------------------------------------------------------------ queries: long texts are texts


def test_long_text_queries_are_never_probed_as_paths(tmp_path, bridge_dir, monkeypatch):
    from query.search import Index

    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=3, sounds=2, texts=1)
    run_index(src, idx, bridge=bridge_dir)
    long_words, long_token = "a spoken seven " * 30, "seven" * 60  # 450 chars; one 300-char "file name"
    assert not names_a_file(long_words) and not names_a_file(long_token) and not names_a_file("a\nb")
    with Index.open(idx) as index:
        for text in (long_words, long_token, long_token + ".txt"):
            hits = index.search(text, k=2)  # was: OSError File name too long
            assert len(hits) == 2
        assert index.embed_query(long_token)[0] == "text"
        monkeypatch.chdir(src)  # the README's relative file query still reads the file
        assert index.embed_query("sounds/0.wav")[0] == "audio"
        assert index.embed_query(Path("sounds/1.wav"))[0] == "audio"
        assert index.embed_query("sounds/0.wav", source="text")[0] == "text"


# ------------------------------------------------------------------ truncated WAV


def test_truncated_wav_is_an_input_error_and_lands_in_the_report(tmp_path, bridge_dir):
    src = tmp_path / "src"
    whole = write_wav(src / "whole.wav", 1, seconds=1.0)
    cut = src / "cut.wav"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 1])  # mid-data (odd length: a torn last frame too)
    assert load_audio(whole).shape == (16000,)
    with pytest.raises(InputError, match=r"cut\.wav: truncated: 7989 of 16000 frames"):
        load_audio(cut)
    s = run_index(src, tmp_path / "idx", bridge=bridge_dir)
    assert (s.indexed, s.errors) == (1, 1)
    [entry] = read_errors_report(tmp_path / "idx" / "errors.jsonl")
    assert entry["path"] == "cut.wav" and entry["reason"].startswith("truncated: ")


# ------------------------------------------------------------------ checkpoint modes and errors


def test_checkpoint_and_its_index_copy_are_readable_by_others(tmp_path, bridge_dir):
    from bridge.space import Bridge

    old = os.umask(0o022)
    try:
        saved = Bridge.load(bridge_dir).save(tmp_path / "ckpt")
        assert {p.name: p.stat().st_mode & 0o777 for p in saved.iterdir()} == \
            {"config.json": 0o644, "model.safetensors": 0o644}
        (saved / "model.safetensors").chmod(0o600)  # as older versions wrote it
        src = tmp_path / "src"
        make_corpus(src, images=1, sounds=0, texts=0)
        run_index(src, tmp_path / "idx", bridge=saved)
        copy = tmp_path / "idx" / "bridge"
        assert {p.name: p.stat().st_mode & 0o777 for p in copy.iterdir()} == \
            {"config.json": 0o644, "model.safetensors": 0o644}
    finally:
        os.umask(old)


def test_unreadable_checkpoint_is_a_permission_message_not_file_not_found(bridge_dir):
    import shutil

    from bridge.space import Bridge

    def load_as_another_user(ckpt: Path) -> None:
        """Bridge.load as a user who is neither owner nor root (root reads anything: become nobody)."""
        if os.geteuid() != 0:
            return Bridge.load(ckpt)
        os.seteuid(65534)
        try:
            Bridge.load(ckpt)
        finally:
            os.seteuid(0)

    top = Path(tempfile.mkdtemp(dir="/tmp"))  # outside pytest's 0700 folders, so another user can reach it
    try:
        top.chmod(0o755)
        ckpt = Path(shutil.copytree(bridge_dir, top / "ckpt"))
        ckpt.chmod(0o755)
        private = 0o600 if os.geteuid() == 0 else 0o000
        (ckpt / "model.safetensors").chmod(private)  # was: FileNotFoundError "No such file or directory"
        with pytest.raises(CheckpointError, match=r"model\.safetensors: permission denied.*chmod a\+r"):
            load_as_another_user(ckpt)
        ckpt.chmod(0o700 if os.geteuid() == 0 else 0o000)
        with pytest.raises(CheckpointError, match=r"ckpt: permission denied; make the checkpoint folder readable"):
            load_as_another_user(ckpt)
    finally:
        (top / "ckpt").chmod(0o755)  # so rmtree can enter it when not root
        shutil.rmtree(top, ignore_errors=True)


def test_garbled_or_incomplete_checkpoint_names_the_file(tmp_path, bridge_dir):
    import shutil

    from bridge.space import Bridge

    ckpt = Path(shutil.copytree(bridge_dir, tmp_path / "ckpt"))
    good = (ckpt / "config.json").read_bytes()
    (ckpt / "config.json").write_bytes(b"\xff\xfe" + good[2:])
    with pytest.raises(CheckpointError, match=r"config\.json: garbled bridge config .*ebridge index"):
        Bridge.load(ckpt)
    (ckpt / "config.json").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"config\.json: garbled"):
        Bridge.load(ckpt)
    (ckpt / "config.json").write_bytes(good)
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: (cannot read the weights|damaged)"):
        Bridge.load(ckpt)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        Bridge.load(ckpt)


# ------------------------------------------------------------------ search CLI messages


def test_search_cli_messages(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=1, texts=1)
    run_index(src, idx, bridge=bridge_dir)

    r = ebridge("search", "--index", str(idx), "--id", "")
    assert r.returncode == 2 and "NoneType" not in r.stderr and "needs a point id" in r.stderr, r.stderr
    r = ebridge("search", "--index", str(idx), "--id", "not-a-uuid")
    assert r.returncode == 2 and "not a point id" in r.stderr and "Traceback" not in r.stderr, r.stderr

    # The messages that suggest --bridge name an option that exists.
    (idx / "bridge" / "config.json").rename(idx / "config.json.aside")
    r = ebridge("search", "--index", str(idx), "--text", "seven")
    assert r.returncode == 2 and "pass --bridge CKPT_DIR" in r.stderr, r.stderr
    r = ebridge("search", "--index", str(idx), "--text", "seven", "--bridge", str(bridge_dir), "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 4, r.stderr[-2000:]

    (idx / "bridge" / "config.json").write_bytes(b"\xff{garbled")
    r = ebridge("search", "--index", str(idx), "--text", "seven")
    assert r.returncode == 2 and f"{idx}/bridge/config.json: garbled bridge config" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
