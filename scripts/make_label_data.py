#!/usr/bin/env python
"""Write the label space's run-time data into bridge/data/ from the installed open_clip_torch.

The offline presets place texts among ImageNet's 1,000 classes through prompts made from
templates. Both lists come from open_clip (`open_clip/zero_shot_metadata.py`, MIT licence), but
the engine must not need open_clip (and timm, and more) to read 1,000 names, so they ship as data:

    bridge/data/imagenet_classes.txt   IMAGENET_CLASSNAMES, one a line, in open_clip's order
    bridge/data/templates.json         {"simple": [...], "openai": [...]}: SIMPLE_IMAGENET_TEMPLATES
                                       and OPENAI_IMAGENET_TEMPLATES as format strings with one {}

and `bridge/data/provenance.json` records where each came from (package, version, module,
licence, sha256, this script). Open_clip's templates are lambdas; each is written as the string
it returns for "{}", and the script refuses to write unless every template so written gives,
for every class name, exactly the prompt open_clip's lambda gives (so the class-prompt matrices
cached from open_clip's prompts stay valid).

Usage (in an environment with the `clip` extra)::

    python -m scripts.make_label_data            # rewrite the files; git diff shows any change
    python -m scripts.make_label_data --check    # exit 1 if the files differ from what it would write
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import sys
from pathlib import Path

from bridge.data import DATA_DIR, PROVENANCE_FILE
from core.files import atomic_write, atomic_write_json

log = logging.getLogger("make_label_data")

CLASSES_FILE = "imagenet_classes.txt"
TEMPLATES_FILE = "templates.json"
SOURCE_MODULE = "open_clip/zero_shot_metadata.py"
LICENCE = "MIT (open_clip_torch's LICENSE, Copyright (c) 2012-2021 Gabriel Ilharco, Mitchell Wortsman et al.)"


def as_format_string(template: object, names: list[str]) -> str:
    """open_clip's template lambda as a format string with one {}, checked on every class name."""
    fmt = template("{}")  # type: ignore[operator]
    if fmt.count("{}") != 1 or fmt.replace("{}", "").count("{") or fmt.replace("{}", "").count("}"):
        raise ValueError(f"template {fmt!r} is not a format string with exactly one {{}}")
    for name in names:
        if fmt.format(name) != template(name):  # type: ignore[operator]
            raise ValueError(f"template {fmt!r} gives {fmt.format(name)!r} for {name!r}, open_clip "
                             f"{template(name)!r}")  # type: ignore[operator]
    return fmt


def contents() -> dict[str, str]:
    """The text of each data file, read from the installed open_clip (no weights are loaded)."""
    from core.deps import require

    meta = require("open_clip.zero_shot_metadata", "reading the class names and templates to ship")
    names = [str(n) for n in meta.IMAGENET_CLASSNAMES]
    # (two names occur twice, "missile" and "sunglasses": ImageNet's classes, not its names, are distinct)
    if len(names) != 1000 or any(n != n.strip() or "\n" in n or not n for n in names):
        raise ValueError("open_clip's IMAGENET_CLASSNAMES is not 1,000 one-line names")
    templates = {"simple": [as_format_string(t, names) for t in meta.SIMPLE_IMAGENET_TEMPLATES],
                 "openai": [as_format_string(t, names) for t in meta.OPENAI_IMAGENET_TEMPLATES]}
    return {CLASSES_FILE: "\n".join(names) + "\n",
            TEMPLATES_FILE: json.dumps(templates, indent=1, ensure_ascii=False) + "\n"}


def provenance_entries(files: dict[str, str]) -> dict[str, dict[str, str]]:
    version = importlib.metadata.version("open_clip_torch")
    what = {CLASSES_FILE: "IMAGENET_CLASSNAMES (the ImageNet-1k class names, one a line, in order)",
            TEMPLATES_FILE: "SIMPLE_IMAGENET_TEMPLATES (simple) and OPENAI_IMAGENET_TEMPLATES (openai), each "
                            "lambda written as the format string it returns for '{}'"}
    return {name: {"what": what[name], "source": f"open_clip_torch {version}, {SOURCE_MODULE}",
                   "licence": LICENCE, "made_by": "scripts/make_label_data.py",
                   "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
            for name, text in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the files in bridge/data, write nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    files = contents()
    prov_path = DATA_DIR / PROVENANCE_FILE
    provenance = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {}
    provenance.update(provenance_entries(files))  # other files' entries (made by other scripts) are kept
    if args.check:
        stale = [n for n, text in files.items() if not (DATA_DIR / n).is_file()
                 or (DATA_DIR / n).read_text(encoding="utf-8") != text]
        for name in stale:
            log.error("%s differs from what open_clip_torch %s gives; run python -m scripts.make_label_data",
                      DATA_DIR / name, importlib.metadata.version("open_clip_torch"))
        return 1 if stale else 0
    for name, text in files.items():
        atomic_write(DATA_DIR / name, text)
        log.info("wrote %s", DATA_DIR / name)
    atomic_write_json(prov_path, provenance)
    log.info("wrote %s", prov_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
