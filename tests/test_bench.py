"""The benchmark end to end on the shipped digits sample (tiny preset, one seed): the report's shape."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from query.eval.bench import BenchConfig, calibrate_routes, run_bench  # noqa: E402


def test_bench_writes_the_pair_matrix_report(tmp_path):
    cfg = BenchConfig(out=tmp_path, scale="sample", seeds=[0], preset="tiny", max_queries=20,
                      train_overrides={"dim": 32, "hidden": 64, "steps": 60, "proxy_steps": 60, "batch_size": 64,
                                       "diffusion_timesteps": 100, "diffusion_steps": 4})
    report = run_bench(cfg)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["variants"].keys() == {"anchor", "naive-proxy", "emergentbridge"}
    for variant in on_disk["variants"].values():
        pairs = variant["pairs"]
        assert len(pairs) == 20  # every ordered pair of image, text, audio, depth, thermal
        for name, p in pairs.items():
            assert {"paired", "r1", "r5", "map", "top1"} <= p.keys()
            assert 0.0 <= p["r1"] <= p["r5"] <= 1.0 and 0.0 <= p["map"] <= 1.0
            assert (p["top1"] is None) == (not name.endswith("->text"))
        assert pairs["audio->image"]["paired"] and not pairs["audio->depth"]["paired"]
    assert (tmp_path / "report.md").read_text().startswith("# Digits-world benchmark")
    assert (tmp_path / "pair_matrix.png").stat().st_size > 10_000
    assert report["indexing"] and all(r["errors"] == 0 for r in report["indexing"])
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
