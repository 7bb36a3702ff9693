#!/usr/bin/env python
"""Indexing throughput: the whole pipeline next to the encoders' own forward passes.

For each modality, on the same `--limit` files and the same batch size: CIFAR-10 test
images and FSDD recordings from ../shared/data; depth maps (16-bit PNG) and thermal
images rendered from MNIST by the digits world's renderer; short MP4 clips (16 frames
panning over a CIFAR-10 photo) for video. The made files are written before any timing.

* **encoder-only**: the items are decoded first (not timed), then the preset encoder's
  `encode` is timed on batch after batch: preprocessing + forward pass, nothing else.
  On a CPU it is timed twice: as the encoders run now (onnxruntime exports for MiniLM and
  EfficientNet-Lite0, `bridge.encoders.onnx_export`) and on eager torch (`"runtime": "torch"`,
  how they ran before), with the per-item cosine between the two runs' features.
* **pipeline**: `index_directory` on a folder holding just those files (symlinks),
  into a fresh embedded index: read + hash + decode, encode, head + proxy view, upsert,
  flush, manifest journal. The pipeline figure is indexed items / pipeline seconds
  (the store's final HNSW build is reported separately: it runs once per index), with the
  wall and CPU seconds of each stage.

With `--repeat N` the two are timed in turn N times each and the median runs are reported
beside every run's figure: on a machine shared with other work, the load then falls on both.

Both use one warmed-up encoder (weights loaded, one batch run) so neither pays a load.
The goal is pipeline >= 0.9 x encoder-only.

With no `--bridge`, a throwaway bridge is trained for the `offline` preset on a few
hundred synthetic features of the right sizes: throughput does not depend on what
the heads learned.

Usage::

    python -m scripts.bench_index                          # 512 images + 512 recordings
    python -m scripts.bench_index --modalities image,audio,depth,thermal,video --limit 256
    python -m scripts.bench_index --limit 2000 --batch-size 64 --json bench-index.json
    python -m scripts.bench_index --bridge runs/bridge --modalities audio
    python -m scripts.bench_index --modalities audio --limit 1024 --zero-training --repeat 5
    # on a GPU: random-init open_clip ViT-B-32 for images (offline preset otherwise), batch 256
    python -m scripts.bench_index --device cuda --open-clip-arch ViT-B-32 --batch-size 256 --limit 4096 \
        --modalities image --workers 8 --json bench-index-gpu.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bridge.config import DEFAULT_PRESET

log = logging.getLogger("bench_index")
SOURCES = {"image": ("cifar10/test", "*/*.jpg"), "audio": ("fsdd/recordings", "*.wav")}
MADE = ("depth", "thermal", "video")  # written into the work folder by `make_files`
# Backbones that run an onnxruntime export of their torch network on a CPU (`bridge.encoders.onnx_export`).
TORCH_EXPORTS = ("minilm", "efficientnet-lite0")


def pick_files(data: Path, modality: str, limit: int) -> list[Path]:
    """An evenly spread, deterministic subset (every class, not just the first folder)."""
    sub, pattern = SOURCES[modality]
    files = sorted((data / sub).glob(pattern))
    if not files:
        raise SystemExit(f"no {modality} files under {data / sub}")
    step = max(1, len(files) // limit)
    return files[::step][:limit]


def make_files(data: Path, modality: str, limit: int, work: Path) -> list[Path]:
    """`limit` files of a modality the shared data does not hold as files, in a folder named
    after the modality (which is how the indexer tells depth and thermal PNGs apart)."""
    from PIL import Image

    out = work / "made" / modality
    out.mkdir(parents=True)
    files = []
    if modality in ("depth", "thermal"):
        from query.eval.digits import load_sources, render_depth, render_thermal

        digits = load_sources(data)[0]
        render = render_depth if modality == "depth" else render_thermal
        rng = np.random.default_rng(0)
        for i in range(limit):
            files.append(out / f"{i:05d}.png")
            Image.fromarray(render(digits[i], rng)).save(files[-1])
        return files
    import av

    for i, photo in enumerate(pick_files(data, "image", limit)):
        big = np.asarray(Image.open(photo).convert("RGB").resize((96, 96), Image.BILINEAR))
        files.append(out / f"{i:05d}.mp4")
        with av.open(str(files[-1]), "w") as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for t in range(16):  # a slow pan across the photo
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[t * 2:t * 2 + 64, t * 2:t * 2 + 64]),
                                                   format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return files


def bench_preset(preset_name: str, open_clip_arch: str | None = None) -> Any:
    """The preset, with its pixel entries (image, depth, thermal, video) swapped for a random-init
    open_clip architecture when `open_clip_arch` is given: its forward pass costs what the
    published weights' would, and no weights are needed."""
    from bridge.encoders import load_preset, preset_from_spec

    preset = load_preset(preset_name)
    if not open_clip_arch:
        return preset
    spec = json.loads(json.dumps(preset.spec))
    for m in ("image", "depth", "thermal", "video"):
        if m in spec["encoders"]:
            spec["encoders"][m] = {"backbone": "open_clip", "arch": open_clip_arch, "weights": None, "size": None,
                                   "mean": [0.5] * 3 if m in ("depth", "thermal") else None,
                                   "std": [0.5] * 3 if m in ("depth", "thermal") else None}
    spec["name"] = f"{preset.name}+{open_clip_arch}-random"
    return preset_from_spec(spec)


def quick_bridge(preset_name: str, seed: int = 0, open_clip_arch: str | None = None, device: str | None = None) -> Any:
    """A bridge for `preset_name` trained in seconds on synthetic features (image, text, audio)."""
    from bridge.pairs import ModalityData
    from bridge.train import TrainConfig, train

    preset = bench_preset(preset_name, open_clip_arch)
    rng = np.random.default_rng(seed)
    data = {}
    for m in ("image", "text", "audio", *MADE):
        d = preset.dim(m)
        n = 40 if m == "text" else 300
        labels = [str(i % 10) for i in range(n)]
        centres = rng.normal(size=(10, d))
        feats = np.stack([centres[int(y)] + rng.normal(size=d) * 0.5 for y in labels]).astype(np.float32)
        data[m] = ModalityData([f"{m}-{i}" for i in range(n)], feats, labels)
    cfg = TrainConfig(preset=preset_name, steps=60, proxy_steps=60, seed=seed)
    bridge, _ = train(cfg, data, preset=preset, device=device)
    bridge._preset = preset
    return bridge


def encoder_only(enc: Any, items: list[Any], batch_size: int) -> tuple[dict[str, Any], np.ndarray]:
    """Time `enc.encode` batch after batch on decoded items; (figures, the features)."""
    from indexer.pipeline import runqueue_seconds

    enc.encode(items[:batch_size])  # warm-up: weights loaded, first-call allocations done
    out = []
    t0, cpu0, queued0 = time.perf_counter(), cpu_seconds(), runqueue_seconds()
    for i in range(0, len(items), batch_size):
        out.append(enc.encode(items[i:i + batch_size]))
    seconds, cpu, queued = time.perf_counter() - t0, cpu_seconds() - cpu0, runqueue_seconds() - queued0
    return ({"items": len(items), "seconds": round(seconds, 3), "items_per_s": round(len(items) / seconds, 2),
             "cpu_seconds": round(cpu, 3), "items_per_cpu_s": round(len(items) / max(cpu, 1e-9), 2),
             "runqueue_seconds": round(queued, 3)}, np.concatenate(out))


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (decode worker processes), user + system."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def baseline_encoder(preset_name: str, modality: str, items: list[Any], batch_size: int) -> dict[str, Any]:
    """Encoder-only figures of another preset's encoder on the same items: the 'before' of a change
    of encoder (offline-sound's aisfx before the offline preset's YAMNet)."""
    from bridge.encoders import load_preset

    figures, _ = encoder_only(load_preset(preset_name).encoder(modality), items, batch_size)
    return {"preset": preset_name, **figures}


def torch_runtime(preset: Any) -> Any:
    """The same preset with every entry on eager torch (`"runtime": "torch"`): the encoders as they ran
    before the onnxruntime exports, to measure the speed-up and the vectors' agreement against."""
    from bridge.encoders import preset_from_spec

    spec = json.loads(json.dumps(preset.spec))
    for entry in spec["encoders"].values():
        entry["runtime"] = "torch"
    spec["name"] = f"{preset.name}+torch"
    return preset_from_spec(spec)


def has_torch_runtime(preset: Any, modality: str) -> bool:
    """Whether the modality's encoder runs an onnxruntime export of a torch network, so that
    `"runtime": "torch"` runs something else (YAMNet is onnxruntime only: its 'torch' run is the same)."""
    return preset.spec["encoders"][modality]["backbone"] in TORCH_EXPORTS


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Per-item cosine between two runtimes' features of the same items."""
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"cosine_min": round(float(cos.min()), 7), "cosine_mean": round(float(cos.mean()), 7)}


def pipeline(bridge: Any, modality: str, files: list[Path], batch_size: int, workers: int,
             work: Path, decode: str, run: int = 0) -> dict[str, Any]:
    """`index_directory` on the files into a fresh index (the `run`-th of this modality)."""
    from indexer.index import index_directory

    src = work / f"{modality}-src"
    if not src.is_dir():
        src.mkdir(parents=True)
        for f in files:  # same files, no copy: the reader still opens and reads every one
            link = src / f.parent.name / f.name  # image: the class folder; depth/thermal/video: the modality's
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(f)
    cpu0 = cpu_seconds()
    s = index_directory(src, work / f"{modality}-index-{run}", bridge=bridge, batch_size=batch_size,
                        workers=workers, decode=decode, progress=False, label_from_folder=(modality == "image"))
    cpu = cpu_seconds() - cpu0
    # CPU of the whole index_directory call (the bridge copy, the manifest record and the graph build
    # included), so per item it is a bound on what the read/embed/write pipeline costs; `stages` says
    # where the pipeline's own wall and CPU time went (indexer.pipeline.RunCounts.stage_seconds)
    return {"items": s.indexed, "errors": s.errors, "items_per_s": s.items_per_s,
            "seconds_pipeline": round(s.indexed / s.items_per_s, 3) if s.items_per_s else None,
            "seconds_total": s.seconds, "encode_seconds": s.encode_seconds, "cpu_seconds_total": round(cpu, 3),
            "items_per_cpu_s_total": round(s.indexed / max(cpu, 1e-9), 2), "stages": s.stages}


def interleaved(bridge: Any, modality: str, files: list[Path], items: list[Any], args: argparse.Namespace,
                work: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Encoder-only and pipeline runs taken in turn (`--repeat` of each), so a machine whose load
    changes meets both alike; each side's median run, every run's figure and the paired ratios."""
    enc_runs, pipe_runs, feats = [], [], None
    for run in range(args.repeat):
        figures, out = encoder_only(bridge.preset.encoder(modality), items, args.batch_size)
        enc_runs.append(figures)
        feats = out if feats is None else feats
        pipe_runs.append(pipeline(bridge, modality, files, args.batch_size, args.workers, work, args.decode, run))
        log.info("%s run %d: encoder-only %.1f items/s, pipeline %.1f items/s", modality, run + 1,
                 enc_runs[-1]["items_per_s"], pipe_runs[-1]["items_per_s"])
    enc, pipe = median_run(enc_runs), median_run(pipe_runs)
    row = {"encoder_only": enc, "pipeline": pipe, "ratio": round(pipe["items_per_s"] / enc["items_per_s"], 3)}
    if args.repeat > 1:
        row["runs"] = {"encoder_only_items_per_s": [r["items_per_s"] for r in enc_runs],
                       "pipeline_items_per_s": [r["items_per_s"] for r in pipe_runs],
                       "encoder_only_cpu_seconds": [r["cpu_seconds"] for r in enc_runs],
                       "pipeline_cpu_seconds_total": [r["cpu_seconds_total"] for r in pipe_runs],
                       "ratio_paired": [round(p["items_per_s"] / e["items_per_s"], 3)
                                        for e, p in zip(enc_runs, pipe_runs)]}
    return row, feats


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median items/s (the lower middle one for an even count): a real run's figures."""
    return sorted(runs, key=lambda r: r["items_per_s"])[(len(runs) - 1) // 2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from core.cli import add_threads_option
    from query.eval.shared_data import shared_data_dir

    p.add_argument("--data", type=Path, default=shared_data_dir(),
                   help="the shared data folder (default: ../shared/data, or $EBRIDGE_SHARED_DATA)")
    p.add_argument("--limit", type=int, default=512, help="files per modality")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--modalities", default="image,audio")
    p.add_argument("--decode", choices=["auto", "threads", "processes"], default="auto")
    add_threads_option(p, None, "torch intra-op threads for both measurements")
    p.add_argument("--bridge", type=Path, default=None, help="checkpoint (default: a quick one on the preset)")
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--open-clip-arch", default=None, metavar="ARCH",
                   help="use a random-init open_clip ARCH (e.g. ViT-B-32) for image/depth/thermal/video")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, mps")
    p.add_argument("--json", type=Path, default=Path("bench-index.json"), help="where to write the figures")
    p.add_argument("--zero-training", action="store_true",
                   help="index with the preset's pretrained space (what `ebridge index DIR` does with no --bridge) "
                        "instead of a quick trained bridge")
    p.add_argument("--baseline-preset", default=None, metavar="PRESET",
                   help="also time PRESET's encoder (encoder-only) on the same items: the 'before' of a change of "
                        "encoder, e.g. offline-sound for audio")
    p.add_argument("--repeat", type=int, default=1,
                   help="encoder-only and pipeline runs taken in turn, N of each (medians reported)")
    p.add_argument("--no-torch-baseline", action="store_true",
                   help="skip the eager-torch encoder-only run (on a CPU it is the 'before' of the onnxruntime exports)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("bridge.train", "indexer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if not args.data.is_dir():
        print(f"skipped: {args.data} is not here (the benchmark needs ../shared/data: CIFAR-10 test "
              "images and FSDD recordings)", file=sys.stderr)
        return 0
    from bridge.space import Bridge

    from core.device import DeviceUnavailableError, resolve_device

    try:
        device = resolve_device(args.device)
    except DeviceUnavailableError as exc:
        raise SystemExit(f"bench_index: {exc}") from None
    if args.bridge:
        bridge = Bridge.load(args.bridge)
    elif args.zero_training:
        bridge = Bridge.from_preset(bench_preset(args.preset, args.open_clip_arch))
    else:
        bridge = quick_bridge(args.preset, open_clip_arch=args.open_clip_arch, device=device)
    bridge.to(device)
    import torch

    from core.device import set_threads

    set_threads(args.threads)
    results: dict[str, Any] = {
        "bridge": bridge.version, "preset": bridge.config.get("preset_name"), "batch_size": args.batch_size,
        "workers": args.workers, "decode": args.decode, "limit": args.limit, "repeat": args.repeat,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "modalities": {},
        "zero_training": bool(args.zero_training and not args.bridge), "load_average_start": os.getloadavg(),
    }
    # On a CPU the encoders run their onnxruntime exports; the torch runtime is the figure before them.
    torch_preset = torch_runtime(bridge.preset) if device.type == "cpu" and not args.no_torch_baseline else None
    results["runtime_baseline"] = "eager torch (runtime: torch), same items and batches" if torch_preset else None
    work = Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        for modality in args.modalities.split(","):
            files = make_files(args.data, modality, args.limit, work) if modality in MADE \
                else pick_files(args.data, modality, args.limit)
            from bridge.modalities import load

            items = [load(modality, f) for f in files]  # decoded up front: not timed
            row, feats = interleaved(bridge, modality, files, items, args, work)
            enc, pipe, ratio = row["encoder_only"], row["pipeline"], row["ratio"]
            if args.baseline_preset:
                row["encoder_only_baseline"] = before = baseline_encoder(args.baseline_preset, modality, items,
                                                                          args.batch_size)
                row["speedup_vs_baseline"] = round(enc["items_per_s"] / before["items_per_s"], 2)
                print(f"{modality:>6}: encoder-only {enc['items_per_s']:.1f} items/s vs {before['items_per_s']:.1f} "
                      f"for {args.baseline_preset} ({row['speedup_vs_baseline']:.2f}x)", flush=True)
            if torch_preset is not None and has_torch_runtime(bridge.preset, modality):
                # before: the same encoder on eager torch, on the same items
                before, feats_torch = encoder_only(torch_preset.encoder(modality), items, args.batch_size)
                row["encoder_only_torch"] = before
                row["speedup_vs_torch"] = round(enc["items_per_s"] / before["items_per_s"], 2)
                row["agreement_vs_torch"] = agreement(feats, feats_torch)
                print(f"{modality:>6}: encoder-only {enc['items_per_s']:.1f} items/s vs {before['items_per_s']:.1f} on "
                      f"eager torch ({row['speedup_vs_torch']:.2f}x), per-item cosine min "
                      f"{row['agreement_vs_torch']['cosine_min']:.7f}", flush=True)
            results["modalities"][modality] = row
            print(f"{modality:>6}: {len(files)} files, batch {args.batch_size}: pipeline {pipe['items_per_s']:.1f} "
                  f"items/s, encoder-only {enc['items_per_s']:.1f} items/s, ratio {ratio:.2f} "
                  f"({'meets' if ratio >= 0.9 else 'below'} the 0.9 goal)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    from bridge.provenance import write_json_report

    write_json_report(args.json, results)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
