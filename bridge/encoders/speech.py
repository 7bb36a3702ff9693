"""The `speech-embedding` audio backbone: Google's speech_embedding ONNX models shipped by openwakeword 0.4.0."""
from __future__ import annotations


import numpy as np

from core.deps import require
from bridge.encoders.base import (Backbone, PresetError, WeightsUnavailableError, shipped_weights,
                                  register_backbone)


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
        folder = shipped_weights(self.spec, "speech-embedding", "openwakeword", "openwakeword==0.4.0",
                                 "resources/models", "a folder with melspectrogram.onnx and embedding_model.onnx")
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
        # onnxruntime's worker threads busy-wait between ops by default; in the indexer, where
        # decoding and writing share the cores, a spinning thread holds a core the others need.
        # Measured (2 cores, 1,024 FSDD clips): pipeline 84-90 -> 102-107 items/s, and the
        # encoder alone is no slower (95-97 -> 104-109 items/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


register_backbone("speech-embedding", SpeechEmbeddingBackbone)
