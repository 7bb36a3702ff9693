"""`ebridge train MANIFEST --out DIR`: train a bridge from a pairs manifest; and one option per
TrainConfig setting. Argparse only: what the options do at run time lives in bridge.train.
`--threads` and `--device` are the base layer's (core.cli); importing them from here still works.

Every TrainConfig field is a typed option (`--lambda-proxy 0.5`, `--variant anchor`...),
so the CLI and the dataclass cannot drift apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from core.cli import add_device_option, add_jobs_option, add_threads_option

log = logging.getLogger(__name__)


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _choices() -> dict[str, tuple[str, ...]]:
    from bridge.config import BASES, PROXY_MODELS, PROXY_VIEWS, VARIANTS

    return {"base": BASES, "variant": VARIANTS, "proxy_model": PROXY_MODELS, "proxy_view": PROXY_VIEWS}


AUTO_HELP = {"base": "frozen for CLIP towers; on a label-space preset with image-text pairs, finetune or trained, "
                     "whichever validates best"}


def config_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one option per TrainConfig field (but `skip`), typed from its default."""
    from bridge.config import TrainConfig

    group = parser.add_argument_group("training settings (all recorded in the checkpoint)")
    choices_of = _choices()
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        kind = _flag if isinstance(f.default, bool) else type(f.default)
        choices = choices_of.get(f.name)
        group.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, choices=choices,
                           help=f"default: {f.default}" + (f" (auto: {AUTO_HELP[f.name]})" if f.name in AUTO_HELP else ""))
    add_threads_option(parser, 1)


def given_options(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The TrainConfig settings the user gave on the command line (but `skip`)."""
    from bridge.config import TrainConfig

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace, **overrides: Any):
    from bridge.config import TrainConfig

    return TrainConfig(**{**given_options(args), **overrides})


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the bridge from a pairs manifest (CSV/Parquet)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", type=Path, help="CSV/Parquet: modality, path|text, [label, pair, split]")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--cache", type=Path, default=None, help="frozen-feature cache (default: MANIFEST_DIR/.ebridge-cache)")
    p.add_argument("--train-split", default="train", help="rows of this split train (rows with no split too)")
    p.add_argument("--val-split", default="val", help="rows of this split are used to log validation R@1")
    add_jobs_option(p, "trial runs trained side by side, one core each (--base auto's two; default 0: every core "
                       "on a CPU with --threads 1, else 1)")
    config_options(p)
    add_device_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache
    from bridge.pairs import check_roles, in_split, read_manifest, training_set
    from bridge.train import train
    from core.device import resolve_device, set_threads

    cfg = config_from_args(args)
    device = resolve_device(getattr(args, "device", "auto"))  # fail before any work when it is not here
    rows = read_manifest(args.manifest)
    train_rows, val_rows = in_split(rows, args.train_split, include_unsplit=True), in_split(rows, args.val_split)
    if not train_rows:
        raise ValueError(f"{args.manifest}: no rows in split {args.train_split!r}")
    preset = load_preset(cfg.preset).to(device)  # reads the preset only: no encoder loads before the checks
    check_roles(train_rows, cfg.anchor, cfg.proxy, val_rows, source=str(args.manifest),
                proxy_from_preset=preset.supplies_proxy(cfg.anchor, cfg.proxy, cfg.base))
    set_threads(args.threads)
    cache = FeatureCache(args.cache or args.manifest.parent / ".ebridge-cache")
    data = training_set(train_rows, preset, cache)
    val = training_set(val_rows, preset, cache) if val_rows else None
    # train() records the feature cache (training_set tags the features with it), so `ebridge index`
    # reuses these frozen features instead of encoding the same files again
    from core.workers import default_jobs

    jobs = args.jobs or (default_jobs(device) if args.threads == 1 else 1)  # torch's own threads stay unforked
    bridge, curves = train(cfg, data, val=val, preset=preset, device=device, jobs=jobs)
    bridge.save(args.out, curves)
    # Two figures, two names: each head's `val_r1` (what selection used: both directions, validation
    # queries against validation + training items, as the user's index holds) and `val_only_r1`
    # (per direction, validation items against validation items only).
    print(json.dumps({"checkpoint": str(args.out), "version": bridge.version, "base": bridge.config["base"],
                      "heads": bridge.config["heads"], "val_only_r1": curves.get("val", {})}, indent=2))
    return 0
