"""`ebridge`: the command line. Each verb's options live beside its code; this file assembles them
and holds the `search` verb. Verb modules are imported to build the parser, so they import only
light things at their top (no torch): `ebridge --help` stays instant.

    ebridge train MANIFEST --out runs/bridge          (bridge.cli)
    ebridge index DIR --index PATH [--bridge CKPT]     (indexer.cli)
    ebridge search --index PATH --text "seven" --target audio   (here)
    ebridge serve --index PATH [--port 8000]          (query.serve)
    ebridge bench --quick --out bench-out             (query.eval.bench)
    ebridge demo --out demo-out                       (query.eval.demo)
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from bridge.modalities import MODALITIES
from core.errors import EmergentBridgeError

# verb -> module that defines `add_parser(subparsers)`
COMMANDS = {
    "train": "bridge.cli",
    "index": "indexer.cli",
    "search": "query.cli",
    "serve": "query.serve",
    "bench": "query.eval.bench",
    "demo": "query.eval.demo",
}


def build_parser() -> argparse.ArgumentParser:
    from bridge import __version__

    parser = argparse.ArgumentParser(prog="ebridge", description="EmergentBridge cross-modal retrieval engine")
    parser.add_argument("--version", action="version", version=f"ebridge (emergentbridge) {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `ebridge` command; returns the exit code (2 for errors we explain in one line)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except (EmergentBridgeError, FileNotFoundError, ValueError) as exc:
        # Errors we raise on purpose carry what to do; a stack trace would hide it.
        logging.getLogger("ebridge").debug("details", exc_info=True)
        print(f"ebridge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def add_parser(sub: argparse._SubParsersAction) -> None:
    from query.search import ROUTE_CHOICES, SEARCH_ROUTES

    p = sub.add_parser("search", help="search an index with a text, a file or an indexed item's id")
    p.add_argument("--index", type=Path, help="index folder (holds the bridge, and the store unless --qdrant-url)")
    p.add_argument("--server", metavar="URL",
                   help="ask a running `ebridge serve` instead of opening the index (warm: no start-up cost)")
    p.add_argument("--api-key", default=os.environ.get("EBRIDGE_API_KEY"),
                   help="the server's API key, with --server (default: $EBRIDGE_API_KEY)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="a text query")
    q.add_argument("--file", type=Path, help="a file query (image, audio, depth, thermal, video, text)")
    q.add_argument("--id", help="the id of a point already in the index")
    p.add_argument("--source", choices=MODALITIES, help="the query file's modality, if its name does not tell")
    p.add_argument("--target", nargs="+", choices=MODALITIES, help="modality(ies) to return (default: all)")
    p.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    p.add_argument("--route", default="auto", choices=ROUTE_CHOICES,
                   help="; ".join(f"{r.name}: {r.meaning}" for r in SEARCH_ROUTES))
    level = p.add_mutually_exclusive_group()
    level.add_argument("--moments", dest="level", action="store_const", const="moments", default="auto",
                       help="moments only: the windows of long recordings and videos, each with its times (default: "
                            "whole files and moments ranked together, a long file by its best moments)")
    level.add_argument("--files", dest="level", action="store_const", const="files",
                       help="whole files only, no moments")
    p.add_argument("--per-file", type=int, default=None, metavar="N",
                   help="at most N hits of one file: its N best moments, never two that overlap (default 1; "
                        "with --moments, no limit)")
    p.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                   help="payload filter, repeatable (label=seven, path_prefix=audio/)")
    p.add_argument("--bridge", type=Path, default=None,
                   help="bridge checkpoint to embed the query with (default: the copy kept in the index)")
    p.add_argument("--qdrant-url", help="search this Qdrant server collection (default: where the index was built)")
    p.add_argument("--collection", default=None, help="collection name (default: the index's own)")
    p.add_argument("--json", action="store_true", help="print the hits as a JSON list")
    from core.cli import add_device_option, add_threads_option

    add_device_option(p)
    add_threads_option(p, None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()
    from bridge.moments import span
    from query.search import Index, parse_filters

    if args.k < 1:
        raise ValueError("-k must be at least 1")
    if (args.index is None) == (args.server is None):
        raise ValueError("give --index PATH (open the index here) or --server URL (ask a running ebridge serve)")
    if args.server:
        from query.serve.client import search

        keys = ("id", "path", "modality", "score", "route", "score_kind", "label", "start", "end", "file_id")
        hits = [{k: h[k] for k in keys if k in h} for h in search(
            args.server, text=args.text, file=args.file, id=args.id, target=args.target, k=args.k,
            filter=parse_filters(args.filter), route=args.route, source=args.source, api_key=args.api_key,
            level=args.level, per_file=args.per_file)]
    else:
        from core.device import set_threads

        set_threads(args.threads)
        query = args.text if args.text is not None else ({"id": args.id} if args.id is not None else args.file)
        source = "text" if args.text is not None else args.source
        with Index.open(args.index, url=args.qdrant_url, collection=args.collection,
                        bridge=args.bridge, device=_query_device(args.device)) as index:
            hits = [h.to_json() for h in index.search(query, target=args.target, k=args.k,
                                                       filter=parse_filters(args.filter), route=args.route,
                                                       source=source, level=args.level, per_file=args.per_file)]
    logging.getLogger("ebridge").info("first result %.2f s after the command started (%d hits)",
                                      time.perf_counter() - started, len(hits))
    if args.json:
        print(json.dumps(hits, indent=2))
        return 0
    if not hits:
        print("no hits")
    for rank, h in enumerate(hits, 1):
        where = h["path"] if h.get("start") is None else f"{h['path']} @ {span(h['start'], h['end'])}"
        print(f"{rank:>3}. {h['score']:8.4f}  {h['modality']:<8} {h['route']:<7} {h.get('label') or '-':<10} {where}")
    return 0


def _query_device(device: str) -> str:
    """`--device auto` on a machine with no NVIDIA driver is the CPU: said without importing torch
    (1-2 s of a cold search) to ask `torch.cuda.is_available()`, which could only answer no."""
    if device == "auto" and not any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl")):
        return "cpu"
    return device


if __name__ == "__main__":
    sys.exit(main())
