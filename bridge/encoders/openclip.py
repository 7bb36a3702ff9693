"""The `open_clip` backbone: any open_clip architecture, by published tag, local file or random init."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from bridge.encoders.base import (Backbone, PresetError, WeightsUnavailableError, _package_dir, _weights_source,
                                  register_backbone)

log = logging.getLogger(__name__)


class OpenClipBackbone(Backbone):
    """Any open_clip architecture: `arch` (e.g. "ViT-B-32"), `weights` = an open_clip tag
    ("openai", "laion2b_s34b_b79k"), a local checkpoint file, or null (random init).
    `arch_config` may name a JSON model config (open_clip's format; relative to the preset
    file) to register a custom architecture; its file stem is the arch name.

    Image size, mean and std come from the model's own preprocess config unless the preset
    states them. Features are `encode_image` / `encode_text` outputs, not normalised.
    """

    name = "open_clip"
    inputs = frozenset({"text", "pixels"})
    identity_keys = ("arch", "weights", "arch_config")

    @property
    def _arch(self) -> str:
        if self.spec.get("arch"):
            return str(self.spec["arch"])
        if self.spec.get("arch_config"):
            return Path(self.spec["arch_config"]).stem
        raise PresetError("open_clip backbone needs \"arch\" (e.g. \"ViT-B-32\") or \"arch_config\"")

    def _open_clip(self):
        open_clip = require("open_clip", "the open_clip encoders")
        if self.spec.get("arch_config"):
            config = Path(self.spec["arch_config"])
            if not config.is_file():
                raise PresetError(f"open_clip arch_config file not found: {config}")
            if config.stem not in open_clip.list_models():
                open_clip.add_model_config(config)
        return open_clip

    @property
    def dim(self) -> int:
        return int(self._arch_config()["embed_dim"])

    def _arch_config(self) -> dict[str, Any]:
        # Read the JSON config directly where we can: `import open_clip` pulls in torch,
        # and asking a preset for its dims should stay cheap.
        if self.spec.get("arch_config"):
            path = Path(self.spec["arch_config"])
        else:
            path = _package_dir("open_clip", "open_clip_torch") / "model_configs" / f"{self._arch}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        config = self._open_clip().get_model_config(self._arch)  # configs users added at run time
        if config is None:
            raise PresetError(f"open_clip has no architecture {self._arch!r}; see open_clip.list_models()")
        return config

    def pixel_defaults(self) -> dict[str, Any]:
        self.load()
        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"]
        return {"size": size if isinstance(size, int) else size[0], "mean": list(cfg["mean"]), "std": list(cfg["std"])}

    def preprocess_cfg(self, entry: dict[str, Any] | None = None) -> dict[str, Any]:
        """open_clip's preprocess config for these weights (size, mean, std, interpolation,
        resize_mode, fill_color: what `create_model_and_transforms` would use), with the
        entry's non-null keys laid over it (depth/thermal state their own mean/std)."""
        self.load()
        from open_clip.model import get_model_preprocess_cfg
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        cfg = merge_preprocess_dict(PreprocessCfg(), get_model_preprocess_cfg(self.model))
        keys = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")
        return merge_preprocess_dict(cfg, {k: (entry or {}).get(k) for k in keys})

    def image_transform(self, entry: dict[str, Any]) -> Any:
        open_clip = self._open_clip()
        cfg = self.preprocess_cfg(entry)
        return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                         resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
                                         fill_color=cfg["fill_color"])

    def _load(self) -> None:
        open_clip = self._open_clip()
        arch = self._arch
        kind, value = _weights_source(self.spec)
        if kind == "tag" and not open_clip.get_pretrained_cfg(arch, value):
            raise WeightsUnavailableError(
                f"open_clip weights {value!r} for {arch}: neither a file nor a known tag "
                f"(known: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'})"
            )
        pretrained = None if kind == "none" else value
        try:
            # pretrained_image/text=False: a random-init tower must never fetch timm/HF base weights.
            model, _, _ = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, pretrained_image=False, pretrained_text=False
            )
        except Exception as exc:
            if kind != "tag":
                raise
            raise WeightsUnavailableError(
                f"open_clip weights tag {value!r} for {arch} could not be loaded ({_first_line(exc)}). "
                "No model hub is reachable from this machine: download the checkpoint elsewhere "
                f"(open_clip.create_model('{arch}', pretrained='{value}') caches it) and set "
                '"weights": "/path/to/open_clip_model.safetensors" in the preset'
            ) from exc
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        log.info("open_clip %s loaded (weights=%s)", arch, pretrained)

    def _torch_modules(self) -> list[Any]:
        return [self.model]

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        from core.device import inference, to_numpy

        with inference(self.device):
            return to_numpy(self.model.encode_text(self.tokenizer(texts).to(self.device)))

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        from core.device import inference, to_device, to_numpy

        with inference(self.device):
            return to_numpy(self.model.encode_image(to_device(pixels, self.device)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


register_backbone("open_clip", OpenClipBackbone)
