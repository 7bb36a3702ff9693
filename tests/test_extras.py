"""Issue 33: each preset names the extra that runs it, and the wheel ships the data it reads.

The full check (a fresh virtualenv per extra, ~5.5 GB with torch) is scripts/check_install.py, not
a test; these are the fast invariants it relies on: every shipped preset is run by one extra that
exists in pyproject.toml and brings torch, `all` holds every such extra, the README's install table
says the same, and the wheel built from this checkout carries bridge/data/ and the presets.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _check_install():
    spec = importlib.util.spec_from_file_location("check_install", REPO / "scripts" / "check_install.py")
    module = sys.modules.setdefault("check_install", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)  # (registered first: its dataclasses look their module up)
    return module


def _self_extras(requirements: list[str]) -> set[str]:
    """The extras of this project one extra pulls in (`emergentbridge[ml,video]`), transitively."""
    found: set[str] = set()
    for req in requirements:
        m = re.fullmatch(r"emergentbridge\[([^\]]+)\]", req)
        for name in (m.group(1).split(",") if m else []):
            if name not in found:
                found |= {name} | _self_extras(EXTRAS[name])
    return found


def test_every_shipped_preset_has_one_extra_that_brings_torch_and_all_holds_them():
    presets_of = _check_install().PRESETS_OF
    shipped = {p.stem for p in (REPO / "bridge" / "encoders" / "presets").glob("*.json")}
    listed = [p for ps in presets_of.values() for p in ps]
    assert sorted(listed) == sorted(shipped - {"tiny", "tiny-labels"})  # the tiny ones are test fixtures
    for extra in presets_of:
        assert extra in EXTRAS and {"ml", "video"} <= _self_extras(EXTRAS[extra]), extra
    assert set(presets_of) <= _self_extras(EXTRAS["all"])
    assert not any(r.startswith("open_clip") for r in EXTRAS["offline"] + EXTRAS["offline-sound"])


def test_readme_install_table_names_the_same_extra_for_each_preset():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[\w-]+`", cells[1]):
            for preset in re.findall(r"`([\w-]+)`", cells[0]):
                rows[preset] = cells[1].strip("`")
    for extra, presets in _check_install().PRESETS_OF.items():
        for preset in presets:
            assert rows.get(preset) == extra, f"README's install table: {preset} -> {rows.get(preset)}, not {extra}"


@pytest.mark.timeout(300)
def test_the_wheel_ships_the_label_data_and_presets(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "-w", str(tmp_path), "--no-deps", "-q",
                          "--no-build-isolation"], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("emergentbridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    provenance = json.loads((REPO / "bridge" / "data" / "provenance.json").read_text(encoding="utf-8"))
    assert {f"bridge/data/{n}" for n in [*provenance, "provenance.json", "__init__.py"]} <= names
    assert {f"bridge/encoders/presets/{p.name}" for p in (REPO / "bridge/encoders/presets").glob("*.json")} <= names
    requires = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "extra == \"offline-sound\"" in requires and "extra == \"clap\"" in requires
