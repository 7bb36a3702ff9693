"""Files a real folder holds that the indexer used to drop (issue 20, item 8): a valid file whose
name is not UTF-8 (names are bytes on Linux) and a long text (a book, a transcript, a log)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("qdrant_edge")


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory) -> Path:
    from tests.conftest import tiny_bridge

    return tiny_bridge(tmp_path_factory.mktemp("bridge"))


def payloads(index: Path) -> dict[str, dict]:
    from indexer.store import open_store

    store = open_store(index)
    try:
        return {rec.payload["path"]: rec.payload for rec in store.scroll(with_payload=True)}
    finally:
        store.close()


def test_a_file_named_in_latin1_is_indexed_under_a_displayable_name(tmp_path, bridge_dir):
    import json

    from indexer.index import index_directory
    from query.search import Index
    from tests.badfiles import png_bytes

    src = tmp_path / "src"
    src.mkdir()
    (src / os.fsdecode(b"caf\xe9.png")).write_bytes(png_bytes(3))
    (src / os.fsdecode(b"notes-\xff.txt")).write_bytes(b"a spoken seven")
    (src / "plain.png").write_bytes(png_bytes(4))
    summary = index_directory(src, tmp_path / "idx", bridge=bridge_dir, progress=False)
    assert (summary.indexed, summary.errors) == (3, 0)
    points = payloads(tmp_path / "idx")
    assert set(points) == {"caf\\xe9.png", "notes-\\xff.txt", "plain.png"}
    latin = points["caf\\xe9.png"]
    assert latin["name_escaped"] is True and latin["abs_path"].endswith("caf\\xe9.png") and "name_escaped" not in \
        points["plain.png"]
    json.dumps(latin, ensure_ascii=False).encode("utf-8")  # valid UTF-8 JSON: no lone surrogates
    assert points["notes-\\xff.txt"]["text"] == "a spoken seven"
    again = index_directory(src, tmp_path / "idx", progress=False)  # the same identity next run: nothing to redo
    assert (again.indexed, again.unchanged, again.errors) == (0, 3, 0)
    with Index.open(tmp_path / "idx") as index:
        assert any(h.path == "caf\\xe9.png" for h in index.search("a spoken seven", target="image", k=5))


def test_a_50_mb_text_is_indexed_from_its_first_part_and_the_payload_says_so(tmp_path, bridge_dir):
    from bridge.modalities import MAX_TEXT_BYTES, load
    from indexer.index import index_directory

    src = tmp_path / "src"
    src.mkdir()
    # The first part ends inside a two-byte character: it is cut before it, not refused as "not UTF-8".
    head = b"Chapter one. The night was long. " * (MAX_TEXT_BYTES // 33)
    head = head[: MAX_TEXT_BYTES - 1] + "\u00e9".encode()
    with open(src / "book.txt", "wb") as f:
        f.write(head)
        chunk = b"and then the story went on, page after page. " * 20_000
        while f.tell() < 50 * 2**20:
            f.write(chunk)
    size = (src / "book.txt").stat().st_size
    (src / "short.txt").write_text("a spoken seven", encoding="utf-8")
    assert load("text", src / "book.txt").startswith("Chapter one.")
    summary = index_directory(src, tmp_path / "idx", bridge=bridge_dir, progress=False)
    assert (summary.indexed, summary.errors) == (2, 0)
    points = payloads(tmp_path / "idx")
    book = points["book.txt"]
    assert book["text"].startswith("Chapter one. The night was long.") and book["size"] == size
    assert book["text_embedded"].startswith(f"first part: the first {MAX_TEXT_BYTES} of {size} bytes")
    assert "text_embedded" not in points["short.txt"]
