"""Old files keep working: a checkpoint written before checkpoints carried a format version
(tests/assets/checkpoint-v0, saved by the code of commit 4e54c49, see make_checkpoint_v0.py)
loads and gives the vectors that code gave; new checkpoints and index records say which format
and which versions wrote them, and a format newer than the code is refused with a clear message.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from bridge import __version__  # noqa: E402
from bridge.space import CHECKPOINT_FORMAT, Bridge  # noqa: E402
from core.errors import CheckpointError  # noqa: E402

OLD = Path(__file__).resolve().parent / "assets" / "checkpoint-v0"
TEXTS = ["seven", "a spoken three", "the digit zero"]  # as in make_checkpoint_v0.fixed_inputs


def test_a_checkpoint_of_the_first_format_loads_and_gives_its_vectors():
    config = json.loads((OLD / "config.json").read_text())
    assert "format_version" not in config  # really the old layout
    bridge = Bridge.load(OLD)
    expected = np.load(OLD / "expected.npz")
    for modality in ("text", "image", "audio", "depth"):
        items = TEXTS if modality == "text" else list(expected[f"{modality}_inputs"])
        z = bridge.embed(modality, items)
        np.testing.assert_allclose(z, expected[f"{modality}_vectors"], atol=1e-6, err_msg=modality)
        np.testing.assert_allclose(bridge.proxy_view(z), expected[f"{modality}_proxy_view"], atol=1e-6,
                                   err_msg=f"{modality} proxy view")


def test_a_saved_checkpoint_records_its_format_and_the_versions_that_wrote_it(tmp_path):
    bridge = Bridge.load(OLD)
    bridge.save(tmp_path / "ckpt")  # re-saved by this code: the current format
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    # No instance maps (format 2's addition): written as format 1, which older readers read as they did.
    assert config["format_version"] == 1 < CHECKPOINT_FORMAT
    assert config["written_by"]["emergentbridge"] == __version__
    assert config["written_by"]["torch"] and config["written_by"]["python"]
    again = Bridge.load(tmp_path / "ckpt")
    texts = ["seven"]
    np.testing.assert_allclose(again.embed("text", texts), bridge.embed("text", texts), atol=1e-6)


def test_a_checkpoint_from_a_newer_format_is_refused_with_what_to_do(tmp_path):
    shutil.copytree(OLD, tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(cfg_path.read_text())
    config.update(format_version=CHECKPOINT_FORMAT + 1, written_by={"emergentbridge": "9.0.0"})
    cfg_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"format {CHECKPOINT_FORMAT + 1} .*emergentbridge 9\.0\.0.*upgrade emergentbridge"):
        Bridge.load(tmp_path / "ckpt")


def test_an_index_record_says_which_versions_wrote_it(tmp_path):
    from indexer.record import INDEX_FORMAT, read_record, write_record

    write_record(tmp_path, root="/data")
    record = read_record(tmp_path)
    assert record["format"] == INDEX_FORMAT and record["written_by"]["emergentbridge"] == __version__
    (tmp_path / "index.json").write_text(json.dumps({"format": 1, "root": "/data"}))  # written before written_by
    assert read_record(tmp_path)["root"] == "/data"


def test_updating_an_old_index_record_keeps_its_fields_and_says_who_wrote_it(tmp_path):
    """What the watcher does once it has built the search graph: one field changes, the record is rewritten whole."""
    from indexer.record import INDEX_FORMAT, read_record, update_record

    (tmp_path / "index.json").write_text(json.dumps({"format": 0, "root": "/data", "written_by": {"emergentbridge": "0.1"},
                                                     "optimized": False}))
    update_record(tmp_path, optimized=True)
    record = read_record(tmp_path)
    assert record["root"] == "/data" and record["optimized"] is True
    assert record["format"] == INDEX_FORMAT and record["written_by"]["emergentbridge"] == __version__
