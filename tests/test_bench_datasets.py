"""`ebridge bench` end to end on every dataset adapter: a fixture in the dataset's real layout
(the builders of test_datasets.py) -> world -> train -> index -> router -> report.

Tiny preset, one seed, very short training: these check the path and the report's shape, not
the numbers.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("soundfile")

from query.eval.bench import BenchConfig, run_bench  # noqa: E402
from query.eval.tasks import SPECS, prepare_world  # noqa: E402
from tests.test_datasets import make_esc50, make_llvip, make_nyu, write_csv, write_jpg, write_wav  # noqa: E402

# The bench caches features in the user cache by default: each test gets a folder of its own.
pytestmark = pytest.mark.usefixtures("one_thread_fresh_cache")

TINY = {"dim": 16, "hidden": 32, "steps": 20, "proxy_steps": 20, "batch_size": 16, "diffusion_timesteps": 50,
        "diffusion_steps": 2}


def bench(tmp_path: Path, dataset: str, data: Path, **kw) -> dict:
    cfg = BenchConfig(out=tmp_path / "out", dataset=dataset, data=data, seeds=[0], preset="tiny", max_queries=10,
                      train_overrides=TINY, sweep=kw.pop("sweep", {}), **kw)
    report = run_bench(cfg)
    on_disk = json.loads((cfg.out / "report.json").read_text())
    assert on_disk["dataset"]["name"] == dataset
    bound = set(on_disk["dataset"]["items"]["train"]) - {on_disk["dataset"]["anchor"], on_disk["dataset"]["proxy"]}
    # With nothing bound in stage 3 the variants are one model: only `anchor` runs, and the report says why.
    assert set(on_disk["variants"]) == ({"anchor", "naive-proxy", "emergentbridge", "oracle"} if bound else {"anchor"})
    assert bool(on_disk["variants_note"]) != bool(bound)
    assert (cfg.out / "report.md").read_text().startswith(f"# {SPECS.get(dataset, SPECS['digits']).title}"
                                                          if dataset in SPECS else "# Manifest")
    for png in ("pair_matrix.png", "delta.png", "pairs_bar.png") if bound else ("pair_matrix.png", "pairs_bar.png"):
        assert (cfg.out / png).stat().st_size > 5_000
        assert f"]({png})" in (cfg.out / "report.md").read_text()
    assert set(report["stages_s"]) >= {"encode", "train", "index", "query"}
    assert all(r["errors"] == 0 for r in report["indexing"])
    manifest = list(csv.DictReader((cfg.out / "world" / "manifest.csv").open()))
    assert {"path", "modality", "label", "pair", "split"} <= set(manifest[0])
    return report


def _more_esc50(root: Path) -> None:
    """The fixture of test_datasets plus a few clips, so every split has two classes."""
    make_esc50(root)
    rows = list(csv.reader((root / "meta" / "esc50.csv").open()))
    for fold in range(1, 6):
        for target, category in ((0, "dog"), (10, "rain")):
            name = f"{fold}-2000{fold}-B-{target}.wav"
            write_wav(root / "audio" / name, seed=100 + fold + target)
            rows.append([name, fold, target, category, "False", f"2000{fold}", "B"])
    write_csv(root / "meta" / "esc50.csv", rows[0], rows[1:])


def test_esc50_zero_shot_report(tmp_path):
    _more_esc50(tmp_path / "ESC-50-master")
    report = bench(tmp_path, "esc50", tmp_path / "ESC-50-master")
    ds = report["dataset"]
    assert (ds["anchor"], ds["proxy"]) == ("text", "audio") and ds["never_paired"] == []
    pair = report["variants"]["anchor"]["pairs"]["audio->text"]
    assert pair["paired"] and pair["relevance"] == "label" and 0 <= pair["top1"] <= pair["top5"] <= 1
    assert report["raw"] == {}  # audio and text have different encoders: no raw baseline
    assert ds["items"]["test"]["audio"] == 3 and ds["items"]["val"]["audio"] == 3


def test_nyud_depth_zero_shot_and_raw_baseline(tmp_path):
    make_nyu(tmp_path / "nyu", n=4)
    report = bench(tmp_path, "nyud", tmp_path / "nyu")
    ds = report["dataset"]
    assert ["depth", "text"] in ds["never_paired"] or ["text", "depth"] in ds["never_paired"]
    pairs = report["variants"]["emergentbridge"]["pairs"]
    assert pairs["depth->image"]["relevance"] == "pair" and pairs["depth->text"]["relevance"] == "label"
    assert not pairs["depth->text"]["paired"] and pairs["depth->text"]["top1"] is not None
    # image and depth share the image backbone: the raw features are a baseline
    assert {"depth->image", "image->depth"} <= set(report["raw"])


def _sunrgbd(root: Path) -> None:
    """SUN RGB-D's layout (SUNRGBD/<sensor>/.../image, depth_bfx, scene.txt; allsplit.mat)."""
    sio = pytest.importorskip("scipy.io")
    frames = {f"kv1/NYUdata/NYU{i:04d}": (scene, split) for i, (scene, split) in enumerate(
        [("bedroom", "train"), ("office", "train"), ("bedroom", "train"), ("office", "train"),
         ("bedroom", "val"), ("office", "val"), ("bedroom", "test"), ("office", "test")])}
    for i, (rel, (scene, _)) in enumerate(frames.items()):
        d = root / "SUNRGBD" / rel
        write_jpg(d / "image" / f"{i:04d}.jpg", seed=i)
        mm = np.random.default_rng(i).integers(400, 8000, (24, 32)).astype(np.uint16)
        (d / "depth_bfx").mkdir(parents=True)
        from PIL import Image

        Image.fromarray(((mm.astype(np.uint32) << 3) | (mm >> 13)).astype(np.uint16)).save(d / "depth_bfx" / f"{i:04d}.png")
        (d / "scene.txt").write_text(scene)
    cell = lambda split: np.array(["/n/fs/sun3d/data/SUNRGBD/" + r for r, (_, s) in frames.items() if s == split],  # noqa: E731
                                  dtype=object)
    split_dir = root / "SUNRGBDtoolbox" / "traintestSUNRGBD"
    split_dir.mkdir(parents=True)
    sio.savemat(split_dir / "allsplit.mat", {
        "alltrain": np.concatenate([cell("train"), cell("val")]), "alltest": cell("test"),
        "trainvalsplit": {"train": cell("train"), "val": cell("val")}})


def test_sunrgbd_report_with_a_gallery_holding_the_training_items(tmp_path):
    _sunrgbd(tmp_path / "sunrgbd")
    report = bench(tmp_path, "sunrgbd", tmp_path / "sunrgbd", gallery="test+train")
    pairs = report["variants"]["anchor"]["pairs"]
    assert report["dataset"]["gallery"] == "test+train"
    # the image gallery holds 2 test + 4 train frames; only test frames are queries
    test_run = json.loads((tmp_path / "out" / "report.json").read_text())
    assert test_run["dataset"]["items"]["test"]["depth"] == 2
    assert pairs["depth->image"]["relevance"] == "pair"


def test_llvip_person_crops_report(tmp_path):
    make_llvip(tmp_path / "LLVIP")
    report = bench(tmp_path, "llvip", tmp_path / "LLVIP")
    pairs = report["variants"]["emergentbridge"]["pairs"]
    assert not pairs["thermal->text"]["paired"] and pairs["thermal->text"]["top1"] is not None
    assert pairs["thermal->image"]["relevance"] == "pair"
    assert "thermal->image" in report["raw"]


def test_audiocaps_pair_relevance(tmp_path):
    root = tmp_path / "audiocaps"
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    for split, n, caps in (("train", 4, 1), ("val", 2, 5), ("test", 3, 5)):
        rows = [[1000 * len(split) + 10 * i + k, f"{split}{i}", 30, f"clip {i} of {split}, caption {k}"]
                for i in range(n) for k in range(caps)]
        write_csv(root / "dataset" / f"{split}.csv", header, rows)
        for i in range(n):
            write_wav(root / "audio" / split / f"{split}{i}.wav", seed=len(split) * 10 + i)
    report = bench(tmp_path, "audiocaps", root)
    pair = report["variants"]["anchor"]["pairs"]["text->audio"]
    assert pair["relevance"] == "pair" and pair["top1"] is None and {"mrr10", "ndcg10"} <= set(pair)
    assert report["dataset"]["items"]["test"] == {"text": 15, "audio": 3}


def test_clotho_pair_relevance(tmp_path):
    root = tmp_path / "clotho"
    header = ["file_name", *(f"caption_{i}" for i in range(1, 6))]
    for name, n in (("development", 4), ("validation", 2), ("evaluation", 2)):
        write_csv(root / f"clotho_captions_{name}.csv", header,
                  [[f"{name} {i}.wav", *(f"{name} sound {i}, take {k}" for k in range(5))] for i in range(n)])
        for i in range(n):
            write_wav(root / name / f"{name} {i}.wav", seed=len(name) + i)
    report = bench(tmp_path, "clotho", root)
    assert report["variants"]["anchor"]["pairs"]["audio->text"]["relevance"] == "pair"


def make_manifest(root: Path) -> Path:
    """A user's own pairs manifest: images, their class prompts and a depth view per image."""
    from PIL import Image

    rows = []
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for c, name in enumerate(["cat", "dog", "owl"]):
            for i in range(n):
                img, dep = f"{split}/img_{name}_{i}.jpg", f"{split}/depth/{name}_{i}.png"
                (root / split / "depth").mkdir(parents=True, exist_ok=True)
                write_jpg(root / img, seed=c * 100 + i)
                Image.fromarray(np.full((16, 16), 800 + 300 * c + i, np.uint16)).save(root / dep)
                key = f"{split}-{name}-{i}"
                rows += [[img, "", "image", name, key, split], [dep, "", "depth", name, key, split]]
            rows.append(["", f"a photo of a {name}" if split != "train" else name, "text", name, "", split])
    write_csv(root / "manifest.csv", ["path", "text", "modality", "label", "pair", "split"], rows)
    return root / "manifest.csv"


def test_users_manifest_with_unseen_classes_and_a_lambda_sweep(tmp_path):
    """One class held out of training entirely; lambda chosen on validation."""
    make_manifest(tmp_path / "mine")
    report = bench(tmp_path, "manifest", tmp_path / "mine" / "manifest.csv", unseen=["owl"],
                   sweep={"lambda_proxy": [0.5, 2.0]})
    assert report["dataset"]["unseen_classes"] == ["owl"]
    assert report["dataset"]["items"]["train"]["image"] == 8  # owl's images left out of train (and val)
    zs = report["variants"]["emergentbridge"]["pairs"]["depth->text"]
    assert {"seen", "unseen"} <= set(zs) and zs["unseen"]["top1"] is not None
    trials = report["selection"]["emergentbridge"][0]["trials"]
    assert [t["setting"] for t in trials] == [{"lambda_proxy": 0.5}, {"lambda_proxy": 2.0}]
    assert sum(t["chosen"] for t in trials) == 1
    anchor_trials = report["selection"]["anchor"][0]["trials"]
    assert len(anchor_trials) == 1 and anchor_trials[0]["setting"] == {}  # lambda does not touch anchor


def test_world_keeps_held_out_classes_out_of_training(tmp_path):
    _more_esc50(tmp_path / "ESC-50-master")
    world = prepare_world("esc50", tmp_path / "ESC-50-master", tmp_path / "out", unseen=["rain"])
    assert world.unseen == ["rain"]
    assert not [it for it in world.items if it.label == "rain" and it.split != "test"]
    assert [it for it in world.items if it.label == "rain" and it.split == "test" and it.modality == "text"]
    train_rows = world.rows("train")
    assert all(Path(r.source).exists() for r in train_rows)


def test_bench_command_on_a_users_manifest(tmp_path, capsys):
    from query.cli import main

    manifest = make_manifest(tmp_path / "mine")
    tiny = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    code = main(["bench", "--dataset", "manifest", "--data", str(manifest), "--out", str(tmp_path / "out"),
                 "--preset", "tiny", "--seeds", "0", "--variants", "anchor", "emergentbridge", "--max-queries", "5",
                 "--lambda-proxy", "3", *tiny])
    assert code == 0 and "# Manifest manifest.csv benchmark" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sweep"] == {}  # the user fixed lambda: nothing left to sweep
    assert report["settings"]["lambda_proxy"] == 3.0 and report["dataset"]["anchor"] == "image"
