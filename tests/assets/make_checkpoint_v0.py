"""Write tests/assets/checkpoint-v0: a tiny-preset bridge saved by the code of commit 4e54c49
(before checkpoints carried `format_version`), and the vectors that code gave for fixed inputs.

It was run once, against that commit's tree, not the current one:

    git archive 4e54c49 | tar -x -C /tmp/base4e
    cd /tmp/base4e && OMP_NUM_THREADS=1 PYTHONPATH=$PWD python <repo>/tests/assets/make_checkpoint_v0.py <repo>/tests/assets/checkpoint-v0

`tests/test_compat.py` loads the result with the current code and checks it gives the same vectors.
Re-running it against a newer tree would write a *new*-format checkpoint, which is not the point.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def fixed_inputs() -> dict[str, list]:
    """Deterministic canonical inputs, one small list per modality (stored beside the vectors too)."""
    rng = np.random.default_rng(2024)
    t = np.arange(16000, dtype=np.float32) / 16000
    return {
        "text": ["seven", "a spoken three", "the digit zero"],
        "image": [rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8) for _ in range(3)],
        "audio": [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (220.0, 440.0, 880.0)],
        "depth": [rng.uniform(0.5, 4.0, size=(20, 20)).astype(np.float32) for _ in range(3)],
    }


def main(out: Path) -> None:
    import torch

    from bridge.encoders import load_preset
    from bridge.pairs import ModalityData
    from bridge.train import TrainConfig, train

    torch.set_num_threads(1)
    preset = load_preset("tiny")
    rng = np.random.default_rng(0)
    # a small labelled set in the tiny encoders' own feature space: 4 classes, each a random centre
    data = {}
    for m in ("image", "text", "audio", "depth"):
        centres = rng.normal(size=(4, 64)) * 2
        labels = [str(c) for c in range(4) for _ in range(10)]
        feats = np.stack([centres[int(y)] + rng.normal(size=64) * 0.5 for y in labels]).astype(np.float32)
        data[m] = ModalityData(ids=[f"{m}-{i}" for i in range(len(labels))], features=feats, labels=labels)
    cfg = TrainConfig(preset="tiny", dim=16, hidden=32, batch_size=16, steps=30, proxy_steps=30,
                      diffusion_timesteps=100, diffusion_steps=4, seed=7)
    bridge, _ = train(cfg, data, preset=preset)
    bridge.save(out)
    inputs = fixed_inputs()
    arrays: dict[str, np.ndarray] = {}
    for m, items in inputs.items():
        z = bridge.embed(m, items)
        arrays[f"{m}_vectors"] = z
        arrays[f"{m}_proxy_view"] = bridge.proxy_view(z)
        if m != "text":
            arrays[f"{m}_inputs"] = np.stack(items)
    np.savez_compressed(out / "expected.npz", **arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
