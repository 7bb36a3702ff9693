"""Indexer: scan, manifest, lock, pipeline, errors report, resume after SIGKILL, shards, CLI.

Everything runs on the `tiny` preset (numpy features) with a bridge trained here on
synthetic features in a few seconds, and on corpora the tests write themselves.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from core.errors import BridgeMismatchError
from indexer.index import index_directory
from indexer.ledger import INDEXED, JOURNAL_FILE, Manifest, ManifestRow
from indexer.ledger import read_errors_report
from indexer.lock import IndexLock, IndexLockedError
from indexer.scan import ShardSpec, scan_directory, shard_of
from indexer.store import Filter, open_store, point_id
from tests.conftest import slow_indexer_script

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory) -> Path:
    from tests.conftest import tiny_bridge

    return tiny_bridge(tmp_path_factory.mktemp("bridge"))


@pytest.fixture(scope="module")
def other_bridge_dir(bridge_dir, tmp_path_factory) -> Path:
    """The same bridge with one weight changed: another version, same dims."""
    import torch

    from bridge.space import Bridge

    b = Bridge.load(bridge_dir)
    with torch.no_grad():
        next(b.modules.heads["image"].parameters()).add_(0.01)
    return b.save(tmp_path_factory.mktemp("bridge2"))


def write_png(path: Path, seed: int, size: int = 12) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def write_wav(path: Path, seed: int, seconds: float = 0.5) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (rng.normal(size=int(16000 * seconds)) * 0.1).astype(np.float32), 16000)
    return path


def make_corpus(root: Path, images: int = 6, sounds: int = 3, texts: int = 2) -> list[str]:
    """cat/dog pictures, a few sounds, a few texts; returns the relative paths."""
    rels = []
    for i in range(images):
        rels.append(write_png(root / ("cat" if i % 2 else "dog") / f"{i:03d}.png", i).relative_to(root).as_posix())
    for i in range(sounds):
        rels.append(write_wav(root / "sounds" / f"{i}.wav", 100 + i).relative_to(root).as_posix())
    for i in range(texts):
        p = root / "notes" / f"{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"note number {i}: a spoken seven\n", encoding="utf-8")
        rels.append(p.relative_to(root).as_posix())
    return sorted(rels)


def png_bomb(path: Path, side: int = 60_000) -> Path:
    """A valid PNG of a few hundred bytes that declares side x side pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def stored(index: Path) -> dict[str, dict]:
    """path -> payload of every point in an embedded index (opened read-only, then closed)."""
    with open_store(index) as store:
        return {r.payload["path"]: {**r.payload, "_id": r.id} for r in store.scroll()}


def run_index(src: Path, index: Path, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("workers", 2)
    kw.setdefault("progress", False)
    return index_directory(src, index, **kw)


# ------------------------------------------------------------------------------ scan


def test_scan_excludes_hidden_sidecar_and_forced_modality(tmp_path):
    make_corpus(tmp_path, images=4, sounds=1, texts=1)
    (tmp_path / "skip.tmp").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "readme.json").write_text("{}")  # no modality reads .json: ignored, not an error
    (tmp_path / "metadata.csv").write_text("file_name,label,caption\ndog/000.png,puppy,a small dog\n")
    scan = scan_directory(tmp_path, exclude=["*.tmp", "notes"])
    rels = [f.rel_path for f in scan.files]
    assert rels == ["cat/001.png", "cat/003.png", "dog/000.png", "dog/002.png", "sounds/0.wav"]
    assert scan.ignored == ["readme.json"]
    dog = next(f for f in scan.files if f.rel_path == "dog/000.png")
    assert (dog.label, dog.meta, dog.folder, dog.modality) == ("puppy", {"caption": "a small dog"}, "dog", "image")
    assert next(f for f in scan.files if f.rel_path == "cat/001.png").label is None  # sidecar only...
    by_folder = scan_directory(tmp_path, exclude=["*.tmp"], label_from_folder=True)
    assert {f.rel_path: f.label for f in by_folder.files}["cat/001.png"] == "cat"  # ...unless asked

    forced = scan_directory(tmp_path, modality="audio", exclude=["*.tmp", "*.json"])
    problems = {f.rel_path: f.problem for f in forced.files}
    assert problems["sounds/0.wav"] is None
    assert "unsupported extension '.png' for forced modality 'audio'" in problems["cat/001.png"]


def test_sidecar_modality_column_forces_the_modality_a_path_word_would_guess_wrong(tmp_path):
    root = tmp_path / "nyu_depth_v2"  # "depth" in a folder above the files: guessing says depth
    make_corpus(root, images=1, sounds=0, texts=0)
    (root / "metadata.csv").write_text("path,modality,label\ndog/000.png,image,dog\n")
    (entry,) = scan_directory(root).files
    assert (entry.modality, entry.label, entry.meta) == ("image", "dog", {})


def test_shards_partition_the_files_stably():
    paths = [f"d{i % 7}/f{i}.png" for i in range(300)]
    shards = [ShardSpec.parse(f"{i}/3") for i in range(3)]
    owned = [{p for p in paths if s.owns(p)} for s in shards]
    assert set().union(*owned) == set(paths) and sum(map(len, owned)) == len(paths)
    assert all(len(o) > 60 for o in owned)
    # The hash is not Python's salted hash(): a fixed value, the same in every process.
    assert shard_of("cat/0001.jpg", 1000) == shard_of("cat/0001.jpg", 1000)
    out = subprocess.run([sys.executable, "-c", "from indexer.scan import shard_of; print(shard_of('cat/0001.jpg', 1000))"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert int(out.stdout) == shard_of("cat/0001.jpg", 1000)
    with pytest.raises(ValueError, match="0 <= i < N"):
        ShardSpec.parse("3/3")


# ------------------------------------------------------------------------------ manifest


def test_manifest_journal_replays_and_ignores_a_torn_line(tmp_path):
    m = Manifest(tmp_path)
    m.commit([ManifestRow("a.png", 1, 1, "h1", point_id("a.png"), "image", INDEXED),
              ManifestRow("b.png", 2, 2, "h2", point_id("b.png"), "image", INDEXED)])
    m.commit(deleted=["a.png"])
    m.close()
    with open(tmp_path / JOURNAL_FILE, "a") as f:
        f.write('{"path": "c.png", "size"')  # what a SIGKILL mid-write leaves
    again = Manifest(tmp_path)
    assert sorted(again.rows) == ["b.png"]
    again.compact()
    assert (tmp_path / JOURNAL_FILE).stat().st_size == 0
    assert Manifest(tmp_path).rows["b.png"].content_hash == "h2"


# ------------------------------------------------------------------------------ indexing


def test_index_points_payload_vectors_and_metadata(tmp_path, bridge_dir):
    from bridge.space import Bridge

    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src)
    (src / "metadata.jsonl").write_text(json.dumps({"file_name": "cat/001.png", "label": "cat",
                                                    "caption": "a cat"}) + "\n")
    s = run_index(src, idx, bridge=bridge_dir)
    assert (s.indexed, s.unchanged, s.removed, s.errors, s.points) == (len(rels), 0, 0, 0, len(rels))
    assert s.by_modality == {"image": 6, "audio": 3, "text": 2}
    assert (idx / "bridge" / "config.json").is_file() and (idx / "manifest.parquet").is_file()

    bridge = Bridge.load(bridge_dir)
    with open_store(idx) as store:
        meta = store.metadata
        assert meta["bridge_version"] == bridge.version and meta["preset"] == "tiny"
        assert meta["roles"] == {"anchor": "image", "proxy": "text"} and meta["routes"] == {}
        assert [sorted(p) for p in meta["paired"]] == [["image", "text"], ["audio", "image"]]
        assert store.info().payload_indexes["path"] == "prefix"
        assert store.count(Filter(must={"modality": "audio"})) == 3
        assert store.count(Filter(path_prefix="cat/")) == 3
        rec = store.retrieve([point_id("cat/001.png")], with_vectors=True)[0]
    p = rec.payload
    assert (p["path"], p["modality"], p["label"], p["caption"], p["folder"]) == ("cat/001.png", "image", "cat", "a cat", "cat")
    assert p["abs_path"] == str((src / "cat/001.png").resolve()) and p["bridge_version"] == bridge.version
    assert p["size"] == (src / "cat/001.png").stat().st_size and len(p["content_hash"]) == 32
    z = bridge.embed("image", [src / "cat/001.png"])
    np.testing.assert_allclose(rec.vectors["bridged"], z[0], atol=1e-5)
    np.testing.assert_allclose(rec.vectors["proxy"], bridge.proxy_view(z)[0], atol=1e-5)
    assert stored(idx)["notes/0.txt"]["text"].startswith("note number 0")
    assert {v["_id"] for v in stored(idx).values()} == {point_id(r) for r in rels}


def test_incremental_rerun_touch_modify_delete_add(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src)
    run_index(src, idx, bridge=bridge_dir)
    old_hash = stored(idx)["dog/000.png"]["content_hash"]

    os.utime(src / "cat/001.png", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: same bytes
    write_png(src / "dog/000.png", seed=999)  # modified
    (src / "sounds/1.wav").unlink()  # deleted
    write_wav(src / "sounds/new.wav", seed=7)  # added
    s = run_index(src, idx)  # no --bridge: the index's own copy
    assert (s.indexed, s.unchanged, s.removed, s.errors) == (2, len(rels) - 2, 1, 0)
    points = stored(idx)
    assert set(points) == (set(rels) - {"sounds/1.wav"}) | {"sounds/new.wav"}
    assert points["dog/000.png"]["content_hash"] != old_hash

    s = run_index(src, idx)
    assert (s.indexed, s.unchanged, s.removed) == (0, len(rels), 0)


def test_writer_commits_the_first_batch_at_once_and_the_rest_together(tmp_path, bridge_dir, monkeypatch):
    """A commit (flush, then journal) per COMMIT_SECONDS, not per batch: with a long interval the
    first batch is durable on its own and the rest in one commit at the end, every file journaled."""
    import indexer.pipeline

    monkeypatch.setattr(indexer.pipeline, "COMMIT_SECONDS", 3600.0)
    commits: list[int] = []
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src)
    from indexer.hooks import RunHooks

    hooks = RunHooks(on_commit=lambda rows: commits.append(len(rows)))  # only its progress callback
    s = run_index(src, idx, bridge=bridge_dir, batch_size=2, hooks=hooks)
    assert commits == [2, len(rels) - 2] and s.stages["commits"] == 2
    assert s.stages["encode"] >= s.stages["encode_cpu"] > 0 and s.stages["write"] > 0
    assert set(Manifest(idx).rows) == set(rels) and set(stored(idx)) == set(rels)


def test_bad_inputs_go_to_the_errors_report_and_fixed_ones_get_indexed(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=2, sounds=1, texts=1)
    good = write_png(src / "bad" / "truncated.png", seed=5, size=64)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    (src / "bad" / "empty.wav").write_bytes(b"")
    (src / "bad" / "random.jpg").write_bytes(np.random.default_rng(0).bytes(512))
    (src / "bad" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    png_bomb(src / "bad" / "bomb.png")
    s = run_index(src, idx, bridge=bridge_dir)
    assert (s.indexed, s.errors) == (len(rels), 5)
    report = {e["path"]: e for e in read_errors_report(s.errors_report)}
    assert set(report) == {"bad/truncated.png", "bad/empty.wav", "bad/random.jpg", "bad/latin1.txt", "bad/bomb.png"}
    assert "0 bytes" in report["bad/empty.wav"]["reason"]
    assert "not UTF-8" in report["bad/latin1.txt"]["reason"]
    assert "decompression bomb" in report["bad/bomb.png"]["reason"]
    assert "corrupt" in report["bad/random.jpg"]["reason"]
    assert "truncated" in report["bad/truncated.png"]["reason"] or "corrupt" in report["bad/truncated.png"]["reason"]
    assert all(e["time"] and e["modality"] for e in report.values())
    assert set(stored(idx)) == set(rels)

    write_wav(src / "bad" / "empty.wav", seed=3)  # fixed
    (src / "dog" / "000.png").write_bytes(b"\x89PNG broken")  # was fine, now bad: its point goes
    s = run_index(src, idx)
    assert (s.indexed, s.errors) == (1, 5)
    report = {e["path"] for e in read_errors_report(s.errors_report)}
    assert "bad/empty.wav" not in report and "dog/000.png" in report
    assert set(stored(idx)) == (set(rels) - {"dog/000.png"}) | {"bad/empty.wav"}


def test_forced_modality_reports_unreadable_extensions(tmp_path, bridge_dir):
    src = tmp_path / "src"
    write_wav(src / "a.wav", 1)
    write_png(src / "b.png", 2)
    s = run_index(src, tmp_path / "idx", bridge=bridge_dir, modality="audio")
    assert (s.indexed, s.errors) == (1, 1)
    (entry,) = read_errors_report(s.errors_report)
    assert entry["path"] == "b.png" and "forced modality 'audio'" in entry["reason"]
    s = run_index(src, tmp_path / "idx2", bridge=bridge_dir, modality="depth")  # the bridge has no depth head
    reasons = {e["path"]: e["reason"] for e in read_errors_report(s.errors_report)}
    # a file the space cannot place is skipped (not an error), with how to bind its modality
    assert (s.errors, s.skipped) == (1, {"depth": 1}) and "'.wav'" in reasons["a.wav"]
    assert "cannot place depth" in reasons["b.png"] and "ebridge train" in reasons["b.png"]


def test_decoding_in_processes_gives_the_same_points_and_errors(tmp_path, bridge_dir):
    src = tmp_path / "src"
    rels = make_corpus(src, images=5, sounds=3, texts=1)
    (src / "bad.wav").write_bytes(b"")
    by_mode = {}
    for mode in ("threads", "processes"):
        s = run_index(src, tmp_path / mode, bridge=bridge_dir, decode=mode)
        assert (s.indexed, s.errors) == (len(rels), 1)
        with open_store(tmp_path / mode) as store:
            by_mode[mode] = {r.payload["path"]: r.vectors["bridged"] for r in store.scroll(with_vectors=True)}
        assert [e["path"] for e in read_errors_report(s.errors_report)] == ["bad.wav"]
    assert by_mode["threads"].keys() == by_mode["processes"].keys()
    for path, vec in by_mode["threads"].items():
        np.testing.assert_allclose(vec, by_mode["processes"][path], atol=1e-5)


# ------------------------------------------------------------------------------ refusals


def test_second_indexer_is_refused_and_lock_is_not_stale_after_sigkill(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=0, texts=0)
    with IndexLock(idx):
        with pytest.raises(IndexLockedError, match=r"locked by another indexer \(pid \d+"):
            run_index(src, idx, bridge=bridge_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from indexer.lock import IndexLock; "
         "l = IndexLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(60)", str(idx)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid}"):
            run_index(src, idx, bridge=bridge_dir)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert run_index(src, idx, bridge=bridge_dir).indexed == 2  # the kernel dropped the lock


def test_other_bridge_is_refused_unless_reembed(tmp_path, bridge_dir, other_bridge_dir):
    from bridge.space import Bridge

    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=3, sounds=1, texts=1)
    run_index(src, idx, bridge=bridge_dir)
    with pytest.raises(BridgeMismatchError, match="--reembed"):
        run_index(src, idx, bridge=other_bridge_dir)
    s = run_index(src, idx, bridge=other_bridge_dir, reembed=True)
    new_version = Bridge.load(other_bridge_dir).version
    assert s.indexed == len(rels) and s.bridge_version == new_version
    assert {p["bridge_version"] for p in stored(idx).values()} == {new_version}
    assert json.loads((idx / "bridge" / "config.json").read_text())["version"] == new_version
    assert run_index(src, idx).unchanged == len(rels)


# ------------------------------------------------------------------------------ kill and resume


def test_sigkill_mid_run_then_rerun_gives_one_point_per_valid_file(tmp_path, bridge_dir):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=60, sounds=4, texts=2)
    (src / "broken.wav").write_bytes(b"")
    script = slow_indexer_script(tmp_path / "slow_indexer.py", 0.2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), "index", str(src), "--index", str(idx), "--bridge",
                             str(bridge_dir), "--batch-size", "4", "--workers", "2", "--decode", "processes",
                             "--no-progress"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = idx / JOURNAL_FILE
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 4:  # first batch is durable
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"indexer ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    workers = [int(p) for p in children.read_text().split()] if children.exists() else []
    assert workers or not children.exists(), "expected forked decode workers (--decode processes)"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10  # its decode workers must not outlive it
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
                   for w in workers)

    s = run_index(src, idx)
    assert s.unchanged >= 3 and s.indexed + s.unchanged == len(rels) and s.errors == 1  # resumed, not redone
    points = stored(idx)
    assert set(points) == set(rels)
    assert {p["_id"] for p in points.values()} == {point_id(r) for r in rels}
    with open_store(idx) as store:
        assert store.count() == len(rels)
    again = run_index(src, idx)
    assert (again.indexed, again.unchanged) == (0, len(rels))


# ------------------------------------------------------------------------------ server mode


def test_shard_runs_in_any_order_end_with_the_union(tmp_path, bridge_dir):
    from qdrant_client import QdrantClient

    src = tmp_path / "src"
    rels = make_corpus(src, images=8, sounds=3, texts=2)
    client = QdrantClient(":memory:")  # one "server" shared by every shard run
    kw = dict(qdrant_url=client, collection="digits", quantization="int8", bridge=bridge_dir)
    for i in (2, 0, 1):
        s = run_index(src, tmp_path / f"idx{i}", shard=f"{i}/3", **kw)
        assert s.indexed == sum(shard_of(r, 3) == i for r in rels)
    s = run_index(src, tmp_path / "idx0", shard="0/3", **kw)  # a re-run changes nothing
    assert s.indexed == 0 and s.points == len(rels)

    victim = next(r for r in rels if shard_of(r, 3) == 1)
    (src / victim).unlink()
    s = run_index(src, tmp_path / "idx2", shard="2/3", **kw)  # another shard: must not remove it
    assert s.removed == 0
    s = run_index(src, tmp_path / "idx1", shard="1/3", **kw)
    assert s.removed == 1
    store = open_store(tmp_path / "idx1", url=client, collection="digits")
    assert sorted(r.payload["path"] for r in store.scroll()) == sorted(set(rels) - {victim})
    assert store.spec.quantization == "int8" and store.metadata["bridge_version"] == s.bridge_version


# ------------------------------------------------------------------------------ CLI


def test_cli_prints_one_json_summary(tmp_path, bridge_dir, capsys):
    from query.cli import main

    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=2, sounds=1, texts=1)
    (src / "x.wav").write_bytes(b"")
    assert main(["index", str(src), "--index", str(idx), "--bridge", str(bridge_dir), "--json",
                 "--exclude", "notes"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["indexed"], out["unchanged"], out["removed"], out["errors"]) == (len(rels) - 1, 0, 0, 1)
    assert out["errors_report"] == str(idx.resolve() / "errors.jsonl")
    with IndexLock(idx):
        assert main(["index", str(src), "--index", str(idx), "--json"]) == 2
    assert "locked by another indexer" in capsys.readouterr().err


def test_import_indexer_does_not_load_torch():
    code = ("import sys, indexer, indexer.index, indexer.cli, indexer.pipeline, indexer.scan; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_index_options_are_the_command_lines_and_the_keywords_build_them(tmp_path, monkeypatch):
    """`ebridge index` with no options runs with `IndexOptions()` (its defaults are the API's), and
    `index_directory`'s keywords build the same object; an unknown keyword names itself."""
    import dataclasses

    from indexer.cli import options_from_args
    from indexer.options import IndexOptions
    from query.cli import build_parser

    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    args = build_parser().parse_args(["index", str(tmp_path), "--index", str(tmp_path / "idx")])
    from_cli = options_from_args(args)
    # argparse gives a list; the bar shows on a terminal only; the API leaves a given bridge on its device
    assert (from_cli.exclude, from_cli.device) == ([], "auto")
    assert dataclasses.replace(from_cli, exclude=(), progress=True, device=None) == IndexOptions()
    assert IndexOptions.build(exclude=["*.md"], workers=1) == IndexOptions(exclude=["*.md"], workers=1)
    with pytest.raises(TypeError, match="batchsize"):
        index_directory(tmp_path, tmp_path / "idx", batchsize=8)
