"""A trained bridge: preset encoders + heads + proxy synthesizer G, saved as a checkpoint directory.

A checkpoint directory holds `config.json` (preset, roles, variant, every hyperparameter,
seed, which modality pairs were trained with paired data, version) next to
`model.safetensors` and `curves.json`. Loading needs no network: the preset's encoders
load their weights from files.

Example:
    >>> bridge = Bridge.load("runs/bridge")                      # doctest: +SKIP
    >>> z = bridge.embed("text", ["seven", "a spoken seven"])   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bridge.config import DEFAULT_PRESET
from bridge.modalities import check_modality, load
from bridge.route_table import write_route_table
from core.deps import require
from core.errors import CheckpointError
from core.files import atomic_path, atomic_write_json

CONFIG_FILE, WEIGHTS_FILE, CURVES_FILE = "config.json", "model.safetensors", "curves.json"
# Version of the checkpoint layout (config keys, weight names). Checkpoints written before it
# existed have no `format_version` and read as 0; they load as they are (tests/test_compat.py).
# Bump it when an older reader would misread a new checkpoint.
# Format 2 adds instance maps (`instance_maps`, weights `instance.*`); a checkpoint without them is
# still written as format 1, which readers from before them read as they always did.
CHECKPOINT_FORMAT = 2
PROXY_VIEW_SAMPLES = 8
PROXY_VIEW_SEED = 1234


class Bridge:
    """The bridged embedding space, ready to embed any modality it has a head for."""

    def __init__(self, config: dict[str, Any], modules: Any, preset: Any = None,
                 state: dict[str, np.ndarray] | None = None):
        self.config = config
        self._modules = modules  # BridgeModules (torch), built by bridge.train; None: built from `state` on first use
        self._state = state  # a loaded zero-training checkpoint's weights (numpy): its fixed heads need no torch
        self._preset = preset
        self.feature_cache: Any = None  # a bridge.features.FeatureCache, to reuse frozen features
        self.device: Any = None  # torch.device of the heads and G (None = CPU); see `to`

    @property
    def modules(self) -> Any:
        """The torch modules (heads, G, instance maps); a checkpoint loaded with only fixed heads
        builds them on first use, so a search on a CPU embeds its query without importing torch."""
        if self._modules is None:
            self._modules = _torch_modules(self.config, self._state or {})
        return self._modules

    @modules.setter
    def modules(self, value: Any) -> None:
        self._modules = value

    # ------------------------------------------------------------------ device

    def to(self, device: Any = "auto") -> "Bridge":
        """Run the heads, G and the preset's encoders on `device` ("auto" = CUDA when
        available, "cpu", "cuda", "mps"). Vectors still come back float32 numpy, and `save`
        writes CPU tensors, so a bridge trained on a GPU loads and embeds the same on a CPU.

        Example:
            >>> bridge = Bridge.load("runs/bridge").to("auto")   # doctest: +SKIP
        """
        from core.device import resolve_device

        self.device = resolve_device(device)
        self.modules.to(self.device)
        self.preset.to(self.device)
        return self

    # ------------------------------------------------------------------ identity

    @property
    def version(self) -> str:
        """`<preset>-<variant>-<weights hash>`: what every indexed point records."""
        return self.config["version"]

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    @property
    def modalities(self) -> list[str]:
        return list(self.config["feature_dims"])

    @property
    def anchor(self) -> str:
        return self.config["anchor"]

    @property
    def proxy_role(self) -> str:
        return self.config["proxy"]

    def is_paired(self, source: str, target: str) -> bool:
        """True when the two modalities were trained together with paired data (or are equal)."""
        return source == target or sorted((source, target)) in [sorted(p) for p in self.config["paired"]]

    @property
    def preset(self) -> Any:
        if self._preset is None:
            from bridge.encoders import load_preset

            self._preset = load_preset(self.config["preset"])
        return self._preset

    # ------------------------------------------------------------------ embedding

    def _check(self, modality: str) -> None:
        check_modality(modality)
        if modality not in self.config["feature_dims"]:
            raise ValueError(
                f"this bridge ({self.version}) has no head for {modality!r}; "
                f"it was trained for: {', '.join(self.modalities)}"
            )

    def embed_features(self, modality: str, features: np.ndarray) -> np.ndarray:
        """Frozen-encoder features (n, in_dim) -> unit vectors (n, dim) in the bridged space."""
        self._check(modality)
        if self._modules is None and self.device is None:
            return _fixed_head(self.config, self._state or {}, modality, np.asarray(features, dtype=np.float32))
        torch = require("torch")
        head = self.modules.heads[modality]
        head.eval()
        with torch.inference_mode():
            out = head(torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device))
        return out.float().cpu().numpy()

    def encode(self, modality: str, items: Sequence[Any]) -> np.ndarray:
        """Canonical items (see bridge.modalities) -> frozen-encoder features (cached by
        content when `feature_cache` is set: re-indexing with a retrained bridge then costs
        no encoder passes)."""
        self._check(modality)
        if modality == "text":  # a concept space reads a word that names a concept as that concept
            from bridge.labelspace import read_as_concept

            items = read_as_concept(self.config.get("label_space"), list(items))
        if self.feature_cache is not None:
            from bridge.features import encode_cached

            return encode_cached(self.feature_cache, self.preset, modality, list(items))
        return self.preset.encoder(modality).encode(list(items))

    def embed(self, modality: str, items: Sequence[Any]) -> np.ndarray:
        """Canonical items or file paths -> unit vectors (n, dim).

        Example:
            >>> bridge.embed("audio", ["digits/7_jackson_0.wav"]).shape   # doctest: +SKIP
            (1, 256)
        """
        canonical = [load(modality, it) if isinstance(it, (str, Path)) and modality != "text" else it for it in items]
        return self.embed_features(modality, self.encode(modality, canonical))

    def has_instance(self, source: str, target: str) -> bool:
        """Whether an instance map places `source` queries among `target`'s raw features (`instance` route)."""
        return any({m["source"], m["target"]} == {source, target} for m in (self.config.get("instance_maps") or {}).values())

    def instance_embed(self, source: str, target: str, features: np.ndarray) -> np.ndarray:
        """`source` encoder features (n, in_dim) -> unit vectors in `target`'s raw feature space, to be
        compared with the index's `raw_<target>` vectors (the `instance` route, see `bridge.model.InstanceMap`).

        Example:
            >>> bridge.instance_embed("thermal", "image", feats).shape   # doctest: +SKIP
            (1, 1280)
        """
        torch = require("torch")
        for key, m in (self.config.get("instance_maps") or {}).items():
            if {m["source"], m["target"]} == {source, target}:
                imap = self.modules.instance[key].eval()
                with torch.inference_mode():
                    x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
                    out = imap.to_target(x) if m["source"] == source else imap.to_source(x)
                return out.float().cpu().numpy()
        raise ValueError(f"bridge {self.version} has no instance map between {source} and {target}")

    def proxy_view(self, z: np.ndarray) -> np.ndarray:
        """G's view of bridged vectors (n, dim) -> unit vectors (n, dim), as the checkpoint's
        `proxy_view` says: G's posterior mean in one pass ("mean"), or the mean of a few
        samples from fixed noise ("samples", checkpoints written before the setting existed).

        Either way a row's view does not depend on the rest of the batch, so indexing and
        querying agree exactly.
        """
        torch = require("torch")
        g = self.modules.proxy
        if g is None:
            raise ValueError(f"bridge {self.version} has no proxy synthesizer G (a zero-training space): "
                             "search it with the direct route")
        g.eval()
        with torch.inference_mode():
            zt = torch.as_tensor(np.asarray(z, dtype=np.float32), device=self.device)
            if self.config.get("proxy_view", "samples") == "mean":
                out = g.mean(zt)
            else:
                n, d = zt.shape
                gen = torch.Generator().manual_seed(PROXY_VIEW_SEED)  # on the CPU: the same noise on every device
                noise = torch.randn((PROXY_VIEW_SAMPLES, 1, d), generator=gen).to(zt.device).expand(-1, n, -1).reshape(-1, d)
                views = g.sample(zt.repeat(PROXY_VIEW_SAMPLES, 1), noise=noise).reshape(PROXY_VIEW_SAMPLES, n, d)
                out = torch.nn.functional.normalize(views.mean(0), dim=-1)
        return out.float().cpu().numpy()

    # ------------------------------------------------------------------ persistence

    def _weights(self) -> tuple[bytes, str]:
        """The safetensors bytes of every head, map and G, and their short hash (the version's tail)."""
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in self.modules.state_dict().items()}
        blob = save(state)
        return blob, hashlib.sha256(blob).hexdigest()[:12]

    def _set_version(self, digest: str) -> None:
        self.config["weights_sha256"] = digest
        from bridge.provenance import written_by

        fmt = CHECKPOINT_FORMAT if self.config.get("instance_maps") else 1
        self.config.update(format_version=fmt, written_by=written_by())
        self.config["version"] = f"{self.config['preset_name']}-{self.config['variant']}-{digest}"

    def save(self, directory: str | Path, curves: dict[str, Any] | None = None) -> Path:
        """Write config.json + model.safetensors (+ curves.json); sets the version from the weights."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        blob, digest = self._weights()
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            tmp.write_bytes(blob)
        self._set_version(digest)
        atomic_write_json(directory / CONFIG_FILE, self.config)
        if curves is not None:
            atomic_write_json(directory / CURVES_FILE, curves)
        return directory

    @classmethod
    def from_preset(cls, preset: str | Path | Any = DEFAULT_PRESET, extra: Sequence[str] = ()) -> "Bridge":
        """The preset's pretrained space, with no training: the modalities its encoders already align
        (CLIP's image and text towers; offline, images and texts through the image classifier's label
        space, see `bridge.labelspace`), frozen, plus video when its frames go through the aligned
        image encoder. No G: every pair is searched directly. Other modalities are bound to this very
        space later with `ebridge train --preset NAME`. `extra` places more modalities read by the
        aligned image network (depth, thermal) through it as they are: the zero-training baseline a
        bound head must beat, not a space to index them in.

        Example:
            >>> space = Bridge.from_preset("offline")                       # doctest: +SKIP
            >>> space.embed("text", ["a photo of a dog"]).shape             # doctest: +SKIP
            (1, 1000)
        """
        from bridge.encoders import Preset, load_preset
        from bridge.model import build_modules

        p = preset if isinstance(preset, Preset) else load_preset(preset)
        placed = placeable_modalities(p)
        for m in extra:
            if "image" not in placed or p.backbone_key(m) != p.backbone_key("image"):
                raise ValueError(f"preset {p.name!r}: {m} is not read by the aligned image network")
        placed = [m for m in p.modalities if m in placed or m in extra]
        if not placed:
            raise ValueError(
                f"preset {p.name!r} aligns no two modalities, so it has no pretrained space to search with no "
                "training; train a bridge from pairs (`ebridge train PAIRS.csv --preset "
                f"{p.name} --out runs/bridge`) or use a preset that has one (offline, offline-small, clip-vit-b-32)")
        label_space = p.spec.get("label_space")
        pair = next(iter(p.aligned_pairs))
        anchor = "image" if "image" in pair else pair[0]
        feature_dims = {m: p.dim(m) for m in placed}
        kinds = {m: "labelspace" if label_space else "identity" for m in placed}
        maps: dict[str, Any] = {}
        if label_space:
            from bridge.labelspace import label_classes, label_maps, space_dim

            maps = label_maps(p, placed)
            dim = space_dim(maps)
        else:
            dim = feature_dims[anchor]
        config: dict[str, Any] = {
            "preset": str(preset) if not isinstance(preset, Preset) else p.name, "preset_name": p.name,
            "preset_fingerprint": p.fingerprint, "variant": "zero-training", "base": "frozen",
            "anchor": anchor, "proxy": next(m for m in pair if m != anchor), "dim": dim,
            "feature_dims": feature_dims, "head_kinds": kinds, "frozen": sorted(placed),
            "paired": [[a, b] for i, a in enumerate(placed) for b in placed[i + 1:]],
            "heads": {m: {"init": "its label-space vector" if label_space else "identity", "kind": kinds[m]}
                      for m in placed},
            # Search by example takes the encoder's own features: the space's vectors are a function of
            # them (a class distribution, for label space), so they can only lose what tells items apart.
            "same_modality": {f"{m}->{m}": {"route": "raw", "why": "zero-training space: the encoder's own features"}
                              for m in placed},
            **(label_classes(maps) if label_space else {}),
            "label_space": label_space, "proxy_model": None, "hidden": 0, "dropout": 0.0, "temperature": 0.07,
            "version": "unsaved"}
        write_route_table(config, config["same_modality"])
        modules = build_modules(config)
        for m, args in maps.items():
            modules.heads[m].labels.set(**args)
        modules.eval()
        bridge = cls(config, modules, preset=p)
        bridge._set_version(bridge._weights()[1])
        return bridge

    @property
    def has_proxy(self) -> bool:
        """False for a zero-training bridge: no G, so no proxy or fused route."""
        if self._modules is None:
            return self.config.get("proxy_model") is not None
        return self.modules.proxy is not None

    @classmethod
    def load(cls, directory: str | Path, preset: Any = None) -> "Bridge":
        """Load a checkpoint directory written by `save` (no network). `preset`: its encoders, already
        loaded (the bench's, say); by default they load from the config's name on first use.

        A missing, unreadable (permissions) or garbled file raises `CheckpointError` naming it.
        """
        directory = Path(directory)
        cfg_path = directory / CONFIG_FILE
        try:
            os.stat(cfg_path)
        except PermissionError:
            raise CheckpointError(f"{directory}: permission denied; make the checkpoint folder readable (chmod a+rx) "
                                  "or ask its owner") from None
        except OSError:
            pass
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a bridge checkpoint (no {CONFIG_FILE}); train one with `ebridge train`"
            )
        redo = ("restore it from the checkpoint it was copied from (for an index's copy: re-run `ebridge index "
                "DIR --index INDEX --bridge CKPT_DIR`) or train again with `ebridge train`")
        try:
            config = json.loads(cfg_path.read_bytes().decode("utf-8"))
            if not isinstance(config, dict) or "version" not in config:
                raise ValueError("not a bridge config (a JSON object with a version was expected)")
        except PermissionError:
            raise CheckpointError(f"{cfg_path}: permission denied; make it readable (chmod a+r) or ask its owner") from None
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise CheckpointError(f"{cfg_path}: garbled bridge config ({exc}); {redo}") from None
        fmt = config.get("format_version", 0)
        if not isinstance(fmt, int) or fmt > CHECKPOINT_FORMAT:
            wrote = (config.get("written_by") or {}).get("emergentbridge", "a newer version")
            raise CheckpointError(f"{directory}: checkpoint format {fmt!r} (written by emergentbridge {wrote}) is "
                                  f"newer than this version reads ({CHECKPOINT_FORMAT}); upgrade emergentbridge")
        weights = directory / WEIGHTS_FILE
        try:
            # safetensors reports an unreadable file as "No such file or directory": open it ourselves first.
            with open(weights, "rb"):
                pass
        except PermissionError:
            raise CheckpointError(f"{weights}: permission denied (mode {weights.stat().st_mode & 0o777:o}); make it "
                                  "readable (chmod a+r) or ask its owner") from None
        except FileNotFoundError:
            raise CheckpointError(f"{weights}: missing; the checkpoint is incomplete: {redo}") from None
        expected = config.get("weights_sha256")
        if expected and hashlib.sha256(weights.read_bytes()).hexdigest()[:len(expected)] != expected:
            raise CheckpointError(f"{weights}: damaged (its hash differs from the {expected} recorded in "
                                  f"{CONFIG_FILE}); {redo}")
        fixed = _all_heads_fixed(config)
        try:
            if fixed:  # a zero-training space: numpy heads, no torch until something needs it
                from safetensors.numpy import load_file
            else:
                from safetensors.torch import load_file
            state = load_file(str(weights))
        except Exception as exc:  # safetensors raises SafetensorError / OSError for a garbled file
            raise CheckpointError(f"{weights}: cannot read the weights ({exc}); {redo}") from None
        try:
            if fixed:
                _check_fixed_state(config, state)
                return cls(config, None, preset=preset, state=state)
            modules = _torch_modules(config, state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{directory}: cannot load the bridge ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); {redo}") from None
        return cls(config, modules, preset=preset)


def placeable_modalities(preset: Any) -> list[str]:
    """What a preset's pretrained space places with no training (`Preset.places`)."""
    return preset.places()


# ---------------------------------------------------------------------- loading without torch

FIXED_HEAD_KINDS = ("identity", "labelspace")  # `Head.fixed`: nothing trained, a closed-form map


def _all_heads_fixed(config: dict[str, Any]) -> bool:
    """A checkpoint whose heads are all fixed maps, with no G and no instance map (a zero-training
    space): it can embed with numpy alone."""
    kinds = config.get("head_kinds") or {}
    return (all(kinds.get(m) in FIXED_HEAD_KINDS for m in config["feature_dims"])
            and config.get("proxy_model") is None and not config.get("instance_maps"))


def _torch_modules(config: dict[str, Any], state: dict[str, Any]) -> Any:
    """BridgeModules built from the config with `state` (numpy arrays or tensors) loaded into them."""
    torch = require("torch", "the bridge's heads")
    from bridge.model import build_modules

    modules = build_modules(config)
    modules.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return modules.eval()


def _check_fixed_state(config: dict[str, Any], state: dict[str, np.ndarray]) -> None:
    """What `load_state_dict` would refuse in a fixed-head checkpoint: a missing label map, an unknown
    concept table (`bridge.concepts.check_table`, as `bridge.model.BridgeModules` does)."""
    kinds = config.get("head_kinds") or {}
    for m, kind in kinds.items():
        if kind == "labelspace":
            for part in ("weight", "bias", "scale", "cosine"):
                if f"heads.{m}.labels.{part}" not in state:
                    raise KeyError(f"missing heads.{m}.labels.{part}")
    if config.get("label_classes"):
        from bridge.concepts import check_table

        check_table(config)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _fixed_head(config: dict[str, Any], state: dict[str, np.ndarray], modality: str, features: np.ndarray) -> np.ndarray:
    """`Head.forward` of an identity or label-space head (`bridge.model.LabelMap`), in numpy."""
    if (config.get("head_kinds") or {}).get(modality) == "identity":
        return _unit(features).astype(np.float32)
    key = f"heads.{modality}.labels."
    mode = int(state[key + "cosine"])
    x = _unit(features) if mode == 1 else np.log(np.maximum(features, 1e-6)) if mode == 2 else features
    logits = (x @ state[key + "weight"].T + state[key + "bias"]) * float(state[key + "scale"])
    family = (config.get("label_classes") or {}).get(modality)
    from bridge.concepts import concept_table
    from bridge.labelspace import to_label_space

    return to_label_space(logits, None if family is None else concept_table().spread(family))
