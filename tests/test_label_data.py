"""Issue 33: the label space's class names and templates ship as package data, not through open_clip.

The prompts read from bridge/data must be byte-identical to the ones open_clip's lambdas gave
(cached class-prompt matrices and indexes are keyed on them); that is checked against open_clip
where it is installed. Every data file must carry its provenance.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.data import DATA_DIR, PROVENANCE_FILE, read_json, read_lines
from bridge.labelspace import TEMPLATE_SETS, LabelSpaceSpec

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_data_file_has_matching_provenance():
    provenance = json.loads((DATA_DIR / PROVENANCE_FILE).read_text(encoding="utf-8"))
    files = sorted(p.name for p in DATA_DIR.iterdir()
                   if p.is_file() and p.name not in ("__init__.py", PROVENANCE_FILE))
    assert files and sorted(provenance) == files, "a data file without a provenance entry, or an entry without a file"
    for name, entry in provenance.items():
        assert entry["sha256"] == hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest(), name
        assert entry["source"] and entry["licence"], name
        assert (REPO / entry["made_by"]).is_file(), f"{name}: made by {entry['made_by']}, which is not in the repo"


def test_imagenet_names_and_templates_read_from_the_data_files():
    names = LabelSpaceSpec(classes="imagenet").class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    assert names == read_lines("imagenet_classes.txt")
    names.clear()  # a caller's list is its own: the next caller still gets all 1,000
    assert len(LabelSpaceSpec().class_names()) == 1000
    templates = read_json("templates.json")
    assert sorted(templates) == ["openai", "simple"] and (len(templates["simple"]), len(templates["openai"])) == (7, 80)
    assert LabelSpaceSpec(templates="simple").prompts("tench")[0] == "itap of a tench."
    assert LabelSpaceSpec(templates="photo").prompts("tench") == ["a photo of a tench."]
    assert set(TEMPLATE_SETS) - {"photo"} == set(templates)


def test_the_label_space_needs_no_open_clip():
    """The default preset's text side reads its classes and prompts without importing open_clip
    (nor torch): a wheel installed with the `offline` extra has no open_clip."""
    code = ("import sys; from bridge.labelspace import LabelSpaceSpec as S\n"
            "for t in ('simple', 'openai', 'photo'):\n"
            "    s = S(templates=t); [s.prompts(n) for n in s.class_names()]\n"
            "print(sorted(m for m in ('open_clip', 'torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("templates", ["simple", "openai"])
def test_prompts_are_byte_identical_to_open_clips(templates):
    meta = pytest.importorskip("open_clip.zero_shot_metadata", reason="open_clip_torch (the clip extra) is not "
                                                                      "installed: nothing to compare with")
    names = list(meta.IMAGENET_CLASSNAMES)
    assert LabelSpaceSpec().class_names() == names
    lambdas = meta.OPENAI_IMAGENET_TEMPLATES if templates == "openai" else meta.SIMPLE_IMAGENET_TEMPLATES
    spec = LabelSpaceSpec(templates=templates)
    for name in names:
        assert spec.prompts(name) == [t(name) for t in lambdas]


def test_make_label_data_check_agrees_with_the_shipped_files():
    pytest.importorskip("open_clip.zero_shot_metadata", reason="open_clip_torch is not installed")
    out = subprocess.run([sys.executable, "-m", "scripts.make_label_data", "--check"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
