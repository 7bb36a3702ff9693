"""`--device`: resolving names, autocast policy, networks on a device, device-independent outputs.

This machine has no GPU: the CUDA paths are checked for their error here and run for real only
where `torch.cuda.is_available()` (the GPU test at the end skips otherwise).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.encoders import load_preset, preset_from_spec  # noqa: E402
from core.device import DeviceUnavailableError, autocast, resolve_device, to_device, to_numpy  # noqa: E402

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


@no_cuda
def test_cuda_without_cuda_is_one_clear_error():
    with pytest.raises(DeviceUnavailableError, match=r"--device cuda: no CUDA device is available here.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceUnavailableError, match="unknown device 'tpu'.*auto, cpu, cuda, mps"):
        resolve_device("tpu")


def test_autocast_is_a_no_op_on_cpu():
    a = torch.randn(8, 8)
    with autocast(torch.device("cpu")):
        out = a @ a
        assert not torch.is_autocast_enabled("cpu")
    assert out.dtype == torch.float32
    assert torch.equal(out, a @ a)


def test_to_device_and_back_give_float32_numpy():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    t = to_device(x, torch.device("cpu"))
    assert t.device.type == "cpu" and np.array_equal(t.numpy(), x)
    half = to_numpy(torch.from_numpy(x).to(torch.bfloat16))
    assert half.dtype == np.float32 and np.allclose(half, x, atol=0.02)


def test_presets_and_backbones_move_to_a_device():
    preset = load_preset("tiny").to("cpu")
    assert preset.encoder("text").backbone.device.type == "cpu"
    assert preset.encoder("text").encode(["seven"]).dtype == np.float32
    aisfx = preset_from_spec({"name": "x", "encoders": {"audio": {"backbone": "aisfx", "weights": None, "clip_seconds": 1.0}}})
    pytest.importorskip("torchaudio")
    wave = (np.random.default_rng(1).standard_normal(16_000) * 0.1).astype(np.float32)
    before = aisfx.encoder("audio").encode([wave])  # loaded on the CPU by default
    aisfx.to("cpu")  # moving a loaded network
    assert next(aisfx.encoder("audio").backbone.net.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(aisfx.encoder("audio").encode([wave]), before)


def test_bridge_trained_with_a_device_saves_device_independent_weights(tmp_path, tiny_config):
    from bridge.space import Bridge
    from bridge.train import train
    from tests.conftest import synthetic_set

    data = synthetic_set(seed=0)
    on_device, _ = train(tiny_config, data, device="cpu")
    plain, _ = train(tiny_config, data)
    feats = data["audio"].features
    np.testing.assert_allclose(on_device.embed_features("audio", feats), plain.embed_features("audio", feats), atol=1e-6)
    on_device.save(tmp_path / "ckpt")
    loaded = Bridge.load(tmp_path / "ckpt").to("cpu")
    assert loaded.device.type == "cpu"
    z = loaded.embed_features("audio", feats)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, on_device.embed_features("audio", feats), atol=1e-4)
    np.testing.assert_allclose(loaded.proxy_view(z), on_device.proxy_view(z), atol=1e-4)


@no_cuda
@pytest.mark.parametrize("argv", [
    ["train", "missing.csv", "--out", "x", "--device", "cuda"],
    ["index", ".", "--index", "idx", "--device", "cuda"],
    ["search", "--index", "idx", "--text", "seven", "--device", "cuda"],
])
def test_cli_device_cuda_without_cuda_fails_in_one_line(argv, tmp_path, capsys, monkeypatch):
    from query.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device is available here" in err[0], err


def test_cli_verbs_offer_device():
    from query.cli import build_parser

    parser = build_parser()
    for argv in (["train", "m.csv", "--out", "o"], ["index", ".", "--index", "i"], ["search", "--index", "i", "--text", "x"],
                 ["bench"]):
        assert parser.parse_args([*argv, "--device", "cpu"]).device == "cpu"
        assert parser.parse_args(argv).device == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bridge_and_encoders_agree_with_cpu(tmp_path, tiny_config):
    from bridge.space import Bridge
    from bridge.train import train
    from tests.conftest import synthetic_set

    data = synthetic_set(seed=0)
    gpu, _ = train(tiny_config, data, device="cuda")
    gpu.save(tmp_path / "ckpt")
    cpu = Bridge.load(tmp_path / "ckpt")
    feats = data["audio"].features
    np.testing.assert_allclose(cpu.embed_features("audio", feats), gpu.embed_features("audio", feats), atol=1e-4)
    preset = preset_from_spec({"name": "x", "encoders": {"audio": {"backbone": "aisfx", "weights": None, "clip_seconds": 1.0}}})
    wave = (np.random.default_rng(1).standard_normal(16_000) * 0.1).astype(np.float32)
    on_cpu = preset.encoder("audio").encode([wave])
    on_gpu = preset.to("cuda").encoder("audio").encode([wave])
    assert on_gpu.dtype == np.float32
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0.05, atol=0.05)  # bf16 autocast on the GPU
