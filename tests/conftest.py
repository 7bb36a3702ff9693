"""Shared fixtures: small synthetic training sets and the location of ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(sub: str = "") -> Path:
    """Path under ../shared/data, or skip the test with a clear message when it is absent."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"needs real data at {path} (../shared/data is not present on this machine)")
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
