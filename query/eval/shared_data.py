"""Where the project's full evaluation data sits: `../shared/data` beside the checkout (FSDD,
MNIST, CIFAR-10), or the folder `$EBRIDGE_SHARED_DATA` names. The one definition that the
benchmark scripts and the tests read; `ebridge bench --data` takes any folder instead.

Example:
    >>> shared_data_dir().name
    'data'
"""
from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA_ENV = "EBRIDGE_SHARED_DATA"
# the checkout's parent folder: <parent>/<checkout>/query/eval/shared_data.py -> <parent>/shared/data
_BESIDE_THE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_data_dir() -> Path:
    """`$EBRIDGE_SHARED_DATA` when set, else `../shared/data` relative to the checkout (it may not exist)."""
    override = os.environ.get(SHARED_DATA_ENV)
    return Path(override).expanduser() if override else _BESIDE_THE_CHECKOUT
