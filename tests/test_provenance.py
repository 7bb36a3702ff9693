"""Every report says where it came from: commit, versions, command line, machine, date.

Checked here on a real run of one benchmark script, end to end, as a user would run it, and in
tests/test_bench.py on the report of a real (tiny) `ebridge bench` run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bridge import __version__

REPO = Path(__file__).resolve().parents[1]


def check_provenance(prov: dict, command_has: str = "") -> None:
    """What every report's provenance must hold (tests/test_bench.py uses it too)."""
    assert prov["commit"] and len(prov["commit"]) == 40, prov  # the tests run from a git checkout
    assert isinstance(prov["dirty"], bool)
    versions = prov["versions"]
    assert versions["emergentbridge"] == __version__
    for name in ("torch", "qdrant-edge", "numpy", "python"):
        assert versions[name], f"no {name} version in {versions}"
    assert command_has in prov["command"]
    assert prov["machine"]["cpus"] == os.cpu_count() and "gpu" in prov["machine"]
    assert prov["date"].endswith("+00:00")


def test_provenance_names_the_checkout_and_the_command():
    from bridge.provenance import git_state, provenance

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_state()["commit"] == head
    prov = provenance(["ebridge", "bench", "--quick", "--out", "my out"])
    check_provenance(prov, "ebridge bench --quick --out 'my out'")


def test_a_benchmark_script_json_records_its_provenance(tmp_path):
    out = tmp_path / "store.json"
    # scripts run as modules of the checkout (`python -m scripts.NAME`), as CONTRIBUTING says
    cmd = [sys.executable, "-m", "scripts.bench_store", "--n", "1000", "--queries", "10",
           "--clusters", "10", "--engines", "numpy", "--workdir", str(tmp_path / "work"), "--json", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    written = json.loads(out.read_text())
    check_provenance(written["provenance"], "bench_store.py --n 1000")
    assert written["results"][0]["engine"] == "numpy"
