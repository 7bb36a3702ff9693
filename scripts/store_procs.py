"""Measuring one phase of the store benchmark in a child process: CPU time, RSS (the kernel's
high-water mark and a sampled trace of its anonymous part), where the resident memory sits at the
build's peak (/proc/PID/smaps by kind of mapping), and the size of what was written.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import queue
import re
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

def dir_bytes(path: Path) -> int:
    """Apparent size of the files (the engine's chunk files are sparse: see dir_allocated_bytes)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def dir_allocated_bytes(path: Path) -> int:
    """Bytes the files take on disk (allocated blocks: holes in sparse files are free)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark in bytes.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a spawned child would
    report at least its parent's RSS at fork time (the parent holds the data set).
    """
    hwm = proc_status().get("VmHWM")
    if hwm:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss if platform.system() == "Darwin" else rss * 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process, every thread included: on a shared machine the
    build's own cost, which wall time is not."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / RssAnon / RssFile / VmHWM of a process, in bytes (Linux; empty elsewhere)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def mapping_kind(name: str, store_dir: Path) -> str:
    """What one /proc/PID/smaps mapping is, for the peak breakdown: anonymous memory (engine and
    Python heap), shared libraries, or a kind of store file summed over every partition and
    segment (WAL, vectors, graph, payload storage, payload indexes, id tracker), the segment
    builder's temporary files apart."""
    if not name or name.startswith("[heap]") or name.startswith("[anon"):
        return "anon (heap: engine and Python allocations)"
    if name.startswith("["):
        return "other ([stack], [vdso], ...)"
    if ".so" in Path(name).name:
        return "shared libraries"
    try:
        rel = Path(name).relative_to(store_dir).as_posix()
    except ValueError:
        return "other files"
    where = "segment builder: " if "/temp_segments/" in f"/{rel}" else ""
    for key, what in (("/wal/", "WAL"), ("vector_storage", "vectors"), ("payload_storage", "payload storage"),
                      ("payload_index", "payload indexes"), ("vector_index", "graph"), ("links", "graph"),
                      ("hnsw", "graph"), ("graph", "graph"),
                      ("id_tracker", "id tracker"), ("mutable_id_tracker", "id tracker")):
        if key in f"/{rel}":
            return where + what
    return where + re.sub(r"\d+", "N", Path(rel).name)


def smaps_breakdown(pid: int, store_dir: Path) -> dict[str, int]:
    """Resident bytes of process `pid` by `mapping_kind`, largest first (Linux; empty elsewhere)."""
    out: dict[str, int] = {}
    kind = "anon (heap, engine and Python allocations)"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    fields = line.split(None, 5)
                    kind = mapping_kind(fields[5].strip() if len(fields) > 5 else "", store_dir)
                elif line.startswith("Rss:"):
                    out[kind] = out.get(kind, 0) + int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


ChildMain = Callable[[str, str, argparse.Namespace, Path, Path, "mp.Queue[Any]"], None]


def run_child(target: ChildMain, phase: str, engine: str, args: argparse.Namespace, workdir: Path,
              out: Path) -> dict[str, Any]:
    """Run one phase in a fresh process, sampling its RSS from outside every 50 ms: the peak of
    its anonymous part, and (build) where the resident memory was at its highest sample
    (``build_peak_breakdown``: /proc/PID/smaps by mapping, read whenever RSS grew 2% past the
    last breakdown, so it costs a few reads, not one per sample)."""
    ctx = mp.get_context("spawn")  # a fresh process: clean RSS, no inherited threads
    q: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(phase, engine, args, workdir, out, q))
    proc.start()
    peak_anon = 0
    breakdown: dict[str, int] = {}
    breakdown_rss = 0
    trace: list[tuple[float, int, int]] = []  # (s since start, RSS, anonymous RSS) once a second
    t0 = time.perf_counter()
    while True:
        st = proc_status(proc.pid)
        if st and (not trace or time.perf_counter() - t0 >= trace[-1][0] + 1.0):
            trace.append((round(time.perf_counter() - t0, 1), st.get("VmRSS", 0), st.get("RssAnon", 0)))
        peak_anon = max(peak_anon, st.get("RssAnon", 0))
        if phase == "build" and st.get("VmRSS", 0) > breakdown_rss * 1.02:
            found = smaps_breakdown(proc.pid, out.resolve())
            if found:
                breakdown, breakdown_rss = found, sum(found.values())
        try:
            status, payload = q.get(timeout=0.05)
            break
        except queue.Empty:
            if not proc.is_alive():
                status, payload = "error", f"child died with exit code {proc.exitcode} (out of memory?)"
                break
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{engine} {phase}: {payload}")
    payload[f"{phase}_peak_anon_bytes"] = peak_anon
    payload[f"{phase}_rss_trace"] = trace
    if breakdown:
        payload["build_peak_breakdown"] = {"sampled_rss_bytes": breakdown_rss, "by_mapping_bytes": breakdown}
    return payload

