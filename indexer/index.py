"""`index_directory`: one indexing run, from a folder to an up-to-date, self-contained index.

An index folder holds everything needed to search it later:

    <index>/modalities/, collection.json   the embedded Qdrant store, one shard (HNSW graph) per
                                      modality (PartitionedEdgeStore), unless on a server; an index
                                      built before that has <index>/shard/ instead (read as it is)
    <index>/bridge/                   a copy of the bridge checkpoint that made the vectors
    <index>/manifest.parquet          one row per file (+ manifest.journal.jsonl during a run)
    <index>/errors.jsonl              inputs that could not be indexed, with reasons
    <index>/index.json                where the store is, the indexed folder, the last run, and
                                      `optimized` (false from before a run changes points until its
                                      HNSW build is done, so a run killed in between is finished next time)
    <index>/index.lock                held while an indexer runs

A run: (refuse early: no bridge, another folder) -> lock -> bridge (copy / compare / repair)
-> store (create / check; a half-created one is started over) -> manifest (rebuilt from the
store's payloads if damaged) -> scan -> plan -> record `optimized: false` -> remove deleted
files' points -> pipeline (read, embed, write) -> sweep orphans -> optimise -> compact manifest,
write errors report and record. `indexer.faults` lists the crash points the tests kill at.

(Over 500 lines on purpose: every step of a run and its recovery after a crash is in this one file,
in run order, so the crash-safety argument can be read top to bottom.)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from core.device import torch_threads as torch_threads_for_run
from core.errors import BridgeMismatchError, CheckpointError, EmergentBridgeError
from core.files import fsync_dir
from indexer.faults import crash_point
from indexer.hooks import RunHooks
from indexer.ledger import ERRORS_FILE, INDEXED, Manifest, ManifestRow, write_errors_report
from indexer.lock import IndexLock
from indexer.pipeline import Pipeline
from indexer.record import INDEX_FORMAT, read_record, write_record
from indexer.renames import carry_renames
from indexer.scan import ShardSpec, scan_directory
from indexer.verify import StoreDamagedError, check_points, remove_points
from indexer.store import (ID_NAMESPACE, CollectionSpec, PartitionedStore, Point, Store, describe, open_store, point_id,
                           resolve_location)
from indexer.store.types import StoreUnreadableError

log = logging.getLogger(__name__)

BRIDGE_DIR = "bridge"
PAYLOAD_INDEXES = {"modality": "keyword", "label": "keyword", "path": "prefix", "folder": "keyword"}


class IndexRootError(EmergentBridgeError):
    """The index was built from another folder than the one given."""


@dataclass
class IndexSummary:
    """What a run did. `errors` counts the files that failed in this run; the report lists
    every file of the index that is bad now, with its reason."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: int = 0
    ignored: int = 0  # files no modality reads (not errors)
    repaired: int = 0  # damaged points found in the store and embedded again (all of them after a rebuild)
    moved: int = 0  # renamed or moved files whose points were carried over (same bytes: nothing embedded)
    deferred: int = 0  # files left for a later run (a server's watcher: still being written)
    points: int = 0  # points in the collection after the run
    seconds: float = 0.0
    items_per_s: float = 0.0  # indexed items per second of the read/embed/write pipeline
    encode_seconds: float = 0.0
    errors_report: str = ""
    index: str = ""
    store: str = "embedded"
    bridge_version: str = ""
    shard: str | None = None
    by_modality: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # files of modalities the space cannot place

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def index_directory(
    directory: str | Path,
    index_path: str | Path,
    bridge: Any = None,
    *,
    qdrant_url: Any = None,
    collection: str | None = None,
    api_key: str | None = None,
    shards: int = 1,
    replication: int = 1,
    quantization: str | None = None,
    exclude: Iterable[str] = (),
    modality: str | None = None,
    sidecar: str | Path | None = None,
    label_from_folder: bool = False,
    batch_size: int = 64,
    workers: int = 4,
    decode: str = "auto",
    torch_threads: int | None = None,
    device: Any = None,
    shard: ShardSpec | str | None = None,
    reembed: bool = False,
    replace: bool = False,
    wait_for_readers: float = 30.0,
    optimize: bool = True,
    progress: bool = True,
    feature_cache: str | Path | None = None,
    preset: str | None = None,
    hooks: RunHooks | None = None,
) -> IndexSummary:
    """Index (or bring up to date) `directory` into the index at `index_path`.

    `bridge` is a checkpoint directory or a `Bridge`; the index keeps a copy. Without one, a new
    index uses the pretrained space of `preset` (default `offline`) with no training at all:
    photos and texts (and video frames) are embedded, and files of modalities that space cannot
    place are reported as skipped with how to bind them. A bridge trained later on the same preset
    extends the index: its points keep their vectors and the new modalities are added. Any other
    bridge than the index was built with raises `BridgeMismatchError` unless `reembed=True`,
    which re-embeds every file.

    `qdrant_url` selects the server backend: an http(s) URL, `":memory:"`, a folder for
    qdrant-client's local mode, or a `QdrantClient` (left open: the caller owns it).
    The manifest, bridge copy, errors report and lock still live in `index_path`.
    `shard="i/N"` indexes only the files whose path hashes to shard i (0-based) and never
    touches points of other shards' files. `decode` picks reader threads or worker
    processes ("auto": processes from a few hundred files on; the calling script then
    needs the usual `if __name__ == "__main__":` guard only where fork is unavailable).
    `torch_threads` sets torch's intra-op threads for the run (restored after): on a small
    or shared machine 1 is often fastest, since the encoder, the bridge's heads and the
    decoders then overlap instead of fighting over OpenMP teams. `device` ("auto", "cpu",
    "cuda", "mps"; None keeps the bridge where it is) runs encoders, heads and G there;
    decoding stays in the reader workers and batches reach a GPU through pinned memory.

    An index holds one folder: another folder than the one it was built from raises
    `IndexRootError` unless `replace=True`, which drops the old folder's points first.
    `feature_cache` is a `bridge.features.FeatureCache` folder whose frozen features are
    reused (default: the cache the bridge was trained with, recorded by `ebridge train`).
    `hooks` (indexer.hooks.RunHooks) lets a serving process that holds the index lock run this in
    its own store, bridge and progress callbacks (`ebridge serve --watch`).

    Example:
        >>> s = index_directory("data/digits", "runs/digits-index", bridge="runs/bridge")  # doctest: +SKIP
        >>> s.indexed, s.unchanged, s.removed, s.errors                                   # doctest: +SKIP
        (3000, 0, 0, 2)
    """
    t_start = time.perf_counter()
    if device is not None:
        from core.device import resolve_device

        device = resolve_device(device)  # a device that is not here fails before any work
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{directory}: not a folder; give the dataset folder to index")
    index_dir = Path(index_path).resolve()
    if isinstance(shard, str):
        shard = ShardSpec.parse(shard)
    if quantization not in (None, "int8"):
        raise ValueError(f"quantization {quantization!r} is not supported; use 'int8' or leave it off")

    # Everything that can be refused is refused before the index folder is created.
    _check_bridge_given(index_dir, bridge)
    old_record = read_record(index_dir) or {}
    old_root = old_record.get("root")
    moved = old_root is not None and Path(old_root) != root
    if moved and not replace:
        raise IndexRootError(
            f"{index_dir} is the index of {old_root}, not of {root}: indexing another folder into it would "
            f"replace those points. Pass --replace (replace=True) to drop {old_root}'s points and index {root} "
            "instead, or give another --index folder. An index holds one folder (several roots are not "
            "supported): to search several folders together, index their common parent.")

    lock = contextlib.nullcontext() if hooks is not None else IndexLock(index_dir, reader_wait_s=wait_for_readers)
    with lock, torch_threads_for_run(torch_threads):  # a serving process (hooks) holds the lock already
        crash_point("lock")
        extended = None
        if hooks is not None and hooks.bridge is not None:
            the_bridge = _lent_bridge(index_dir, hooks.bridge)
        else:
            the_bridge, extended = resolve_bridge(index_dir, bridge, reembed=reembed, preset=preset)
        if device is not None:
            the_bridge.to(device)
        if hooks is None or hooks.bridge is None:  # a lent bridge also embeds queries: they need no cache
            _attach_feature_cache(the_bridge, feature_cache)
        crash_point("bridge")
        location = resolve_location(index_dir, qdrant_url, collection)
        where = describe(location)
        if hooks is not None and hooks.store is not None:
            store, owned = hooks.store, False  # the server's open store: the engine allows one handle
        else:
            store = _open_or_set_aside(index_dir, qdrant_url, collection, api_key, location, root)
            owned = location["kind"] != "client"  # a QdrantClient the caller passed stays the caller's
        manifest = Manifest(index_dir)
        try:
            created = _prepare_store(store, the_bridge, manifest, shards=shards, replication=replication,
                                     quantization=quantization, reembed=reembed, where=where,
                                     fresh=moved and replace, extends=extended.version if extended else None)
            if moved and replace:
                log.warning("%s: replacing the index of %s by one of %s", index_dir, old_root, root)
            crash_point("store")
            if extended is not None and not created:
                _adopt_extension(store, manifest, extended, the_bridge)
            _update_metadata(store, the_bridge)
            if manifest.damaged is not None and not created:
                n = manifest.rebuild_from(store.scroll(), owns=shard.owns if shard else None)
                log.warning("%s: manifest rebuilt from the store's payloads and the journal (%d rows from the "
                            "store); unchanged files are not embedded again", index_dir, n)
            repaired = _repair_damage(store, manifest, index_dir, where)
            _drop_missing_points(store, manifest)

            scan = scan_directory(root, exclude=exclude, modality=modality, shard=shard, sidecar=sidecar,
                                  label_from_folder=label_from_folder, skip=[index_dir])
            plan = manifest.plan(scan.files, shard=shard, reembed=reembed, bridge_version=the_bridge.version)
            deferred = 0
            if hooks is not None and hooks.defer is not None:
                kept = [f for f in plan.todo if not hooks.defer(f)]
                deferred = hooks.deferred = len(plan.todo) - len(kept)
                plan.todo = kept
            summary = IndexSummary(index=str(index_dir), store=where, bridge_version=the_bridge.version,
                                   shard=str(shard) if shard else None, ignored=len(scan.ignored),
                                   errors_report=str(index_dir / ERRORS_FILE))
            summary.unchanged = len(plan.unchanged)
            summary.repaired = repaired
            summary.deferred = deferred
            log.info("plan: %d to read, %d unchanged, %d deleted", len(plan.todo), len(plan.unchanged),
                     len(plan.deleted))

            # The record says which folder this is and whether the graph is behind the points, *before*
            # the points change: a run killed from here on is finished (optimised) by the next one.
            graph_pending = created or old_record.get("optimized") is False
            if plan.todo or plan.deleted or graph_pending:
                write_record(index_dir, root=str(root), store=location, bridge_version=the_bridge.version,
                             last_run=old_record.get("last_run"), optimized=False)
                graph_pending = True

            if not reembed:
                summary.moved = carry_renames(store, manifest, plan, the_bridge.version)
            if hooks is not None and hooks.on_plan is not None:
                hooks.on_plan(plan)
            summary.removed = _remove_deleted(store, manifest, plan.deleted)
            _record_unreadable(manifest, scan.unreadable, the_bridge.version)
            summary.errors += len(scan.unreadable)

            pipe = Pipeline(the_bridge, store, manifest, batch_size=batch_size, workers=workers,
                            progress=progress, reuse_known=not reembed, decode=decode,
                            on_commit=hooks.on_commit if hooks is not None else None)
            t_pipe = time.perf_counter()
            counts = pipe.run(plan.todo)
            pipe_seconds = time.perf_counter() - t_pipe
            summary.indexed = counts.indexed
            summary.unchanged += counts.unchanged
            summary.errors += counts.errors
            summary.by_modality = dict(counts.by_modality)
            summary.skipped = dict(counts.skipped)
            for m, n in sorted(summary.skipped.items()):
                log.warning("%d %s file(s) skipped: the space of %s cannot place %s. Bind %s to it from a few pairs "
                            "(`ebridge train PAIRS.csv --preset %s --out runs/bridge`), then run `ebridge index %s "
                            "--index %s --bridge runs/bridge`", n, m, the_bridge.config.get("preset_name"), m, m,
                            the_bridge.config.get("preset_name"), directory, index_path)
            summary.encode_seconds = round(counts.encode_seconds, 3)
            summary.items_per_s = round(counts.indexed / pipe_seconds, 2) if counts.indexed and pipe_seconds else 0.0
            crash_point("pipeline")

            _sweep_orphans(store, manifest, root, shard)
            if optimize and graph_pending:
                if not (summary.indexed or summary.removed or created):
                    log.warning("%s: the last run ended before its HNSW build finished; building it now", index_dir)
                crash_point("optimize")
                store.optimize()
                graph_pending = False
            manifest.compact()
            write_errors_report(index_dir / ERRORS_FILE, manifest.errors(), root)
            summary.points = store.count()
            summary.seconds = round(time.perf_counter() - t_start, 3)
            write_record(index_dir, root=str(root), store=location, bridge_version=the_bridge.version,
                         last_run=summary.to_dict(), optimized=not graph_pending)
        finally:
            manifest.close()
            if owned:
                store.close()
            else:
                store.flush()
    log.info("indexed %d, unchanged %d, removed %d, errors %d (report: %s) in %.1fs",
             summary.indexed, summary.unchanged, summary.removed, summary.errors, summary.errors_report,
             summary.seconds)
    return summary


# ---------------------------------------------------------------------- the bridge copy


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


def _check_bridge_given(index_dir: Path, bridge: Any) -> None:
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
    old = copy.with_name(".bridge.old")
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
            return copy_bridge, None
        except CheckpointError as exc:
            raise CheckpointError(
                f"the index's bridge copy is damaged ({exc}). Restore it: re-run with --bridge CKPT_DIR, the "
                f"checkpoint the index was built with (version {copy_version or 'unknown'})") from None
    given = bridge if isinstance(bridge, Bridge) else Bridge.load(bridge)
    extended = None
    if have_copy and isinstance(bridge, (str, Path)) and Path(bridge).resolve() == copy.resolve():
        return given, None
    if have_copy:
        if copy_version == given.version:
            try:
                return Bridge.load(copy), None
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
    _install_copy(copy, bridge if not isinstance(bridge, Bridge) else None, given)
    return given, extended


def _extended(copy: Path, given: Any) -> Any:
    """The index's bridge when `given` extends it, else None: the same preset and space, the copy's
    anchor and proxy embedded exactly as it does (same head kind and tensors: a bridge bound to the
    same pretrained base), and every other modality of the copy still embedded. Those whose head
    changed (a modality the pretrained space placed and the new bridge binds from pairs, such as
    thermal or audio) are re-embedded; the others keep their vectors (`_adopt_extension`)."""
    from bridge.space import Bridge

    try:
        old = Bridge.load(copy)
    except CheckpointError:
        return None
    if old.config.get("preset_name") != given.config.get("preset_name") or old.dim != given.dim:
        return None
    for m in old.modalities:
        if m not in given.modalities or (m in (old.anchor, old.proxy_role) and not _same_head(old, given, m)):
            return None
    rebound = [m for m in old.modalities if not _same_head(old, given, m)]
    if rebound:
        log.info("bridge %s binds %s anew: those files are embedded again", given.version, ", ".join(rebound))
    return old


def _same_head(old: Any, new: Any, modality: str) -> bool:
    """Whether two bridges embed `modality` identically (head kind and every tensor)."""
    if old.config["head_kinds"].get(modality) != new.config["head_kinds"].get(modality):
        return False
    a, b = old.modules.heads[modality].state_dict(), new.modules.heads[modality].state_dict()
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def _lent_bridge(index_dir: Path, bridge: Any) -> Any:
    """A serving process's loaded bridge, used as it is when it is the index copy's version."""
    version = _copy_version(index_dir / BRIDGE_DIR)
    if version != bridge.version:
        raise BridgeMismatchError(f"{index_dir}: the server's bridge is {bridge.version} but the index's copy is "
                                  f"{version}; restart the server so it loads the index's bridge")
    return bridge


def _copy_version(copy: Path) -> str | None:
    try:
        version = json.loads((copy / "config.json").read_text(encoding="utf-8")).get("version")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def _attach_feature_cache(bridge: Any, folder: str | Path | None) -> None:
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


def _install_copy(copy: Path, source_dir: Any, bridge: Any) -> None:
    """Put the checkpoint at <index>/bridge/ by building it beside and renaming, so a
    crash leaves the old copy or the new one."""
    tmp = copy.with_name(".bridge.tmp")
    old = copy.with_name(".bridge.old")
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
    shutil.rmtree(old, ignore_errors=True)
    log.info("bridge %s copied into %s", bridge.version, copy)


# ---------------------------------------------------------------------- the store


def _adopt_extension(store: Store, manifest: Manifest, old: Any, new: Any) -> None:
    """The index's points of modalities the new bridge embeds as the old one did keep their bridged
    (and raw) vectors bit for bit; only their proxy view is G's of the new bridge, computed from the
    stored vector (no file is read or encoded again). A run killed here re-embeds what it had not
    yet moved over, with the same vectors."""
    kept = {m for m in old.modalities if m in new.modalities and _same_head(old, new, m)}
    todo = [r for r in manifest.rows.values() if r.status == INDEXED and r.modality in kept
            and r.bridge_version == old.version]
    for start in range(0, len(todo), 512):
        rows = todo[start:start + 512]
        records = [rec for rec in store.retrieve([r.point_id for r in rows], with_vectors=True)
                   if "bridged" in (rec.vectors or {})]
        views = new.proxy_view(np.stack([np.asarray(rec.vectors["bridged"], np.float32) for rec in records])) \
            if new.has_proxy and records else None  # one G pass for the whole batch
        points = []
        for i, rec in enumerate(records):
            vectors = {k: v for k, v in rec.vectors.items() if k != "proxy"}
            if views is not None:
                vectors["proxy"] = views[i]
            points.append(Point(rec.id, vectors, {**rec.payload, "bridge_version": new.version}))
        store.upsert(points)
        store.flush()
        moved = {str(rec.id) for rec in records}
        manifest.commit([dataclasses.replace(r, bridge_version=new.version) for r in rows if str(r.point_id) in moved])
    if todo:
        log.info("%d points of %s kept their vectors under bridge %s", len(todo), ", ".join(sorted(kept)),
                 new.version)


def raw_vectors(bridge: Any) -> dict[str, int]:
    """The `raw_<modality>` named vectors: each modality's own encoder features (the `raw` route of
    search by example), declared for every modality of the preset so that a bridge binding more
    modalities later never changes the collection's layout."""
    preset = bridge.preset
    return {f"raw_{m}": int(preset.dim(m)) for m in preset.modalities}


def _open_or_set_aside(index_dir: Path, qdrant_url: Any, collection: str | None, api_key: str | None,
                       location: dict[str, Any], root: Path) -> Store:
    """Open the index's store; an embedded store the engine cannot load at all (a truncated
    collection.json, a garbled WAL header, segment.json or id tracker, a partition the manifest lists
    but that is gone) is moved aside, kept for inspection, and a new one is built in its place: the
    source files are all still there, so this run embeds every one of them again (the feature cache
    makes that cheap where it holds them). A server's collection is never dropped here: that is one
    sentence saying what to do. (A partition a killed run left half-made is not damage: the store
    makes it anew when its modality's first point arrives, `PartitionedStore._part`.)"""
    try:
        store = open_store(index_dir, qdrant_url, collection, api_key=api_key, missing_ok=True)
        if isinstance(store, PartitionedStore) and store.exists():
            store._open_parts()  # a per-modality store opens its partitions lazily: load each now, to see damage
        return store
    except StoreUnreadableError as exc:
        if location["kind"] != "embedded":
            name = location.get("collection", "emergentbridge")
            url = location.get("url") or location.get("path") or "URL"
            raise StoreDamagedError(
                f"index {index_dir}: its store ({describe(location)}) cannot be opened ({exc}); index into a new "
                f"collection (`ebridge index {root} --index {index_dir} --qdrant-url {url} --collection NEW_NAME`), or "
                f"delete the collection {name} and its {name}-<modality> collections and run `ebridge index {root} "
                f"--index {index_dir}` again") from None
        from indexer.store.edge import set_aside

        aside = index_dir / f"damaged-store-{time.strftime('%Y%m%d-%H%M%S')}"
        set_aside(index_dir, aside)
        fsync_dir(index_dir)
        log.warning("index %s: the store is damaged (%s); it is moved aside to %s and rebuilt from the source "
                    "files: every file is embedded again", index_dir, exc, aside)
        return open_store(index_dir, qdrant_url, collection, api_key=api_key, missing_ok=True)


def _prepare_store(store: Store, bridge: Any, manifest: Manifest, *, shards: int, replication: int,
                   quantization: str | None, reembed: bool, where: str, fresh: bool = False,
                   extends: str | None = None) -> bool:
    """Create the collection if needed (or, `fresh`, anew), or check that it fits this bridge (or
    holds the vectors of `extends`, the version it extends); True if created."""
    vectors = {"bridged": bridge.dim, "proxy": bridge.dim, **raw_vectors(bridge)}
    spec = CollectionSpec(vectors=vectors, payload_indexes=dict(PAYLOAD_INDEXES), quantization=quantization,
                          shards=shards, replication=replication)
    if store.exists() and not fresh:
        stored_version = store.metadata.get("bridge_version")
        dims_differ = store.spec.vectors != vectors
        if dims_differ and set(store.spec.vectors) == {"bridged", "proxy"} and all(
                store.spec.vectors[k] == vectors[k] for k in ("bridged", "proxy")):
            # An index from before the raw route: it still searches (by its bridged vectors); its
            # points get raw vectors when --reembed rewrites them.
            dims_differ = False
            log.info("%s: made before raw vectors were stored; search by example uses the bridged vectors "
                     "(re-index with --reembed to add them)", where)
        if (stored_version not in (None, bridge.version, extends) or dims_differ) and not reembed:
            raise BridgeMismatchError(
                f"{where}: the collection holds vectors of bridge {stored_version} ({store.spec.vectors}); this "
                f"run's bridge is {bridge.version} ({vectors}). Pass --reembed to re-embed everything, or use "
                "another collection / index folder.")
        if not dims_differ:
            return False
        log.warning("%s: vector sizes change %s -> %s; recreating the collection", where, store.spec.vectors, vectors)
        store.create(spec, recreate=True)
    else:
        # A store that does not "exist" may still have left files behind: a run killed while the
        # engine was creating it. They hold no point anyone recorded: start it over.
        store.create(spec, recreate=True)
    if manifest.rows or manifest.damaged is not None:
        # A fresh collection holds none of the manifest's points: start the bookkeeping over too.
        log.warning("new collection: forgetting the %d manifest rows of the old one", len(manifest.rows))
        manifest.clear()
    return True


def _update_metadata(store: Store, bridge: Any) -> None:
    cfg = bridge.config
    meta = store.metadata
    patch: dict[str, Any] = {
        "preset": cfg.get("preset_name", cfg.get("preset")),
        "preset_fingerprint": cfg.get("preset_fingerprint"),
        "bridge_version": bridge.version,
        "variant": cfg.get("variant"),
        "dims": {"bridged": bridge.dim, "proxy": bridge.dim},
        "roles": {"anchor": cfg.get("anchor"), "proxy": cfg.get("proxy")},
        "paired": cfg.get("paired", []),
        "modalities": list(bridge.modalities),
        "vectors": {"bridged": "bridge.embed", **({"proxy": "bridge.proxy_view(bridged)"} if bridge.has_proxy else {}),
                    **{name: "the encoder's own features" for name in raw_vectors(bridge)}},
        "id_namespace": str(ID_NAMESPACE),
        "index_format": INDEX_FORMAT,
    }
    # Routes are calibrated by the benchmark for one bridge; a new bridge starts with none.
    if meta.get("bridge_version") != bridge.version or "routes" not in meta:
        patch["routes"] = {}
    if any(meta.get(k) != v for k, v in patch.items()):
        store.update_metadata(patch)


def _repair_damage(store: Store, manifest: Manifest, index_dir: Path, where: str) -> int:
    """Check the store's points against the manifest and make damaged ones be embedded again.

    Damaged points (unreadable payload, garbage vectors, wrong or missing point) are removed and
    their manifest rows forgotten, so this run's plan re-embeds their files. When the engine cannot
    even remove them, the collection is rebuilt from the files. Returns how many points will be
    embedded again for it; 0 for a whole store.
    """
    # A point of another bridge version is embedded again by this run's plan anyway (a modality an
    # extending bridge binds anew): it need not carry what this bridge writes (G's view).
    current = store.metadata.get("bridge_version")
    rows = [r for r in manifest.rows.values() if r.status == INDEXED and r.bridge_version in (None, current)]
    if not rows:
        return 0
    check = check_points(store, rows)
    if not check.ok and check.checked < len(rows):  # a sample found damage: find all of it
        check = check_points(store, rows, full_limit=len(rows))
    if check.ok:
        log.debug("%s: %d points checked, all whole", where, check.checked)
        return 0
    log.warning("index %s (%s): %s; their files will be embedded again", index_dir, where, check.summary())
    ids = list(check.damaged)
    try:
        remove_points(store, ids, {r.point_id: r.modality for r in rows})
    except Exception as exc:
        log.warning("index %s: cannot remove the damaged points (%s); rebuilding the collection from the files",
                    index_dir, exc)
        try:
            store.create(store.spec, recreate=True)  # the spec carries the metadata (routes) over
        except Exception as exc2:
            raise StoreDamagedError(
                f"index {index_dir}: the store ({where}) is damaged ({check.summary()}) and could not be rebuilt "
                f"({exc2}); move {index_dir} aside and index the folder into a fresh index folder") from exc2
        manifest.clear()
        return len(rows)
    paths = {r.point_id: r.path for r in rows}
    manifest.commit(deleted=[paths[i] for i in ids])
    return len(ids)


def _drop_missing_points(store: Store, manifest: Manifest) -> None:
    """Forget manifest rows whose point is not in the store, so their files are embedded again."""
    expected = manifest.indexed_count()
    if expected == 0 or store.count() >= expected:
        return
    rows = [r for r in manifest.rows.values() if r.status == INDEXED]
    present: set[Any] = set()
    for i in range(0, len(rows), 1024):
        present.update(rec.id for rec in store.retrieve([r.point_id for r in rows[i:i + 1024]]))
    missing = [r.path for r in rows if r.point_id not in present]
    log.warning("%d manifest rows have no point in the store; they will be embedded again", len(missing))
    manifest.commit(deleted=missing)


def _remove_deleted(store: Store, manifest: Manifest, deleted: list[ManifestRow]) -> int:
    if not deleted:
        return 0
    ids = [r.point_id for r in deleted if r.status == INDEXED]
    if ids:
        store.delete(ids)
        store.flush()
    manifest.commit(deleted=[r.path for r in deleted])
    log.info("removed %d points of deleted files", len(ids))
    return len(ids)


def _record_unreadable(manifest: Manifest, unreadable: list[tuple[str, str]], version: str) -> None:
    rows = [ManifestRow(rel, 0, 0, "", point_id(rel), "", "error", reason, version, time.time())
            for rel, reason in unreadable]
    manifest.commit(rows)


def _sweep_orphans(store: Store, manifest: Manifest, root: Path, shard: ShardSpec | None) -> int:
    """Delete points of this folder that no manifest row accounts for.

    A run killed between a store flush and its journal line leaves such a point; if its
    file is still there it was overwritten under the same id, but if the file was deleted
    meanwhile nothing else would ever remove it. Only checked when the count disagrees.
    """
    expected = {r.point_id for r in manifest.rows.values() if r.status == INDEXED}
    if store.count() == len(expected):
        return 0
    prefix = str(root) + "/"
    orphans = [rec.id for rec in store.scroll()
               if rec.id not in expected and str(rec.payload.get("abs_path", "")).startswith(prefix)
               and (shard is None or shard.owns(str(rec.payload.get("path", ""))))]
    if orphans:
        store.delete(orphans)
        store.flush()
        log.info("removed %d orphan points (written by an interrupted run for files now gone)", len(orphans))
    return len(orphans)
