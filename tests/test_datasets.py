"""Dataset adapters: each reads a tiny fixture written in the dataset's real layout.

Audio fixtures are 16 kHz so loading them needs no resampling (and no torch import).
"""
from __future__ import annotations

import csv
import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bridge.modalities import load
from query.eval.datasets.sunrgbd import decode_sunrgbd_depth
from query.eval.datasets import (
    ADAPTERS,
    DatasetLayoutError,
    DatasetItem,
    class_names,
    class_prompts,
    load_dataset,
    paired,
)

sf = pytest.importorskip("soundfile")


def write_wav(path: Path, seconds: float = 0.05, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = np.random.default_rng(seed).uniform(-0.5, 0.5, int(16_000 * seconds)).astype(np.float32)
    sf.write(path, wave, 16_000)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_jpg(path: Path, seed: int, size: tuple[int, int] = (32, 24), grey: bool = False) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    if grey:  # LLVIP's infrared frames are grey pictures stored as 3-channel JPEG
        arr[..., 1] = arr[..., 2] = arr[..., 0]
    Image.fromarray(arr).save(path, quality=95)
    return arr


def check_loads(records: list[DatasetItem]) -> None:
    for r in records:
        value = load(r.modality, r.source)
        if r.modality == "text":
            assert value == r.text and r.path == ""
        else:
            assert os.path.isabs(r.path)
        if r.modality == "image":
            assert value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3
        if r.modality in ("depth", "thermal"):
            assert value.dtype == np.float32 and value.ndim == 2
        if r.modality == "audio":
            assert value.dtype == np.float32 and value.ndim == 1


# --------------------------------------------------------------------------- ESC-50

ESC_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def make_esc50(root: Path) -> None:
    rows = []
    for fold, (target, category) in zip(range(1, 6), [(0, "dog"), (39, "glass_breaking"), (10, "rain"),
                                                      (20, "crying_baby"), (0, "dog")]):
        name = f"{fold}-1000{fold}-A-{target}.wav"
        write_wav(root / "audio" / name, seed=fold)
        rows.append([name, fold, target, category, str(category == "dog"), f"1000{fold}", "A"])
    rows.append(["5-99999-A-0.wav", 5, 0, "dog", "True", "99999", "A"])  # listed, file absent
    write_csv(root / "meta" / "esc50.csv", ESC_HEADER, rows)


def test_esc50(tmp_path, caplog):
    make_esc50(tmp_path / "ESC-50-master")  # the folder GitHub's zip extracts to
    with caplog.at_level(logging.WARNING):
        records = load_dataset("esc50", tmp_path)  # one level above: the archive's top folder is found
    assert "1 of 6 clips" in caplog.text
    assert len(records) == 5 and {r.modality for r in records} == {"audio"}
    by_fold = {Path(r.path).name[0]: r for r in records}
    assert [by_fold[f].split for f in "12345"] == ["train", "train", "train", "val", "test"]
    assert by_fold["2"].label == "glass_breaking" and all(r.pair is None and r.text is None for r in records)
    assert class_names(records) == ["crying_baby", "dog", "glass_breaking", "rain"]
    assert class_prompts(records) == ["a sound of a crying baby", "a sound of a dog",
                                      "a sound of glass breaking", "a sound of rain"]
    check_loads(records)
    assert load_dataset("esc50", tmp_path, test_folds=(1,), val_folds=())[0].split == "test"


# ----------------------------------------------------------------------- NYU-Depth v2

NYU_SCENES = ["kitchen", "living_room", "study", "bedroom"]


def make_nyu(root: Path, n: int = 4, width: int = 8, height: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A labelled-set file shaped like the real one: MATLAB v7.3 (HDF5 with a 512-byte user
    block), arrays column-major so h5py sees images (N, 3, W, H) and depths (N, W, H),
    sceneTypes a (1, N) cell of references to uint16 char arrays."""
    h5py = pytest.importorskip("h5py")
    sio = pytest.importorskip("scipy.io")
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (n, 3, width, height), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.5, (n, width, height)).astype(np.float32)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as f:
        f["images"] = images
        f["depths"] = depths
        f["rawDepths"] = depths * 1.01
        refs = f.create_group("#refs#")
        scene_refs = []
        for i, name in enumerate(NYU_SCENES[:n]):
            refs[f"s{i}"] = np.array([[ord(c)] for c in name], dtype=np.uint16)
            scene_refs.append(refs[f"s{i}"].ref)
        f.create_dataset("sceneTypes", data=np.array([scene_refs], dtype=h5py.ref_dtype))
    with open(root / "nyu_depth_v2_labeled.mat", "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2012 HDF5 schema 1.00 .")
    sio.savemat(root / "splits.mat", {"trainNdxs": np.array([[1.0], [3.0]]), "testNdxs": np.array([[2.0], [4.0]])})
    return images, depths


def test_nyu_from_mat(tmp_path):
    images, depths = make_nyu(tmp_path / "nyu")
    cache = tmp_path / "cache"
    records = load_dataset("nyu", tmp_path / "nyu", cache_dir=cache)
    assert len(records) == 8 and sorted({r.modality for r in records}) == ["depth", "image"]
    assert all(str(cache) in r.path for r in records)
    image2 = next(r for r in records if r.pair == "nyu:2" and r.modality == "image")
    depth2 = next(r for r in records if r.pair == "nyu:2" and r.modality == "depth")
    assert image2.split == depth2.split == "test" and image2.label == "living_room"
    assert [r.split for r in records if r.modality == "image"] == ["train", "test", "train", "test"]
    assert [r.label for r in records if r.modality == "image"] == ["kitchen", "living_room", "others", "bedroom"]
    np.testing.assert_array_equal(load("image", image2.path), images[1].transpose(2, 1, 0))
    got = load("depth", depth2.path)
    assert got.shape == (6, 8) and np.abs(got - depths[1].T).max() <= 0.001
    assert len(paired(records, "image", "depth")) == 4
    check_loads(records)

    mtime = os.stat(depth2.path).st_mtime_ns  # a second call reuses the extracted frames
    again = load_dataset("nyu", tmp_path / "nyu", cache_dir=cache, scenes="all")
    assert os.stat(depth2.path).st_mtime_ns == mtime
    assert [r.label for r in again if r.modality == "image"][2] == "study"
    assert class_prompts(again)[:2] == ["a photo of a bedroom", "a photo of a kitchen"]


def test_nyu_extracted_layout(tmp_path):
    """The frames BTS' extraction script writes: official_splits/<split>/<scene>/rgb_%05d.jpg."""
    scene = tmp_path / "nyu_depth_v2" / "official_splits" / "test" / "bathroom"
    write_jpg(scene / "rgb_00001.jpg", seed=2)
    depth_mm = np.full((24, 32), 2500, np.uint16)
    Image.fromarray(depth_mm).save(scene / "sync_depth_00001.png")
    records = load_dataset("nyu", tmp_path / "nyu_depth_v2")
    assert [(r.modality, r.label, r.pair, r.split) for r in records] == [
        ("image", "bathroom", "nyu:2", "test"), ("depth", "bathroom", "nyu:2", "test")]
    assert np.allclose(load("depth", records[1].path), 2.5)


# ------------------------------------------------------------------------ SUN RGB-D


def make_sunrgbd(root: Path) -> dict[str, np.ndarray]:
    sio = pytest.importorskip("scipy.io")
    frames = {"kv1/NYUdata/NYU0001": "bedroom", "kv2/kinect2data/000002_2014-05-26": "office",
              "xtion/xtion_align_data/2014/0003": "idk"}
    depth_mm = {}
    for i, (rel, scene) in enumerate(frames.items()):
        d = root / "SUNRGBD" / rel
        write_jpg(d / "image" / f"{i:04d}.jpg", seed=i)
        mm = np.random.default_rng(i).integers(400, 8000, (24, 32)).astype(np.uint16)
        mm[0, 0] = 0  # a hole
        stored = ((mm.astype(np.uint32) << 3) | (mm >> 13)).astype(np.uint16)  # the toolbox's encoding
        (d / "depth_bfx").mkdir(parents=True)
        Image.fromarray(stored).save(d / "depth_bfx" / f"{i:04d}.png")
        (d / "depth").mkdir()
        Image.fromarray(stored).save(d / "depth" / f"{i:04d}.png")
        (d / "scene.txt").write_text(scene)
        (d / "annotation2Dfinal").mkdir()
        depth_mm[rel] = mm
    prefix = "/n/fs/sun3d/data/SUNRGBD/"
    split_dir = root / "SUNRGBDtoolbox" / "traintestSUNRGBD"
    split_dir.mkdir(parents=True)
    cell = lambda paths: np.array([prefix + p for p in paths], dtype=object)  # noqa: E731
    sio.savemat(split_dir / "allsplit.mat", {
        "alltrain": cell(["kv1/NYUdata/NYU0001", "xtion/xtion_align_data/2014/0003"]),
        "alltest": cell(["kv2/kinect2data/000002_2014-05-26/"]),
        "trainvalsplit": {"train": cell(["xtion/xtion_align_data/2014/0003"]), "val": cell(["kv1/NYUdata/NYU0001"])},
    })
    return depth_mm


def test_sunrgbd(tmp_path, caplog):
    depth_mm = make_sunrgbd(tmp_path / "sunrgbd")
    with caplog.at_level(logging.INFO):
        records = load_dataset("sunrgbd", tmp_path / "sunrgbd", cache_dir=tmp_path / "cache")
    assert "1 frames outside the 19 scene classes" in caplog.text
    assert len(records) == 4
    by_label = {(r.label, r.modality): r for r in records}
    assert by_label[("bedroom", "image")].split == "val" and by_label[("office", "depth")].split == "test"
    assert by_label[("bedroom", "depth")].pair == "sunrgbd:SUNRGBD/kv1/NYUdata/NYU0001"
    got = load("depth", by_label[("office", "depth")].path)
    np.testing.assert_allclose(got, depth_mm["kv2/kinect2data/000002_2014-05-26"] / 1000.0, atol=1e-6)
    assert got[0, 0] == 0.0
    check_loads(records)
    everything = load_dataset("sunrgbd", tmp_path / "sunrgbd" / "SUNRGBD", cache_dir=tmp_path / "cache",
                              scenes="all")
    assert {r.label for r in everything} == {"bedroom", "office", "idk"}
    assert {r.split for r in everything if r.label == "idk"} == {"train"}


def test_sunrgbd_decoding_matches_the_toolbox():
    mm = np.array([0, 1, 1234, 8191, 10000], dtype=np.uint16)
    stored = ((mm.astype(np.uint32) << 3) | (mm >> 13)).astype(np.uint16)
    np.testing.assert_array_equal(decode_sunrgbd_depth(stored), mm)


# --------------------------------------------------------------------------- LLVIP


def write_voc(path: Path, boxes: list[tuple[int, int, int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ann = ET.Element("annotation")
    ET.SubElement(ann, "filename").text = path.stem + ".jpg"
    for x0, y0, x1, y1 in boxes:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = "person"
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
            ET.SubElement(bb, tag).text = str(v)
    ET.ElementTree(ann).write(path)


def make_llvip(root: Path) -> None:
    for split, stem in (("train", "010001"), ("train", "010002"), ("test", "190001")):
        write_jpg(root / "visible" / split / f"{stem}.jpg", seed=int(stem))
        write_jpg(root / "infrared" / split / f"{stem}.jpg", seed=int(stem) + 1, grey=True)
        boxes = [(2, 3, 8, 15)] + ([(20, 4, 26, 20)] if stem == "010002" else [])
        write_voc(root / "Annotations" / f"{stem}.xml", boxes)
    write_jpg(root / "infrared" / "test" / "190002.jpg", seed=5, grey=True)  # no visible twin


def test_llvip_frames(tmp_path):
    make_llvip(tmp_path / "LLVIP")
    records = load_dataset("llvip", tmp_path / "LLVIP")
    assert len(records) == 6 and sorted({r.modality for r in records}) == ["image", "thermal"]
    pairs = paired(records, "thermal", "image")
    assert len(pairs) == 3 and all(Path(a.path).name == Path(b.path).name for a, b in pairs)
    assert all("infrared" in a.path and "visible" in b.path for a, b in pairs)
    assert {r.pair: r.split for r in records}["llvip:test/190001"] == "test"
    assert all(r.label is None for r in records)
    check_loads(records)
    thermal = load("thermal", pairs[0][0].path)
    assert thermal.shape == (24, 32) and thermal.min() == 0.0 and thermal.max() == 1.0


def test_llvip_person_crops(tmp_path):
    make_llvip(tmp_path / "LLVIP")
    records = load_dataset("llvip", tmp_path / "LLVIP", person_crops=True, cache_dir=tmp_path / "cache")
    people = [r for r in records if r.label == "person"]
    background = [r for r in records if r.label == "background"]
    assert len(people) == 2 * 4 and len(background) == 2 * 3  # both modalities of each crop
    crop = next(r for r in people if r.pair == "llvip:train/010001/p0" and r.modality == "thermal")
    assert load("thermal", crop.path).shape == (12, 6)
    assert class_names(records) == ["background", "person"]
    assert class_prompts(records) == ["a photo of an empty street", "a photo of a person"]
    check_loads(records)
    again = load_dataset("llvip", tmp_path / "LLVIP", person_crops=True, cache_dir=tmp_path / "cache")
    assert again == records  # seeded: the same background boxes every time


# ------------------------------------------------------------------------ AudioCaps


def test_audiocaps(tmp_path, caplog):
    root = tmp_path / "audiocaps"
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    test_rows = [[100 + i * 5 + k, yt, 30, f"caption {k} of {yt}, with a comma"]
                 for i, yt in enumerate(["--0w1YA1Hm4", "-AheI8Epim4", "missingclip"]) for k in range(5)]
    write_csv(root / "dataset" / "test.csv", header, test_rows)
    write_csv(root / "dataset" / "train.csv", header, [[91139, "r1nicOVtvkQ", 130, "A woman talks"]])
    write_wav(root / "audio" / "test" / "--0w1YA1Hm4.wav", seed=1)
    write_wav(root / "audio" / "test" / "Y-AheI8Epim4.wav", seed=2)  # AudioSet-style name
    write_wav(root / "audio" / "train" / "91139.wav", seed=3)  # named by audiocap_id
    with caplog.at_level(logging.WARNING):
        records = load_dataset("audiocaps", root)
    assert "audiocaps test: 1 of 3 clips" in caplog.text
    audio = [r for r in records if r.modality == "audio"]
    text = [r for r in records if r.modality == "text"]
    assert len(audio) == 3 and len(text) == 11
    assert {r.split for r in audio} == {"train", "test"}
    first = [t.text for t in text if t.pair == "audiocaps:--0w1YA1Hm4"]
    assert first == [f"caption {k} of --0w1YA1Hm4, with a comma" for k in range(5)]
    assert len(paired(records, "audio", "text")) == 11
    check_loads(records)


# --------------------------------------------------------------------------- Clotho


def test_clotho(tmp_path):
    root = tmp_path / "clotho"
    header = ["file_name", *(f"caption_{i}" for i in range(1, 6))]
    write_csv(root / "clotho_captions_evaluation.csv", header, [
        ["Santa Motor.wav", *(f"a motor hums, take {i}" for i in range(5))],
        ["gone.wav", *("x" for _ in range(5))],
    ])
    write_csv(root / "clotho_captions_development.csv", header, [["birds 2.wav", *("birds sing" for _ in range(5))]])
    write_wav(root / "evaluation" / "Santa Motor.wav", seed=4)
    write_wav(root / "development" / "birds 2.wav", seed=5)
    records = load_dataset("clotho", root)
    audio = [r for r in records if r.modality == "audio"]
    assert [(Path(r.path).name, r.split) for r in audio] == [("birds 2.wav", "train"), ("Santa Motor.wav", "test")]
    motor = [r for r in records if r.pair == "clotho:evaluation/Santa Motor.wav"]
    assert len(motor) == 6 and [r.text for r in motor if r.modality == "text"][0] == "a motor hums, take 0"
    assert all(r.label is None for r in records)
    check_loads(records)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_wrong_folder_names_the_layout(tmp_path, name):
    (tmp_path / "something_else").mkdir()
    (tmp_path / "something_else" / "readme.txt").write_text("not a dataset")
    with pytest.raises(DatasetLayoutError, match="Expected layout") as info:
        load_dataset(name, tmp_path / "something_else")
    assert str(tmp_path / "something_else") in str(info.value)


def test_missing_folder_and_unknown_name(tmp_path):
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        load_dataset("clotho", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="known: esc50"):
        load_dataset("imagenet", tmp_path)
