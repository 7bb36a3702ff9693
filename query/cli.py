"""`ebridge search`: one query, any modality, against an index."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bridge.modalities import MODALITIES


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--route", default="auto", choices=["auto", "direct", "proxy", "fused"])
    p.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                   help="payload filter, repeatable (label=seven, path_prefix=audio/)")
    p.add_argument("--qdrant-url", help="search a Qdrant server collection instead of the embedded store")
    p.add_argument("--collection", default="emergentbridge")
    p.add_argument("--json", action="store_true", help="print the hits as a JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from query.search import Index, parse_filters

    if args.k < 1:
        raise ValueError("-k must be at least 1")
    if (args.index is None) == (args.server is None):
        raise ValueError("give --index PATH (open the index here) or --server URL (ask a running ebridge serve)")
    if args.server:
        from query.serve_client import search

        hits = [{k: h.get(k) for k in ("id", "path", "modality", "score", "route", "label")} for h in search(
            args.server, text=args.text, file=args.file, id=args.id, target=args.target, k=args.k,
            filter=parse_filters(args.filter), route=args.route, source=args.source, api_key=args.api_key)]
    else:
        query = args.text if args.text is not None else ({"id": args.id} if args.id else args.file)
        source = "text" if args.text is not None else args.source
        with Index.open(args.index, url=args.qdrant_url, collection=args.collection) as index:
            hits = [h.to_json() for h in index.search(query, target=args.target, k=args.k,
                                                       filter=parse_filters(args.filter), route=args.route,
                                                       source=source)]
    if args.json:
        print(json.dumps(hits, indent=2))
        return 0
    if not hits:
        print("no hits")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:>3}. {h['score']:8.4f}  {h['modality']:<8} {h['route']:<7} {h['label'] or '-':<10} {h['path']}")
    return 0
