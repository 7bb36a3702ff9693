"""Shared fixtures: small synthetic training sets and the location of ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

def shared_data(sub: str = "") -> Path:
    """Path under ../shared/data (query.eval.shared_data), or skip the test with a clear message when it is absent."""
    from query.eval.shared_data import SHARED_DATA_ENV, shared_data_dir

    path = shared_data_dir() / sub
    if not path.exists():
        pytest.skip(f"needs real data at {path} (../shared/data is not present on this machine; "
                    f"set ${SHARED_DATA_ENV} to point elsewhere)")
    return path


def tiny_digits_index(root: Path):
    """A small real index: the shipped digits sample under root/world, a tiny-preset bridge
    trained on its train split (saved to root/bridge), its test split indexed into
    root/edge.index. Returns (world folder, bridge, checkpoint folder)."""
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache
    from bridge.pairs import in_split, read_manifest, training_set
    from bridge.train import TrainConfig, train
    from indexer.index import index_directory
    from query.eval.digits import build_digits_world

    world = build_digits_world(root / "world", scale="sample")
    preset = load_preset("tiny")
    data = training_set(in_split(read_manifest(world / "manifest.csv"), "train"), preset, FeatureCache(root / "cache"))
    cfg = TrainConfig(preset="tiny", dim=32, hidden=64, steps=120, proxy_steps=150, batch_size=64,
                      diffusion_timesteps=100, diffusion_steps=4, seed=0)
    bridge, _ = train(cfg, data, preset=preset)
    ckpt = bridge.save(root / "bridge")
    index_directory(world / "test", root / "edge.index", bridge=ckpt, progress=False)
    return world, bridge, ckpt


def slow_indexer_script(path: Path, seconds_per_batch: float) -> Path:
    """Write a script that runs the `ebridge` CLI with every encoder batch `seconds_per_batch`
    slower: an index run long enough for a test to act while it runs (kill it, search beside it)."""
    path.write_text(f"""
import sys, time
from bridge.space import Bridge
_encode = Bridge.encode
def slow_encode(self, modality, items):
    time.sleep({seconds_per_batch})
    return _encode(self, modality, items)
Bridge.encode = slow_encode
from query.cli import main
sys.exit(main(sys.argv[1:]))
""")
    return path


def synthetic_set(seed: int = 0, n_per_class: int = 12, classes: int = 4, dims: dict[str, int] | None = None,
                  world: int = 0):
    """Features for a few modalities: each class a random centre per modality, plus noise.

    The image and audio rows share labels, text has one row per class: enough structure for
    training to learn and for retrieval to beat chance. `world` fixes the class centres, so
    two sets with the same world and different seeds are a train and a validation split."""
    from bridge.pairs import ModalityData

    centres_rng, rng = np.random.default_rng(world), np.random.default_rng(seed)
    dims = dims or {"image": 24, "text": 12, "audio": 20}
    data = {}
    for m, d in dims.items():
        n = 3 if m == "text" else n_per_class
        centres = centres_rng.normal(size=(classes, d)) * 2
        labels = [str(c) for c in range(classes) for _ in range(n)]
        feats = np.stack([centres[int(y)] + rng.normal(size=d) * 0.5 for y in labels]).astype(np.float32)
        data[m] = ModalityData(ids=[f"{m}-{i}" for i in range(len(labels))], features=feats, labels=labels)
    return data


@pytest.fixture
def tiny_config():
    from bridge.train import TrainConfig

    return TrainConfig(preset="tiny", dim=16, hidden=32, batch_size=16, steps=40, proxy_steps=40,
                       diffusion_timesteps=100, diffusion_steps=4, seed=3)


def tiny_bridge(folder: Path) -> Path:
    """A tiny bridge (image, text and audio heads on the tiny preset's 64-d features), saved in `folder`."""
    from bridge.train import TrainConfig, train

    cfg = TrainConfig(preset="tiny", dim=16, hidden=32, batch_size=16, steps=15, proxy_steps=15,
                      diffusion_timesteps=50, diffusion_steps=2, seed=3)
    bridge, _ = train(cfg, synthetic_set(dims={"image": 64, "text": 64, "audio": 64}, n_per_class=6))
    return bridge.save(folder)


@pytest.fixture
def one_thread_fresh_cache(tmp_path, monkeypatch):
    """One torch thread, and a cache folder of the test's own (class-prompt matrices, ONNX copies):
    what the tests that train or build label spaces share (`pytestmark = pytest.mark.usefixtures(...)`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("EBRIDGE_CACHE", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(before)
