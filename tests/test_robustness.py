"""Issue 14: nothing a folder holds stops an index run, every crash point recovers, every error is
one line.

* a corpus of 100+ bad and edge-case inputs (tests/badfiles.py) indexed in a subprocess: exit 0,
  each valid file one point, each bad one in the errors report, bounded time and peak memory;
* a real SIGKILL at each stage of a run (indexer/faults.py), then a re-run that ends with one point
  per valid file and the HNSW graph built;
* damaged manifest, journal and bridge copy: repaired with a log line, or one clear error;
* the other reproductions of the issue, one test each.

All on the `tiny` preset with a bridge trained here in seconds.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from indexer.index import IndexRootError, index_directory
from indexer.ledger import JOURNAL_FILE, MANIFEST_FILE, read_errors_report
from indexer.record import read_record
from indexer.store import open_store, point_id
from tests.badfiles import make_corpus as make_bad_corpus
from tests.badfiles import jpeg_bytes, mp4_bytes, png_bytes
from indexer.lock import IndexLockedError
from tests.test_indexer import make_corpus, run_index, stored

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
# Small segments get an HNSW graph too, so "the graph is built" is visible on a tiny corpus.
GRAPH_PATCH = ("import functools, indexer.index as ix; "
               "ix.CollectionSpec = functools.partial(ix.CollectionSpec, indexing_threshold_kb=1, "
               "full_scan_threshold_kb=1); ")


@pytest.fixture(scope="module")
def bridge6(tmp_path_factory) -> Path:
    """A tiny bridge with a head for each of the six modalities."""
    from bridge.train import TrainConfig, train
    from tests.conftest import synthetic_set

    cfg = TrainConfig(preset="tiny", dim=16, hidden=32, batch_size=16, steps=10, proxy_steps=10,
                      diffusion_timesteps=50, diffusion_steps=2, seed=3)
    dims = {m: 64 for m in ("image", "text", "audio", "depth", "thermal", "video")}
    bridge, _ = train(cfg, synthetic_set(dims=dims, n_per_class=4))
    return bridge.save(tmp_path_factory.mktemp("bridge6"))


def cli(*args: str, extra: str = "", env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`ebridge ARGS` in a fresh process (a real exit code, a real SIGKILL)."""
    code = extra + "import sys; from query.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def graph_built(index: Path) -> bool:
    """Both named vectors of every point in a graph, in each modality's graph (partition) that
    GRAPH_PATCH's 1 KB threshold (per named vector) asks to index; a smaller one (2 sounds of 16-d
    vectors) is searched by brute force, with no graph to build."""
    with open_store(index) as store:
        parts = store.partition_info() if hasattr(store, "partition_info") else {"all": store.info()}
        dim = max(store.spec.vectors.values())
    big = [info for info in parts.values() if info.points * dim * 4 > 1024]  # the threshold is per named vector
    return bool(big) and all(info.indexed_vectors >= 2 * info.points for info in big)


# ------------------------------------------------------------------------------ the bad corpus


@pytest.mark.timeout(240)
def test_bad_corpus_run_exits_0_indexes_each_valid_file_once_and_reports_each_bad_one(tmp_path, bridge6):
    src, idx = tmp_path / "src", tmp_path / "idx"
    cases = make_bad_corpus(src)
    assert len(cases) >= 40
    script = textwrap.dedent("""
        import json, resource, sys
        from indexer.index import index_directory
        s = index_directory(sys.argv[1], sys.argv[2], bridge=sys.argv[3], batch_size=8, workers=2,
                            progress=False, torch_threads=1)
        # VmHWM belongs to this process's own memory; ru_maxrss would carry the parent's peak across exec.
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
        peak_mb = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"summary": s.to_dict(), "peak_mb": peak_mb}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(src), str(idx), str(bridge6)], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=200)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Unbounded, the bombs alone would ask for 10 GB (a 60000^2 picture) and 64 GB (a resampler).
    assert result["peak_mb"] < 1500, result["peak_mb"]

    want_indexed = {c.rel for c in cases.values() if c.outcome == "indexed"}
    want_errors = {c.rel: c.reason for c in cases.values() if c.outcome == "error"}
    points = stored(idx)
    assert set(points) == want_indexed
    with open_store(idx) as store:
        assert store.count() == len(want_indexed)  # exactly once: no duplicate points
    for c in cases.values():
        if c.outcome == "indexed" and c.modality:
            assert points[c.rel]["modality"] == c.modality, c
    report = {e["path"]: e["reason"] for e in read_errors_report(idx / "errors.jsonl")}
    assert set(report) == set(want_errors)
    for rel, fragment in want_errors.items():
        assert fragment in report[rel].lower(), (rel, report[rel])
        assert "\n" not in report[rel]  # one line each
    summary = result["summary"]
    assert (summary["indexed"], summary["errors"]) == (len(want_indexed), len(want_errors))

    again = run_index(src, idx)  # nothing to redo, nothing new to report
    assert (again.indexed, again.unchanged, again.errors) == (0, len(want_indexed), len(want_errors))


@pytest.mark.timeout(60)
def test_search_with_a_pipe_or_special_file_is_refused_at_once(tmp_path, bridge6):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=0, texts=1)
    run_index(src, idx, bridge=bridge6)
    for name in ("pipe.png", "pipe.txt", "pipe.wav"):
        os.mkfifo(tmp_path / name)
        r = cli("search", "--index", str(idx), "--file", str(tmp_path / name), timeout=50)
        assert r.returncode == 2 and "named pipe" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_video_decodes_only_the_frames_it_keeps(tmp_path):
    """450 frames of 640x360 (310 MB decoded) must not all be held at once."""
    path = tmp_path / "long.mp4"
    path.write_bytes(mp4_bytes(frames=450, width=640, height=360))
    code = textwrap.dedent("""
        import resource, sys
        from bridge.modalities import load_video
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        frames = load_video(sys.argv[1])
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(frames.shape, grown)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, env=ENV, capture_output=True, text=True,
                         timeout=120, check=True)
    shape, grown = out.stdout.rsplit(")", 1)
    assert shape + ")" == "(8, 360, 640, 3)"
    assert float(grown) < 120, f"decoding grew the peak RSS by {grown} MB"


# ------------------------------------------------------------------------------ crash points


KILL_STAGES = ["lock", "bridge", "store", "batch", "pipeline", "optimize", "compact"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stage", KILL_STAGES)
def test_sigkill_at_each_stage_then_rerun_gives_one_point_per_file_and_a_built_graph(tmp_path, bridge6, stage):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=20, sounds=2, texts=2)  # 20 x 16-d images: over the 1 KB graph threshold
    (src / "broken.png").write_bytes(b"not a picture")
    args = ("index", str(src), "--index", str(idx), "--bridge", str(bridge6), "--batch-size", "4", "--workers", "2",
            "--no-progress")
    killed = cli(*args, extra=GRAPH_PATCH, env={"EBRIDGE_TEST_KILL_AT": stage})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    rerun = cli(*args[:-1], "--json", extra=GRAPH_PATCH)  # --json: the summary on stdout
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout)
    assert summary["indexed"] + summary["unchanged"] == len(rels) and summary["errors"] == 1
    points = stored(idx)
    assert set(points) == set(rels)
    assert {p["_id"] for p in points.values()} == {point_id(r) for r in rels}
    assert graph_built(idx), f"no HNSW graph after a kill at {stage!r} and a re-run"
    assert read_record(idx)["optimized"] is True
    assert [e["path"] for e in read_errors_report(idx / "errors.jsonl")] == ["broken.png"]
    assert not list(idx.glob(".*.tmp"))  # no leftovers of an interrupted atomic write


@pytest.mark.timeout(180)
def test_kill_during_a_long_hnsw_build_is_finished_by_the_next_run(tmp_path, bridge6):
    """A watchdog kills the run 0.3 s into a graph build of 1,500 points: the re-run must not
    report 'unchanged' and leave the points without their graph."""
    src, idx = tmp_path / "src", tmp_path / "idx"
    (src / "t").mkdir(parents=True)
    for i in range(1500):
        (src / "t" / f"{i:04d}.txt").write_text(f"note {i} about the number {i % 10}", encoding="utf-8")
    patch = ("import functools, indexer.index as ix; ix.CollectionSpec = functools.partial(ix.CollectionSpec, "
             "indexing_threshold_kb=1, full_scan_threshold_kb=1, hnsw_ef_construct=400, hnsw_m=48); ")
    args = ("index", str(src), "--index", str(idx), "--bridge", str(bridge6), "--batch-size", "256", "--no-progress")
    killed = cli(*args, extra=patch, env={"EBRIDGE_TEST_KILL_AT": "optimize", "EBRIDGE_TEST_KILL_DELAY": "0.3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert read_record(idx)["optimized"] is False
    s = run_index(src, idx)
    assert (s.indexed, s.unchanged, s.points) == (0, 1500, 1500)
    assert graph_built(idx) and read_record(idx)["optimized"] is True


# ------------------------------------------------------------------------------ damaged index files


@pytest.mark.parametrize("damage", ["truncated", "garbled", "empty"])
def test_damaged_manifest_is_rebuilt_from_the_store_with_a_log_line(tmp_path, bridge6, damage, caplog):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=4, sounds=1, texts=1)
    (src / "bad.wav").write_bytes(b"")
    run_index(src, idx, bridge=bridge6)
    manifest = idx / MANIFEST_FILE
    data = manifest.read_bytes()
    manifest.write_bytes({"truncated": data[: len(data) // 2], "garbled": bytes(b ^ 0x5A for b in data),
                          "empty": b""}[damage])
    with caplog.at_level(logging.WARNING):
        s = run_index(src, idx)
    assert "rebuilt from the store" in caplog.text
    assert (s.indexed, s.unchanged, s.errors) == (0, len(rels), 1)  # nothing embedded again
    assert set(stored(idx)) == set(rels) and list(idx.glob(f"{MANIFEST_FILE}.damaged-*"))
    assert run_index(src, idx).unchanged == len(rels)  # and the new manifest reads back


@pytest.mark.parametrize("line", ['{"path": "cat/001.png", "status": "indexed"}', '["cat/001.png", 1, 2]',
                                  '{"path": 7, "deleted": true}', '"just a string"', "17"])
def test_malformed_journal_lines_are_skipped_with_a_warning(tmp_path, bridge6, line, caplog):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=3, sounds=0, texts=1)
    run_index(src, idx, bridge=bridge6)
    (idx / JOURNAL_FILE).write_text(line + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        s = run_index(src, idx)
    assert s.indexed + s.unchanged == len(rels) and s.points == len(rels)
    assert "malformed journal line" in caplog.text or "torn journal line" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_damaged_bridge_copy_is_one_clear_error_or_restored_from_the_checkpoint(tmp_path, bridge6, damage):
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=2, sounds=0, texts=1)
    run_index(src, idx, bridge=bridge6)
    weights = idx / "bridge" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:100] if damage == "truncated" else data[:-64] + b"\x01" * 64)

    r = cli("index", str(src), "--index", str(idx), "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "model.safetensors" in r.stderr and "--bridge" in r.stderr
    r = cli("search", "--index", str(idx), "--text", "seven")
    assert r.returncode == 2 and "model.safetensors" in r.stderr and "Traceback" not in r.stderr

    s = run_index(src, idx, bridge=bridge6)  # the checkpoint it was built with restores the copy
    assert s.unchanged == len(rels)
    assert (idx / "bridge" / "model.safetensors").read_bytes() == (bridge6 / "model.safetensors").read_bytes()


def test_half_created_store_is_started_over(tmp_path, bridge6):
    """Killed while the engine created the shard: no collection.json, a non-empty shard/."""
    src, idx = tmp_path / "src", tmp_path / "idx"
    rels = make_corpus(src, images=3, sounds=0, texts=0)
    run_index(src, idx, bridge=bridge6)
    (idx / "collection.json").unlink()
    (idx / MANIFEST_FILE).unlink()
    s = run_index(src, idx)
    assert s.indexed == len(rels) and set(stored(idx)) == set(rels)


# ------------------------------------------------------------------------------ other reproductions


def test_flir_named_rgb_frames_are_images_and_a_sidecar_sets_modality(tmp_path, bridge6):
    src, idx = tmp_path / "src", tmp_path / "idx"
    (src / "rgb").mkdir(parents=True)
    (src / "rgb" / "FLIR_00001.jpg").write_bytes(jpeg_bytes(1))
    (src / "rgb" / "FLIR_00002.jpg").write_bytes(jpeg_bytes(2))
    (src / "metadata.csv").write_text("file_name,modality,label\nrgb/FLIR_00002.jpg,thermal,car\n")
    run_index(src, idx, bridge=bridge6)
    points = stored(idx)
    assert points["rgb/FLIR_00001.jpg"]["modality"] == "image"
    assert (points["rgb/FLIR_00002.jpg"]["modality"], points["rgb/FLIR_00002.jpg"]["label"]) == ("thermal", "car")


def test_second_folder_is_refused_unless_replace(tmp_path, bridge6):
    a, b, idx = tmp_path / "a", tmp_path / "b", tmp_path / "idx"
    make_corpus(a, images=3, sounds=0, texts=0)
    (b / "x").mkdir(parents=True)
    (b / "x" / "only_in_b.png").write_bytes(png_bytes(3))
    run_index(a, idx, bridge=bridge6)
    with pytest.raises(IndexRootError, match=f"index of {a.resolve()}.*--replace"):
        run_index(b, idx)
    r = cli("index", str(b), "--index", str(idx), "--no-progress")
    assert r.returncode == 2 and str(a.resolve()) in r.stderr and "--replace" in r.stderr
    assert len(stored(idx)) == 3  # untouched
    s = run_index(b, idx, replace=True)
    assert s.indexed == 1 and set(stored(idx)) == {"x/only_in_b.png"}
    assert read_record(idx)["root"] == str(b.resolve())


def test_index_without_bridge_uses_the_pretrained_space_and_a_bad_bridge_creates_nothing(tmp_path):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=1, sounds=0, texts=0)
    r = cli("index", str(src), "--index", str(tmp_path / "zero"), "--preset", "tiny-labels", "--no-progress")
    assert r.returncode == 0 and "zero-training" in r.stdout  # no training needed: the preset's own space
    r = cli("index", str(src), "--index", str(idx), "--bridge", str(tmp_path / "nope"), "--no-progress")
    assert r.returncode == 2 and "not a bridge checkpoint" in r.stderr and not idx.exists()


@pytest.mark.timeout(120)
def test_an_index_held_by_another_process_is_one_clear_error(tmp_path, bridge6):
    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=0, texts=1)
    run_index(src, idx, bridge=bridge6)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from query.search import Index; "
                               "i = Index.open(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(idx)],
                              cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # A second reader: the engine opens a store in one process at a time.
        r = cli("search", "--index", str(idx), "--text", "seven")
        assert r.returncode == 2, r.stderr[-1500:]
        assert f"index {idx} is in use by another process (pid {holder.pid})" in r.stderr
        # A writer waits for readers (here 1 s), then names them.
        r = cli("index", str(src), "--index", str(idx), "--no-progress", "--wait-for-readers", "1")
        assert r.returncode == 2, r.stderr[-1500:]
        assert f"{idx} is held open by a reader (pid {holder.pid}" in r.stderr
        for stderr in (r.stderr,):
            assert "Traceback" not in stderr and "WouldBlock" not in stderr
        with pytest.raises(IndexLockedError):
            run_index(src, idx, wait_for_readers=0.5)
    finally:
        holder.kill()
        holder.wait()


def test_search_arguments_are_checked_with_query_errors(tmp_path, bridge6):
    from query.search import Index, QueryError

    src, idx = tmp_path / "src", tmp_path / "idx"
    make_corpus(src, images=2, sounds=0, texts=1)
    run_index(src, idx, bridge=bridge6)
    with Index.open(idx) as index:
        bad = [dict(k=-1), dict(k=0), dict(k=2.5), dict(k=True), dict(target=[]), dict(target=[3]),
               dict(filter={"label": 0.5}), dict(filter={"label": {"a": 1}}), dict(filter={"label": []}),
               dict(filter={"label": ["a", 1]}), dict(filter=["label"])]
        for kwargs in bad:
            with pytest.raises(QueryError) as err:
                index.search("seven", **kwargs)
            assert "\n" not in str(err.value)
        assert len(index.search("seven", k=2)) == 2


def test_indexer_reuses_the_training_feature_cache(tmp_path):
    """`ebridge train` records its cache; the indexer then encodes none of the files it already holds."""
    from bridge.space import Bridge

    data = tmp_path / "data"
    rows = ["modality,path,label,split"]
    for i in range(8):
        (data / "img").mkdir(parents=True, exist_ok=True)
        (data / "img" / f"{i}.png").write_bytes(png_bytes(i))
        (data / "txt").mkdir(exist_ok=True)
        (data / "txt" / f"{i}.txt").write_text(f"class {i % 2}", encoding="utf-8")
        rows += [f"image,img/{i}.png,{i % 2},train", f"text,txt/{i}.txt,{i % 2},train"]
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    ckpt = tmp_path / "ckpt"
    r = cli("train", str(data / "manifest.csv"), "--out", str(ckpt), "--preset", "tiny", "--dim", "8", "--hidden",
            "16", "--steps", "3", "--proxy-steps", "3", "--batch-size", "8", "--diffusion-timesteps", "20",
            "--diffusion-steps", "2", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Bridge.load(ckpt).config["feature_cache"] == str((data / ".ebridge-cache").resolve())

    calls = []
    from bridge.encoders import Preset

    original = Preset.encoder

    def counting(self, modality):
        enc = original(self, modality)
        calls.append(modality)
        return enc
    Preset.encoder = counting
    try:
        s = index_directory(data, tmp_path / "idx", bridge=ckpt, progress=False, exclude=["manifest.csv"])
    finally:
        Preset.encoder = original
    assert s.indexed == 16
    assert calls == [], f"encoders were built for {calls}: the training cache was not used"


def test_the_python_train_records_the_feature_cache_as_the_cli_does(tmp_path):
    """`train()` on a `training_set` writes the cache into the checkpoint, as `ebridge train` does."""
    from bridge import Bridge, TrainConfig, read_manifest, train, training_set
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    for i in range(6):
        (data / "img" / f"{i}.png").write_bytes(png_bytes(i))
    (data / "manifest.csv").write_text("modality,path,text,label,split\n" + "\n".join(
        [f"image,img/{i}.png,,{i % 2},train" for i in range(6)] + ["text,,zero,0,train", "text,,one,1,train"]) + "\n")
    preset = load_preset("tiny")
    cache = FeatureCache(tmp_path / "my-cache")
    features = training_set(read_manifest(data / "manifest.csv"), preset, cache)
    cfg = TrainConfig(preset="tiny", dim=8, hidden=16, steps=3, proxy_steps=3, batch_size=8,
                      diffusion_timesteps=20, diffusion_steps=2)
    bridge, _ = train(cfg, features, preset=preset)
    bridge.save(tmp_path / "ckpt")
    assert Bridge.load(tmp_path / "ckpt").config["feature_cache"] == str(cache.directory.resolve())
