"""Issue 33, item 3: search (and serve) on a folder whose first `ebridge index` run never finished
says so and names the command that completes it, instead of asking for a checkpoint.

Each run is the real CLI in its own process, killed (SIGKILL) at the indexer's own crash points:
after the lock (a run that failed before its bridge copy leaves the same folder), after the bridge
copy (no store yet), and after the first durable batch (a searchable, partial index).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tests.test_indexer import make_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
ZERO_TRAINING = ("--preset", "tiny-labels", "--batch-size", "2", "--workers", "1", "--no-progress", "--threads", "1")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from query.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=180)


def killed_first_run(tmp_path: Path, stage: str) -> tuple[Path, Path]:
    src, idx = tmp_path / "photos", tmp_path / "idx"
    make_corpus(src, images=8, sounds=0, texts=2)
    r = cli("index", str(src), "--index", str(idx), *ZERO_TRAINING, env={"EBRIDGE_TEST_KILL_AT": stage})
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    return src, idx


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stage", ["lock", "bridge"])
def test_search_on_a_first_run_killed_before_any_point_names_the_index_command(tmp_path, stage):
    src, idx = killed_first_run(tmp_path, stage)
    assert (idx / "bridge" / "config.json").is_file() == (stage == "bridge")

    r = cli("search", "--index", str(idx), "--text", "a cat", "-k", "3")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "never finished" in r.stderr and f"ebridge index DIR --index {idx}" in r.stderr
    assert "CKPT_DIR" not in r.stderr  # no checkpoint was ever made: none is asked for

    done = cli("index", str(src), "--index", str(idx), *ZERO_TRAINING)  # the command it names completes it
    assert done.returncode == 0, done.stderr[-2000:]
    r = cli("search", "--index", str(idx), "--text", "a cat", "--target", "image", "-k", "3", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 3 and "never finished" not in r.stderr


@pytest.mark.timeout(240)
def test_a_partial_first_run_is_searchable_with_a_warning_that_names_its_folder(tmp_path):
    src, idx = killed_first_run(tmp_path, "batch")
    r = cli("search", "--index", str(idx), "--text", "a cat", "--target", "image", "-k", "3", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "never finished" in r.stderr and f"ebridge index {src} --index {idx}" in r.stderr
    assert 0 < len(json.loads(r.stdout)) <= 3

    done = cli("index", str(src), "--index", str(idx), *ZERO_TRAINING, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["unchanged"] > 0 and summary["indexed"] + summary["unchanged"] == summary["points"] == 10
    r = cli("search", "--index", str(idx), "--text", "a cat", "--target", "image", "-k", "3")
    assert r.returncode == 0 and "never finished" not in r.stderr


@pytest.mark.timeout(240)
def test_serve_on_an_unfinished_index_names_the_index_command(tmp_path):
    pytest.importorskip("fastapi")
    from query.search import QueryError
    from query.serve.service import SearchService

    _, idx = killed_first_run(tmp_path, "lock")
    with pytest.raises(QueryError, match=r"never finished.*ebridge index DIR --index"):
        SearchService.open(idx)
    assert not (idx / "bridge").exists()  # nothing was made: the message is the one for a run cut short
