"""Small PNG previews of indexed items for the web page: pictures as they are, depth and thermal in
false colour (so a person can read them), a video's middle frame. numpy + Pillow only.

Depth is drawn near = bright (viridis) with missing readings black; thermal is drawn hot = bright
(inferno). The colour maps are the matplotlib ones sampled at a few stops and interpolated, which
is close enough for a thumbnail and keeps matplotlib out of the server.

Example:
    >>> import numpy as np
    >>> rgb = false_colour(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), "inferno")
    >>> rgb.shape, rgb.dtype.name
    ((3, 4, 3), 'uint8')
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bridge.modalities import load

PREVIEW_MODALITIES = ("image", "depth", "thermal", "video")
MAX_SIDE = 256

_STOPS = {
    "viridis": [(68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
                (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37)],
    "inferno": [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85), (227, 89, 51),
                (249, 140, 10), (249, 201, 50), (252, 255, 164)],
}


def false_colour(values: np.ndarray, cmap: str = "inferno", valid: np.ndarray | None = None) -> np.ndarray:
    """Values in [0, 1] (H, W) -> uint8 RGB (H, W, 3) through a colour map; invalid pixels black."""
    stops = np.asarray(_STOPS[cmap], dtype=np.float32)
    t = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0) * (len(stops) - 1)
    lo = np.floor(t).astype(np.int64).clip(0, len(stops) - 2)
    frac = (t - lo)[..., None]
    rgb = stops[lo] * (1 - frac) + stops[lo + 1] * frac
    if valid is not None:
        rgb[~valid] = 0
    return rgb.round().astype(np.uint8)


def depth_colour(depth_m: np.ndarray) -> np.ndarray:
    """Depth in metres (0 = no reading) -> RGB, near bright, scaled by the map's 2nd-98th percentiles."""
    valid = depth_m > 0
    lo, hi = np.percentile(depth_m[valid], [2, 98]) if valid.any() else (0.0, 1.0)
    span = float(hi - lo) or 1.0
    return false_colour(1.0 - (depth_m - lo) / span, "viridis", valid)


def render_preview(modality: str, path: str | Path, max_side: int = MAX_SIDE) -> bytes:
    """The PNG preview of one file of `modality` (image, depth, thermal or video).

    Raises ValueError for a modality without a picture (audio, text) and InputError for a bad file.
    """
    from PIL import Image

    if modality == "image":
        rgb = load("image", Path(path))
    elif modality == "depth":
        rgb = depth_colour(load("depth", Path(path)))
    elif modality == "thermal":
        rgb = false_colour(load("thermal", Path(path)), "inferno")
    elif modality == "video":
        frames = load("video", Path(path))
        rgb = frames[len(frames) // 2]
    else:
        raise ValueError(f"{modality} items have no picture preview; fetch the media itself")
    im = Image.fromarray(np.ascontiguousarray(rgb))
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
