"""The bench's trainings side by side on the CPU's cores: forked workers, one torch thread each.

Once a seed's anchor has trained its base, the other variants' trials are independent, and so are
the later seeds once the first has made its choices (`query.eval.seeds`). Each training runs on one
core, so `fork_map` runs them in `jobs` forked processes: a fork shares the parent's frozen
features, preset and trained bases without copying them, and only plain results come back (a
trained bridge comes back as a checkpoint folder). On an accelerator the bench keeps one process:
CUDA does not survive a fork, and one GPU is busy enough with one training.
"""
from __future__ import annotations

import multiprocessing
import os
from typing import Any, Callable, Sequence

_WORK: tuple[Callable[[Any], Any], Sequence[Any]] | None = None  # what the forked workers read: no pickling


def default_jobs(device: Any) -> int:
    """Workers for `device`: every core this process may use on a CPU, one on an accelerator."""
    from core.device import resolve_device

    if device is not None and resolve_device(device).type != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fork_map(fn: Callable[[Any], Any], items: Sequence[Any], jobs: int) -> list[Any]:
    """`[fn(x) for x in items]`, in up to `jobs` forked processes (in this one when jobs or items are
    fewer than two). `fn` and `items` reach the workers through the fork; results come back pickled,
    in order. A worker's exception is raised here.

    Example:
        >>> fork_map(abs, [-1, 2, -3], jobs=2)
        [1, 2, 3]
    """
    global _WORK
    items = list(items)
    if jobs < 2 or len(items) < 2:
        return [fn(x) for x in items]
    _WORK = (fn, items)
    pool = multiprocessing.get_context("fork").Pool(min(jobs, len(items)), initializer=_one_thread)
    try:
        out = pool.map(_run_one, range(len(items)), chunksize=1)
        pool.close()
        return out
    finally:
        pool.terminate()
        pool.join()  # reaped: their CPU seconds count in the parent's RUSAGE_CHILDREN
        _WORK = None


def _one_thread() -> None:
    from core.device import set_threads

    set_threads(1, import_torch=False)


def _run_one(i: int) -> Any:
    assert _WORK is not None, "fork_map's workers read their work from the fork"
    fn, items = _WORK
    return fn(items[i])
