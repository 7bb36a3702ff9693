"""torch backbones run by onnxruntime on a CPU: exported once into the user cache, then loaded fast.

A query from a fresh process should not pay for torch and transformers (about 4 s on two cores) to
embed one sentence or one photo. So on a CPU the `minilm` and `efficientnet-lite0` backbones run an
ONNX export of their own shipped weights with onnxruntime (plus the `tokenizers` library for text):
about 0.2 s to start. The export is made from those weights on first use, with torch, offline, and
kept in `user_cache_dir("onnx")` under a name that holds the weights' fingerprint (their file's
path, size and modification time) and `EXPORT_VERSION`, written atomically; deleting it only
costs one more export. Nothing exported is ever committed or downloaded.

The exports compute what the torch modules compute (cosine >= 0.9999999 per item on the
tests' inputs, `tests/test_encoders_onnx.py`), so indexes keep their vectors. torch stays the
path on a GPU and wherever a backbone is trained, and `"runtime": "torch"` in a preset entry
(or `EBRIDGE_RUNTIME=torch`) keeps it on a CPU too.

Example:
    >>> weights_fingerprint(Path(__file__))[:4].isalnum()
    True
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.deps import require
from core.files import atomic_path, user_cache_dir

log = logging.getLogger(__name__)

# Bumped when an export's graph changes (inputs, outputs, opset), so older cached files are not reused.
EXPORT_VERSION = 1
OPSET = 17
RUNTIMES = ("auto", "onnx", "torch")


def runtime_choice(spec: dict[str, Any]) -> str:
    """The runtime a backbone entry asks for: its `"runtime"`, else `$EBRIDGE_RUNTIME`, else "auto"
    (onnxruntime on a CPU where onnxruntime is installed, torch otherwise)."""
    choice = str(spec.get("runtime") or os.environ.get("EBRIDGE_RUNTIME") or "auto").lower()
    if choice not in RUNTIMES:
        from bridge.encoders.base import PresetError

        raise PresetError(f"runtime {choice!r}: choose one of {', '.join(RUNTIMES)} (preset entry \"runtime\" "
                          "or $EBRIDGE_RUNTIME)")
    return choice


def use_onnx(spec: dict[str, Any], device: Any) -> bool:
    """Whether a backbone runs its onnxruntime export: on a CPU (`device` None or a CPU device),
    real weights, and onnxruntime installed, unless the entry or $EBRIDGE_RUNTIME says torch."""
    choice = runtime_choice(spec)
    if choice == "torch" or spec.get("weights") is None:
        return False
    if device is not None and getattr(device, "type", str(device)) != "cpu":
        return False
    if choice == "onnx":
        require("onnxruntime", "the onnx runtime of the encoders")
        return True
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def weights_fingerprint(path: Path) -> str:
    """A short key for a weights file: its resolved path, size and modification time. Hashing the
    bytes (90 MB for MiniLM) would cost a cold query more than the rest of its start.

    Example:
        >>> len(weights_fingerprint(Path(__file__)))
        12
    """
    st = Path(path).resolve().stat()
    blob = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|v{EXPORT_VERSION}"
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cpu_threads() -> int:
    """onnxruntime's intra-op threads: torch's count when this process set one (`--threads`,
    `core.device.set_threads`), else all cores up to 4."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    return max(1, min(4, os.cpu_count() or 1))


def cached_export(name: str, weights: Path, export: Callable[[Path], None]) -> Path:
    """The cached ONNX file `name` for `weights`, made by `export(tmp_path)` (torch) when missing.

    Example:
        >>> cached_export("minilm", weights_file, export_minilm)   # doctest: +SKIP
        PosixPath('/root/.cache/emergentbridge/onnx/minilm-3f2a9c0d1e4b.onnx')
    """
    path = user_cache_dir("onnx") / f"{name}-{weights_fingerprint(weights)}.onnx"
    if path.is_file():
        return path
    log.info("exporting %s from %s to %s for onnxruntime (once)", name, weights, path)
    try:
        with atomic_path(path) as tmp:
            export(tmp)
    except OSError as exc:  # a read-only home: export to a temporary folder, slower next time
        import tempfile

        log.info("cannot cache the export in %s (%s); exporting to a temporary folder", path.parent, exc)
        path = Path(tempfile.mkdtemp(prefix="ebridge-onnx-")) / path.name
        export(path)
    return path


def session(path: Path) -> Any:
    """An onnxruntime CPU session for `path`, `cpu_threads()` intra-op threads, no spinning
    (as in yamnet.py: idle workers would hold cores the indexer's decoders need)."""
    ort = require("onnxruntime", "the onnx runtime of the encoders")
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def export_module(module: Any, example: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str],
                  dynamic: dict[str, dict[int, str]]) -> None:
    """`torch.onnx.export` with the TorchScript exporter (no onnxscript needed), on the CPU,
    quiet: its tracer warnings are about shapes we fix per export or make dynamic."""
    import warnings

    torch = require("torch", "exporting an encoder to ONNX")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.cpu().eval(), example, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
