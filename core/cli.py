"""The command-line options every verb and script shares: `--threads`, `--device`, `--jobs`. Argparse
only: what the options do at run time lives in core.device.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_threads_option(parser, 1); add_device_option(parser)
    >>> parser.parse_args(["--threads", "2"]).threads
    2
"""
from __future__ import annotations

import argparse
from typing import Any


def add_threads_option(parser: Any, default: int | None, what: str = "torch threads") -> None:
    """`--threads N` (alias `--torch-threads`): torch's intra-op threads, the one definition every
    verb and script uses; `args.threads` goes to `core.device.set_threads` (None: torch's own default)."""
    why = "1: on small or shared machines one thread is fastest" if default == 1 else "torch's own"
    parser.add_argument("--threads", "--torch-threads", dest="threads", type=int, default=default,
                        help=f"{what} (default {why})")


def add_device_option(parser: Any) -> None:
    """The `--device` option every verb that runs networks shares (train, index, search, bench)."""
    parser.add_argument("--device", default="auto", metavar="{auto,cpu,cuda,mps}",
                        help="where encoders, heads and G run (default auto: CUDA when available, else CPU; "
                             "also cuda:N). Vectors, caches and checkpoints do not depend on it")


def add_jobs_option(parser: Any, what: str) -> None:
    """`--jobs N`: trainings side by side in forked workers (`core.workers`); 0, the default, lets the
    verb choose (every core on a CPU). A negative count is a usage error."""
    def jobs(text: str) -> int:
        n = int(text)
        if n < 0:
            raise argparse.ArgumentTypeError(f"must be 0 (choose for me) or more, got {n}")
        return n

    parser.add_argument("--jobs", type=jobs, default=0, help=what)
