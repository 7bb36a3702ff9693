"""`ebridge demo` (the README's first command) end to end on the shipped samples, tiny encoders."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from query.cli import main  # noqa: E402


def test_demo_trains_indexes_searches_and_prints_the_pair_matrix(tmp_path, capsys):
    out = tmp_path / "demo"
    # tiny-labels: the tiny encoders with a label-space image/text pair, so the no-training part runs too
    assert main(["demo", "--out", str(out), "--preset", "tiny-labels", "--space-preset", "tiny-labels", "--steps", "20",
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    # tiny-labels places no audio: the shipped sounds are skipped, the photos indexed and searched
    assert "No training: 200 shipped files (200 image)" in printed and "(route raw)" in printed
    rows = [line.split() for line in printed.splitlines() if "->" in line.split(" ")[0]]
    assert len(rows) == 20 and {r[1] for r in rows} == {"yes", "no"}  # every ordered pair of five modalities
    assert all(0.0 <= float(x) <= 100.0 for r in rows for x in r[2:])
    assert "mean R@1 over unpaired pairs, anchor:" in printed and "mean R@1 over unpaired pairs, emergentbridge:" in printed
    assert "route: fused" in printed  # the never-paired searches went through the proxy anchor
    # the command the demo suggests works, with the --threads every torch command takes
    assert main(["search", "--index", str(out / "index-emergentbridge"), "--text", "nine", "--target", "depth",
                 "-k", "3", "--threads", "1", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and {h["modality"] for h in hits} == {"depth"}
    from query.eval.demo import search_photos_untrained

    search_photos_untrained("tiny-labels", out)  # a second demo finds its index made: it still says what it holds
    assert "No training: 200 shipped files (200 image)" in capsys.readouterr().out
