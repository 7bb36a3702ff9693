"""Encoders: each modality's preprocessing, the way its field does it, in front of a backbone.

image: short side to `size` (bicubic), centre crop, `(x - mean) / std`, or the weights' own eval
transform where the backbone has one (open_clip); depth: disparity, grey ->
3 channels; thermal: the frame's own [0, 1] range, no RGB statistics; audio: fixed-length clips,
several averaged; video: sampled frames averaged.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bridge.encoders.base import Backbone
from bridge.modalities import SAMPLE_RATE, audio_clips, depth_to_disparity, sample_frames
from core.errors import InputError


class Encoder:
    """Turns a list of canonical items of one modality into float32 (n, dim) features.

    Example:
        >>> enc = load_preset("tiny").encoder("image")
        >>> enc.encode([np.zeros((28, 28, 3), np.uint8)]).shape
        (1, 64)
    """

    def __init__(self, modality: str, spec: dict[str, Any], backbone: Backbone):
        self.modality = modality
        self.spec = spec
        self.backbone = backbone
        self.batch_size = int(spec.get("batch_size", 32))

    @property
    def dim(self) -> int:
        return self.backbone.dim

    def encode(self, items: Sequence[Any]) -> np.ndarray:
        """Embed `items` (canonical forms, see `bridge.modalities`) in batches of `batch_size`."""
        if len(items) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [self._encode_batch(list(items[i : i + self.batch_size])) for i in range(0, len(items), self.batch_size)]
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    def _encode_batch(self, items: list[Any]) -> np.ndarray:
        raise NotImplementedError


class TextEncoder(Encoder):
    def _encode_batch(self, items: list[Any]) -> np.ndarray:
        for i, text in enumerate(items):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"<text item {i}>", "expected a non-empty str")
        return self.backbone.embed_text(items)


class PixelEncoder(Encoder):
    """Shared resize / centre-crop / normalise for everything an image backbone reads."""

    def _pixel_cfg(self) -> tuple[int, np.ndarray, np.ndarray]:
        defaults = self.backbone.pixel_defaults() if any(self.spec.get(k) is None for k in ("size", "mean", "std")) else {}
        size = int(self.spec.get("size") or defaults["size"])
        mean = np.asarray(self.spec.get("mean") or defaults["mean"], np.float32).reshape(3, 1, 1)
        std = np.asarray(self.spec.get("std") or defaults["std"], np.float32).reshape(3, 1, 1)
        return size, mean, std

    _transform: Any = None

    def _prepare(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 (H, W, 3) pictures or float32 (H, W) maps in [0, 1] -> normalised (N, 3, S, S).

        Backbones whose weights carry their own eval transform (open_clip) get exactly that
        transform; the others get `_resize_crop` + `(x - mean) / std`.
        """
        if self._transform is None:
            self._transform = self.backbone.image_transform(self.spec) or False
        if self._transform:
            return np.stack([_apply_transform(self._transform, img) for img in images]).astype(np.float32, copy=False)
        size, mean, std = self._pixel_cfg()
        out = np.empty((len(images), 3, size, size), np.float32)
        for i, img in enumerate(images):
            chw = _resize_crop(img, size)  # (3, S, S) in [0, 1]
            out[i] = (chw - mean) / std
        return out

    def _check(self, item: Any, i: int, ndim: int, dtype: type) -> None:
        if not isinstance(item, np.ndarray) or item.ndim != ndim or item.dtype != dtype:
            got = f"{item.dtype} {item.shape}" if isinstance(item, np.ndarray) else type(item).__name__
            raise InputError(f"<{self.modality} item {i}>", f"expected canonical {np.dtype(dtype)} {ndim}-D array, got {got}")


def _apply_transform(transform: Any, img: np.ndarray) -> np.ndarray:
    """Run a torchvision/open_clip eval transform on a canonical picture or grey map.

    Pictures go through it unchanged (PIL in, tensor out), so the pixels equal open_clip's
    own. Grey float maps (depth disparity, thermal) take the same geometric steps (resize,
    crop/pad) on a float 'F' PIL image, so they are not quantised to 8 bits, then become 3
    identical channels (ImageBind's 1->3 channel input) and take the transform's Normalize.
    """
    from PIL import Image

    if img.ndim == 3:
        return transform(Image.fromarray(img)).numpy()
    steps = getattr(transform, "transforms", [transform])
    normalize = next((t for t in steps if type(t).__name__ == "Normalize"), None)
    grey = Image.fromarray(img.astype(np.float32), mode="F")
    for step in steps:
        if type(step).__name__ in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "Normalize", "Lambda"):
            break
        grey = step(grey)
    chw = np.repeat(np.clip(np.asarray(grey, np.float32), 0.0, 1.0)[None], 3, axis=0)
    if normalize is not None:
        mean = np.asarray(normalize.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(normalize.std, np.float32).reshape(3, 1, 1)
        chw = (chw - mean) / std
    return chw


def _resize_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to `size` (bicubic, as CLIP and ImageNet eval do), centre-crop;
    grey maps become 3 identical channels (ImageBind's 1->3 channel input)."""
    from PIL import Image

    h, w = img.shape[:2]
    # torchvision's rounding (int() of the long side, round() of the crop offset), so
    # open_clip checkpoints see exactly the pixels their own transform would give them.
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    box = (left, top, left + size, top + size)
    if img.ndim == 2:
        # Float ('F') mode keeps the map's precision; uint8 would quantise disparity.
        grey = np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((new_w, new_h), Image.BICUBIC).crop(box))
        return np.repeat(np.clip(grey, 0.0, 1.0)[None], 3, axis=0)
    rgb = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BICUBIC).crop(box), np.float32) / 255.0
    return rgb.transpose(2, 0, 1)


class ImageEncoder(PixelEncoder):
    def _encode_batch(self, items: list[Any]) -> np.ndarray:
        for i, img in enumerate(items):
            self._check(img, i, 3, np.uint8)
        return self.backbone.embed_pixels(self._prepare(items))


class DepthEncoder(PixelEncoder):
    def _encode_batch(self, items: list[Any]) -> np.ndarray:
        for i, depth in enumerate(items):
            self._check(depth, i, 2, np.float32)
        return self.backbone.embed_pixels(self._prepare([depth_to_disparity(d) for d in items]))


class ThermalEncoder(PixelEncoder):
    def _encode_batch(self, items: list[Any]) -> np.ndarray:
        for i, frame in enumerate(items):
            self._check(frame, i, 2, np.float32)
        # Canonical thermal is already [0, 1] by the frame's own range; the entry's
        # mean/std (0.5/0.5) only centres it, no RGB statistics.
        return self.backbone.embed_pixels(self._prepare([np.clip(f, 0.0, 1.0) for f in items]))


class VideoEncoder(PixelEncoder):
    def _encode_batch(self, items: list[Any]) -> np.ndarray:
        frames_per_video = int(self.spec.get("frames", 8))
        clips = []
        for i, video in enumerate(items):
            self._check(video, i, 4, np.uint8)
            clips.append(sample_frames(video, frames_per_video) if len(video) > frames_per_video else video)
        flat = [frame for clip in clips for frame in clip]
        feats = np.concatenate(
            [self.backbone.embed_pixels(self._prepare(flat[j : j + self.batch_size])) for j in range(0, len(flat), self.batch_size)]
        )
        bounds = np.cumsum([0] + [len(c) for c in clips])
        return np.stack([feats[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])


class AudioEncoder(Encoder):
    def _encode_batch(self, items: list[Any]) -> np.ndarray:
        clip_seconds = float(self.spec.get("clip_seconds", 1.0))
        max_clips = int(self.spec.get("max_clips", 4))
        n = int(round(clip_seconds * SAMPLE_RATE))
        per_item = []
        for i, wave in enumerate(items):
            if not isinstance(wave, np.ndarray) or wave.ndim != 1 or wave.size == 0:
                raise InputError(f"<audio item {i}>", "expected canonical float32 1-D 16 kHz waveform")
            wave = wave.astype(np.float32, copy=False)
            if wave.size < n and self.spec.get("pad", "centre") == "centre":
                # Centre a short sound in its clip: speech_embedding finds a word placed at
                # the clip's start far worse (FSDD 1-NN 0.36 with end padding vs 0.97 centred).
                left = (n - wave.size) // 2
                wave = np.pad(wave, (left, n - wave.size - left))
            per_item.append(audio_clips(wave, clip_seconds, max_clips))
        feats = self.backbone.embed_audio(np.concatenate(per_item))
        bounds = np.cumsum([0] + [len(c) for c in per_item])
        return np.stack([feats[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])


_ENCODERS: dict[str, type[Encoder]] = {
    "text": TextEncoder,
    "image": ImageEncoder,
    "depth": DepthEncoder,
    "thermal": ThermalEncoder,
    "video": VideoEncoder,
    "audio": AudioEncoder,
}
