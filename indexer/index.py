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

A run, each step a function named in `index_directory`'s body: refuse early (no bridge, another
folder) -> lock -> open the bridge (copy / compare / repair) and the store -> verify (create or
check the store, a half-created one started over; the manifest rebuilt from the store's payloads
if damaged; damaged points repaired) -> scan -> plan (and record `optimized: false`) -> write the
removals (renames carried, deleted files' points removed) -> embed (the pipeline: read, embed,
write) -> record (sweep orphans, optimise, compact the manifest, errors report and record).
The run's settings are an `IndexOptions` (indexer/options.py); the bridge copy and how it is
installed crash-safely are in indexer/bridge_copy.py. `indexer.faults` lists the crash points the
tests kill at. Every other step of a run and its recovery after a crash is in this file, in run
order, so the crash-safety argument can be read top to bottom.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.moments import MAX_MOMENT_SECONDS, moment_specs_json
from bridge.route_table import ROUTE_TABLE_KEY, write_route_table
from core.device import blas_threads
from core.device import torch_threads as torch_threads_for_run
from core.errors import BridgeMismatchError, EmergentBridgeError
from core.files import fsync_dir
from indexer.bridge_copy import (BRIDGE_DIR, attach_feature_cache, check_bridge_given,  # noqa: F401
                                 finish_extension, index_bridge, lent_bridge, resolve_bridge, same_head)
from indexer.faults import crash_point
from indexer.hooks import RunHooks
from indexer.ledger import ERRORS_FILE, INDEXED, Manifest, ManifestRow, Plan, write_errors_report
from indexer.lock import IndexLock
from indexer.pipeline import Pipeline
from indexer.record import INDEX_FORMAT, read_record, write_record
from indexer.renames import carry_renames
from indexer.options import IndexOptions
from indexer.scan import ScanResult, ShardSpec, scan_directory
from indexer.vectors import grow_proxy, layout_fits, raw_vectors, store_vectors
from indexer.verify import StoreDamagedError, check_points, remove_points
from indexer.store import (ID_NAMESPACE, CollectionSpec, PartitionedStore, Point, Store, describe, open_store, point_id,
                           resolve_location)
from indexer.store.types import StoreUnreadableError

log = logging.getLogger(__name__)

PAYLOAD_INDEXES = {"modality": "keyword", "label": "keyword", "path": "prefix", "folder": "keyword",
                   "segment": "integer"}  # a moment's number: what searching files or moments only filters on


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
    stages: dict[str, float] = field(default_factory=dict)  # the pipeline's wall / CPU seconds per stage
    errors_report: str = ""
    index: str = ""
    store: str = "embedded"
    bridge_version: str = ""
    shard: str | None = None
    by_modality: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # files of modalities the space cannot place
    cut: int = 0  # recordings or videos longer than the part of them embedded and cut into moments

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def index_directory(directory: str | Path, index_path: str | Path, bridge: Any = None, *,
                    options: IndexOptions | None = None, hooks: RunHooks | None = None,
                    **settings: Any) -> IndexSummary:
    """Index (or bring up to date) `directory` into the index at `index_path`.

    `bridge` is a checkpoint directory or a `Bridge`; the index keeps a copy. Without one, a new
    index uses the pretrained space of `preset` (default `bridge.config.DEFAULT_PRESET`) with no training at all:
    photos and texts (and video frames) are embedded, and files of modalities that space cannot
    place are reported as skipped with how to bind them. A bridge trained later on the same preset
    extends the index: its points keep their vectors and the new modalities are added. Any other
    bridge than the index was built with raises `BridgeMismatchError` unless `reembed=True`,
    which re-embeds every file.

    The run's settings are `options` (an `IndexOptions`, whose defaults are `ebridge index`'s) with
    any keyword in `settings` over it: `index_directory(d, i, exclude=["*.md"])` is
    `index_directory(d, i, options=IndexOptions(exclude=["*.md"]))`. `IndexOptions` says what each
    does; the ones to know: `qdrant_url` selects the server backend (the manifest, bridge copy,
    errors report and lock still live in `index_path`); `shard="i/N"` indexes only the files whose
    path hashes to shard i (0-based) and never touches points of other shards' files; `decode`
    picks reader threads or worker processes ("auto": processes from a few hundred files on; the
    calling script then needs the usual `if __name__ == "__main__":` guard only where fork is
    unavailable); `torch_threads` sets torch's intra-op threads for the run (restored after): on a
    small or shared machine 1 is often fastest; `device` runs encoders, heads and G there, decoding
    staying in the reader workers.

    An index holds one folder: another folder than the one it was built from raises
    `IndexRootError` unless `replace=True`, which drops the old folder's points first.
    `hooks` (indexer.hooks.RunHooks) lets a serving process that holds the index lock run this in
    its own store, bridge and progress callbacks (`ebridge serve --watch`).

    A run reads as its steps: refuse early, then under the lock open the bridge and the store,
    verify them (create or check, repair), scan, plan, write the removals, embed, and record.

    Example:
        >>> s = index_directory("data/digits", "runs/digits-index", bridge="runs/bridge")  # doctest: +SKIP
        >>> s.indexed, s.unchanged, s.removed, s.errors                                   # doctest: +SKIP
        (3000, 0, 0, 2)
    """
    run = _refuse_early(directory, index_path, bridge, IndexOptions.build(options, **settings), hooks)
    lock = contextlib.nullcontext() if hooks is not None else \
        IndexLock(run.index_dir, reader_wait_s=run.opts.wait_for_readers)
    with lock, torch_threads_for_run(run.opts.torch_threads), blas_threads(1):  # a server's hooks hold the lock already
        crash_point("lock")
        _open_bridge(run)
        _open_store(run)
        try:
            _verify(run)
            scan = _scan(run)
            plan = _plan(run, scan)
            _write_removals(run, plan, scan.unreadable)
            _embed(run, plan)
            _record(run)
        finally:
            _close(run)
    s = run.summary
    log.info("indexed %d, unchanged %d, removed %d, errors %d (report: %s) in %.1fs",
             s.indexed, s.unchanged, s.removed, s.errors, s.errors_report, s.seconds)
    return s


@dataclass
class _IndexRun:
    """What the steps of one `index_directory` call share."""

    directory: str | Path  # as given (the skipped-files hint repeats it)
    index_path: str | Path
    root: Path
    index_dir: Path
    bridge_given: Any
    opts: IndexOptions
    hooks: RunHooks | None
    shard: ShardSpec | None
    old_record: dict[str, Any]
    moved: bool  # the index was built from another folder (and `replace` says to drop it)
    t_start: float
    bridge: Any = None
    extended: Any = None  # the index's old bridge, where the given one extends it
    location: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    store: Store | None = None
    owned: bool = True  # whether this run closes the store
    manifest: Manifest | None = None
    created: bool = False
    repaired: int = 0  # damaged points found in the store (embedded again with the plan's files)
    graph_pending: bool = False
    summary: IndexSummary = field(default_factory=IndexSummary)


def _refuse_early(directory: str | Path, index_path: str | Path, bridge: Any, opts: IndexOptions,
                  hooks: RunHooks | None) -> _IndexRun:
    """Everything that can be refused is refused before the index folder is created."""
    t_start = time.perf_counter()
    if opts.device is not None:
        from core.device import resolve_device

        opts = dataclasses.replace(opts, device=resolve_device(opts.device))  # a missing device fails before any work
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{directory}: not a folder; give the dataset folder to index")
    index_dir = Path(index_path).resolve()
    shard = ShardSpec.parse(opts.shard) if isinstance(opts.shard, str) else opts.shard
    if opts.quantization not in (None, "int8"):
        raise ValueError(f"quantization {opts.quantization!r} is not supported; use 'int8' or leave it off")
    check_bridge_given(index_dir, bridge)
    old_record = read_record(index_dir) or {}
    old_root = old_record.get("root")
    moved = old_root is not None and Path(old_root) != root
    if moved and not opts.replace:
        raise IndexRootError(
            f"{index_dir} is the index of {old_root}, not of {root}: indexing another folder into it would "
            f"replace those points. Pass --replace (replace=True) to drop {old_root}'s points and index {root} "
            "instead, or give another --index folder. An index holds one folder (several roots are not "
            "supported): to search several folders together, index their common parent.")
    return _IndexRun(directory=directory, index_path=index_path, root=root, index_dir=index_dir, bridge_given=bridge,
                     opts=opts, hooks=hooks, shard=shard, old_record=old_record, moved=moved, t_start=t_start)


def _open_bridge(run: _IndexRun) -> None:
    """The bridge: the serving process's, or the index's copy (installed, compared, extended, repaired)."""
    hooks, opts = run.hooks, run.opts
    if hooks is not None and hooks.bridge is not None:
        run.bridge = lent_bridge(run.index_dir, hooks.bridge)
    else:
        run.bridge, run.extended = resolve_bridge(run.index_dir, run.bridge_given, reembed=opts.reembed,
                                                  preset=opts.preset)
    if opts.device is not None:
        run.bridge.to(opts.device)
    if hooks is None or hooks.bridge is None:  # a lent bridge also embeds queries: they need no cache
        attach_feature_cache(run.bridge, opts.feature_cache)
    crash_point("bridge")


def _open_store(run: _IndexRun) -> None:
    """The store (the serving process's open one, else opened here; a half-created one is set aside) and the manifest."""
    opts = run.opts
    run.location = resolve_location(run.index_dir, opts.qdrant_url, opts.collection)
    run.where = describe(run.location)
    if run.hooks is not None and run.hooks.store is not None:
        run.store, run.owned = run.hooks.store, False  # the server's open store: the engine allows one handle
    else:
        run.store = _open_or_set_aside(run.index_dir, opts.qdrant_url, opts.collection, opts.api_key, run.location,
                                       run.root)
        run.owned = run.location["kind"] != "client"  # a QdrantClient the caller passed stays the caller's
    run.manifest = Manifest(run.index_dir)


def _verify(run: _IndexRun) -> None:
    """Create the store or check it against the bridge, adopt an extending bridge, rebuild a damaged
    manifest from the store's payloads, and re-embed points found damaged."""
    opts, store, manifest = run.opts, run.store, run.manifest
    replacing = run.moved and opts.replace
    run.created = _prepare_store(store, run.bridge, manifest, shards=opts.shards, replication=opts.replication,
                                 quantization=opts.quantization, reembed=opts.reembed, where=run.where,
                                 fresh=replacing, extends=run.extended.version if run.extended else None)
    if replacing:
        log.warning("%s: replacing the index of %s by one of %s", run.index_dir, run.old_record.get("root"), run.root)
    crash_point("store")
    grow_proxy(store, run.bridge, run.where)
    if run.extended is not None and not run.created:
        _adopt_extension(store, manifest, run.extended, run.bridge)
    _update_metadata(store, run.bridge)
    finish_extension(run.index_dir)  # the store names the new bridge now
    if manifest.damaged is not None and not run.created:
        n = manifest.rebuild_from(store.scroll(), owns=run.shard.owns if run.shard else None)
        log.warning("%s: manifest rebuilt from the store's payloads and the journal (%d rows from the "
                    "store); unchanged files are not embedded again", run.index_dir, n)
    run.repaired = _repair_damage(store, manifest, run.index_dir, run.where)
    _drop_missing_points(store, manifest)


def _scan(run: _IndexRun) -> ScanResult:
    """What the folder holds now (the index folder itself left out)."""
    opts = run.opts
    return scan_directory(run.root, exclude=opts.exclude, modality=opts.modality, shard=run.shard,
                          sidecar=opts.sidecar, label_from_folder=opts.label_from_folder, skip=[run.index_dir])


def _plan(run: _IndexRun, scan: ScanResult) -> Plan:
    """What to read, what is unchanged and what was deleted; files the serving process defers wait.
    The record says whether the graph is behind the points *before* the points change: a run killed
    from here on is finished (optimised) by the next one."""
    hooks, index_dir, version = run.hooks, run.index_dir, run.bridge.version
    plan = run.manifest.plan(scan.files, shard=run.shard, reembed=run.opts.reembed, bridge_version=version)
    deferred = 0
    if hooks is not None and hooks.defer is not None:
        kept = [f for f in plan.todo if not hooks.defer(f)]
        deferred = hooks.deferred = len(plan.todo) - len(kept)
        plan.todo = kept
    run.summary = IndexSummary(index=str(index_dir), store=run.where, bridge_version=version,
                               shard=str(run.shard) if run.shard else None, ignored=len(scan.ignored),
                               errors_report=str(index_dir / ERRORS_FILE), unchanged=len(plan.unchanged),
                               repaired=run.repaired, deferred=deferred)
    log.info("plan: %d to read, %d unchanged, %d deleted", len(plan.todo), len(plan.unchanged), len(plan.deleted))
    run.graph_pending = run.created or run.old_record.get("optimized") is False
    if plan.todo or plan.deleted or run.graph_pending:
        write_record(index_dir, root=str(run.root), store=run.location, bridge_version=version,
                     last_run=run.old_record.get("last_run"), optimized=False)
        run.graph_pending = True
    return plan


def _write_removals(run: _IndexRun, plan: Plan, unreadable: list[tuple[str, str]]) -> None:
    """Carry renamed files' points over, remove deleted files' points, and report unreadable files."""
    if not run.opts.reembed:
        run.summary.moved = carry_renames(run.store, run.manifest, plan, run.bridge.version)
    if run.hooks is not None and run.hooks.on_plan is not None:
        run.hooks.on_plan(plan)
    run.summary.removed = _remove_deleted(run.store, run.manifest, plan.deleted)
    _record_unreadable(run.manifest, unreadable, run.bridge.version)
    run.summary.errors += len(unreadable)


def _embed(run: _IndexRun, plan: Plan) -> None:
    """The pipeline: read, embed and write what the plan says to read."""
    opts, summary = run.opts, run.summary
    pipe = Pipeline(run.bridge, run.store, run.manifest, batch_size=opts.batch_size, workers=opts.workers,
                    progress=opts.progress, reuse_known=not opts.reembed, decode=opts.decode,
                    on_commit=run.hooks.on_commit if run.hooks is not None else None)
    t_pipe = time.perf_counter()
    counts = pipe.run(plan.todo)
    pipe_seconds = time.perf_counter() - t_pipe
    summary.indexed = counts.indexed
    summary.unchanged += counts.unchanged
    summary.errors += counts.errors
    summary.by_modality = dict(counts.by_modality)
    summary.skipped = dict(counts.skipped)
    summary.cut = counts.cut
    if counts.cut:
        log.warning("%d file(s) longer than %d minutes: only their first %d minutes are cut into moments (a "
                    "recording's whole-file point too); the payload's `media_embedded` says what each covers",
                    counts.cut, MAX_MOMENT_SECONDS // 60, MAX_MOMENT_SECONDS // 60)
    preset = run.bridge.config.get("preset_name")
    for m, n in sorted(summary.skipped.items()):
        log.warning("%d %s file(s) skipped: the space of %s cannot place %s. Bind %s to it from a few pairs "
                    "(`ebridge train PAIRS.csv --preset %s --out runs/bridge`), then run `ebridge index %s "
                    "--index %s --bridge runs/bridge`", n, m, preset, m, m, preset, run.directory, run.index_path)
    summary.encode_seconds = round(counts.encode_seconds, 3)
    summary.stages = counts.stage_seconds()
    summary.items_per_s = round(counts.indexed / pipe_seconds, 2) if counts.indexed and pipe_seconds else 0.0
    crash_point("pipeline")


def _record(run: _IndexRun) -> None:
    """Sweep orphan points, build the graph, compact the manifest, write the errors report and the record."""
    summary, index_dir = run.summary, run.index_dir
    _sweep_orphans(run.store, run.manifest, run.root, run.shard)
    if run.opts.optimize and run.graph_pending:
        if not (summary.indexed or summary.removed or run.created):
            log.warning("%s: the last run ended before its HNSW build finished; building it now", index_dir)
        crash_point("optimize")
        run.store.optimize()
        run.graph_pending = False
    run.manifest.compact()
    write_errors_report(index_dir / ERRORS_FILE, run.manifest.errors(), run.root)
    summary.points = run.store.count()
    summary.seconds = round(time.perf_counter() - run.t_start, 3)
    write_record(index_dir, root=str(run.root), store=run.location, bridge_version=run.bridge.version,
                 last_run=summary.to_dict(), optimized=not run.graph_pending, moments=moment_specs_json())


def _close(run: _IndexRun) -> None:
    run.manifest.close()
    if run.owned:
        run.store.close()
    else:
        run.store.flush()


# ---------------------------------------------------------------------- the store


def _adopt_extension(store: Store, manifest: Manifest, old: Any, new: Any) -> None:
    """The index's points of modalities the new bridge embeds as the old one did keep their bridged
    (and raw) vectors bit for bit; only their proxy view is G's of the new bridge, computed from the
    stored vector (no file is read or encoded again). A run killed here re-embeds what it had not
    yet moved over, with the same vectors."""
    kept = {m for m in old.modalities if m in new.modalities and same_head(old, new, m)}
    todo = [r for r in manifest.rows.values() if r.status == INDEXED and r.modality in kept
            and r.bridge_version == old.version]
    for start in range(0, len(todo), 512):
        rows = todo[start:start + 512]
        records = [rec for rec in store.retrieve([pid for r in rows for pid in r.point_ids()], with_vectors=True)
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
        manifest.commit([dataclasses.replace(r, bridge_version=new.version) for r in rows
                         if all(pid in moved for pid in r.point_ids())])
    if todo:
        log.info("%d points of %s kept their vectors under bridge %s", len(todo), ", ".join(sorted(kept)),
                 new.version)


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
    vectors = store_vectors(bridge, store.grows_vectors)
    spec = CollectionSpec(vectors=vectors, payload_indexes=dict(PAYLOAD_INDEXES), quantization=quantization,
                          shards=shards, replication=replication)
    if store.exists() and not fresh:
        stored_version = store.metadata.get("bridge_version")
        dims_differ = not layout_fits(store, vectors, where)
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
    if meta.get("bridge_version") != bridge.version or ROUTE_TABLE_KEY not in meta:
        write_route_table(patch, {})
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
    expected = manifest.indexed_ids()
    if not expected or store.count() >= len(expected):
        return
    rows = [r for r in manifest.rows.values() if r.status == INDEXED]
    ids = [pid for r in rows for pid in r.point_ids()]  # a long file's moments too: one missing re-embeds it
    present: set[Any] = set()
    for i in range(0, len(ids), 1024):
        present.update(str(rec.id) for rec in store.retrieve(ids[i:i + 1024]))
    missing = [r.path for r in rows if not all(pid in present for pid in r.point_ids())]
    log.warning("%d manifest rows have no point in the store; they will be embedded again", len(missing))
    manifest.commit(deleted=missing)


def _remove_deleted(store: Store, manifest: Manifest, deleted: list[ManifestRow]) -> int:
    if not deleted:
        return 0
    ids = [pid for r in deleted if r.status == INDEXED for pid in r.point_ids()]
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
    expected = manifest.indexed_ids()
    if store.count() == len(expected):
        return 0
    prefix = str(root) + "/"
    orphans = [rec.id for rec in store.scroll()
               if str(rec.id) not in expected and str(rec.payload.get("abs_path", "")).startswith(prefix)
               and (shard is None or shard.owns(str(rec.payload.get("path", ""))))]
    if orphans:
        store.delete(orphans)
        store.flush()
        log.info("removed %d orphan points (written by an interrupted run for files now gone)", len(orphans))
    return len(orphans)
