"""The CPU fast path: onnxruntime exports of the torch encoders and numpy fixed heads give the vectors
the torch path gives, and a cold search through them imports neither torch nor transformers.

The export tests need the shipped weights and torch (`slow`); the numpy-head tests make a small
fixed-head checkpoint in the test.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _fixed_head_bridge(directory: Path) -> Path:
    """A zero-training checkpoint with label-space heads (one spread over the concepts) and an identity head."""
    import torch

    from bridge.concepts import concept_table
    from bridge.model import build_modules
    from bridge.space import Bridge

    table = concept_table()
    config = {"preset": "tiny", "preset_name": "tiny", "variant": "zero-training", "dim": table.size,
              "feature_dims": {"image": 16, "text": 8, "audio": table.size},
              "head_kinds": {"image": "labelspace", "text": "labelspace", "audio": "identity"},
              "label_classes": {"image": "imagenet"}, "concepts_sha256": table.sha256, "proxy_model": None,
              "hidden": 0, "dropout": 0.0, "temperature": 0.07, "paired": [], "version": "unsaved"}
    modules = build_modules(config)
    gen = torch.Generator().manual_seed(0)
    modules.heads["image"].labels.set(torch.randn(1000, 16, generator=gen), torch.randn(1000, generator=gen), 2.0, 0)
    modules.heads["text"].labels.set(torch.randn(table.size, 8, generator=gen), torch.zeros(table.size), 50.0, 1)
    return Bridge(config, modules.eval()).save(directory)


def test_fixed_heads_in_numpy_give_the_torch_heads_vectors(tmp_path):
    from bridge.space import Bridge

    ckpt = _fixed_head_bridge(tmp_path / "space")
    rng = np.random.default_rng(0)
    fast, slow = Bridge.load(ckpt), Bridge.load(ckpt)
    slow.modules  # builds the torch heads: embed_features then runs them
    for modality, dim in (("image", 16), ("text", 8), ("audio", fast.dim)):
        feats = rng.normal(size=(5, dim)).astype(np.float32) * 3
        a, b = fast.embed_features(modality, feats), slow.embed_features(modality, feats)
        assert a.shape == b.shape == (5, fast.dim)
        assert _cosines(a, b).min() >= 0.9999, modality
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert fast._modules is None and not fast.has_proxy


def test_loading_a_fixed_head_bridge_and_embedding_imports_no_torch(tmp_path):
    ckpt = _fixed_head_bridge(tmp_path / "space")
    code = ("import sys, numpy as np; from bridge.space import Bridge; b = Bridge.load(sys.argv[1]); "
            "z = b.embed_features('image', np.ones((1, 16), np.float32)); "
            "print(z.shape[1], [m for m in ('torch', 'transformers') if m in sys.modules])")
    from bridge.concepts import concept_table

    out = subprocess.run([sys.executable, "-c", code, str(ckpt)], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip().split(maxsplit=1) == [str(concept_table().size), "[]"], out.stderr


def test_a_damaged_fixed_head_checkpoint_still_names_itself(tmp_path):
    from safetensors.numpy import load_file, save_file

    from bridge.space import Bridge
    from core.errors import CheckpointError

    ckpt = _fixed_head_bridge(tmp_path / "space")
    state = load_file(str(ckpt / "model.safetensors"))
    del state["heads.text.labels.weight"]
    save_file(state, str(ckpt / "model.safetensors"))
    import json

    config = json.loads((ckpt / "config.json").read_text())
    config.pop("weights_sha256")
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="heads.text.labels.weight"):
        Bridge.load(ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["text", "image"])
def test_onnx_export_gives_the_torch_vectors_and_is_cached(modality, tmp_path, monkeypatch):
    from bridge.encoders import load_preset

    monkeypatch.setenv("EBRIDGE_CACHE", str(tmp_path / "cache"))
    fast, slow = load_preset("offline"), load_preset("offline")
    slow.spec["encoders"][modality]["runtime"] = "torch"
    if modality == "text":
        items = ["a ship at sea", "A DOG chasing a ball in the park, café!", "x", "word " * 400]
    else:
        rng = np.random.default_rng(0)
        items = [rng.integers(0, 255, (40 + 30 * i, 60, 3), dtype=np.uint8) for i in range(5)]
    a, b = fast.encoder(modality).encode(items), slow.encoder(modality).encode(items)
    assert fast.encoder(modality).backbone._onnx_on_cpu and not slow.encoder(modality).backbone._onnx_on_cpu
    assert _cosines(a, b).min() >= 0.9999
    assert _cosines(fast.encoder(modality).encode(items[:1]), b[:1]).min() >= 0.9999  # batch of one, other shapes
    exported = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exported) == 1 and exported[0].stat().st_size > 1_000_000
    stamp = exported[0].stat().st_mtime_ns
    again = load_preset("offline").encoder(modality)
    again.encode(items[:1])
    assert exported[0].stat().st_mtime_ns == stamp, "the cached export was made again"


@pytest.mark.slow
def test_cold_text_and_image_searches_import_no_torch(tmp_path):
    """A zero-training offline index of three photos, searched by a fresh process as `ebridge search` runs."""
    from PIL import Image

    from indexer.index import index_directory

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    index_directory(tmp_path, tmp_path / "idx", preset="offline", progress=False, exclude=["idx/*"])
    for query in (["--text", "a ship at sea"], ["--file", str(tmp_path / "p0.png")]):
        code = ("import sys; from query.cli import main; rc = main(sys.argv[1:]); "
                "print('HEAVY', [m for m in ('torch', 'transformers') if m in sys.modules], rc)")
        out = subprocess.run([sys.executable, "-c", code, "search", "--index", str(tmp_path / "idx"), *query,
                              "--target", "image", "-k", "2"], capture_output=True, text=True, cwd=REPO)
        assert "HEAVY [] 0" in out.stdout, out.stdout + out.stderr
