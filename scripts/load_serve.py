"""Load a warm `ebridge serve` with N concurrent clients on loopback; print p50/p95 latency and requests/s.

Three phases of `--seconds` each: text queries (JSON; a few popular words, so the server's text
cache answers most), text queries never seen before (each runs the encoder and G), then file queries
(multipart uploads of indexed files). Each client keeps one HTTP/1.1 connection open, as a real client would. Not a test: numbers.

    python -m scripts.load_serve --index runs/digits-index --clients 8 --seconds 20 --json load.json
    python -m scripts.load_serve --url http://127.0.0.1:8000 --files 'data/test/audio/*.flac'

With --index the script starts the server itself (a subprocess, as `ebridge serve` would run) and
waits for it to be warm; with --url it uses one already running.

With --watch DIR --index-images N (a server started with `--watch DIR`, or by the script with
--index), a last phase compares query latency idle and while the server indexes: uncached text
queries for --seconds on an idle server, then N images copied into a new folder under DIR and the
same queries until the server has indexed them all; then the folder is removed again (and its
points with it). It prints both p50/p95, their ratio, the indexing rate and the load average.

    python -m scripts.load_serve --index idx --watch data/test --index-images 1000 \
        --images '../shared/data/cifar10/test/*/*.jpg' --json load-watch.json
"""
from __future__ import annotations

import argparse
import glob
import http.client
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bridge.provenance import write_json_report
from query.serve.client import ServerError, request, search_body

log = logging.getLogger("load_serve")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "a spoken seven", "the digit three", "a picture of a four", "nine, said aloud"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server")
    where.add_argument("--index", type=Path, help="start `ebridge serve --index` on a free port and load it")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--files", help="glob of query files (default: indexed audio and image files, from the server)")
    ap.add_argument("--api-key", default=os.environ.get("EBRIDGE_API_KEY"))
    ap.add_argument("--server-workers", type=int, default=None, help="with --index: the server's --workers")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--watch", type=Path, help="the folder the server keeps indexed (serve --watch DIR)")
    ap.add_argument("--index-images", type=int, default=0,
                    help="with --watch: measure queries while the server indexes this many copied images")
    ap.add_argument("--images", help="with --index-images: glob of images to copy (default: those under --watch)")
    ap.add_argument("--only-indexing", action="store_true", help="skip the text/file phases")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    proc = None
    url = args.url
    if args.index is not None:
        proc, url = start_server(args.index, args.api_key, args.server_workers, args.watch)
    try:
        stats = request(url, "/stats", api_key=args.api_key)
        files = sorted(glob.glob(args.files)) if args.files else indexed_files(url, args.api_key)
        if not files:
            raise SystemExit("no query files: pass --files GLOB")
        report = {"url": url, "clients": args.clients, "seconds": args.seconds, "k": args.k,
                  "points": stats["points"], "bridge_version": stats["bridge_version"], "cpus": os.cpu_count()}
        texts = [search_body(text=w, k=args.k) for w in WORDS]
        # never seen before, so never in the server's text cache: every one runs the encoder and G
        unique = [search_body(text=f"{WORDS[n % len(WORDS)]} #{n}", k=args.k) for n in range(100_000)]
        uploads = [search_body(file=f, k=args.k) for f in files]
        phases = () if args.only_indexing else (("text", texts), ("text_uncached", unique), ("file", uploads))
        for phase, bodies in phases:
            run_phase(url, bodies[-1:], 1, 1.0, args.api_key)  # warm this path (the unique texts: one not measured)
            report[phase] = run_phase(url, bodies, args.clients, args.seconds, args.api_key)
            r = report[phase]
            print(f"{phase:>13}: {r['requests']:>6} requests, {r['failed']} failed, {r['rps']:7.1f} req/s, "
                  f"p50 {r['p50_ms']:7.1f} ms, p95 {r['p95_ms']:7.1f} ms, max {r['max_ms']:7.1f} ms "
                  f"({args.clients} clients, {args.seconds:.0f} s)")
        if args.index_images:
            if args.watch is None:
                raise SystemExit("--index-images needs --watch DIR: the folder the server keeps indexed")
            report["indexing"] = indexing_phase(url, args, unique[50_000:])
        if args.json:
            write_json_report(args.json, report)
            log.info("wrote %s", args.json)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


def indexing_phase(url: str, args: argparse.Namespace, bodies: list[tuple[bytes, str]]) -> dict:
    """Uncached text queries idle, then while the server indexes `--index-images` copied images."""
    import shutil

    watch = args.watch.resolve()
    pattern = args.images or str(watch / "**" / "*")
    sources = [p for p in sorted(glob.glob(pattern, recursive=True))
               if Path(p).suffix.lower() in (".png", ".jpg", ".jpeg") and "load-serve-" not in p]
    if not sources:
        raise SystemExit(f"no images match {pattern}; pass --images GLOB")
    n = args.index_images
    before = request(url, "/stats", api_key=args.api_key)
    if (before.get("indexing") or {}).get("folder") is None:
        raise SystemExit(f"{url} does not watch a folder; start it with `ebridge serve --index IDX --watch {watch}`")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # the server's catch-up run first: idle means idle
        ix = before.get("indexing") or {}
        if ix.get("state") == "watching" and ix.get("queued") == 0:
            break
        time.sleep(1)
        before = request(url, "/stats", api_key=args.api_key)
    out: dict = {"images": n, "clients": args.clients, "points_before": before["points"]}
    out["load_before"] = os.getloadavg()
    out["idle"] = run_phase(url, bodies[:25_000], args.clients, args.seconds, args.api_key)
    out["idle"]["loadavg"] = os.getloadavg()
    folder = watch / f"load-serve-{os.getpid()}"
    folder.mkdir()
    t0 = time.perf_counter()
    for i in range(n):
        src = Path(sources[i % len(sources)])
        shutil.copyfile(src, folder / f"{i:05d}-{src.parent.name}-{src.name}")
    log.info("copied %d images into %s in %.1fs; measuring queries until they are indexed", n, folder,
             time.perf_counter() - t0)
    target = before["points"] + n

    def indexed() -> bool:
        s = request(url, "/stats", api_key=args.api_key)
        ix = s.get("indexing") or {}
        return s["points"] >= target and ix.get("queued") == 0 and ix.get("state") == "watching"

    out["during"] = run_phase(url, bodies[25_000:], args.clients, 3600.0, args.api_key, until=indexed)
    out["during"]["loadavg"] = os.getloadavg()
    out["index_seconds"] = round(time.perf_counter() - t0, 2)
    out["images_per_s"] = round(n / out["index_seconds"], 1)
    out["p50_ratio"] = round(out["during"]["p50_ms"] / out["idle"]["p50_ms"], 2)
    out["p95_ratio"] = round(out["during"]["p95_ms"] / out["idle"]["p95_ms"], 2)
    stats = request(url, "/stats", api_key=args.api_key)
    out["points_after"], out["indexing_errors"] = stats["points"], stats["indexing"]["errors"]
    shutil.rmtree(folder)  # and the server removes their points again
    deadline = time.monotonic() + 300
    while request(url, "/stats", api_key=args.api_key)["points"] != before["points"] and time.monotonic() < deadline:
        time.sleep(0.5)
    for phase in ("idle", "during"):
        r = out[phase]
        print(f"{'indexing:' + phase:>16}: {r['requests']:>6} requests, {r['failed']} failed, p50 {r['p50_ms']:7.1f} ms, "
              f"p95 {r['p95_ms']:7.1f} ms, max {r['max_ms']:7.1f} ms, load average {r['loadavg'][0]:.2f}")
    print(f"indexing {n} images took {out['index_seconds']:.1f} s ({out['images_per_s']} images/s); "
          f"p50 while indexing / idle = {out['p50_ratio']}x (goal <= 2x), p95 {out['p95_ratio']}x; "
          f"{out['indexing_errors']} indexing errors")
    return out


def run_phase(url: str, bodies: list[tuple[bytes, str]], clients: int, seconds: float,
              api_key: str | None, until: Any = None) -> dict:
    """`clients` connections posting `bodies` for `seconds`, or until `until()` is true (checked twice a second)."""
    parsed = urllib.parse.urlsplit(url)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    errors: list[str] = []
    stop = time.perf_counter() + seconds
    done = threading.Event()

    def monitor() -> None:
        while not done.is_set() and time.perf_counter() < stop:
            if until():
                done.set()
                return
            time.sleep(0.5)

    if until is not None:
        threading.Thread(target=monitor, daemon=True).start()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=120)
        n = i
        while time.perf_counter() < stop and not done.is_set():
            body, kind = bodies[n % len(bodies)]
            n += clients
            headers = {"Content-Type": kind, "Content-Length": str(len(body))}
            if api_key:
                headers["X-API-Key"] = api_key
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/search", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200
                if not ok and len(errors) < 5:
                    errors.append(f"{resp.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                ok = False
                if len(errors) < 5:
                    errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=120)
            latencies[i].append(1000 * (time.perf_counter() - t0))
            failures[i] += not ok
        conn.close()

    t_start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    wall = time.perf_counter() - t_start
    lat = sorted(x for per in latencies for x in per)
    for e in errors:
        log.warning("failed request: %s", e)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else float("nan")

    return {"requests": len(lat), "failed": sum(failures), "rps": round(len(lat) / wall, 1),
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "max_ms": round(lat[-1], 2) if lat else float("nan")}


def indexed_files(url: str, api_key: str | None) -> list[str]:
    """Audio and image files of the index, fetched through the API (so --url needs no local path)."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="load-serve-"))
    files = []
    for target, n in (("audio", 6), ("image", 6)):
        body, kind = search_body(text="seven", target=[target], k=n)
        for hit in request(url, "/search", body, kind, api_key=api_key)["hits"]:
            path = out / Path(hit["path"]).name
            req = urllib.request.Request(url + hit["media"], headers={"X-API-Key": api_key} if api_key else {})
            with urllib.request.urlopen(req) as resp:
                path.write_bytes(resp.read())
            files.append(str(path))
    return files


def start_server(index: Path, api_key: str | None, workers: int | None,
                 watch: Path | None = None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "query.cli", "serve", "--index", str(index), "--port", str(port)]
    if watch is not None:
        cmd += ["--watch", str(watch)]
    if workers:
        cmd += ["--workers", str(workers)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if api_key:
        env["EBRIDGE_API_KEY"] = api_key
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            request(url, "/health", timeout=2)
            log.info("server up (warm) at %s", url)
            return proc, url
        except ServerError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the server did not answer /health within 300 s")


if __name__ == "__main__":
    sys.exit(main())
