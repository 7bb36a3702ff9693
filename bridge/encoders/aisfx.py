"""The `aisfx` audio backbone: a general-sound (sound-effects) CNN whose weights PyPI ships.

aiSFX (Ma & Lerch, "Representation Learning for the Automatic Indexing of Sound Effects
Libraries", ISMIR 2022; https://github.com/alisonbma/aisfx) trains a 9-layer CNN (the DCASE
cross-task baseline's `Cnn_9layers`, max pooling) across nine sound-effects libraries; the
`aisfx==0.1.2` wheel ships its best checkpoint (`aisfx/models/checkpoint.pth`, 512-d,
CC BY 4.0 per the wheel's LICENSE file). Its pinned dependencies (numpy 1.23, librosa 0.9.2)
conflict with ours, so it is installed with `pip install --no-deps aisfx==0.1.2` and we never
import it: this module rebuilds the network and computes its input features with torchaudio.

Input features, as aiSFX computes them (`aisfx/inference.py`, `spectrogram_essentia.py`):
44.1 kHz mono, peak-normalised (the package's librosa path; `"level": "none"` keeps the level),
2048-sample Hann frames, hop 1024, power spectrum, 96 HTK-mel bands over 0-22050 Hz with
unit-sum triangles, `log10(1e4 * x + 1)`, divided by 9.4578 (the paper's dataset-wide maximum),
blocks of 100 frames (~2.3 s). Our canonical audio is 16 kHz, so it is resampled to 44.1 kHz
(bands above 8 kHz stay empty, as they would for any 16 kHz recording).
"""
from __future__ import annotations

import codecs
import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from bridge.encoders.base import (Backbone, PresetError, WeightsUnavailableError, _package_dir, _weights_source,
                                  register_backbone)
from bridge.modalities import SAMPLE_RATE

log = logging.getLogger(__name__)

AISFX_RATE = 44100
N_FFT, HOP, N_MELS = 2048, 1024, 96
LOG_SCALE, NORM_MAX = 1e4, 9.457798957824707  # shift_scale_log, then the paper's min/max (0, 9.4578)
BLOCK_FRAMES = 100  # ~2.3 s: the block length the network was trained on


def _build_network(torch: Any) -> Any:
    """aiSFX's EmbeddingNet('max', 3, 1, 64): four double-conv blocks (64-128-256-512), BN,
    ReLU, 2x2 max pooling after the first three; mean over frequency, max over time."""
    nn, F = torch.nn, torch.nn.functional

    class ConvBlock(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

        def forward(self, x: Any, pool: int) -> Any:
            x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            return F.max_pool2d(x, kernel_size=pool)

    class EmbeddingNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_block1, self.conv_block2 = ConvBlock(1, 64), ConvBlock(64, 128)
            self.conv_block3, self.conv_block4 = ConvBlock(128, 256), ConvBlock(256, 512)

        def forward(self, spec: Any) -> Any:  # (N, frames, mels)
            x = spec.unsqueeze(1)
            for block, pool in ((self.conv_block1, 2), (self.conv_block2, 2), (self.conv_block3, 2), (self.conv_block4, 1)):
                x = block(x, pool)
            return x.mean(dim=3).amax(dim=2)

    return EmbeddingNet()


def load_aisfx_state(path: str | Path) -> dict[str, Any]:
    """The embedding network's state dict from an aiSFX checkpoint (the package's
    `(state_dict, ds_dict)` tuple) or a plain state dict, read with `weights_only=True`:
    the only globals allowed are the numpy scalar/dtype pieces the package's class table uses.
    """
    torch = require("torch", "the aisfx audio encoder")
    from numpy._core.multiarray import scalar

    # The wheel's checkpoint was pickled by numpy 1.x (numpy.core...); files saved by numpy 2
    # name numpy._core: allow the scalar under both names, nothing else beyond dtypes.
    allowed = [(scalar, "numpy.core.multiarray.scalar"), scalar, (np.dtype, "numpy.dtype"),
               (codecs.encode, "_codecs.encode"), np.dtypes.Int64DType]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if Path(path).is_file() else []
        raise WeightsUnavailableError(
            f"{path}: not a readable aisfx checkpoint with weights_only=True (globals it needs: {unsafe or 'none'}; "
            "save a plain state dict with torch.save(model.state_dict(), path))"
        ) from exc
    state = obj[0] if isinstance(obj, tuple) else obj
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path}: expected a state dict or aiSFX's (state_dict, ds_dict) tuple")
    prefix = "embedding_net."
    if any(k.startswith(prefix) for k in state):
        # The per-library classifier heads (fc.*) are training-only: the embedding is before them.
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


class AisfxBackbone(Backbone):
    """aiSFX sound-effects CNN, 512-d (max over time of the last block's maps).

    Spec keys: `weights` = `"pypi:aisfx"` (the wheel's checkpoint), a local `.pth`
    (aiSFX's format or a plain state dict), or null (the architecture, random init);
    `level`: `"peak"` (default, the package's librosa path) or `"none"`.
    """

    name = "aisfx"
    inputs = frozenset({"audio"})
    identity_keys = ("weights", "level")

    @property
    def dim(self) -> int:
        return 512

    @property
    def _level(self) -> str:
        level = self.spec.get("level", "peak")
        if level not in ("peak", "none"):
            raise PresetError(f"aisfx level must be 'peak' or 'none', not {level!r}")
        return level

    def _load(self) -> None:
        torch = require("torch", "the aisfx audio encoder")
        torchaudio = require("torchaudio", "the aisfx audio encoder's mel features")
        kind, value = _weights_source(self.spec)
        net = _build_network(torch)
        if kind == "pypi":
            if value != "aisfx":
                raise WeightsUnavailableError(f"aisfx weights come from pypi:aisfx, not pypi:{value}")
            path = _package_dir("aisfx", "aisfx==0.1.2 (install with: pip install --no-deps aisfx==0.1.2)") / "models" / "checkpoint.pth"
            if not path.is_file():
                raise WeightsUnavailableError(f"{path} missing: reinstall with pip install --no-deps --force-reinstall aisfx==0.1.2")
        elif kind == "path":
            path = Path(value)
        elif kind == "tag":
            raise WeightsUnavailableError(
                f"aisfx weights {value!r}: not a file; use 'pypi:aisfx' (pip install --no-deps aisfx==0.1.2) or a .pth path"
            )
        else:
            path = None
        if path is not None:
            missing, unexpected = net.load_state_dict(load_aisfx_state(path), strict=False)
            if missing or unexpected:
                raise WeightsUnavailableError(f"{path}: not aiSFX's embedding network (missing {missing[:3]}, unexpected {unexpected[:3]})")
            log.info("aisfx weights loaded from %s", path)
        self.net = net.eval()
        fb = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, AISFX_RATE / 2, N_MELS, AISFX_RATE,
                                                  norm=None, mel_scale="htk")
        # Essentia's / librosa's norm=1 'unit_sum': each band's weights sum to one.
        self.fbank = fb / fb.sum(dim=0, keepdim=True).clamp_min(1e-12)
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=N_FFT, hop_length=HOP, window_fn=torch.hann_window, wkwargs={"periodic": False},
            power=2.0, center=True, pad_mode="constant",
        )

    def _torch_modules(self) -> list[Any]:
        return [self.net, self.spectrogram]

    def features(self, clips: np.ndarray) -> Any:
        """float32 (N, samples) 16 kHz clips -> aiSFX input features (N, frames, 96) on the device."""
        torch = require("torch")
        torchaudio = require("torchaudio")
        from core.device import to_device

        wave = to_device(clips.astype(np.float32, copy=False), self.device)
        if self._level == "peak":
            wave = wave / wave.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
        wave = torchaudio.functional.resample(wave, SAMPLE_RATE, AISFX_RATE)
        power = self.spectrogram(wave)  # (N, 1025, frames)
        mel = torch.einsum("nft,fm->ntm", power, self.fbank.to(power.device))
        return torch.log10(LOG_SCALE * mel + 1.0) / NORM_MAX

    def _embed_audio(self, clips: np.ndarray) -> np.ndarray:
        torch = require("torch")
        from core.device import inference, to_numpy

        with torch.inference_mode():
            feats = self.features(clips)  # in float32, outside autocast: the log-mel stays exact
        with inference(self.device):
            return to_numpy(self.net(feats))


register_backbone("aisfx", AisfxBackbone)
