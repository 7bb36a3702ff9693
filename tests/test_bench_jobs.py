"""The bench's trainings in forked workers (`--jobs`): the same report as one process, errors surface."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from query.eval.bench import BenchConfig, run_bench  # noqa: E402
from core.workers import fork_map  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_fresh_cache")

TINY = {"dim": 32, "hidden": 64, "steps": 40, "proxy_steps": 40, "batch_size": 64, "diffusion_timesteps": 100,
        "diffusion_steps": 4}


def _trials(report: dict) -> dict:
    """Every trial's validation figures, by variant and seed: what training alone decides."""
    return {(v, s): [(t["setting"], t["unpaired_r1"], t["paired_r1"], t["chosen"]) for t in sel["trials"]]
            for v, seeds in report["selection"].items() for s, sel in seeds.items()}


def test_workers_train_what_one_process_trains(tmp_path):
    """Two seeds, a two-point sweep: the first seed's proxy trials and the second seed run in workers.
    Training is seeded per trial (G's bank of proxies too) and the store answers ties in one order, so
    every trial's validation figures match, and so does every test figure."""
    reports = {}
    for jobs in (1, 2):
        cfg = BenchConfig(out=tmp_path / f"jobs{jobs}", scale="sample", seeds=[0, 1], preset="tiny",
                          variants=["anchor", "naive-proxy"], max_queries=15, sweep={"lambda_proxy": [2.0, 4.0]},
                          train_overrides=TINY, jobs=jobs)
        reports[jobs] = run_bench(cfg)
    assert reports[2]["jobs"] == 2 and reports[1]["jobs"] == 1
    assert _trials(reports[1]) == _trials(reports[2])
    assert reports[1]["per_seed"] == reports[2]["per_seed"] and reports[1]["variants"] == reports[2]["variants"]
    assert len(_trials(reports[2])[("naive-proxy", 0)]) == 2  # swept on the first seed
    assert {r["run"] for r in reports[2]["indexing"]} == {r["run"] for r in reports[1]["indexing"]}
    assert reports[2]["stages_s"]["train"] > 0
    assert not (tmp_path / "jobs2" / "trials").exists() or not any((tmp_path / "jobs2" / "trials").iterdir())


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x * 10


def test_a_workers_error_is_raised_in_the_parent():
    assert fork_map(_fails_on_three, [1, 2], jobs=2) == [10, 20]
    with pytest.raises(ValueError, match="three is not allowed"):
        fork_map(_fails_on_three, [1, 2, 3, 4], jobs=2)


def test_a_negative_job_count_is_refused(tmp_path, capsys):
    from query.cli import main

    for verb in (["bench", "--out", str(tmp_path / "b")], ["train", "pairs.csv", "--out", str(tmp_path / "t")]):
        with pytest.raises(SystemExit):
            main([*verb, "--jobs", "-1"])
        assert "--jobs: must be 0 (choose for me) or more, got -1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jobs must be 0"):
        BenchConfig(out=tmp_path, jobs=-1)
    assert not (tmp_path / "b").exists()
