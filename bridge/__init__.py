"""The bridged embedding space: modalities and loaders, encoder presets, heads, the proxy anchor G,
training and checkpoints. Of this project it imports only the base layer, `core`.

    bridge/modalities.py   file loaders and each modality's canonical form
    bridge/encoders/       frozen encoders as presets (registry, preprocessing, one module per backbone)
    bridge/features.py     the frozen-feature cache shared by training and indexing
    bridge/labelspace.py   the offline pretrained space: images and texts through the classifier's classes
    bridge/pairs.py        the pairs manifest and the training set built from it
    bridge/config.py       TrainConfig, every setting of a run
    bridge/model.py        heads, G, the losses: the method on one screen
    bridge/train.py        the training stages (parts in optimise, head_plan, trials, route_choice)
    bridge/space.py        `Bridge`: a trained space, saved and loaded as a checkpoint
    bridge/cli.py          `ebridge train`

Importing this package is cheap: torch and the encoders load only when used.

Example:
    >>> from bridge import Bridge, TrainConfig, train, load_preset   # doctest: +SKIP
    >>> space = Bridge.load("runs/bridge")                            # doctest: +SKIP
    >>> space.embed("text", ["a spoken seven"]).shape                 # doctest: +SKIP
    (1, 256)
"""
from __future__ import annotations

import sys
import types

from core.deps import lazy_attributes

# The one version of the package: pyproject.toml, emergentbridge.__version__ and `ebridge --version` read it.
__version__ = "0.2.0.dev0"

# public name -> module holding it; imported on first use so `import bridge` stays light
_PUBLIC = {
    "Bridge": "bridge.space",
    "TrainConfig": "bridge.config",
    "train": "bridge.train",
    "load_preset": "bridge.encoders",
    "read_manifest": "bridge.pairs",
    "training_set": "bridge.pairs",
    "FeatureCache": "bridge.features",
}
__all__ = list(_PUBLIC)

__getattr__ = lazy_attributes('bridge', _PUBLIC)


class _Package(types.ModuleType):
    """`bridge.train` is both a module and the public `train` function. Importing the module makes
    Python set the package attribute `train` to the module, after which `from bridge import train`
    would hand out the module instead of the function; keep the function's name for the function."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            return  # the submodule stays reachable as sys.modules["bridge.train"]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
