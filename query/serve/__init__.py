"""`ebridge serve --index IDX`: keep an index open with warm encoders; answer HTTP and a web page.

    ebridge serve --index runs/digits-index                  # http://127.0.0.1:8000/ (docs: /docs)
    ebridge serve --index idx --host 0.0.0.0 --port 9000 --api-key "$KEY" --max-upload-mb 20
    ebridge search --server http://127.0.0.1:8000 --text seven --target audio
    ebridge serve --index photos-index --watch ~/Photos      # and keep it up to date with ~/Photos

The server holds the index folder's lock while it runs: `ebridge index` on the same folder is
refused with "in use by a server (pid N)" until the server stops (see query/serve/service.py).
With --watch DIR the server is the index's writer: it catches up with DIR at start, then indexes
each change in the background (the same crash-safe runs as `ebridge index`) while it answers
searches; /stats and the page show the progress (docs/serve.md).
Binds 127.0.0.1 unless told otherwise; with --api-key, every endpoint but /health, the page and
the docs wants the `X-API-Key` header.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from core.cli import add_threads_option

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an index over HTTP with warm encoders, and a web page to browse it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, required=True, help="index folder built by `ebridge index`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("EBRIDGE_API_KEY"),
                   help="require this key in the X-API-Key header (default: $EBRIDGE_API_KEY; none: open)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest query file accepted (default 50)")
    p.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for (default 100)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="threads that encode queries (default: cores, at most 4)")
    add_threads_option(p, 1, "torch threads per encoding worker")
    p.add_argument("--no-warm", action="store_true", help="do not run the encoders once at start")
    p.add_argument("--text-cache", type=int, default=4096, help="text queries whose vectors are kept (0: none)")
    p.add_argument("--qdrant-url", help="serve a Qdrant server collection (the index folder holds its bridge)")
    p.add_argument("--collection", default=None, help="collection name (default: the index's own)")
    p.add_argument("--watch", type=Path, metavar="DIR",
                   help="keep the index up to date with DIR (the folder it was built from) while serving")
    p.add_argument("--settle", type=float, default=1.0,
                   help="with --watch: seconds a file must stay unchanged before it is indexed (default 1)")
    p.add_argument("--rescan", type=float, default=30.0,
                   help="with --watch: seconds between full rescans, the fallback for missed events (default 30)")
    p.add_argument("--watch-batch", type=int, default=32, help="with --watch: files per indexed batch (default 32)")
    p.add_argument("--label-from-folder", action="store_true",
                   help="with --watch: label items by their parent folder's name, as `ebridge index` does")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="with --watch: skip paths matching this glob (repeatable), as `ebridge index` does")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.deps import require

    for module in ("fastapi", "multipart"):
        require(module, "ebridge serve")
    uvicorn = require("uvicorn", "ebridge serve")
    from query.serve.app import create_app
    from query.serve.service import SearchService, ServeSettings

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        log.warning("serving on %s without --api-key: anyone who reaches this address can search and "
                    "download the indexed files", args.host)
    settings = ServeSettings(api_key=args.api_key or None, max_upload_bytes=int(args.max_upload_mb * 2**20),
                             max_k=args.max_k, workers=args.workers, torch_threads=args.threads,
                             warm=not args.no_warm, text_cache=args.text_cache)
    watch_settings = None
    if args.watch is not None:
        from indexer.options import IndexOptions
        from indexer.watch import WatchSettings

        watch_settings = WatchSettings(settle_s=args.settle, rescan_s=args.rescan, batch_size=args.watch_batch,
                                       index_options=IndexOptions(exclude=args.exclude,
                                                                  label_from_folder=args.label_from_folder))
    service = SearchService.open(args.index, settings, url=args.qdrant_url, collection=args.collection,
                                 watch=args.watch, watch_settings=watch_settings)
    app = create_app(service)
    log.info("serving %s on http://%s:%d/ (API docs at /docs)%s", args.index, args.host, args.port,
             f"; keeping it up to date with {args.watch}" if args.watch else "")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        service.close()  # idempotent with the app's lifespan end; releases the index lock
    return 0
