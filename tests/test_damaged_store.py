"""A store the engine cannot load at all (issue 20, item 7): `ebridge search` says so in one sentence
with the command that fixes it, and `ebridge index` moves the damaged store aside, says where, and
rebuilds it from the source files, ending with every file indexed exactly once.

Each damage is applied to a copy of one small healthy index (the shipped digits sample, tiny preset)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("qdrant_edge")


def _truncate_collection_json(index: Path) -> None:
    f = index / "collection.json"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garble_shard_config(index: Path) -> None:
    # The engine's own record of a shard's config. (Indexes have no WAL since issue 22; a garbled WAL
    # of a store that has one is tested in tests/test_store.py.)
    config = sorted(index.rglob("shard/edge_config.json"))[0]
    with open(config, "r+b") as fh:
        fh.write(b"\xde\xad\xbe\xef" * 4)


def _garble_segment_json(index: Path) -> None:
    next(index.rglob("segment.json")).write_bytes(b"\x00garbled{" + bytes(range(7, 40)))


def _garble_id_tracker(index: Path) -> None:
    f = next(index.rglob("*id_tracker.mappings"))
    data = bytearray(f.read_bytes())
    data[: min(64, len(data))] = bytes((i * 37 + 11) % 256 for i in range(min(64, len(data))))
    f.write_bytes(bytes(data))


DAMAGES = {"truncated collection.json": _truncate_collection_json, "garbled shard config": _garble_shard_config,
           "garbled segment.json": _garble_segment_json, "garbled id tracker": _garble_id_tracker}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    from tests.conftest import tiny_digits_index

    root = tmp_path_factory.mktemp("healthy")
    world, _bridge, _ckpt = tiny_digits_index(root)
    return world / "test", root / "edge.index"


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_store_is_one_sentence_for_search_and_rebuilt_by_index(tmp_path, healthy, damage, capsys, caplog):
    from indexer.store import open_store
    from query.cli import main

    folder, original = healthy
    index = tmp_path / "edge.index"
    shutil.copytree(original, index)
    DAMAGES[damage](index)

    assert main(["search", "--index", str(index), "--text", "seven", "-k", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"index {index} is damaged" in err and f"ebridge index {folder} --index {index}" in err

    caplog.set_level("WARNING")
    assert main(["index", str(folder), "--index", str(index)]) == 0
    capsys.readouterr()
    aside = [p for p in index.iterdir() if p.name.startswith("damaged-store-")]
    assert len(aside) == 1 and any(aside[0].iterdir())  # the damaged copy is kept...
    assert str(aside[0]) in caplog.text and "the store is damaged" in caplog.text  # ...and the log says where
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "metadata.csv")
    store = open_store(index)
    try:
        paths = sorted(rec.payload["path"] for rec in store.scroll(with_payload=True))
    finally:
        store.close()
    assert paths == files  # every file once, none twice, none missing
    assert main(["search", "--index", str(index), "--text", "seven", "-k", "3"]) == 0
