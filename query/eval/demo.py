"""`ebridge demo`: the whole engine on data the package ships.

First, with no training at all: 200 real CIFAR-10 photos and 14 real sound clips are indexed into
the `offline` preset's pretrained space and searched by words, by a sound and by example. Then the method: it builds the world (real FSDD recordings and MNIST digits, our rendered depth and thermal
views), trains the bridge with the `offline` preset (`anchor` and `emergentbridge` on one
shared base), indexes the test split into the embedded Qdrant store, runs a few
cross-modal searches (unpaired pairs included) and prints a pair-matrix summary.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SEARCHES = [  # (query, source, target, what it shows)
    ("seven", "text", "audio", "text -> audio (unpaired: audio was bound to images only)"),
    ("test/audio/3_theo_0.flac", "audio", "image", "audio -> image (paired)"),
    ("test/audio/5_theo_1.flac", "audio", "depth", "audio -> depth (never paired)"),
    ("test/thermal/", "thermal", "audio", "thermal -> audio (never paired)"),
]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build a small digits world, train, index, search, summarise")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument("--data", type=Path, default=None, help="../shared/data for a bigger world (default: shipped sample)")
    from bridge.config import DEFAULT_PRESET
    from query.eval.digits import DIGITS_PRESET

    p.add_argument("--preset", default=DIGITS_PRESET, help=f"encoder preset of the digits world (default: {DIGITS_PRESET}: "
                   "offline at 128 px, speech_embedding audio)")
    p.add_argument("--space-preset", default=DEFAULT_PRESET, help="preset whose pretrained space the no-training search "
                   f"of the shipped photos and sounds uses (default: {DEFAULT_PRESET})")
    p.add_argument("--steps", type=int, default=400, help="training steps per stage")
    from core.cli import add_threads_option

    add_threads_option(p, None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache
    from bridge.pairs import in_split, read_manifest, training_set
    from bridge.train import TrainConfig, train
    from core.device import set_threads
    from indexer.index import index_directory
    from query.eval.bench import evaluate_index, index_points
    from query.eval.digits import build_digits_world
    from query.search import Index

    set_threads(args.threads)
    out: Path = args.out
    search_photos_untrained(args.space_preset, out)
    world = build_digits_world(out / "world", scale="quick" if args.data else "sample", data_dir=args.data)
    preset = load_preset(args.preset)
    rows = read_manifest(world / "manifest.csv")
    cache = FeatureCache(out / "cache")
    data = training_set(in_split(rows, "train"), preset, cache)
    val = training_set(in_split(rows, "val"), preset, cache)

    results, base = {}, None
    for variant in ("anchor", "emergentbridge"):
        cfg = TrainConfig(preset=args.preset, variant=variant, steps=args.steps, proxy_steps=3 * args.steps)
        bridge, curves = train(cfg, data, val=val, preset=preset, base=base)
        base = base or bridge
        ckpt = bridge.save(out / f"bridge-{variant}", curves)
        index_path = out / f"index-{variant}"
        summary = index_directory(world / "test", index_path, bridge=ckpt, reembed=True)
        print(f"\nindexed {summary.indexed} test items for `{variant}` at {summary.items_per_s} items/s "
              f"({summary.errors} errors) -> {index_path}")
        with Index.open(index_path) as index:
            results[variant] = evaluate_index(index, index_points(index.store, "test/"), ["auto"], max_queries=60)
            if variant == "emergentbridge":
                show_searches(index, world / "test")

    print("\nPair matrix, R@1 % on the test split (auto route):")
    print(f"{'pair':<18}{'paired':>7}{'anchor':>9}{'emergentbridge':>16}")
    for pair, res in results["anchor"].items():
        a, e = 100 * res["auto"]["r1"], 100 * results["emergentbridge"][pair]["auto"]["r1"]
        print(f"{pair:<18}{'yes' if res['paired'] else 'no':>7}{a:>9.1f}{e:>16.1f}")
    for variant, res in results.items():
        unpaired = [p["auto"]["r1"] for p in res.values() if not p["paired"]]
        print(f"mean R@1 over unpaired pairs, {variant}: {100 * np.mean(unpaired):.1f}")
    print("(one seed on the shipped sample, tens of queries per pair, default routes: a few points either way "
          "are noise. `ebridge bench --quick --data ../shared/data` compares the variants over 3 seeds with "
          "lambda and routes chosen on validation.)")
    print(f"\nEverything is under {out}/ ; try: ebridge search --index {out}/index-emergentbridge --text \"nine\" --target depth")
    return 0


SAMPLES = Path(__file__).with_name("samples")
PHOTOS, SOUNDS = SAMPLES / "cifar10", SAMPLES / "sounds"
PHOTO_QUERIES = ["dog", "deer", "a ship at sea", "a red sports car", "a small bird"]
SOUND_QUERIES = ["a dog barking", "rain", "a crying baby", "a helicopter"]


def search_photos_untrained(preset: str, out: Path) -> None:
    """Index a mixed folder (the shipped photos and sounds) into the preset's pretrained space (no
    pairs, no training) and search it by words, by a sound and by example (the raw route)."""
    from bridge.encoders import load_preset
    from bridge.space import placeable_modalities
    from indexer.index import index_directory
    from indexer.store import Filter
    from query.search import Index

    if not load_preset(preset).aligned_pairs:
        print(f"\n(preset {preset} has no pretrained space, so the no-training search is skipped)")
        return
    folder = mixed_folder(out / "mixed-folder")
    index_path = out / "mixed-index"
    summary = index_directory(folder, index_path, preset=preset, label_from_folder=True, exclude=["*.md"],
                              progress=False)
    placed = placeable_modalities(load_preset(preset))
    with Index.open(index_path) as index:
        held = {m: n for m in placed if (n := index.store.count(Filter(must={"modality": m})))}  # a re-run too
        print(f"\nNo training: {summary.indexed + summary.unchanged} shipped files "
              f"({', '.join(f'{n} {m}' for m, n in sorted(held.items()))}) indexed into the pretrained space of "
              f"`{preset}` (it places {', '.join(placed)}) -> {index_path}")
        for text in PHOTO_QUERIES:
            print(f"  {text!r:22} -> photos: " + ", ".join(h.label or "?" for h in index.search(text, target="image", k=5)))
        if "audio" in held:
            for text in SOUND_QUERIES:
                print(f"  {text!r:22} -> sounds: " + ", ".join(h.label or "?" for h in index.search(text, target="audio", k=3)))
            bark = sorted((folder / "sounds" / "dog").iterdir())[0]
            print(f"  a dog's bark ({bark.name}) -> photos: "
                  + ", ".join(h.label or "?" for h in index.search(bark, target="image", k=5)))
            rooster = index.search("a photo of a bird", target="image", k=1)[0]
            print(f"  a photo of a bird ({rooster.path}) -> sounds: "
                  + ", ".join(h.label or "?" for h in index.search({"id": rooster.id}, target="audio", k=3)))
        first = index.search("a photo of a cat", target="image", k=1)[0]
        like = index.search({"id": first.id}, target="image", k=6)[1:]
        print(f"  more like {first.path} (route {like[0].route}) -> " + ", ".join(h.label or "?" for h in like))
    print(f"  try: ebridge search --index {index_path} --text 'a truck' --target image")


def mixed_folder(root: Path) -> Path:
    """photos/<class>/ and sounds/<class>/ copied from the shipped samples (a folder as a user has one)."""
    import shutil

    for src, name in ((PHOTOS, "photos"), (SOUNDS, "sounds")):
        if not (root / name).is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("*.md"))
    return root


def show_searches(index, test_dir: Path) -> None:
    for query, source, target, what in SEARCHES:
        q = query
        if source != "text":
            path = test_dir / query.split("/", 1)[1]
            if path.suffix == "":  # a folder: take its first file
                path = sorted(path.iterdir())[0]
            elif not path.exists():  # the sample may lack that take: any file of that folder
                path = sorted(path.parent.iterdir())[0]
            q = path
        hits = index.search(q, target=target, k=5, source=source)
        shown = repr(q) if source == "text" else f"{Path(q).parent.name}/{Path(q).name} ({_label_of(index, q, test_dir)})"
        print(f"\n{what}\n  query: {shown}  (route: {hits[0].route if hits else '-'})")
        for h in hits:
            print(f"    {h.score:7.4f}  {h.label or '-':<7} {h.path}")


def _label_of(index, path: Path, root: Path) -> str:
    """The query file's own label, read from its point in the index."""
    from indexer.store import Filter

    rel = path.relative_to(root).as_posix()
    found = [r for r in index.store.scroll(Filter(path_prefix=rel)) if r.payload.get("path") == rel]
    return found[0].payload.get("label", "?") if found else "?"
