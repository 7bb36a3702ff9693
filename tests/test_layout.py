"""The layer rule and the light command line.

bridge (the space) imports nothing else of ours; indexer imports bridge only; query may import
both. Checked on every import statement, including those inside functions.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {"bridge": {"bridge"}, "indexer": {"bridge", "indexer"}, "query": {"bridge", "indexer", "query"},
           # the distribution's own name: only re-exports the three packages' public names
           "emergentbridge": {"bridge", "indexer", "query", "emergentbridge"}}


def _our_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in ALLOWED]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
    broken = [f"{path.relative_to(REPO)}:{line} imports {name}"
              for path in sorted((REPO / package).rglob("*.py"))
              for line, name in _our_imports(path) if name.split(".")[0] not in ALLOWED[package]]
    assert not broken, "layer rule broken:\n" + "\n".join(broken)


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from query.search import Index\n")
    assert _our_imports(module) == [(2, "query.search")]


def test_building_the_command_line_imports_no_torch():
    code = ("import sys; from query.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'open_clip', 'onnxruntime', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"building the parser imported {out.stdout.strip()}"


def test_public_names_at_each_package_top():
    code = ("import sys; from bridge import Bridge, TrainConfig, train, load_preset; "
            "from indexer import index_directory; from query import Index; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr


def test_from_bridge_import_train_is_the_function_even_after_its_module_loaded():
    code = ("import bridge.train, indexer.index; from bridge import train; import bridge; "
            "from bridge.train import validate; print(callable(train), train is bridge.train, train.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["True", "True", "bridge.train"], out.stderr


def test_importing_the_packages_is_light():
    code = "import sys, bridge, indexer, query, emergentbridge; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_one_version_everywhere():
    """`ebridge --version`, `emergentbridge.__version__` and the package metadata all read bridge.__version__."""
    import bridge
    import emergentbridge

    assert emergentbridge.__version__ == bridge.__version__
    out = subprocess.run([sys.executable, "-m", "query.cli", "--version"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == f"ebridge (emergentbridge) {bridge.__version__}", out
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and 'attr = "bridge.__version__"' in pyproject


def test_the_distribution_name_exports_the_public_api():
    code = ("import sys, emergentbridge as eb; print(eb.Bridge.__module__, eb.index_directory.__module__, "
            "eb.Index.__module__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["bridge.space", "indexer.index", "query.search", "False"], out.stderr
