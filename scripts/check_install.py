#!/usr/bin/env python
"""Install as a user does, then run each preset's zero-training journey: which extra runs which preset.

For every extra asked for: build the wheel from this checkout (`pip wheel . --no-deps`, as the
README says), make a fresh virtualenv, `pip install '<wheel>[EXTRA]'` (plus the documented
`pip install --no-deps aisfx==0.1.2` for offline-sound), then, for each preset that extra runs,
with the network cut where `unshare -n` works and the hub switched off in any case:

    photos   a few of the CIFAR-10 photos shipped in the wheel (query/eval/samples/cifar10), copied
             from the *installed* package (so its package data is checked too), plus two FSDD clips
    index    ebridge index photos --index idx [--preset P]    (no --preset for the default, as in the README)
    search   ebridge search --index idx --text "a ship" --target image -k 3 --json
             (clap: --text "a spoken digit" --target audio: its aligned pair is audio-text)
    encoders every modality of the preset embeds one item (audio through the preset's own audio
             encoder, which a zero-training index skips) and `av` (video decoding) imports

The CLIP and CLAP presets name weights no PyPI package ships: without --clip-weights /
--clap-weights their journey runs the real architecture with random weights (it checks the
install, not the answers), and the report says so. A JSON report (`--out`, with provenance) lists
each extra/preset pair, whether it worked, each step's command, exit code, seconds and output tail.

Each virtualenv holds torch (about 5.5 GB; minutes to install even from the local pip cache), so
this is a script, not a test: one extra at a time, its virtualenv removed after (`--keep` keeps them).

Usage::

    python -m scripts.check_install --extras offline --out install-check.json
    python -m scripts.check_install                                  # offline, offline-sound, clip, clap
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bridge.config import DEFAULT_PRESET
from bridge.provenance import write_json_report

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("check_install")

# extra -> the presets it runs (the README's install table says the same)
PRESETS_OF = {
    "offline": ["offline", "offline-small"],
    "offline-sound": ["offline-sound"],
    "clip": ["clip-vit-b-32"],
    "clap": ["clap-htsat-unfused"],
}
AISFX = "aisfx==0.1.2"  # the Makefile's AISFX: installed --no-deps (docs/architecture.md says why)
PHOTO_CLASSES = ("ship", "cat", "airplane")
PHOTOS_PER_CLASS = 2
TAIL = 2000


@dataclass
class Step:
    name: str
    command: list[str]
    returncode: int
    seconds: float
    output_tail: str  # stderr, then stdout
    stdout: str = field(default="", repr=False)


@dataclass
class Journey:
    extra: str
    preset: str
    ok: bool = False
    weights: str = "shipped"
    hits: list[dict] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


def run(name: str, command: list[str], *, cwd: Path, env: dict[str, str] | None = None, offline: bool = False,
        timeout: float = 1800) -> Step:
    """Run one step, logging it; the network is cut for `offline` steps where `unshare -n` works."""
    argv = (["unshare", "-n"] if offline and _can_cut_network() else []) + command
    log.info("[%s] %s", name, " ".join("<script>" if "\n" in a else a for a in command))
    t0 = time.perf_counter()
    try:
        out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, text, stdout = out.returncode, out.stderr + out.stdout, out.stdout
    except subprocess.TimeoutExpired as exc:
        rc, text, stdout = 124, f"timed out after {timeout:.0f}s: {exc}", ""
    step = Step(name, command, rc, round(time.perf_counter() - t0, 1), text[-TAIL:], stdout)
    if rc:
        log.error("[%s] exit %d:\n%s", name, rc, step.output_tail)
    return step


_CUT: bool | None = None


def _can_cut_network() -> bool:
    global _CUT
    if _CUT is None:
        _CUT = shutil.which("unshare") is not None and subprocess.run(
            ["unshare", "-n", "true"], capture_output=True).returncode == 0
    return _CUT


def build_wheel(work: Path) -> Path:
    dist = work / "dist"
    step = run("wheel", [sys.executable, "-m", "pip", "wheel", str(REPO), "-w", str(dist), "--no-deps", "-q"],
               cwd=work)
    if step.returncode:
        raise SystemExit(f"building the wheel failed:\n{step.output_tail}")
    (wheel,) = dist.glob("emergentbridge-*.whl")
    return wheel


def install(work: Path, wheel: Path, extra: str) -> tuple[Path, list[Step]]:
    """A fresh virtualenv with `wheel[extra]` installed; returns its bin folder and the steps."""
    venv = work / f"venv-{extra}"
    shutil.rmtree(venv, ignore_errors=True)
    steps = [run("venv", [sys.executable, "-m", "venv", str(venv)], cwd=work)]
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    if not steps[-1].returncode:
        steps.append(run("install", pip + [f"{wheel}[{extra}]"], cwd=work))
    if extra == "offline-sound" and not steps[-1].returncode:
        steps.append(run("install aisfx", pip + ["--no-deps", AISFX], cwd=work))
    return venv / "bin", steps


def preset_argument(preset: str, folder: Path, weights: dict[str, str | None]) -> tuple[list[str], str]:
    """The `--preset` arguments for `preset` (none for the default), and what weights it runs on.

    A preset whose weights no package ships is copied with the user's local weights, or with
    `"weights": null` (random initialisation of the real architecture) when none were given."""
    if preset == DEFAULT_PRESET:
        return [], "shipped"
    kind = {"clip-vit-b-32": "clip", "clap-htsat-unfused": "clap"}.get(preset)
    if kind is None:
        return ["--preset", preset], "shipped"
    spec = json.loads((REPO / "bridge" / "encoders" / "presets" / f"{preset}.json").read_text(encoding="utf-8"))
    backbone = "open_clip" if kind == "clip" else "clap"
    for entry in spec["encoders"].values():
        if entry["backbone"] == backbone:
            entry["weights"] = weights.get(kind)
    path = folder / f"{preset}-local.json"
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return ["--preset", str(path)], weights.get(kind) or "random (no local weights given)"


def make_photos(bin_dir: Path, folder: Path, env: dict[str, str]) -> Path:
    """A few shipped sample files, taken from the installed package: photos and two spoken digits."""
    where = subprocess.run([str(bin_dir / "python"), "-c", "import query, pathlib; "
                            "print(pathlib.Path(query.__file__).parent / 'eval' / 'samples')"],
                           cwd=folder, env=env, capture_output=True, text=True, check=True).stdout.strip()
    samples, photos = Path(where), folder / "photos"
    shutil.rmtree(photos, ignore_errors=True)
    for cls in PHOTO_CLASSES:
        (photos / cls).mkdir(parents=True)
        for src in sorted((samples / "cifar10" / cls).glob("*.jpg"))[:PHOTOS_PER_CLASS]:
            shutil.copy(src, photos / cls / src.name)
    (photos / "sounds").mkdir()
    for src in sorted((samples / "digits" / "fsdd").glob("*.flac"))[:2]:
        shutil.copy(src, photos / "sounds" / src.name)
    return photos


ENCODERS_CHECK = """
import sys, pathlib, numpy as np
from bridge.encoders import load_preset
from bridge.modalities import load
from core.deps import require
preset, photos = load_preset(sys.argv[1]), pathlib.Path(sys.argv[2])
items = {"text": "a ship", "image": next(photos.glob("ship/*.jpg")), "audio": next(photos.glob("sounds/*.flac"))}
for m, src in items.items():
    print(m, preset.encoder(m).encode([load(m, src)]).shape)
require("av", "video decoding")
print("video", preset.encoder("video").encode([np.zeros((8, 48, 48, 3), np.uint8)]).shape)
"""


def journey(extra: str, preset: str, bin_dir: Path, work: Path, weights: dict[str, str | None]) -> Journey:
    folder = work / f"journey-{preset}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "EBRIDGE"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), EBRIDGE_CACHE=str(folder / "cache"))
    result = Journey(extra, preset)
    photos = make_photos(bin_dir, folder, env)
    args, result.weights = preset_argument(preset, folder, weights)
    ebridge = str(bin_dir / "ebridge")
    text, target = ("a spoken digit", "audio") if preset == "clap-htsat-unfused" else ("a ship", "image")
    plan = [("index", [ebridge, "index", "photos", "--index", "idx", *args, "--no-progress", "--threads", "1"]),
            ("search", [ebridge, "search", "--index", "idx", "--text", text, "--target", target, "-k", "3",
                        "--json", "--threads", "1"]),
            ("encoders", [str(bin_dir / "python"), "-c", ENCODERS_CHECK, args[1] if args else preset,
                          str(photos)])]
    for name, command in plan:
        step = run(name, command, cwd=folder, env=env, offline=True)
        result.steps.append(step)
        if step.returncode:
            return result
        if name == "search":
            result.hits = [{k: h.get(k) for k in ("path", "label", "score", "route")} for h in json.loads(step.stdout)]
    wanted = min(3, len(list(photos.glob("sounds/*.flac" if target == "audio" else "*/*.jpg"))))
    result.ok = len(result.hits) == wanted  # k=3, or every file of the target modality when fewer
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extras", nargs="+", default=list(PRESETS_OF), choices=list(PRESETS_OF))
    parser.add_argument("--out", default="install-check.json", help="the JSON report (default: %(default)s)")
    parser.add_argument("--work", help="folder for the wheel, virtualenvs and journeys (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep each virtualenv (about 5.5 GB each)")
    parser.add_argument("--clip-weights", help="a local open_clip ViT-B-32 checkpoint for the clip journey")
    parser.add_argument("--clap-weights", help="a local CLAP folder (transformers layout) for the clap journey")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    work = Path(args.work or tempfile.mkdtemp(prefix="ebridge-install-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(work)
    log.info("wheel: %s; network cut for the journeys: %s", wheel.name, _can_cut_network())
    weights = {"clip": args.clip_weights, "clap": args.clap_weights}
    results: list[dict] = []
    for extra in args.extras:
        bin_dir, steps = install(work, wheel, extra)
        installed = not steps[-1].returncode
        for preset in PRESETS_OF[extra]:
            if installed:
                j = journey(extra, preset, bin_dir, work, weights)
                j.steps = steps + j.steps
            else:
                j = Journey(extra, preset, steps=steps)
            log.info("%s / %s: %s", extra, preset, "works" if j.ok else "FAILS")
            record = asdict(j)
            for step in record["steps"]:
                step.pop("stdout")
            results.append(record)
        if not args.keep:
            shutil.rmtree(bin_dir.parent, ignore_errors=True)
    report = {"wheel": wheel.name, "network_cut": _can_cut_network(),
              "works": {f"{r['extra']}/{r['preset']}": r["ok"] for r in results}, "journeys": results}
    write_json_report(args.out, report)
    log.info("report: %s", args.out)
    for pair, ok in report["works"].items():
        log.info("  %-36s %s", pair, "works" if ok else "FAILS")
    return 0 if all(report["works"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
