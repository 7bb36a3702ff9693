"""The `clap` backbone: LAION-CLAP audio and text towers (HTSAT + RoBERTa), aligned audio<->text.

Runs LAION-CLAP through `transformers.ClapModel`, the port of LAION-CLAP that LAION publishes
its checkpoints in (`laion/clap-htsat-unfused`, `laion/clap-htsat-fused`,
`laion/larger_clap_general`, `laion/larger_clap_music_and_speech`, `laion/larger_clap_music`).
The `laion_clap` package itself is not used: it pins numpy < 2 and builds its text tower by
downloading `roberta-base` from the hub, so it can neither install beside us nor run offline.

`weights`:

- a hub id (`"laion/clap-htsat-unfused"`): loads where a hub is reachable (the published tag);
- a local folder in the transformers layout (`config.json`, `model.safetensors`, tokenizer
  files, `preprocessor_config.json`), e.g. one written by `ClapModel.save_pretrained` +
  the processor's `save_pretrained` on a machine with hub access, or by `ClapBackbone.save`;
- null: the architecture given by `arch` with random weights (the test fixture), a byte-level
  RoBERTa tokenizer (256 byte tokens, no merges) and the default CLAP feature extractor.

Original LAION-CLAP `.pt` training checkpoints (`630k-audioset-best.pt`...) are not read
directly: convert them once with transformers' `convert_clap_original_pytorch_to_hf.py` (it needs
`laion_clap`, on any machine) and point `weights` at the folder it writes.

Preprocessing travels with the weights: audio goes through the checkpoint's own
`ClapFeatureExtractor` (48 kHz log-mel, 10 s windows, repeat-padding or fusion, as configured),
after torchaudio resamples our 16 kHz clips; our clip padding (trailing zeros) is cut off first
so the extractor pads the way CLAP was trained. Outputs are CLAP's projected embeddings, unit
length (normalisation is part of CLAP's pipeline, as for MiniLM).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from bridge.encoders.base import Backbone, PresetError, WeightsUnavailableError, _weights_source, register_backbone
from bridge.modalities import SAMPLE_RATE
from core.deps import quiet_transformers, require

log = logging.getLogger(__name__)

# Projection sizes of LAION's published CLAP checkpoints, so `dim` needs no download.
KNOWN_DIMS = {"laion/clap-htsat-unfused": 512, "laion/clap-htsat-fused": 512, "laion/larger_clap_general": 512,
              "laion/larger_clap_music_and_speech": 512, "laion/larger_clap_music": 512}


def _byte_tokenizer() -> Any:
    """A RoBERTa tokenizer over the 256 byte-level symbols and no merges: what a random-init
    tower reads (nothing to download, deterministic, every string encodes)."""
    from transformers import RobertaTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = ["<s>", "<pad>", "</s>", "<unk>", *bytes_to_unicode().values(), "<mask>"]
    return RobertaTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[])


class ClapBackbone(Backbone):
    """LAION-CLAP audio + text towers (transformers' ClapModel), projected and unit-length.

    Spec keys: `weights` (hub id, local folder, or null), `arch` (for null weights:
    `{"projection_dim": 32, "audio": {ClapAudioConfig keys}, "text": {ClapTextConfig keys}}`),
    `seed` (random init), `dim` (only for hub ids not in KNOWN_DIMS).
    """

    name = "clap"
    inputs = frozenset({"text", "audio"})
    identity_keys = ("weights", "arch", "seed")

    @property
    def dim(self) -> int:
        kind, value = _weights_source(self.spec)
        if kind == "none":
            return int((self.spec.get("arch") or {}).get("projection_dim", 512))
        if kind == "path":
            config = Path(value) / "config.json"
            if config.is_file():
                return int(json.loads(config.read_text(encoding="utf-8")).get("projection_dim", 512))
        if self.spec.get("dim"):
            return int(self.spec["dim"])
        if value in KNOWN_DIMS:
            return KNOWN_DIMS[value]
        raise PresetError(f"clap weights {value!r}: cannot tell the embedding size without loading; add \"dim\" to the entry")

    def _load(self) -> None:
        torch = require("torch", "the clap encoder")
        transformers = quiet_transformers("the clap encoder")
        kind, value = _weights_source(self.spec)
        if kind == "none":
            arch = self.spec.get("arch") or {}
            config = transformers.ClapConfig(text_config=arch.get("text"), audio_config=arch.get("audio"),
                                             projection_dim=int(arch.get("projection_dim", 512)))
            torch.manual_seed(int(self.spec.get("seed", 0)))
            self.model = transformers.ClapModel(config)
            self.tokenizer = _byte_tokenizer()
            fused = bool(config.audio_config.enable_fusion)
            self.feature_extractor = transformers.ClapFeatureExtractor(truncation="fusion" if fused else "rand_trunc")
            log.info("clap: random-init architecture (projection %d)", config.projection_dim)
        elif kind == "pypi":
            raise WeightsUnavailableError("no PyPI package ships CLAP weights: use a hub id or a local folder")
        else:
            source = value
            if kind == "path" and not (Path(value) / "config.json").is_file():
                raise WeightsUnavailableError(f"{value}: not a CLAP weights folder (no config.json); see bridge/encoders/clap.py")
            try:
                self.model = transformers.ClapModel.from_pretrained(source)
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(source)
                self.feature_extractor = transformers.ClapFeatureExtractor.from_pretrained(source)
            except Exception as exc:
                if kind == "path":
                    raise WeightsUnavailableError(f"{value}: could not load CLAP weights ({str(exc).splitlines()[0][:200]})") from exc
                raise WeightsUnavailableError(
                    f"clap weights {value!r} could not be loaded ({str(exc).splitlines()[0][:160]}). No model hub is "
                    "reachable from this machine: on one that has it, run ClapModel.from_pretrained(...).save_pretrained(DIR) "
                    "and ClapProcessor.from_pretrained(...).save_pretrained(DIR), copy DIR here and set "
                    '"weights": "/path/to/DIR" in the preset'
                ) from exc
            log.info("clap weights loaded from %s", source)
        self.model.eval()
        self._max_tokens = int(self.model.config.text_config.max_position_embeddings) - 2

    def _torch_modules(self) -> list[Any]:
        return [self.model]

    def save(self, folder: str | Path) -> Path:
        """Write this network as a local weights folder (transformers layout) that `weights` can name.

        Example:
            >>> b = ClapBackbone({"weights": None, "arch": SMALL_ARCH}); b.save("my-clap")   # doctest: +SKIP
        """
        self.load()
        folder = Path(folder)
        for part in (self.model, self.tokenizer, self.feature_extractor):
            part.save_pretrained(str(folder))
        return folder

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        from core.device import inference, to_numpy

        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="pt")
        with inference(self.device):
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
        return to_numpy(getattr(out, "pooler_output", out))

    def _embed_audio(self, clips: np.ndarray) -> np.ndarray:
        torch = require("torch")
        torchaudio = require("torchaudio", "the clap encoder's resampling")
        from core.device import inference, to_numpy

        rate = int(self.feature_extractor.sampling_rate)
        nonzero = [np.flatnonzero(c) for c in clips]
        lengths = [int(nz[-1]) + 1 if nz.size else clips.shape[1] for nz in nonzero]
        with torch.inference_mode():
            wave = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(clips, np.float32)), SAMPLE_RATE, rate)
        waves = [wave[i, : max(1, int(np.ceil(n * rate / SAMPLE_RATE)))].numpy() for i, n in enumerate(lengths)]
        feats = self.feature_extractor(waves, sampling_rate=rate, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in feats.items() if k in ("input_features", "is_longer")}
        with inference(self.device):
            out = self.model.get_audio_features(**inputs)
        return to_numpy(getattr(out, "pooler_output", out))


register_backbone("clap", ClapBackbone)
