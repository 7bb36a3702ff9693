"""The index's copy of its bridge (<index>/bridge/): which bridge a run embeds with, and the copy
installed by building it beside and renaming, so a crash leaves the old copy or the new one.

A run's bridge is the index's copy, the pretrained space of a preset for a new index with none,
or a given checkpoint: installed as the copy, accepted where it extends the copy, refused where it
differs (unless everything is re-embedded). A serving process lends its own loaded bridge.

Example:
    >>> bridge = index_bridge("runs/digits-index")     # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from core.errors import BridgeMismatchError, CheckpointError
from core.files import fsync_dir

log = logging.getLogger(__name__)

BRIDGE_DIR = "bridge"
EXTENDS_DIR = ".bridge.extends"  # the bridge an extension started from, until the store names the new one


def index_bridge(index_path: str | Path) -> Any:
    """The bridge an index was built with (its own copy), for querying it.

    Example:
        >>> bridge = index_bridge("runs/digits-index")     # doctest: +SKIP
    """
    from bridge.space import Bridge

    copy = Path(index_path) / BRIDGE_DIR
    if not (copy / "config.json").is_file():
        raise FileNotFoundError(f"{index_path} has no bridge copy ({copy}); index it once with --bridge CKPT_DIR")
    return Bridge.load(copy)


def check_bridge_given(index_dir: Path, bridge: Any) -> None:
    """Refuse a run whose bridge is not a checkpoint, before anything is created."""
    from bridge.space import CONFIG_FILE

    if isinstance(bridge, (str, Path)) and not (Path(bridge) / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{bridge} is not a bridge checkpoint (no {CONFIG_FILE}); give the folder "
                                "`ebridge train --out` wrote")


def resolve_bridge(index_dir: Path, bridge: Any, *, reembed: bool = False,
                   preset: str | None = None) -> tuple[Any, Any]:
    """The bridge for this run, and the index's previous bridge when the new one *extends* it.

    No `bridge`: the index's copy, or for a new index the pretrained space of `preset` (no
    training, `Bridge.from_preset`). A `bridge` and no copy: it becomes the copy. A different
    one than the copy: accepted when it extends it (the copy's anchor and proxy get the very same
    vectors: a bridge trained on the same pretrained base binding more modalities, or binding anew
    one the pretrained space placed, whose files are then embedded again; see `_extended`), else
    BridgeMismatchError, or with `reembed` the new copy. A damaged copy is restored from the
    given bridge when it has the copy's version, and otherwise raises CheckpointError saying
    which checkpoint restores it.
    """
    from bridge.encoders.presets import DEFAULT_PRESET
    from bridge.space import Bridge

    copy = index_dir / BRIDGE_DIR
    for old in (copy.with_name(".bridge.old"), index_dir / EXTENDS_DIR):
        if not copy.exists() and (old / "config.json").is_file():
            # Killed between the two renames of _install_copy: the old copy is still whole.
            old.rename(copy)
    have_copy = (copy / "config.json").is_file()
    copy_version = _copy_version(copy) if have_copy else None
    if bridge is None and not have_copy:
        bridge = Bridge.from_preset(preset or DEFAULT_PRESET)
        log.info("no bridge given: indexing into the pretrained space of preset %s, with no training (it places "
                 "%s)", bridge.config["preset_name"], ", ".join(bridge.modalities))
    if bridge is None:
        try:
            copy_bridge = Bridge.load(copy)
            if preset is not None and preset != copy_bridge.config.get("preset_name"):
                log.warning("%s was built with preset %s; --preset %s is ignored (the index keeps its own space)",
                            index_dir, copy_bridge.config.get("preset_name"), preset)
            return copy_bridge, _unfinished_extension(index_dir, copy_bridge)
        except CheckpointError as exc:
            zero = _copy_config(copy).get("variant") == "zero-training"
            if not (reembed and zero):
                redo = ("re-run with --reembed: an index built with no training is built again from its preset"
                        if zero else "re-run with --bridge CKPT_DIR, the checkpoint the index was built with")
                raise CheckpointError(f"the index's bridge copy cannot be loaded ({exc}). {redo} (version "
                                      f"{copy_version or 'unknown'})") from None
            bridge = Bridge.from_preset(preset or _copy_config(copy).get("preset_name") or DEFAULT_PRESET)
            log.warning("%s: its zero-training bridge cannot be loaded (%s); --reembed builds it again from preset "
                        "%s", index_dir, exc, bridge.config["preset_name"])
    given = bridge if isinstance(bridge, Bridge) else Bridge.load(bridge)
    extended = None
    if have_copy and isinstance(bridge, (str, Path)) and Path(bridge).resolve() == copy.resolve():
        return given, _unfinished_extension(index_dir, given)
    if have_copy:
        if copy_version == given.version:
            try:
                return Bridge.load(copy), _unfinished_extension(index_dir, given)
            except CheckpointError as exc:
                log.warning("repairing the index's bridge copy from the given checkpoint (%s)", exc)
        elif copy_version is None:
            # Which bridge made the points is still known to the store (checked next).
            log.warning("the index's bridge copy is unreadable; replacing it with the given bridge %s", given.version)
        elif not reembed and (extended := _extended(copy, given)) is not None:
            log.info("bridge %s extends the index's %s: it embeds %s the same way and adds %s; their points keep "
                     "their vectors", given.version, copy_version, ", ".join(extended.modalities),
                     ", ".join(m for m in given.modalities if m not in extended.modalities) or "nothing")
        elif not reembed:
            raise BridgeMismatchError(
                f"{index_dir} was built with bridge {copy_version}, but the given bridge is {given.version}. "
                "Pass --reembed (reembed=True) to re-embed every file with the new bridge, leave --bridge out "
                "to keep the index's own, or index into another folder.")
        else:
            log.warning("re-embedding %s: bridge %s replaces %s", index_dir, given.version, copy_version)
    _install_copy(copy, bridge if not isinstance(bridge, Bridge) else None, given, keep_old=extended is not None)
    return given, extended


def _unfinished_extension(index_dir: Path, bridge: Any) -> Any:
    """The bridge an extension started from, when a run installed `bridge` as the index's copy to extend
    it and stopped before the store named the new version (`finish_extension`): the next run finishes
    the extension (the old points keep their vectors) instead of refusing a mismatch. None otherwise."""
    pending = index_dir / EXTENDS_DIR
    if not (pending / "config.json").is_file():
        return None
    old = _extended(pending, bridge)
    if old is not None:
        log.info("%s: finishing the extension from bridge %s that a stopped run began", index_dir, old.version)
    return old


def finish_extension(index_dir: Path) -> None:
    """The store names the new bridge: the copy of the bridge the extension started from is not needed."""
    shutil.rmtree(index_dir / EXTENDS_DIR, ignore_errors=True)


def _extended(copy: Path, given: Any) -> Any:
    """The index's bridge when `given` extends it, else None: the same preset and space, the copy's
    anchor and proxy embedded exactly as it does (same head kind and tensors: a bridge bound to the
    same pretrained base), and every other modality of the copy still embedded. Those whose head
    changed (a modality the pretrained space placed and the new bridge binds from pairs, such as
    thermal or audio) are re-embedded; the others keep their vectors (`index._adopt_extension`)."""
    from bridge.space import Bridge

    try:
        old = Bridge.load(copy)
    except CheckpointError:
        return None
    if old.config.get("preset_name") != given.config.get("preset_name") or old.dim != given.dim:
        return None
    for m in old.modalities:
        if m not in given.modalities or (m in (old.anchor, old.proxy_role) and not same_head(old, given, m)):
            return None
    rebound = [m for m in old.modalities if not same_head(old, given, m)]
    if rebound:
        log.info("bridge %s binds %s anew: those files are embedded again", given.version, ", ".join(rebound))
    return old


def same_head(old: Any, new: Any, modality: str) -> bool:
    """Whether two bridges embed `modality` identically (head kind and every tensor)."""
    if old.config["head_kinds"].get(modality) != new.config["head_kinds"].get(modality):
        return False
    a, b = old.modules.heads[modality].state_dict(), new.modules.heads[modality].state_dict()
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def lent_bridge(index_dir: Path, bridge: Any) -> Any:
    """A serving process's loaded bridge, used as it is when it is the index copy's version."""
    version = _copy_version(index_dir / BRIDGE_DIR)
    if version != bridge.version:
        raise BridgeMismatchError(f"{index_dir}: the server's bridge is {bridge.version} but the index's copy is "
                                  f"{version}; restart the server so it loads the index's bridge")
    return bridge


def _copy_config(copy: Path) -> dict[str, Any]:
    """The copy's config.json as far as it can be read ({} when it cannot)."""
    try:
        config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _copy_version(copy: Path) -> str | None:
    version = _copy_config(copy).get("version")
    return version if isinstance(version, str) else None


def attach_feature_cache(bridge: Any, folder: str | Path | None) -> None:
    """Reuse the frozen features the bridge's training computed (keyed by decoded content and
    encoder fingerprint, so a file the training read is not encoded again)."""
    if bridge.feature_cache is not None:
        return
    folder = folder or bridge.config.get("feature_cache")
    if not folder:
        return
    path = Path(folder)
    if not path.is_dir() or not os.access(path, os.W_OK):
        log.info("feature cache %s is not a writable folder here; encoding without it", path)
        return
    from bridge.features import FeatureCache

    bridge.feature_cache = FeatureCache(path)
    log.info("reusing frozen features from %s", path)


def _install_copy(copy: Path, source_dir: Any, bridge: Any, keep_old: bool = False) -> None:
    """Put the checkpoint at <index>/bridge/ by building it beside and renaming, so a
    crash leaves the old copy or the new one. `keep_old` (an extension): the old copy stays at
    `EXTENDS_DIR` until the store names the new bridge (`finish_extension`)."""
    tmp = copy.with_name(".bridge.tmp")
    old = copy.with_name(EXTENDS_DIR if keep_old else ".bridge.old")
    shutil.rmtree(tmp, ignore_errors=True)
    if source_dir is not None:
        # copyfile, not copy2: the copy gets the umask's mode, so a checkpoint saved private (0600)
        # still gives an index other users can search.
        shutil.copytree(source_dir, tmp, copy_function=shutil.copyfile)
    else:
        bridge.save(tmp)
    if copy.exists():
        shutil.rmtree(old, ignore_errors=True)
        copy.rename(old)
    tmp.rename(copy)
    fsync_dir(copy.parent)
    if not keep_old:
        shutil.rmtree(old, ignore_errors=True)
    log.info("bridge %s copied into %s", bridge.version, copy)
