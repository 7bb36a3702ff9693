"""Where a report came from: the one helper every JSON report of ours records.

`ebridge bench`'s `report.json` and every `scripts/*.py` JSON carry a `"provenance"` object: the
git commit and whether the tree had uncommitted changes, the versions of the package, torch,
qdrant-edge and Python, the command line, the machine (CPU count, GPU name, platform), the load
average and the date. A figure in the docs links to such a report, so anyone can tell which code
on which machine made it, and whether the machine was busy (timings on a loaded machine are upper
bounds).

torch is imported only when it is installed and only to name the GPU; nothing here needs it.

Example:
    >>> p = provenance(["ebridge", "bench", "--quick"])
    >>> p["command"], sorted(p["versions"])[:2]
    ('ebridge bench --quick', ['emergentbridge', 'numpy'])
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from core.files import atomic_write_json

_REPO = Path(__file__).resolve().parents[1]  # the checkout this code runs from (if it is one)
# distributions whose versions decide the figures: ours, the numerics, the store
_VERSIONED = {"numpy": "numpy", "torch": "torch", "qdrant-edge": "qdrant-edge-py", "qdrant-client": "qdrant-client",
              "onnxruntime": "onnxruntime", "open_clip": "open_clip_torch"}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """The commit of the checkout this code runs from and whether tracked files differ from it
    (None for both when it is not a git checkout, e.g. an installed wheel)."""
    if not (_REPO / ".git").exists():
        return {"commit": None, "dirty": None}
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict[str, str | None]:
    """Installed versions of the package and of what its figures depend on (None: not installed)."""
    from bridge import __version__

    found: dict[str, str | None] = {"emergentbridge": __version__, "python": platform.python_version()}
    for name, dist in _VERSIONED.items():
        try:
            found[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def written_by() -> dict[str, str | None]:
    """The versions a checkpoint or an index records about the code that wrote it (as
    sentence-transformers models do): the package, torch and Python."""
    found = versions()
    return {k: found[k] for k in ("emergentbridge", "torch", "python")}


def machine() -> dict[str, Any]:
    """CPU count, platform and, where torch sees CUDA, the GPU's name."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "processor": platform.machine(), "gpu": None}
    if importlib.util.find_spec("torch") is not None:
        import torch  # only here: naming the GPU is the one thing that needs it

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpus"] = torch.cuda.device_count()
    return info


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything a reader needs to tell where a figure came from (see the module docstring).

    `argv` defaults to this process's command line.
    """
    argv = list(sys.argv if argv is None else argv)
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        load = None
    return {
        **git_state(),
        "versions": versions(),
        "command": shlex.join(argv),
        "python": sys.executable,
        "cwd": os.getcwd(),
        "machine": machine(),
        "loadavg": load,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json_report(path: str | Path, report: dict[str, Any], argv: Sequence[str] | None = None) -> Path:
    """Write `report` as JSON (atomically) with a `"provenance"` entry added, unless it has one.

    Example:
        >>> write_json_report("/tmp/figures.json", {"p50_ms": 1.2})   # doctest: +SKIP
    """
    report = dict(report)
    report.setdefault("provenance", provenance(argv))
    return atomic_write_json(path, report)
