"""Load a warm `ebridge serve` with N concurrent clients on loopback; print p50/p95 latency and requests/s.

Three phases of `--seconds` each: text queries (JSON; a few popular words, so the server's text
cache answers most), text queries never seen before (each runs the encoder and G), then file queries
(multipart uploads of indexed files). Each client keeps one HTTP/1.1 connection open, as a real client would. Not a test: numbers.

    python scripts/load_serve.py --index runs/digits-index --clients 8 --seconds 20 --json load.json
    python scripts/load_serve.py --url http://127.0.0.1:8000 --files 'data/test/audio/*.flac'

With --index the script starts the server itself (a subprocess, as `ebridge serve` would run) and
waits for it to be warm; with --url it uses one already running.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.provenance import write_json_report  # noqa: E402
from query.serve.client import ServerError, request, search_body  # noqa: E402

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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    proc = None
    url = args.url
    if args.index is not None:
        proc, url = start_server(args.index, args.api_key, args.server_workers)
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
        for phase, bodies in (("text", texts), ("text_uncached", unique), ("file", uploads)):
            run_phase(url, bodies[-1:], 1, 1.0, args.api_key)  # warm this path (the unique texts: one not measured)
            report[phase] = run_phase(url, bodies, args.clients, args.seconds, args.api_key)
            r = report[phase]
            print(f"{phase:>13}: {r['requests']:>6} requests, {r['failed']} failed, {r['rps']:7.1f} req/s, "
                  f"p50 {r['p50_ms']:7.1f} ms, p95 {r['p95_ms']:7.1f} ms, max {r['max_ms']:7.1f} ms "
                  f"({args.clients} clients, {args.seconds:.0f} s)")
        if args.json:
            write_json_report(args.json, report)
            log.info("wrote %s", args.json)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


def run_phase(url: str, bodies: list[tuple[bytes, str]], clients: int, seconds: float,
              api_key: str | None) -> dict:
    parsed = urllib.parse.urlsplit(url)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=120)
        n = i
        while time.perf_counter() < stop:
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


def start_server(index: Path, api_key: str | None, workers: int | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "query.cli", "serve", "--index", str(index), "--port", str(port)]
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
