"""`ebridge index DIR --index PATH [--bridge CKPT_DIR]`: index a folder, incrementally.

    ebridge index photos --index runs/photos.index                         # no training: the offline space

    ebridge index data/digits --index runs/digits-index --bridge runs/bridge
    ebridge index data/digits --index runs/digits-index              # later runs: only changes
    ebridge index data --index idx --qdrant-url http://qdrant:6333 --collection digits \\
        --shards 4 --replication 2 --quantization int8 --shard 0/4

Prints a summary (`--json`: one JSON object with indexed, unchanged, removed, errors,
errors_report and more). Exit status 0 even when some inputs were bad: they are in the
errors report; 2 when the run itself could not be done (locked index, bridge mismatch...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bridge.config import DEFAULT_PRESET
from core.cli import add_device_option, add_threads_option
from indexer.options import IndexOptions

DEFAULTS = IndexOptions()  # every default below is the API's


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="index a folder of mixed media into Qdrant (incremental, resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path, help="folder to index (walked recursively)")
    p.add_argument("--index", type=Path, required=True,
                   help="index folder: store, bridge copy, manifest, errors report (created if missing)")
    p.add_argument("--bridge", type=Path, default=None,
                   help="bridge checkpoint directory (the index keeps a copy). Without it, a new index uses the "
                        "pretrained space of --preset with no training; a bridge trained later on that preset "
                        "extends the index with the modalities it binds")
    p.add_argument("--preset", default=None,
                   help=f"for a new index without --bridge: the preset whose pretrained space to use (default: {DEFAULT_PRESET})")
    p.add_argument("--reembed", action="store_true",
                   help="re-embed every file (required to switch the index to another bridge)")
    p.add_argument("--replace", action="store_true",
                   help="the index was built from another folder: drop its points and index DIR instead")
    g = p.add_argument_group("what to index")
    g.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip paths matching GLOB (relative path or any path component); repeatable")
    g.add_argument("--modality", default=None, help="force one modality for every file instead of detecting it")
    g.add_argument("--sidecar", type=Path, default=None,
                   help="CSV/JSON/JSONL/Parquet table: path|file_name -> label, caption, ... "
                        "(default: DIR/metadata.{csv,jsonl,json,parquet} when present)")
    g.add_argument("--label-from-folder", action="store_true",
                   help="use the parent folder's name as label when the sidecar gives none (class/xxx.jpg layouts)")
    g.add_argument("--shard", default=None, metavar="i/N",
                   help="index only the files of shard i of N (0-based, stable path hash); other shards untouched")
    g = p.add_argument_group("throughput")
    g.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                   help=f"items per encoder batch (default {DEFAULTS.batch_size})")
    g.add_argument("--workers", type=int, default=DEFAULTS.workers,
                   help="reader threads for file I/O and decoding")
    g.add_argument("--decode", choices=["auto", "threads", "processes"], default=DEFAULTS.decode,
                   help="decode in reader threads or in worker processes (auto: processes for larger runs)")
    add_threads_option(g, None, "torch intra-op threads for this run (on a small or busy machine, 1 is often fastest)")
    g.add_argument("--no-optimize", action="store_true", help="skip building the HNSW index at the end")
    add_device_option(g)
    g = p.add_argument_group("server / cluster (default: embedded store in the index folder)")
    g.add_argument("--qdrant-url", default=None,
                   help="Qdrant server URL; also ':memory:' or a folder for qdrant-client's local mode")
    g.add_argument("--qdrant-api-key", default=os.environ.get("QDRANT_API_KEY"),
                   help="API key (default: $QDRANT_API_KEY)")
    g.add_argument("--collection", default=None, help="collection name on the server (default: emergentbridge)")
    g.add_argument("--shards", type=int, default=DEFAULTS.shards, help="shard number, on creation")
    g.add_argument("--replication", type=int, default=DEFAULTS.replication, help="replication factor, on creation")
    g.add_argument("--quantization", choices=["int8"], default=None, help="scalar quantization, on creation")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--wait-for-readers", type=float, default=DEFAULTS.wait_for_readers, metavar="SECONDS",
                   help=f"how long to wait for open searches of the index to close (default {DEFAULTS.wait_for_readers:g})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bridge.moments import MAX_MOMENT_SECONDS
    from indexer.index import index_directory

    summary = index_directory(args.directory, args.index, bridge=args.bridge, options=options_from_args(args))
    if args.json:
        print(json.dumps(summary.to_dict(), sort_keys=True))
        return 0
    s = summary
    print(f"index {s.index} ({s.store}, bridge {s.bridge_version}{', shard ' + s.shard if s.shard else ''})")
    print(f"  indexed   {s.indexed:>8}   {_by_modality(s.by_modality)}")
    print(f"  unchanged {s.unchanged:>8}")
    print(f"  removed   {s.removed:>8}")
    if s.repaired:
        print(f"  repaired  {s.repaired:>8}   damaged points found in the store, embedded again")
    print(f"  errors    {s.errors:>8}   {'see ' + s.errors_report if s.errors else ''}")
    if s.skipped:
        print(f"  skipped   {sum(s.skipped.values()):>8}   {_by_modality(s.skipped)}: this space cannot place them; "
              "bind them with `ebridge train` (see the errors report)")
    if s.cut:
        print(f"  cut       {s.cut:>8}   longer than {MAX_MOMENT_SECONDS // 60} minutes: searched in their first "
              f"{MAX_MOMENT_SECONDS // 60} minutes only")
    if s.ignored:
        print(f"  ignored   {s.ignored:>8}   (no modality reads these files)")
    print(f"  points    {s.points:>8}   in {s.seconds:.1f}s"
          + (f", {s.items_per_s:.1f} items/s" if s.indexed else ""))
    return 0


def options_from_args(args: argparse.Namespace) -> IndexOptions:
    """The run's `IndexOptions` from `ebridge index`'s parsed arguments."""
    return IndexOptions(
        preset=args.preset, reembed=args.reembed, replace=args.replace, exclude=args.exclude, modality=args.modality,
        sidecar=args.sidecar, label_from_folder=args.label_from_folder, shard=args.shard,
        batch_size=args.batch_size, workers=args.workers, decode=args.decode, torch_threads=args.threads,
        device=args.device, optimize=not args.no_optimize, qdrant_url=args.qdrant_url, api_key=args.qdrant_api_key,
        collection=args.collection, shards=args.shards, replication=args.replication, quantization=args.quantization,
        progress=not args.no_progress and not args.json and sys.stderr.isatty(), wait_for_readers=args.wait_for_readers)


def _by_modality(counts: dict[str, int]) -> str:
    return ", ".join(f"{m} {n}" for m, n in sorted(counts.items()))
