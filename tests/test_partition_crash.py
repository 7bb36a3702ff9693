"""Issue 31: a run killed while the per-modality store makes a partition never leaves an index that no
run can open.

Each crash point of `indexer/faults.py` that belongs to the per-modality layout (a new partition's
folder made but not its collection; its collection made but not in place; the store's manifest written
before / after listing it; one partition's graph build interrupted) is hit with a real SIGKILL through
the CLI, on a folder of photos, sounds and depth maps whose modalities have no partition yet; then
`ebridge index` again must exit 0 with exactly one point per valid file, the ledger, the store's
manifest and the partition folders all agreeing, and the graph built. A partition left half-made in
place (what a killed run left before partitions were built aside), a listed partition that is gone and
an unreadable store manifest are one sentence for `search`, `serve` and `Index.open`, and are
recovered by `index`. A server store (qdrant-client local mode) is killed at the same points.

All on the `tiny` preset with the six-modality bridge of tests/test_robustness.py.
"""
from __future__ import annotations

import json
import shutil
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from indexer.ledger import INDEXED, Manifest
from indexer.record import read_record
from indexer.store import EdgeStore, open_store, point_id
from tests.test_indexer import write_png, write_wav
from tests.test_robustness import GRAPH_PATCH, bridge6, cli, graph_built  # noqa: F401  (bridge6: a fixture)

pytest.importorskip("qdrant_edge")

PARTS = "modalities"


def write_depth(path: Path, seed: int, size: int = 12) -> Path:
    """A 16-bit depth map in millimetres, as RGB-D sensors save them."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(500, 4000, (size, size), dtype=np.uint16)).save(path)
    return path


def mixed_folder(root: Path, images: int = 17, sounds: int = 2, depth: int = 3) -> dict[str, str]:
    """Photos, sounds and depth maps, plus one broken picture; returns {valid relative path: modality}.
    17 images of 16-d vectors: over GRAPH_PATCH's 1 KB threshold, so the image graph is really built."""
    files = {}
    for i in range(images):
        files[write_png(root / ("cat" if i % 2 else "dog") / f"{i:03d}.png", i)] = "image"
    for i in range(sounds):
        files[write_wav(root / "sounds" / f"{i}.wav", 100 + i)] = "audio"
    for i in range(depth):
        files[write_depth(root / "depth" / f"{i:03d}.png", 200 + i)] = "depth"
    (root / "broken.png").write_bytes(b"not a picture")
    return {p.relative_to(root).as_posix(): m for p, m in files.items()}


def index_args(src: Path, idx: Path, bridge: Path | None = None, *extra: str) -> tuple[str, ...]:
    return ("index", str(src), "--index", str(idx), *(("--bridge", str(bridge)) if bridge else ()),
            "--batch-size", "4", "--workers", "1", "--decode", "threads", "--no-progress", *extra)


def store_manifest(idx: Path) -> dict:
    return json.loads((idx / "collection.json").read_text(encoding="utf-8"))


def assert_index_agrees(idx: Path, files: dict[str, str]) -> None:
    """One point per valid file; ledger rows, store points, the store's partition list and the
    partition folders on disk all say the same."""
    with open_store(idx) as store:
        points = {rec.payload["path"]: rec for rec in store.scroll()}
        by_part = {name: part.points for name, part in store.partition_info().items()}
        count = store.count()
    assert set(points) == set(files) and count == len(files)
    assert {rel: rec.id for rel, rec in points.items()} == {rel: point_id(rel) for rel in files}
    assert {rel: rec.payload["modality"] for rel, rec in points.items()} == files
    assert by_part == dict(Counter(files.values()))  # each modality's points in its own partition
    listed = set(store_manifest(idx)["partitions"])
    on_disk = {p.name for p in (idx / PARTS).iterdir()}
    assert listed == on_disk == set(files.values()), (listed, on_disk)  # no leftover, no unlisted partition
    ledger = Manifest(idx)
    try:
        rows = {r.path: r.point_id for r in ledger.rows.values() if r.status == INDEXED}
    finally:
        ledger.close()
    assert rows == {rel: point_id(rel) for rel in files}


def left_behind(idx: Path, stage: str) -> None:
    """The state the kill at `stage` leaves is the one its name says."""
    parts = idx / PARTS
    tmp = sorted(parts.glob(".*.tmp")) if parts.is_dir() else []
    placed = sorted(p for p in parts.iterdir() if not p.name.startswith(".")) if parts.is_dir() else []
    listed = set(store_manifest(idx)["partitions"])
    if stage == "partition-folder":
        assert len(tmp) == 1 and (tmp[0] / "shard").is_dir() and not (tmp[0] / "collection.json").exists()
        assert not placed and not listed
    elif stage == "partition-collection":
        assert len(tmp) == 1 and (tmp[0] / "collection.json").is_file() and not placed and not listed
    elif stage == "partition-manifest-before":
        assert not tmp and len(placed) == 1 and (placed[0] / "collection.json").is_file() and not listed
    elif stage == "partition-manifest-after":
        assert not tmp and len(placed) == 1 and listed == {placed[0].name}
    elif stage == "partition-optimize":
        assert len(listed) == 3 and read_record(idx)["optimized"] is False


NEW_POINTS = ["partition-folder", "partition-collection", "partition-manifest-before", "partition-manifest-after",
              "partition-optimize"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stage", [*NEW_POINTS, "batch"])
def test_kill_at_a_partition_crash_point_then_index_again_gives_one_point_per_file(tmp_path, bridge6, stage):
    src, idx = tmp_path / "src", tmp_path / "idx"
    files = mixed_folder(src)
    killed = cli(*index_args(src, idx, bridge6), extra=GRAPH_PATCH, env={"EBRIDGE_TEST_KILL_AT": stage})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left_behind(idx, stage)

    rerun = cli(*index_args(src, idx, None, "--json"), extra=GRAPH_PATCH)
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["indexed"] + summary["unchanged"] == len(files) and summary["errors"] == 1
    assert summary["points"] == len(files)
    assert_index_agrees(idx, files)
    assert graph_built(idx) and read_record(idx)["optimized"] is True
    again = cli(*index_args(src, idx, None, "--json"))
    assert again.returncode == 0 and json.loads(again.stdout)["unchanged"] == len(files), again.stderr[-2000:]


@pytest.mark.timeout(240)
def test_kill_while_a_new_modality_gets_its_partition_in_an_existing_index(tmp_path, bridge6):
    """Half-way through embedding: the index has photos, the run adds depth maps and is killed as
    their partition is made."""
    src, idx = tmp_path / "src", tmp_path / "idx"
    files = mixed_folder(src, images=4, sounds=0, depth=0)
    assert cli(*index_args(src, idx, bridge6)).returncode == 0
    files.update({write_depth(src / "depth" / f"{i}.png", i).relative_to(src).as_posix(): "depth" for i in range(3)})
    killed = cli(*index_args(src, idx), env={"EBRIDGE_TEST_KILL_AT": "partition-folder"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert set(store_manifest(idx)["partitions"]) == {"image"}

    rerun = cli(*index_args(src, idx, None, "--json"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout)["indexed"] == 3  # the depth maps only: the photos are unchanged
    assert_index_agrees(idx, files)


def test_a_partition_left_half_made_in_place_is_made_anew(tmp_path, bridge6, capsys, caplog):
    """What the issue saw: `modalities/depth/` with `shard/` and `store.lock`, no collection.json
    (before partitions were built aside). The next run makes it anew and goes on."""
    from query.cli import main

    src, idx = tmp_path / "src", tmp_path / "idx"
    files = mixed_folder(src, images=4, sounds=0, depth=0)
    assert main(list(index_args(src, idx, bridge6))) == 0
    with open_store(idx) as store:
        spec = store.spec
    half = EdgeStore(idx / PARTS / "depth")
    half.create(spec)
    half.close()
    (idx / PARTS / "depth" / "collection.json").unlink()
    assert sorted(p.name for p in (idx / PARTS / "depth").iterdir()) == ["shard", "store.lock"]
    files.update({write_depth(src / "depth" / f"{i}.png", i).relative_to(src).as_posix(): "depth" for i in range(2)})

    caplog.set_level("WARNING")
    assert main(list(index_args(src, idx))) == 0  # was: RuntimeError ... no collection yet
    assert "partition 'depth' was left half-made" in caplog.text
    assert_index_agrees(idx, files)
    capsys.readouterr()


def _drop_listed_partition(idx: Path) -> None:
    shutil.rmtree(idx / PARTS / "depth")


def _unreadable_manifest(idx: Path) -> None:
    meta = store_manifest(idx)
    del meta["spec"]
    (idx / "collection.json").write_text(json.dumps(meta), encoding="utf-8")


def _half_made_listed_partition(idx: Path) -> None:
    (idx / PARTS / "depth" / "collection.json").unlink()


@pytest.mark.parametrize("damage", [_drop_listed_partition, _unreadable_manifest, _half_made_listed_partition],
                         ids=["listed partition gone", "manifest without spec", "listed partition half-made"])
def test_a_store_that_cannot_be_opened_is_one_sentence_in_every_verb_and_index_rebuilds_it(tmp_path, bridge6, damage,
                                                                                         capsys, caplog):
    from query.cli import main
    from query.search import Index
    from query.serve.service import SearchService
    from indexer.verify import StoreDamagedError

    src, idx = tmp_path / "src", tmp_path / "idx"
    files = mixed_folder(src, images=3, sounds=1, depth=2)
    assert main(list(index_args(src, idx, bridge6))) == 0
    damage(idx)
    capsys.readouterr()

    hint = f"ebridge index {src.resolve()} --index {idx}"
    for verb in (["search", "--index", str(idx), "--text", "seven"], ["serve", "--index", str(idx), "--no-warm"]):
        assert main(verb) == 2, verb
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"index {idx} is damaged" in err and hint in err, err
    with pytest.raises(StoreDamagedError, match=f"is damaged.*{hint}"):
        Index.open(idx)
    with pytest.raises(StoreDamagedError, match="is damaged"):
        SearchService.open(idx)

    caplog.set_level("WARNING")
    assert main(list(index_args(src, idx))) == 0
    assert "moved aside" in caplog.text and len(list(idx.glob("damaged-store-*"))) == 1
    assert_index_agrees(idx, files)
    assert main(["search", "--index", str(idx), "--text", "seven"]) == 0
    capsys.readouterr()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stage", ["partition-folder", "partition-collection", "partition-manifest-before"])
def test_server_partition_collection_made_before_the_manifest_lists_it(tmp_path, bridge6, stage):
    """The same on a server store (qdrant-client local mode makes the server's calls): a partition
    collection made (with or without its payload indexes) but not listed is finished and used."""
    src, idx, qdrant = tmp_path / "src", tmp_path / "idx", tmp_path / "qdrant"
    files = mixed_folder(src, images=3, sounds=1, depth=2)
    killed = cli(*index_args(src, idx, bridge6, "--qdrant-url", str(qdrant)), env={"EBRIDGE_TEST_KILL_AT": stage})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with open_store(idx, url=str(qdrant)) as store:  # one partition collection made, none listed
        made = {c.name for c in store.client.get_collections().collections} - {"emergentbridge"}
        assert len(made) == 1 and not store.partitions(), (made, store.partitions())

    rerun = cli(*index_args(src, idx, None, "--qdrant-url", str(qdrant), "--json"))
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout)["points"] == len(files)
    with open_store(idx) as store:
        points = {rec.payload["path"]: rec.id for rec in store.scroll()}
        assert store.partitions() == sorted(set(files.values()))
        assert {n: i.points for n, i in store.partition_info().items()} == dict(Counter(files.values()))
        names = {c.name for c in store.client.get_collections().collections}
    assert points == {rel: point_id(rel) for rel in files}
    assert names == {"emergentbridge", *(f"emergentbridge-{m}" for m in set(files.values()))}
