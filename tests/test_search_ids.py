"""`Index.search_ids`, the evaluation's lean path (ids and scores, no payload or hit object per point), ranks
exactly as `search_vectors` does, on every route through the real embedded store."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from bridge.config import TrainConfig  # noqa: E402
from bridge.encoders import load_preset  # noqa: E402
from bridge.modalities import load  # noqa: E402
from bridge.pairs import ModalityData  # noqa: E402
from bridge.train import train  # noqa: E402
from indexer import index_directory  # noqa: E402
from query import Index  # noqa: E402
from query.search import QueryError  # noqa: E402

PRESET = "tiny-labels"  # image and thermal read by one encoder: the raw and instance routes apply
ROUTES = ["direct", "proxy", "fused", "raw", "instance", "auto"]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """An index of 12 photos and their thermal copies, built with a bridge that has G and a thermal->image
    instance map (image-thermal pairs with a sensor offset, as in test_cross_routes)."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("search-ids")
    rng = np.random.default_rng(1)
    n = 80
    imgs = rng.standard_normal((n, 64)).astype(np.float32)
    thermal = imgs + 4 * rng.standard_normal(64).astype(np.float32) + 0.3 * rng.standard_normal((n, 64)).astype(np.float32)
    data = {m: ModalityData(ids=[f"{m}{i}" for i in range(n)], features=x, labels=[None] * n,
                            pairs=[f"p{i}" for i in range(n)]) for m, x in (("image", imgs), ("thermal", thermal))}
    bridge, _ = train(TrainConfig(preset=PRESET, steps=200, proxy_steps=10, eval_every=20, batch_size=32), data,
                      preset=load_preset(PRESET))
    folder = root / "data"
    (folder / "photos").mkdir(parents=True)
    (folder / "thermal").mkdir()
    for i in range(12):
        img = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / "photos" / f"p{i}.png")
        Image.fromarray(255 - img.mean(2).astype(np.uint8)).save(folder / "thermal" / f"p{i}_ir.png")
    index_directory(folder, root / "idx", bridge=bridge.save(root / "bridge"), progress=False)
    with Index.open(root / "idx") as opened:
        queries = {m: sorted(folder.glob(f"{sub}/*.png")) for m, sub in (("image", "photos"), ("thermal", "thermal"))}
        yield opened, {m: opened.bridge.encode(m, [load(m, p) for p in paths]) for m, paths in queries.items()}


def _same_ranking(ranked, hits) -> None:
    """The same scores to the bit and the same ids, tied scores compared as sets (the engine orders a
    fused list's ties differently from call to call)."""
    assert ranked.scores.tolist() == [h.score for h in hits]
    groups: dict[float, tuple[set, set]] = {}
    for pid, h in zip(ranked.ids, hits):
        lean, full = groups.setdefault(h.score, (set(), set()))
        lean.add(pid)
        full.add(h.id)
    assert all(lean == full for lean, full in groups.values())


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("source, target", [("thermal", "image"), ("image", "thermal"), ("image", "image")])
def test_search_ids_ranks_as_search_vectors_on_every_route(index, route, source, target):
    opened, features = index
    assert opened.bridge.has_proxy and opened.bridge.has_instance("thermal", "image")
    feats = features[source]
    z = opened.bridge.embed_features(source, feats)
    if route == "instance" and not opened.bridge.has_instance(source, target):
        with pytest.raises(QueryError, match="instance map"):
            opened.search_ids(source, z, target, k=12, route=route, features=feats)
        return
    taken, ranked = opened.search_ids(source, z, target, k=12, route=route, features=feats)
    hits = opened.search_vectors(source, z, target, k=12, route=route, features=feats, level="files")
    assert len(ranked) == len(hits) == len(z)
    assert taken == (opened.route_for(source, target) if route == "auto" else route)
    for r, hs in zip(ranked, hits):
        assert len(r) == 12 and {h.route for h in hs} == {taken}
        _same_ranking(r, hs)


def test_search_ids_asks_one_target(index):
    opened, features = index
    z = opened.bridge.embed_features("image", features["image"])
    with pytest.raises(QueryError, match="one target"):
        opened.search_ids("image", z, ["image", "thermal"], k=5)
