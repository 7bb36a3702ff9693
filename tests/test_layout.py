"""The layer rule and the light command line.

core (the base layer: errors, files, lazy imports, device and threads, shared options) imports
nothing else of ours; bridge (the space) imports core only; indexer imports core and bridge, and its
store (indexer/store) no bridge; query may import all three. Checked on every import statement,
including those inside functions. Also: no import loops inside a package, scripts that leave sys.path
alone, a light command line, and the size limits (functions, files) with their named exceptions.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {"core": {"core"}, "bridge": {"core", "bridge"}, "indexer": {"core", "bridge", "indexer"},
           "query": {"core", "bridge", "indexer", "query"},
           # the distribution's own name: only re-exports the packages' public names
           "emergentbridge": {"core", "bridge", "indexer", "query", "emergentbridge"}}
# folders held to fewer layers than their package: the store keeps points, it knows no space
NARROWER = {"indexer/store": {"core", "indexer"}}


def _our_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in ALLOWED]


@pytest.mark.parametrize("folder", sorted({**ALLOWED, **NARROWER}))
def test_each_package_imports_only_the_layers_below_it(folder):
    allowed = {**ALLOWED, **NARROWER}[folder]
    broken = [f"{path.relative_to(REPO)}:{line} imports {name}"
              for path in sorted((REPO / folder).rglob("*.py"))
              for line, name in _our_imports(path) if name.split(".")[0] not in allowed]
    assert not broken, "layer rule broken:\n" + "\n".join(broken)


def test_the_base_layer_imports_light():
    code = ("import sys, core, core.errors, core.files, core.deps, core.device, core.cli; "
            "print(sorted(m for m in ('torch', 'bridge', 'indexer', 'query') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_old_import_paths_of_the_base_layer_still_work():
    """The modules moved to core/; their old paths re-export the same objects (imports, pickles)."""
    import pickle

    import bridge.cli
    import bridge.deps
    import bridge.device
    import bridge.errors
    import bridge.files
    import core.cli
    import core.deps
    import core.device
    import core.errors
    import core.files

    assert bridge.errors.InputError is core.errors.InputError
    assert bridge.files.atomic_write_json is core.files.atomic_write_json
    assert bridge.deps.require is core.deps.require
    assert bridge.device.set_threads is core.device.set_threads
    assert bridge.cli.add_threads_option is core.cli.add_threads_option
    # a name recorded under the old module (a pickle, a log line) still resolves to the same class
    old = pickle.dumps(core.errors.InputError, protocol=0).replace(b"core.errors", b"bridge.errors")
    assert b"bridge.errors" in old and pickle.loads(old) is core.errors.InputError


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports when it runs (top level or in functions; not under
    `if TYPE_CHECKING:`), leaving out its own ancestor packages (`from pkg import sibling`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    me = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
    return {m for m in found if m in modules and not me.startswith(m + ".")}


def import_cycles(package: str) -> list[set[str]]:
    """Groups of `package`'s modules that import each other, directly or round a loop (Tarjan)."""
    paths = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (REPO / package).rglob("*.py")}
    graph = {m: _runtime_imports(p, set(paths)) for m, p in paths.items()}
    order, low, stack, cycles = {}, {}, [], []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = set()
            while not group or v not in group:
                group.add(stack.pop())
            if len(group) > 1:
                cycles.append(group)

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return cycles


KNOWN_CYCLES: list[set[str]] = []  # none left; a new one is a bug, not an entry here


@pytest.mark.parametrize("package", ["core", "bridge", "indexer", "query"])
def test_no_import_cycles_inside_a_package(package):
    cycles = [c for c in import_cycles(package) if c not in KNOWN_CYCLES]
    assert not cycles, "modules importing each other round a loop: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_cycle_check_sees_a_loop_through_a_function(tmp_path, monkeypatch):
    pkg = tmp_path / "loop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from loop.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from loop.a import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from loop.a import g\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert import_cycles("loop") == [{"loop.a", "loop.b"}]


def test_scripts_are_modules_that_leave_sys_path_alone():
    """Scripts run as `python -m scripts.NAME` from the checkout: none edits sys.path, and the shared
    data folder is found through query.eval.shared_data (which honours $EBRIDGE_SHARED_DATA)."""
    assert (REPO / "scripts" / "__init__.py").is_file()
    broken = []
    for path in sorted((REPO / "scripts").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, str(path))
        broken += [f"{path.name}:{n.lineno} edits sys.path" for n in ast.walk(tree)
                   if isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name) and n.value.id == "sys"]
        if '/ "shared"' in text:
            broken.append(f"{path.name}: builds the shared data path itself (use query.eval.shared_data)")
        if f"python scripts/{path.name}" in text:
            broken.append(f"{path.name}: its usage says python scripts/{path.name}, not python -m scripts.{path.stem}")
    assert not broken, "\n".join(broken)


MAX_FUNCTION_LINES, MAX_FILE_LINES = 100, 600
SIZED = ("core", "bridge", "indexer", "query", "scripts")
# The exceptions, "file" or "file:function", with their reasons: CONTRIBUTING.md ("Size limits") lists the same.
SIZE_EXCEPTIONS: dict[str, str] = {}  # none left since scripts/bench_store.py and indexer/store/edge.py were split


def oversized(root: Path, folders: tuple[str, ...] = SIZED) -> dict[str, int]:
    """Files over MAX_FILE_LINES and functions (methods, nested ones) over MAX_FUNCTION_LINES, by
    "file" or "file:qualified.name", with their length in lines."""
    found: dict[str, int] = {}

    def walk(node: ast.AST, path: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}" if prefix else child.name
                length = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and length > MAX_FUNCTION_LINES:
                    found[f"{path}:{name}"] = length
            walk(child, path, name)

    for folder in folders:
        for file in sorted((root / folder).rglob("*.py")):
            path, text = file.relative_to(root).as_posix(), file.read_text(encoding="utf-8")
            if len(text.splitlines()) > MAX_FILE_LINES:
                found[path] = len(text.splitlines())
            walk(ast.parse(text, path), path, "")
    return found


def test_no_function_over_100_lines_and_no_file_over_600():
    found = oversized(REPO)
    new = {k: n for k, n in found.items() if k not in SIZE_EXCEPTIONS}
    stale = sorted(set(SIZE_EXCEPTIONS) - set(found))
    assert not new, ("over the size limits (split them into named steps, or name the exception and its reason in "
                     "CONTRIBUTING.md and SIZE_EXCEPTIONS): " + ", ".join(f"{k} ({n} lines)" for k, n in sorted(new.items())))
    assert not stale, f"within the limits now: remove {', '.join(stale)} from SIZE_EXCEPTIONS and CONTRIBUTING.md"


def test_the_size_exceptions_are_the_ones_contributing_names():
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text.split("### Size limits", 1)[1].split("\n#", 1)[0]
    listed = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `([^`]+)` \|(.*)\|\s*$", section, re.M)}
    assert listed == SIZE_EXCEPTIONS, f"CONTRIBUTING.md lists {listed}, tests/test_layout.py {SIZE_EXCEPTIONS}"


def test_the_size_check_sees_a_long_method_and_a_long_file(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"        x = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "pkg" / "a.py").write_text(f"class A:\n    def long(self):\n{body}\n")
    (tmp_path / "pkg" / "b.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    assert oversized(tmp_path, ("pkg",)) == {"pkg/a.py:A.long": MAX_FUNCTION_LINES + 1, "pkg/b.py": MAX_FILE_LINES + 1}


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
