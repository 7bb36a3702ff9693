"""The bridge stands on its encoders: a frozen aligned base, heads that start at the encoder's
geometry and are kept only when validation says they help, roles checked before encoding."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.config import TrainConfig  # noqa: E402
from bridge.encoders import load_preset  # noqa: E402
from bridge.model import proxy_loss  # noqa: E402
from bridge.pairs import ModalityData  # noqa: E402
from bridge.train import train  # noqa: E402

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
SMALL = dict(dim=16, hidden=32, batch_size=16, steps=60, proxy_steps=40, diffusion_timesteps=100, diffusion_steps=4,
             eval_every=10, seed=0)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random-init small open_clip, its checkpoint written here, and a preset that declares
    image and text aligned and reads depth through the image tower."""
    open_clip = pytest.importorskip("open_clip")
    root = tmp_path_factory.mktemp("clip")
    (root / "EB-Space-CLIP.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(root / "EB-Space-CLIP.json")
    torch.manual_seed(7)
    model, _, preprocess = open_clip.create_model_and_transforms("EB-Space-CLIP", pretrained=None)
    model.eval()
    torch.save(model.state_dict(), root / "clip.pt")
    entry = {"backbone": "open_clip", "arch_config": "EB-Space-CLIP.json", "weights": "clip.pt"}
    spec = {"name": "space-clip", "aligned": [["image", "text"]],
            "encoders": {"text": entry, "image": {**entry, "size": None, "mean": None, "std": None},
                         "depth": {**entry, "mean": [0.5] * 3, "std": [0.5] * 3}}}
    (root / "space-clip.json").write_text(json.dumps(spec))
    return {"root": root, "model": model, "preprocess": preprocess, "preset": str(root / "space-clip.json"),
            "tokenizer": open_clip.get_tokenizer("EB-Space-CLIP")}


def _clip_training_set(preset, n_classes: int = 4, per_class: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = [f"class{c}" for c in range(n_classes) for _ in range(per_class)]
    images = [np.clip(rng.normal(40 + 50 * int(y[-1]), 25, (40, 40, 3)), 0, 255).astype(np.uint8) for y in labels]
    depths = [np.clip(rng.normal(1 + int(y[-1]), 0.3, (40, 40)), 0.1, None).astype(np.float32) for y in labels]
    texts = [f"a picture of {y}" for y in sorted(set(labels))]
    feats = {"image": preset.encoder("image").encode(images), "depth": preset.encoder("depth").encode(depths),
             "text": preset.encoder("text").encode(texts)}
    data = {m: ModalityData(ids=[f"{m}{i}" for i in range(len(f))], features=f,
                            labels=sorted(set(labels)) if m == "text" else labels) for m, f in feats.items()}
    return data, images, texts


def test_frozen_base_returns_open_clips_own_normalised_embeddings(tiny_clip):
    from PIL import Image

    preset = load_preset(tiny_clip["preset"])
    data, images, texts = _clip_training_set(preset)
    bridge, _ = train(TrainConfig(preset=tiny_clip["preset"], **SMALL), data, preset=preset)
    assert bridge.config["base"] == "frozen" and bridge.dim == 32
    assert bridge.config["head_kinds"]["image"] == bridge.config["head_kinds"]["text"] == "identity"
    model, preprocess = tiny_clip["model"], tiny_clip["preprocess"]
    with torch.inference_mode():
        ref_img = model.encode_image(torch.stack([preprocess(Image.fromarray(i)) for i in images]))
        ref_txt = model.encode_text(tiny_clip["tokenizer"](texts))
    ref_img = torch.nn.functional.normalize(ref_img, dim=-1).numpy()
    ref_txt = torch.nn.functional.normalize(ref_txt, dim=-1).numpy()
    ours_img, ours_txt = bridge.embed("image", images), bridge.embed("text", texts)
    np.testing.assert_allclose(ours_img, ref_img, atol=1e-5)  # preprocessing resamples: float tolerance
    np.testing.assert_allclose(ours_txt, ref_txt, atol=1e-6)
    assert (np.argsort(-(ours_txt @ ours_img.T), axis=1) == np.argsort(-(ref_txt @ ref_img.T), axis=1)).all()
    # An unseen prompt goes through the same frozen text tower: open vocabulary survives.
    unseen = ["a photo of a lighthouse at night"]
    with torch.inference_mode():
        ref_unseen = torch.nn.functional.normalize(model.encode_text(tiny_clip["tokenizer"](unseen)), dim=-1).numpy()
    np.testing.assert_allclose(bridge.embed("text", unseen), ref_unseen, atol=1e-6)


def test_frozen_base_depth_head_starts_at_the_raw_image_tower_and_round_trips(tiny_clip, tmp_path):
    from bridge.space import Bridge

    preset = load_preset(tiny_clip["preset"])
    data, _, _ = _clip_training_set(preset)
    cfg = TrainConfig(preset=tiny_clip["preset"], **{**SMALL, "steps": 0})
    bridge, _ = train(cfg, data, preset=preset)
    head = bridge.config["heads"]["depth"]
    assert head["init"] == "identity (raw features)"
    raw = data["depth"].features / np.linalg.norm(data["depth"].features, axis=1, keepdims=True)
    np.testing.assert_allclose(bridge.embed_features("depth", data["depth"].features), raw, atol=1e-5)
    bridge.save(tmp_path / "ckpt")
    again = Bridge.load(tmp_path / "ckpt")
    np.testing.assert_allclose(again.embed_features("depth", data["depth"].features), raw, atol=1e-5)


def test_orthogonal_proxy_gradient_in_frozen_mode(tiny_clip):
    """With frozen CLIP anchors as u, the projected proxy term has no gradient along u."""
    preset = load_preset(tiny_clip["preset"])
    data, _, _ = _clip_training_set(preset)
    bridge, _ = train(TrainConfig(preset=tiny_clip["preset"], **SMALL), data, preset=preset)
    u = torch.as_tensor(bridge.embed_features("image", data["image"].features))
    proxies = torch.as_tensor(bridge.proxy_view(u.numpy()))
    z = torch.as_tensor(bridge.embed_features("depth", data["depth"].features)).requires_grad_(True)
    proxy_loss(z, proxies, u).backward()
    along_u = (z.grad * u).sum(-1).abs().max().item()
    assert along_u < 1e-6
    z2 = z.detach().clone().requires_grad_(True)
    proxy_loss(z2, proxies, None).backward()
    assert (z2.grad * u).sum(-1).abs().max().item() > 1e-4  # the naive term does pull along u


def _overfitting_pairs(n_train: int = 30, n_val: int = 30, d: int = 48, seed: int = 0):
    """Image and thermal features from one backbone that already agree (shared latent + noise),
    paired one to one: a from-scratch head memorises the few training pairs."""
    rng = np.random.default_rng(seed)

    def part(n, tag):
        latent = rng.normal(size=(n, d))
        out = {}
        for m in ("image", "thermal"):
            feats = (latent + 0.6 * rng.normal(size=(n, d))).astype(np.float32)
            out[m] = ModalityData(ids=[f"{tag}{m}{i}" for i in range(n)], features=feats,
                                  pairs=[f"{tag}{i}" for i in range(n)])
        return out

    return part(n_train, "t"), part(n_val, "v"), load_preset("tiny")  # its image and thermal share one network


def test_selection_keeps_a_head_from_falling_below_the_raw_features():
    train_set, val_set, preset = _overfitting_pairs()
    cfg = dict(SMALL, dim=64, hidden=256, steps=300, proxy_steps=20, dropout=0.0, lr=3e-3, anchor="image",
               proxy="thermal")
    scratch, _ = train(TrainConfig(**cfg, head_init="random", select=False), train_set, val=val_set, preset=preset)
    kept, _ = train(TrainConfig(**cfg), train_set, val=val_set, preset=preset)
    from bridge.validation import PairCheck

    check = PairCheck("thermal", "image", train_set, val_set)
    raw = check.raw()
    scratch_r1 = check.score(scratch.embed_features)
    kept_r1 = check.score(kept.embed_features)
    assert scratch_r1 < raw - 0.1, (scratch_r1, raw)  # the pair set really does make scratch heads overfit
    assert kept_r1 >= raw - 1e-9, (kept_r1, raw)
    assert kept.config["heads"]["thermal"]["raw_r1"] == pytest.approx(raw, abs=1e-4)


def test_without_a_validation_split_pairs_are_held_out_for_selection(caplog):
    train_set, _, preset = _overfitting_pairs(n_train=40)
    caplog.set_level("INFO")
    bridge, _ = train(TrainConfig(**dict(SMALL, anchor="image", proxy="thermal")), train_set, preset=preset)
    assert "held out" in caplog.text
    assert bridge.config["heads"]["thermal"]["relevance"] == "pair"


def test_the_old_preset_info_dict_still_trains_the_same_bridge():
    """`train(preset_info=preset.info())`, from before the preset was passed as one object, warns and
    trains what `train(preset=preset)` trains."""
    train_set, val_set, preset = _overfitting_pairs(n_train=20, n_val=10)
    cfg = TrainConfig(**dict(SMALL, anchor="image", proxy="thermal", steps=20, proxy_steps=10))
    new, _ = train(cfg, train_set, val=val_set, preset=preset)
    with pytest.warns(DeprecationWarning, match="preset=preset"):
        old, _ = train(cfg, train_set, val=val_set, preset_info=preset.info())
    assert old.config == new.config
    x = val_set["thermal"].features
    np.testing.assert_array_equal(old.embed_features("thermal", x), new.embed_features("thermal", x))


def test_role_errors_come_before_any_encoder_loads(tmp_path, monkeypatch, capsys):
    from bridge.encoders.presets import Preset
    from query.cli import main

    def no_encoders(self, modality):
        raise AssertionError(f"an encoder was loaded ({modality}) before the roles were checked")

    monkeypatch.setattr(Preset, "encoder", no_encoders)
    (tmp_path / "m.csv").write_text("modality,text,path,label,split\n"
                                    "text,a dog barking,,dog,train\ntext,rain on a roof,,rain,train\n"
                                    "audio,,a.wav,dog,train\naudio,,b.wav,rain,train\n"
                                    "audio,,c.wav,dog,val\n")
    assert main(["train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "no image rows (the anchor)" in err and "--anchor text --proxy audio" in err
    assert "--anchor image --proxy text" not in err.split("It holds")[1]  # never the roles just refused
    assert len(err.strip().splitlines()) <= 2
    assert "validation split" not in err  # a modality missing from val does not block training (warned instead)
    assert not (tmp_path / ".ebridge-cache").exists()


def test_a_modality_with_one_training_item_still_gets_unit_vectors():
    """Centring a head on its own mean needs a few items: one item minus its mean is zero."""
    rng = np.random.default_rng(0)
    feats = {m: rng.normal(size=(n, 24)).astype(np.float32) for m, n in (("image", 1), ("text", 1), ("depth", 1))}
    data = {m: ModalityData(ids=[m], features=f, labels=["cat"]) for m, f in feats.items()}
    bridge, _ = train(TrainConfig(**dict(SMALL, steps=5, proxy_steps=5)), data, val=data,
                      preset=load_preset("tiny"))  # its image and depth share one network
    for m, f in feats.items():
        assert np.linalg.norm(bridge.embed_features(m, f), axis=1) == pytest.approx(1.0, abs=1e-5), m


def test_zero_training_space_of_a_clip_preset_is_open_clips_own(tiny_clip, tmp_path):
    """`Bridge.from_preset` on a CLIP preset: no training, image and text are open_clip's own
    normalised embeddings (video frames through the same tower), no G, search by example raw."""
    from PIL import Image

    from bridge.space import Bridge

    bridge = Bridge.from_preset(tiny_clip["preset"])
    assert bridge.config["variant"] == "zero-training" and not bridge.has_proxy
    assert set(bridge.modalities) >= {"image", "text"} and bridge.config["routes"]["image->image"] == "raw"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    texts = ["a red square", "a photo of a lighthouse at night"]
    model, preprocess = tiny_clip["model"], tiny_clip["preprocess"]
    with torch.inference_mode():
        ref_img = torch.nn.functional.normalize(
            model.encode_image(torch.stack([preprocess(Image.fromarray(i)) for i in images])), dim=-1).numpy()
        ref_txt = torch.nn.functional.normalize(model.encode_text(tiny_clip["tokenizer"](texts)), dim=-1).numpy()
    np.testing.assert_allclose(bridge.embed("image", images), ref_img, atol=1e-5)
    np.testing.assert_allclose(bridge.embed("text", texts), ref_txt, atol=1e-6)
    with pytest.raises(ValueError, match="no proxy synthesizer"):
        bridge.proxy_view(bridge.embed("text", texts))
