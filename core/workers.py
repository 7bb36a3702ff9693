"""Independent trainings side by side on the CPU's cores: forked workers, one torch thread each.

A training runs on one core (one torch thread was the fastest per core here), so trainings that do
not depend on each other run in `jobs` forked processes: `--base auto`'s two trial bases
(`bridge.trials`), and the bench's trials and later seeds (`query.eval.seeds`). A fork shares the
parent's frozen features, preset and trained bases without copying them; only plain results come
back (a trained bridge as a checkpoint folder). Workers run torch and numpy only: the thread pools
of the store engine and of polars do not survive a fork. On an accelerator one process is kept:
CUDA does not survive a fork, and one GPU is busy enough with one training.
"""
from __future__ import annotations

import multiprocessing
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

_WORK: tuple[Callable[[Any], Any], Sequence[Any]] | None = None  # what the forked workers read: no pickling


def default_jobs(device: Any) -> int:
    """Workers for `device`: every core this process may use on a CPU, one on an accelerator."""
    from core.device import resolve_device

    if device is not None and resolve_device(device).type != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fork_map(fn: Callable[[Any], Any], items: Sequence[Any], jobs: int) -> list[Any]:
    """`[fn(x) for x in items]`, in up to `jobs` forked processes (in this one when jobs or items are
    fewer than two). Results come back pickled, in order; a worker's exception is raised here.

    Example:
        >>> fork_map(abs, [-1, 2, -3], jobs=2)
        [1, 2, 3]
    """
    with forked(fn, items, jobs) as results:
        return list(results)


@contextmanager
def forked(fn: Callable[[Any], Any], items: Sequence[Any], jobs: int) -> Iterator[Iterator[Any]]:
    """Start `fn` over `items` in up to `jobs` forked workers and hand back their results, in order, as
    they are read: this process can do other work meanwhile. With fewer than two jobs or items, each
    result is computed here when it is read. `fn` and `items` reach the workers through the fork.

    Example:
        >>> with forked(abs, [-1, 2, -3], jobs=2) as results:
        ...     print(list(results))
        [1, 2, 3]
    """
    global _WORK
    items = list(items)
    if jobs < 2 or len(items) < 2:
        yield (fn(x) for x in items)
        return
    if _WORK is not None:
        raise RuntimeError("forked() does not nest: run the inner work with jobs=1")
    _WORK = (fn, items)
    pool = multiprocessing.get_context("fork").Pool(min(jobs, len(items)), initializer=_one_thread)
    try:
        yield pool.imap(_run_one, range(len(items)), chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()  # reaped: their CPU seconds count in this process's RUSAGE_CHILDREN
        _WORK = None


def _one_thread() -> None:
    from core.device import set_threads

    set_threads(1, import_torch=False)


def _run_one(i: int) -> Any:
    assert _WORK is not None, "fork_map's workers read their work from the fork"
    fn, items = _WORK
    return fn(items[i])
