"""`ebridge`: the command line. Each package adds its own subcommands, so this file stays small.

    ebridge train MANIFEST --out runs/bridge         (bridge.train_cli)
    ebridge index DIR --index PATH [--bridge CKPT]    (indexer.cli)
    ebridge search --index PATH --text "seven" --target audio   (query.cli)
    ebridge serve --index PATH [--port 8000]          (query.serve)
    ebridge bench --quick --out bench-out            (query.bench)
    ebridge demo --out demo-out                      (query.demo)
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from bridge.errors import EmergentBridgeError

# module that defines `add_parser(subparsers)`; imported lazily so `ebridge --help` is fast
COMMANDS = {
    "train": "bridge.train_cli",
    "index": "indexer.cli",
    "search": "query.cli",
    "serve": "query.serve",
    "bench": "query.bench",
    "demo": "query.demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebridge", description="EmergentBridge cross-modal retrieval engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        try:
            importlib.import_module(module).add_parser(sub)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            sub.add_parser(name, help="(not available in this build)")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not hasattr(args, "func"):
        print(f"ebridge {args.command}: not available in this build", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
