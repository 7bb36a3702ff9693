"""What each benchmark dataset asks, and its items written out as one benchmark world.

Every dataset goes through the same path: its adapter's records (or the digits world, or
the user's pairs manifest) -> a *world* folder on disk -> the bridge is trained from the
world's pairs manifest, the real indexer indexes its split folders, the router answers.

A world folder holds one folder per split (`train/`, `val/`, `test/`), each with one folder
per modality (files are symbolic links to the dataset's own files; captions and class
prompts are written as `.txt` files) and the indexer's `metadata.csv` sidecar (modality, label,
pair key, split), plus `manifest.csv`, the project's pairs manifest (path, modality, label,
pair, split) that `ebridge train` reads as well.

Each dataset declares (`DatasetSpec`): its anchor and proxy roles, which modality pairs
are trained with paired data and which never are (derived from the roles: the base pair
anchor<->proxy, and every other modality bound to the anchor), how relevance is decided
(same label, same pair key, or `auto`: the pair key when the two sides share any, else the
label), whether its labels make a zero-shot task against class prompts, and its splits.

Example:
    >>> world = prepare_world("esc50", "~/data/ESC-50-master", "bench-out/world")  # doctest: +SKIP
    >>> world.spec.anchor, world.spec.proxy  # doctest: +SKIP
    ('text', 'audio')
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Class prompts: training and evaluation use different wordings, so zero-shot is not a lookup
# of a memorised sentence. `{kind}` is the modality's own word (sound, photo...).
TRAIN_PROMPTS = ("{}", "this is {}", "an example of {}")
KIND_WORDS = {"audio": "sound", "image": "photo", "depth": "photo", "thermal": "photo", "video": "video"}


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset measures and how the bridge is trained on it."""

    name: str
    title: str
    anchor: str
    proxy: str
    relevance: str = "auto"  # "label" | "pair" | "auto"
    zero_shot: bool = False  # labelled items are also classified against class prompts
    splits: str = ""
    source: str = ""  # where to get the data
    notes: str = ""
    adapter_options: dict[str, Any] = field(default_factory=dict)

    def paired(self, modalities: list[str]) -> list[tuple[str, str]]:
        """Modality pairs trained with paired data: the base pair, then each other modality with the anchor."""
        others = [m for m in modalities if m not in (self.anchor, self.proxy)]
        return [(self.anchor, self.proxy), *((m, self.anchor) for m in others)]

    def never_paired(self, modalities: list[str]) -> list[tuple[str, str]]:
        trained = {frozenset(p) for p in self.paired(modalities)}
        return [(a, b) for i, a in enumerate(modalities) for b in modalities[i + 1:] if frozenset((a, b)) not in trained]


SPECS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits", "Digits-world", anchor="image", proxy="text", relevance="label", zero_shot=True,
        splits="by FSDD speaker (4 train, nicolas val, theo test) and by MNIST index range",
        source="built from ../shared/data (FSDD + MNIST), or the sample shipped with the package",
        notes="class prompts are part of the world (training and evaluation wordings differ)"),
    "esc50": DatasetSpec(
        "esc50", "ESC-50", anchor="text", proxy="audio", relevance="label", zero_shot=True,
        splits="folds 1-3 train, fold 4 val, fold 5 test (one fixed split of the 5-fold protocol)",
        source="git clone https://github.com/karolpiczak/ESC-50 (audio/ + meta/esc50.csv)",
        notes="audio and text only: the base pair audio<->text (class prompts paired with clips by label) is "
              "the only pair, so no modality is bound in stage 3 and the three variants coincide; "
              "the task is zero-shot audio classification against class prompts"),
    "nyud": DatasetSpec(
        "nyud", "NYU-Depth v2", anchor="image", proxy="text", relevance="auto", zero_shot=True,
        splits="splits.mat (795 train / 654 test); val = 10% of train frames, drawn by a hash of the frame",
        source="nyu_depth_v2_labeled.mat + splits.mat from cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html",
        notes="10 scene classes; depth is never paired with text, so depth zero-shot is the emergent task"),
    "sunrgbd": DatasetSpec(
        "sunrgbd", "SUN RGB-D", anchor="image", proxy="text", relevance="auto", zero_shot=True,
        splits="allsplit.mat from SUNRGBDtoolbox (train / val / test)",
        source="SUNRGBD.zip + SUNRGBDtoolbox.zip from rgbd.cs.princeton.edu",
        notes="19 scene classes; depth is never paired with text"),
    "llvip": DatasetSpec(
        "llvip", "LLVIP", anchor="image", proxy="text", relevance="auto", zero_shot=True,
        splits="train / test folders; val = 10% of train crops, drawn by a hash of the frame",
        source="github.com/bupt-ai-cz/LLVIP (visible/, infrared/, Annotations/)",
        notes="person and background crops from both cameras; infrared is never paired with text",
        adapter_options={"person_crops": True}),
    "audiocaps": DatasetSpec(
        "audiocaps", "AudioCaps", anchor="text", proxy="audio", relevance="pair",
        splits="dataset/{train,val,test}.csv",
        source="github.com/cdjkim/audiocaps (csv) + the YouTube clips, downloaded by you",
        notes="audio and text only (captions paired with their clip): the variants coincide; "
              "text->audio retrieval by pair key is the task"),
    "clotho": DatasetSpec(
        "clotho", "Clotho", anchor="text", proxy="audio", relevance="pair",
        splits="development -> train, validation -> val, evaluation -> test",
        source="Clotho v2.1, zenodo.org/records/4783391",
        notes="audio and text only (five captions per clip): the variants coincide; "
              "text->audio retrieval by pair key is the task"),
}
DATASETS = (*SPECS, "manifest")


@dataclass(frozen=True)
class WorldItem:
    key: str  # path relative to the world folder: "test/audio/000012_dog.wav"
    modality: str
    label: str | None
    pair: str | None
    split: str


@dataclass
class World:
    """A dataset written as a benchmark world: split folders, sidecars and the pairs manifest."""

    root: Path
    spec: DatasetSpec
    items: list[WorldItem]
    unseen: list[str] = field(default_factory=list)  # classes held out of train and val entirely

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    def rows(self, split: str) -> list[Any]:
        """`bridge.pairs.Row`s of one split (sources are the world's own paths)."""
        from bridge.pairs import Row

        return [Row(it.modality, str(self.root / it.key), it.label, it.pair, it.split)
                for it in self.items if it.split == split]

    def modalities(self, split: str | None = None) -> list[str]:
        from bridge.modalities import MODALITIES

        present = {it.modality for it in self.items if split is None or it.split == split}
        return [m for m in MODALITIES if m in present]

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {m: sum(it.split == s and it.modality == m for it in self.items) for m in self.modalities()}
                for s in SPLITS}


# ------------------------------------------------------------------------------ sources -> items


@dataclass(frozen=True)
class SourceItem:
    """One item before it is written into a world: a file, or inline text."""

    modality: str
    path: str  # absolute file path, "" for inline text
    text: str | None
    label: str | None
    pair: str | None
    split: str


def dataset_items(name: str, data: Path | None, out: Path, scale: str = "quick") -> tuple[DatasetSpec, list[SourceItem]]:
    """The items of dataset `name`: adapter records plus class prompts, or the digits world."""
    if name == "digits":
        from bridge.pairs import read_manifest
        from query.eval.digits import build_digits_world

        src = build_digits_world(out / "digits-source", scale=scale, data_dir=data)
        return SPECS["digits"], [SourceItem(r.modality, r.source, None, r.label, r.pair, r.split or "train")
                                 for r in read_manifest(src / "manifest.csv")]
    if data is None:
        raise ValueError(f"--data is needed for --dataset {name}: the folder (or manifest file) of the dataset")
    from query.eval.datasets import load_dataset

    spec = SPECS[name]
    records = load_dataset(name, data, cache_dir=out / "dataset-cache", **spec.adapter_options) \
        if name in ("nyud", "sunrgbd", "llvip") else load_dataset(name, data, **spec.adapter_options)
    items = [SourceItem(r.modality, r.path, r.text, r.label, r.pair, r.split) for r in records]
    if not any(it.split == "val" for it in items):
        items = carve_val(items)
    if spec.zero_shot:
        items += prompt_items(items)
    return spec, items


def prompt_items(items: list[SourceItem]) -> list[SourceItem]:
    """Class prompts as text items of every split, labelled by class: training wordings in
    train, the field's usual "a sound of ..." / "a photo of ..." in val and test."""
    from query.eval.datasets.common import PROMPT_TEMPLATES, DatasetItem, class_prompts

    out = []
    for split in SPLITS:
        labelled = [DatasetItem(it.path, it.modality, it.label, None, None, split)
                    for it in items if it.split == split and it.label is not None and it.modality != "text"]
        if not labelled:
            continue
        kinds = sorted({r.modality for r in labelled})
        kind = next((k for k in kinds if k != "image"), kinds[0])
        templates = [t.replace("{kind}", KIND_WORDS.get(kind, "photo")) for t in TRAIN_PROMPTS] \
            if split == "train" else [PROMPT_TEMPLATES.get(kind, "a photo of {}")]
        names = sorted({r.label for r in labelled})
        for template in templates:
            for label, prompt in zip(names, class_prompts(labelled, template=template)):
                out.append(SourceItem("text", "", prompt, label, None, split))
    return out


def carve_val(items: list[SourceItem], fraction: float = 0.1) -> list[SourceItem]:
    """A validation split from train, by a hash of the pair key (or path), so paired items stay
    together and the split does not move when items are added. At least one group goes to
    val when train has two or more (tiny datasets)."""
    def group(it: SourceItem) -> str:
        return it.pair or it.path or (it.text or "")

    def draw(key: str) -> float:
        return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    groups = sorted({group(it) for it in items if it.split == "train" and it.modality != "text"}, key=draw)
    chosen = {g for g in groups if draw(g) < fraction} or (set(groups[:1]) if len(groups) > 1 else set())
    if not chosen:
        log.warning("no val split, and too few training items to carve one: settings fall back to the first candidate")
        return items
    log.info("no val split: %d of %d training groups become val (by a hash of each item's pair key or path)",
             len(chosen), len(groups))
    return [SourceItem(it.modality, it.path, it.text, it.label, it.pair, "val")
            if it.split == "train" and group(it) in chosen else it for it in items]


def prompts_for_test(items: list[SourceItem]) -> list[SourceItem]:
    """Zero-shot classes come from the class prompts of any split: when the test split has labelled
    items but no class prompts (labelled text rows without a pair key), each class's prompts of val
    (the evaluation wording), else of train, are copied into the test gallery. Returns the copies."""
    prompts = [it for it in items if it.modality == "text" and it.label is not None and it.pair is None]
    labelled = {it.label for it in items if it.split == "test" and it.modality != "text" and it.label is not None}
    if not prompts or not labelled or any(it.split == "test" for it in prompts):
        return []
    chosen: dict[str, list[SourceItem]] = {}
    for split in ("val", "train"):
        for it in prompts:
            if it.split == split and (it.label not in chosen or chosen[it.label][0].split == split):
                chosen.setdefault(it.label, []).append(it)
    out = [SourceItem(it.modality, it.path, it.text, it.label, None, "test") for its in chosen.values() for it in its]
    log.info("the test split has no class prompts: the %d prompts of %d classes from val/train are its zero-shot "
             "gallery", len(out), len(chosen))
    return out


def manifest_items(path: Path, anchor: str | None, proxy: str | None) -> tuple[DatasetSpec, list[SourceItem]]:
    """The user's pairs manifest: rows with no split train; a missing val split is carved from train."""
    from bridge.pairs import read_manifest

    rows = read_manifest(path)
    items = [SourceItem(r.modality, "" if r.inline else r.source, r.source if r.inline else None, r.label, r.pair,
                        r.split or "train") for r in rows]
    bad = {it.split for it in items} - set(SPLITS)
    if bad:
        raise ValueError(f"{path}: unknown split(s) {sorted(bad)}; use train, val, test (or leave split empty = train)")
    if not any(it.split == "test" for it in items):
        raise ValueError(f"{path}: no rows with split=test; the benchmark scores the test split")
    if not any(it.split == "val" for it in items):
        items = carve_val(items)
    items = items + prompts_for_test(items)
    mods = {it.modality for it in items}
    if anchor is None or proxy is None:
        if {"image", "text"} <= mods:
            anchor, proxy = anchor or "image", proxy or "text"
        elif "text" in mods and len(mods) == 2:
            anchor, proxy = anchor or "text", proxy or next(iter(mods - {"text"}))
        else:
            raise ValueError(f"{path}: cannot tell the anchor and proxy roles of modalities {sorted(mods)}; "
                             "give --anchor and --proxy")
    for role in (anchor, proxy):
        if role not in mods:
            raise ValueError(f"{path}: role modality {role!r} has no items")
    labelled = any(it.label is not None and it.modality == "text" for it in items)
    spec = DatasetSpec("manifest", f"Manifest {path.name}", anchor=anchor, proxy=proxy, relevance="auto",
                       zero_shot=labelled, splits="the manifest's split column (empty = train)", source=str(path))
    return spec, items


# ------------------------------------------------------------------------------ items -> world


def choose_unseen(items: list[SourceItem], unseen: list[str] | int | None, seed: int = 0) -> list[str]:
    """Classes to hold out of training: the names given, or `n` drawn with a fixed seed."""
    if not unseen:
        return []
    classes = sorted({it.label for it in items if it.label is not None and it.split == "test"})
    if isinstance(unseen, int):
        if unseen >= len(classes):
            raise ValueError(f"cannot hold out {unseen} of {len(classes)} classes")
        return sorted(np.random.default_rng(seed).choice(classes, size=unseen, replace=False).tolist())
    missing = set(unseen) - set(classes)
    if missing:
        raise ValueError(f"unseen classes {sorted(missing)} are not test labels ({', '.join(classes)})")
    return sorted(unseen)


def write_world(spec: DatasetSpec, items: list[SourceItem], root: Path, unseen: list[str] = ()) -> World:
    """Write `items` as a world under `root` (replacing what was there); classes in `unseen`
    are left out of train and val entirely (items labelled with them, and items sharing a
    pair key with those)."""
    held = set(unseen)
    drop_pairs = {it.pair for it in items if it.label in held and it.split != "test" and it.pair}
    if root.exists():
        shutil.rmtree(root)
    out: list[WorldItem] = []
    for n, it in enumerate(items):
        if it.split != "test" and (it.label in held or (it.pair and it.pair in drop_pairs)):
            continue
        if it.path:
            name = f"{n:06d}_{_safe(Path(it.path).name)}"
        else:
            name = f"{n:06d}.txt"
        key = f"{it.split}/{it.modality}/{name}"
        dest = root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        if it.path:
            try:
                os.symlink(it.path, dest)
            except OSError:  # file systems without symbolic links
                shutil.copyfile(it.path, dest)
        else:
            dest.write_text((it.text or "") + "\n", encoding="utf-8")
        out.append(WorldItem(key, it.modality, it.label, it.pair, it.split))
    if not any(it.split == "train" for it in out):
        raise ValueError(f"{spec.name}: no training items left")
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "modality", "label", "pair", "split"])
        w.writerows([it.key, it.modality, it.label or "", it.pair or "", it.split] for it in out)
    for split in SPLITS:
        (root / split).mkdir(exist_ok=True)
        with open(root / split / "metadata.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            # modality is stated, not guessed: a path word like "nyu_depth" above the world must not decide it
            w.writerow(["path", "modality", "label", "pair", "split"])
            w.writerows([it.key.split("/", 1)[1], it.modality, it.label or "", it.pair or "", it.split]
                        for it in out if it.split == split)
    with open(root / "gallery.csv", "w", newline="") as fh:  # the sidecar when train + test are indexed together
        w = csv.writer(fh)
        w.writerow(["path", "modality", "label", "pair", "split"])
        w.writerows([it.key, it.modality, it.label or "", it.pair or "", it.split] for it in out if it.split != "val")
    world = World(root, spec, out, sorted(held))
    log.info("%s world at %s: %s%s", spec.name, root, world.counts(),
             f"; unseen classes (held out of train and val): {', '.join(sorted(held))}" if held else "")
    return world


def prepare_world(name: str, data: str | Path | None, out: str | Path, scale: str = "quick",
                  unseen: list[str] | int | None = None, anchor: str | None = None, proxy: str | None = None,
                  seed: int = 0) -> World:
    """Dataset `name` (a key of `SPECS`, or "manifest" with `data` = the manifest file) as a world under `out`.

    Example:
        >>> w = prepare_world("digits", None, "/tmp/w", scale="sample")  # doctest: +SKIP
        >>> w.spec.never_paired(w.modalities())[:2]  # doctest: +SKIP
        [('text', 'audio'), ('text', 'depth')]
    """
    out = Path(out)
    data = Path(data).expanduser() if data is not None else None
    if name == "manifest":
        if data is None or not data.is_file():
            raise ValueError("--dataset manifest needs --data PATH of a pairs manifest (CSV/Parquet)")
        spec, items = manifest_items(data, anchor, proxy)
    elif name in SPECS:
        spec, items = dataset_items(name, data, out, scale)
        if (anchor or proxy) and (anchor, proxy) != (spec.anchor, spec.proxy):
            spec = DatasetSpec(**{**spec.__dict__, "anchor": anchor or spec.anchor, "proxy": proxy or spec.proxy})
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return write_world(spec, items, out / "world", choose_unseen(items, unseen, seed))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[-80:]
