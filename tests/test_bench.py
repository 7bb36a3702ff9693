"""The benchmark end to end on the shipped digits sample (tiny preset, one seed): the report's shape."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from query.eval.bench import BenchConfig, calibrate_routes, run_bench  # noqa: E402

# The bench caches features in the user cache by default: each test gets a folder of its own.
pytestmark = pytest.mark.usefixtures("one_thread_fresh_cache")


def test_bench_writes_the_pair_matrix_report(tmp_path):
    cfg = BenchConfig(out=tmp_path, scale="sample", seeds=[0], preset="tiny", max_queries=20,
                      train_overrides={"dim": 32, "hidden": 64, "steps": 60, "proxy_steps": 60, "batch_size": 64,
                                       "diffusion_timesteps": 100, "diffusion_steps": 4})
    report = run_bench(cfg)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["variants"].keys() == {"anchor", "naive-proxy", "emergentbridge", "oracle"}
    # the share of the anchor-to-oracle gap each proxy variant closes, and search by example per modality
    assert {"naive-proxy", "emergentbridge"} <= on_disk["gap_closed"].keys()
    for same in on_disk["same_modality"].values():
        assert {"audio->audio", "image->image"} <= same.keys()
        assert all(0.0 <= m["raw"] <= 1.0 and m["route"] for m in same.values())
    for variant in on_disk["variants"].values():
        pairs = variant["pairs"]
        assert len(pairs) == 20  # every ordered pair of image, text, audio, depth, thermal
        for name, p in pairs.items():
            assert {"paired", "r1", "r5", "map", "mrr10", "ndcg10", "top1", "relevance"} <= p.keys()
            assert 0.0 <= p["r1"] <= p["r5"] <= 1.0 and 0.0 <= p["map"] <= 1.0
            assert (p["top1"] is None) == (not name.endswith("->text"))
        assert pairs["audio->image"]["paired"] and not pairs["audio->depth"]["paired"]
    assert (tmp_path / "report.md").read_text().startswith("# Digits-world benchmark")
    from tests.test_provenance import check_provenance

    check_provenance(on_disk["provenance"])  # commit, versions, command, machine, date
    assert (tmp_path / "pair_matrix.png").stat().st_size > 10_000
    assert report["indexing"] and all(r["errors"] == 0 for r in report["indexing"])
    for png in ("delta.png", "pairs_bar.png"):
        assert (tmp_path / png).stat().st_size > 10_000 and f"]({png})" in (tmp_path / "report.md").read_text()
    assert set(report["stages_s"]) >= {"encode", "train", "index", "query"}
    # lambda chosen on validation from the sweep; the anchor variant has nothing to sweep
    trials = report["selection"]["emergentbridge"][0]["trials"]
    assert [t["setting"]["lambda_proxy"] for t in trials] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert sum(t["chosen"] for t in trials) == 1
    assert report["selection"]["anchor"][0]["chosen"] == {} == report["selection"]["oracle"][0]["chosen"]
    # the sweep's exact-search yardstick agrees with the router on validation (the same queries and qrels)
    chosen = next(t for t in trials if t["chosen"])
    assert chosen["unpaired_r1"] == pytest.approx(report["selection"]["emergentbridge"][0]["val_routed"]["unpaired_r1"],
                                                  abs=0.05)
    # the raw frozen features are the baseline where both sides share an encoder (image/depth/thermal)
    assert {"depth->image", "thermal->image", "depth->thermal"} <= set(on_disk["raw"])
    assert "audio->image" not in on_disk["raw"]
    gain = on_disk["deltas_vs_anchor"]["emergentbridge"]
    assert {"unpaired_mean_points", "unpaired_relative_gain", "paired_worst_points"} <= set(gain)
    # the calibrated table went into the test index, chosen on validation only
    from indexer.store import open_store

    routes = open_store(tmp_path / "indexes" / "emergentbridge-s0-test").metadata["routes"]
    assert routes == report["routes_per_seed"]["emergentbridge"][0]


def test_route_calibration_picks_best_validation_r1_and_prefers_simpler_on_ties():
    m = lambda r1, mp=0.5: {"r1": r1, "map": mp}  # noqa: E731
    val = {"a->b": {"direct": m(0.5), "proxy": m(0.7), "fused": m(0.6)},
           "b->a": {"direct": m(0.5), "proxy": m(0.5), "fused": m(0.5)},
           "c->a": {"direct": m(0.5, 0.4), "proxy": m(0.5, 0.6), "fused": m(0.5, 0.5)}}
    assert calibrate_routes(val) == {"a->b": "proxy", "b->a": "direct", "c->a": "proxy"}


def test_sweep_candidates_are_bounded_and_skip_what_cannot_matter():
    from query.eval.bench import sweep_candidates

    sweep = {"lambda_proxy": [0.5, 1.0], "diffusion_steps": [4, 8]}
    base_keys = ("diffusion_steps",)
    assert sweep_candidates(sweep, "anchor", base_keys, True) == [{"diffusion_steps": 4}, {"diffusion_steps": 8}]
    assert len(sweep_candidates(sweep, "emergentbridge", base_keys, True)) == 4
    assert sweep_candidates({"lambda_proxy": [1.0, 2.0]}, "emergentbridge", base_keys, False) == [{}]  # nothing bound
    with pytest.raises(ValueError, match="keep it to"):
        sweep_candidates({"lambda_proxy": list(range(17))}, "emergentbridge", base_keys, True)


def test_choice_on_validation_keeps_paired_pairs_within_a_point_of_anchor():
    from query.eval.bench import choose

    t = lambda u, p: {"val": {"unpaired_r1": u, "paired_r1": p}}  # noqa: E731
    trials = [t(0.60, 0.80), t(0.70, 0.75), t(0.65, 0.795)]
    assert choose(trials, anchor_paired=0.80) == 2  # the best unpaired costs paired pairs 5 points
    assert choose(trials, anchor_paired=None) == 1
    assert choose([t(0.6, 0.5), t(0.6, 0.5)], anchor_paired=None) == 0  # ties: first in grid order


def test_bench_config_defaults_are_the_command_line_defaults():
    """`BenchConfig(out=...)` in Python runs what `ebridge bench` with no options runs."""
    from query.cli import build_parser

    args = build_parser().parse_args(["bench"])
    cfg = BenchConfig(out=args.out)
    assert (args.dataset, args.seeds, args.variants, args.preset, args.gallery, args.device) == \
        (cfg.dataset, cfg.seeds, cfg.variants, cfg.preset, cfg.gallery, cfg.device)
    assert args.data is None and cfg.scale == "sample"  # no data: the shipped sample, as the CLI says
    assert BenchConfig(out=args.out, data="x").scale == "full"
    assert cfg.max_queries == 300 and args.max_queries is None  # the CLI falls back to the config's


def test_indexed_evaluation_takes_the_raw_route_a_cross_pair_on_one_encoder_chose(tmp_path):
    """Issue 32: a bridge whose training routed thermal->image `raw` (image and thermal on one encoder)
    is measured through that route: the bench passes each query's stored encoder features to the
    router, scores `raw` beside `direct` with the sign-test counts calibration reads."""
    import csv

    import numpy as np
    from PIL import Image

    from bridge.config import TrainConfig
    from bridge.encoders import load_preset
    from bridge.pairs import ModalityData
    from bridge.train import train
    from indexer import index_directory
    from query import Index
    from query.eval.bench import evaluate_index, index_points

    rng = np.random.default_rng(0)
    n, preset = 60, "tiny-labels"
    # Thermal features are the image features plus a little noise: the raw features match each pair.
    imgs = rng.standard_normal((n, 64)).astype(np.float32)
    feats = {"image": imgs, "thermal": imgs + 0.3 * rng.standard_normal((n, 64)).astype(np.float32)}
    data = {m: ModalityData(ids=[f"{m}{i}" for i in range(n)], features=x, labels=[None] * n,
                            pairs=[f"p{i}" for i in range(n)]) for m, x in feats.items()}
    cfg = TrainConfig(preset=preset, steps=100, proxy_steps=10, eval_every=20, batch_size=32)
    bridge, _ = train(cfg, data, preset=load_preset(preset))
    assert bridge.config["routes"]["thermal->image"] == "raw"

    test = tmp_path / "world" / "test"
    rows = []
    for sub in ("photos", "thermal"):
        (test / sub).mkdir(parents=True)
    for i in range(8):
        img = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(img).save(test / "photos" / f"p{i}.png")
        Image.fromarray(255 - img.mean(2).astype(np.uint8)).save(test / "thermal" / f"p{i}_ir.png")
        rows += [[f"photos/p{i}.png", "image", f"p{i}"], [f"thermal/p{i}_ir.png", "thermal", f"p{i}"]]
    with open(test / "metadata.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "modality", "pair"], *rows])
    index_directory(test, tmp_path / "idx", bridge=bridge.save(tmp_path / "ckpt"), progress=False)

    with Index.open(tmp_path / "idx") as index:
        points = index_points(index.store, "test/")
        result = evaluate_index(index, points, ["direct", "raw", "instance", "auto"], 8, split="test")
    pair = result["thermal->image"]
    assert pair["relevance"] == "pair" and pair["queries"] == 8
    assert pair["auto"]["route"] == "raw"  # the bridge's choice, not `direct` for want of the query's features
    assert {k: pair["auto"][k] for k in ("r1", "map")} == {k: pair["raw"][k] for k in ("r1", "map")}
    assert pair["auto"]["vs_raw"] == [0, 0]  # the same ranking as the raw route, query by query
    wins, losses = pair["direct"]["vs_raw"]
    assert 0 <= wins + losses <= 8


def test_route_calibration_keeps_the_encoders_features_unless_a_route_clearly_beats_them():
    m = lambda r1, vs=None: {"r1": r1, "map": 0.5, **({"vs_raw": vs} if vs else {})}  # noqa: E731
    val = {"t->i": {"direct": m(0.55, [6, 3]), "proxy": m(0.2), "fused": m(0.3), "raw": m(0.5)},  # noise: raw
           "i->t": {"direct": m(0.9, [30, 5]), "proxy": m(0.2), "fused": m(0.3), "raw": m(0.5)},
           "d->i": {"direct": m(0.9, [30, 5]), "instance": m(0.95, [40, 4]), "raw": m(0.5)},
           "i->d": {"direct": m(0.9, [9, 6]), "instance": m(0.8, [30, 2]), "raw": m(0.5)}}
    assert calibrate_routes(val) == {"t->i": "raw", "i->t": "direct", "d->i": "instance", "i->d": "instance"}


def test_zero_training_row_says_which_modalities_its_space_does_not_place():
    """Issue 34: where the preset's pretrained space places no audio (offline-small: no tagger with named
    classes), the zero-training row names audio, why, and the never-paired pairs left unscored for it,
    instead of printing nothing about them."""
    from query.eval.aggregate import summarise_zero_training
    from query.eval.report import _zero_training

    metrics = {"auto": {"r1": 0.2, "top1": None, "route": "direct"}}
    zero = {"modalities": ["text", "image", "depth"], "pairs": {"text->depth": metrics, "depth->text": metrics},
            "same_modality": {}, "not_placed": {"audio": "no audio tagger"}}
    row = summarise_zero_training(zero, [("text", "audio"), ("audio", "depth"), ("text", "depth")])
    assert row["not_placed"] == {"audio": "no audio tagger"}
    assert row["never_paired_unscored"] == ["audio->depth", "audio->text", "depth->audio", "text->audio"]
    assert row["never_paired_scored"] == ["depth->text", "text->depth"] and row["never_paired_mean_r1"] == 0.2
    text = "\n".join(_zero_training({"zero_training": row}))
    assert "It does not place audio: no audio tagger; audio->depth, audio->text, depth->audio, text->audio" in text


def test_the_old_bench_name_for_the_cross_routes_warns():
    """`query.eval.bench.ROUTES` meant `query.search.CROSS_ROUTES`, where `query.search.ROUTES` means more."""
    import query.eval.bench as bench
    from query.search import CROSS_ROUTES, ROUTES

    with pytest.warns(DeprecationWarning, match="CROSS_ROUTES"):
        assert bench.ROUTES == CROSS_ROUTES != ROUTES
