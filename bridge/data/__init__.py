"""Data files the engine reads at run time, shipped inside the package (no heavy dependency).

Each file's source, version, licence and sha256 is recorded in `provenance.json` beside it, by
the committed script that made it (`scripts/make_label_data.py` for the ImageNet class names and
the prompt templates); `tests/test_label_data.py` checks every file here has an entry that matches.

Example:
    >>> len(read_lines("imagenet_classes.txt"))
    1000
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent
PROVENANCE_FILE = "provenance.json"


def data_path(name: str) -> Path:
    """The path of the shipped data file `name`; FileNotFoundError naming it and how to remake it."""
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: a data file of the package is missing; reinstall emergentbridge, or in a "
                                "clone re-create it with the script its provenance.json entry names")
    return path


@lru_cache(maxsize=None)
def _text(name: str) -> str:  # read once per process: a label space asks for its prompts class by class
    return data_path(name).read_text(encoding="utf-8")


def read_lines(name: str) -> list[str]:
    """The non-empty lines of a text data file (UTF-8), in order (a new list each call)."""
    return [line for line in _text(name).splitlines() if line]


def read_json(name: str) -> Any:
    """A JSON data file, parsed (a new object each call)."""
    return json.loads(_text(name))
