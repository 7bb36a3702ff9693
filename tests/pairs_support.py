"""A folder of photos and the thermal frames rendered from them, with its pairs manifest: the
README's "bind a new modality" story at test size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def thermal_pairs_folder(root: Path, n: int = 12, val_from: int = 9, seed: int = 3) -> tuple[Path, Path]:
    """`root/data/{photos,thermal}` (20 px photos, each thermal frame its grey copy) and
    `root/pairs.csv` pairing them by key (the last `n - val_from` pairs are `val`). Returns both paths."""
    rng = np.random.default_rng(seed)
    data = root / "data"
    (data / "photos").mkdir(parents=True)
    (data / "thermal").mkdir()
    rows = ["modality,path,pair,split"]
    for i in range(n):
        img = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(img).save(data / "photos" / f"p{i}.png")
        Image.fromarray(img.mean(2).astype(np.uint8)).save(data / "thermal" / f"p{i}_ir.png")
        split = "val" if i >= val_from else "train"
        rows += [f"image,data/photos/p{i}.png,k{i},{split}", f"thermal,data/thermal/p{i}_ir.png,k{i},{split}"]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return data, root / "pairs.csv"
