"""Binding onto a pretrained space never goes below the encoder across modalities (issue 32): a pair
of modalities read by one encoder is searched through the space, the raw features or the instance
map, whichever validation says, and that choice travels with the checkpoint into the index."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from bridge.config import TrainConfig  # noqa: E402
from bridge.encoders import load_preset  # noqa: E402
from bridge.modalities import load  # noqa: E402
from bridge.model import InstanceMap, instance_loss  # noqa: E402
from bridge.pairs import ModalityData  # noqa: E402
from bridge.space import Bridge  # noqa: E402
from bridge.train import choose_cross_modal_routes, train  # noqa: E402
from indexer import index_directory  # noqa: E402
from query import Index  # noqa: E402

PRESET = "tiny-labels"


pytestmark = pytest.mark.usefixtures("one_thread_fresh_cache")


def _pairs(n: int = 80, seed: int = 1) -> dict[str, ModalityData]:
    """Image-thermal pairs on one encoder where the thermal features sit far off along one direction (a
    sensor offset): the raw features match scenes poorly one way, and a map that learns the offset well."""
    rng = np.random.default_rng(seed)
    imgs = rng.standard_normal((n, 64)).astype(np.float32)
    offset = 4 * rng.standard_normal(64).astype(np.float32)
    thermal = imgs + offset + 0.3 * rng.standard_normal((n, 64)).astype(np.float32)
    keys = [f"p{i}" for i in range(n)]
    return {m: ModalityData(ids=[f"{m}{i}" for i in range(n)], features=x, labels=[None] * n, pairs=keys)
            for m, x in (("image", imgs), ("thermal", thermal))}


def _bind(data: dict[str, ModalityData]) -> Bridge:
    cfg = TrainConfig(preset=PRESET, steps=200, proxy_steps=10, eval_every=20, batch_size=32)
    bridge, _ = train(cfg, data, preset=load_preset(PRESET))
    return bridge


def test_instance_map_starts_at_the_raw_route_and_its_loss_scores_both_directions():
    imap = InstanceMap(8, 8)
    x, y = torch.rand(5, 8), torch.rand(6, 8)
    unit = torch.nn.functional.normalize
    assert torch.allclose(imap.to_target(x), unit(x, dim=-1)) and torch.allclose(imap.to_source(y), unit(y, dim=-1))
    # Same pairs, once as given and once with the target side shuffled: the right pairing costs less.
    right = instance_loss(imap, x, x + 0.01, torch.tensor(30.0))
    wrong = instance_loss(imap, x, (x + 0.01)[torch.tensor([1, 2, 3, 4, 0])], torch.tensor(30.0))
    assert right.item() < wrong.item()


def test_a_head_worse_than_the_raw_features_is_not_the_pairs_route():
    """A thermal head collapsed on purpose (every item on one point) shares its encoder with the
    images: both directions of the pair route `raw` or `instance`, never through that head."""
    data = _pairs()
    bridge = _bind(data)
    head = bridge.modules.heads["thermal"]
    with torch.no_grad():
        for p in head.net.parameters():
            p.zero_()
        head.labels.weight.zero_()  # label-space head: a constant vector for every thermal item
    from bridge.validation import hold_out

    preset = load_preset(PRESET)
    train_part, val = hold_out(data, 0.2, 0)
    routes = choose_cross_modal_routes(bridge, train_part, val, lambda a, b: preset.shares_encoder(a, b, aligned=False))
    for pair in ("thermal->image", "image->thermal"):
        assert routes[pair]["route"] in ("raw", "instance"), routes[pair]
        assert routes[pair]["raw_r1"] > routes[pair]["direct_r1"]
    # Where the offset hides the scenes, the trained instance map clearly beats the raw features.
    assert bridge.config["cross_modal"]["thermal->image"]["route"] == "instance"
    cm = bridge.config["cross_modal"]["thermal->image"]
    assert cm["instance_r1"] > cm["raw_r1"] and cm["wins_losses"]["instance_vs_raw"][0] > 0


def _folder(root, n=8):
    rng = np.random.default_rng(0)
    (root / "photos").mkdir(parents=True)
    (root / "thermal").mkdir()
    for i in range(n):
        img = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "photos" / f"p{i}.png")
        Image.fromarray(255 - img.mean(2).astype(np.uint8)).save(root / "thermal" / f"p{i}_ir.png")
    return root


def test_cross_pair_routes_travel_into_an_extended_index_that_keeps_its_vectors(tmp_path):
    """Zero-training index -> bind thermal -> extend: the photos keep their stored vectors bit for bit,
    the bridge's route table (thermal->image `instance`) is what the index routes by, and the hits are
    the instance map's ranking of the stored raw image features; `--route raw` works across the pair."""
    root = _folder(tmp_path / "data")
    index_directory(root, tmp_path / "idx", preset=PRESET, progress=False)
    with Index.open(tmp_path / "idx") as index:
        before = {r.id: r.vectors for r in index.store.scroll(with_vectors=True)}
    bridge = _bind(_pairs())
    assert bridge.config["routes"]["thermal->image"] == "instance"
    ckpt = bridge.save(tmp_path / "bound")
    assert Bridge.load(ckpt).config["format_version"] == 2  # it holds an instance map
    summary = index_directory(root, tmp_path / "idx", bridge=ckpt, progress=False)
    assert summary.by_modality == {"thermal": 8}
    with Index.open(tmp_path / "idx") as index:
        after = {r.id: r.vectors for r in index.store.retrieve(list(before), with_vectors=True)}
        for pid, vecs in before.items():
            for name, v in vecs.items():
                np.testing.assert_array_equal(after[pid][name], v)  # bit for bit, raw features included
        assert index.bridge.config["cross_modal"] == bridge.config["cross_modal"]
        assert index.route_for("thermal", "image") == "instance"
        query = root / "thermal" / "p3_ir.png"
        hits = index.search(query, target="image", k=8)
        assert {h.route for h in hits} == {"instance"}
        feats = index.bridge.encode("thermal", [load("thermal", query)])
        q = index.bridge.instance_embed("thermal", "image", feats)[0]
        raw = {h.id: np.asarray(index.store.retrieve([h.id], with_vectors=True)[0].vectors["raw_image"]) for h in hits}
        assert [h.id for h in hits] == sorted(raw, key=lambda pid: -float(raw[pid] @ q))
        assert {h.route for h in index.search(query, target="image", k=3, route="raw")} == {"raw"}
        mixed = index.search(query, target=["image", "thermal"], k=4)
        assert {h.route for h in mixed} <= {"instance", "raw"} and {h.modality for h in mixed} == {"image", "thermal"}
        with pytest.raises(Exception, match="instance map"):
            index.search("a photo", target="image", route="instance")


def test_a_lent_base_lends_its_instance_maps_and_a_trial_trains_none(caplog):
    """Issue 29: an instance map reads the raw features alone, never the base or the proxy term, so a
    variant bound on a lent base takes the maps the base's run trained (held on that bridge in memory,
    also where its routes drop them from the checkpoint) rather than training them again; a trial run
    (`instance_maps=False`, `bridge.trials`) is scored by its heads and trains none."""
    import dataclasses
    import logging

    data = _pairs()
    preset = load_preset(PRESET)
    cfg = TrainConfig(preset=PRESET, steps=200, proxy_steps=10, eval_every=20, batch_size=32)
    anchor, _ = train(cfg, data, preset=preset)
    lent = anchor.trained_instance_maps["maps"]["thermal_to_image"]
    with caplog.at_level(logging.INFO, logger="bridge.optimise"):
        variant, curves = train(dataclasses.replace(cfg, variant="naive-proxy"), data, preset=preset, base=anchor)
    assert not any("instance/" in r.getMessage() for r in caplog.records)  # nothing trained again
    kept = variant.trained_instance_maps["maps"]["thermal_to_image"]
    assert kept[0] is lent[0] and kept[1]["lent_by"] == anchor.version
    assert curves["instance/thermal-image"] == lent[2]
    if "thermal_to_image" in (variant.config.get("instance_maps") or {}):  # where its own routes take it
        assert variant.modules.instance["thermal_to_image"] is lent[0]
    trial, _ = train(cfg, data, preset=preset, instance_maps=False)
    assert not trial.config.get("instance_maps") and trial.trained_instance_maps["maps"] == {}


def test_proxy_variants_on_one_lent_base_read_one_bank_of_proxies():
    """Issue 29: G's bank of noisy proxies is drawn by the first proxy variant bound on a lent base and
    read by the next (the same G on the same anchor vectors); `anchor` draws none (it has no proxy term)."""
    import dataclasses

    data = _pairs()
    preset = load_preset(PRESET)
    cfg = TrainConfig(preset=PRESET, steps=40, proxy_steps=10, eval_every=20, batch_size=32)
    anchor, _ = train(cfg, data, preset=preset)
    assert getattr(anchor, "proxy_bank", None) is None
    train(dataclasses.replace(cfg, variant="naive-proxy"), data, preset=preset, base=anchor)
    z_anchor, bank = anchor.proxy_bank
    assert bank.shape[:2] == (len(z_anchor), cfg.proxy_bank)  # per anchor item of the training split
    train(dataclasses.replace(cfg, variant="emergentbridge"), data, preset=preset, base=anchor)
    assert anchor.proxy_bank[1] is bank
