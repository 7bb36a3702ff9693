"""A small real index for the server tests: the shipped digits sample, tiny preset, as in test_search.

Built once per test session (test_serve and test_browser share it) under pytest's base temp folder.
"""
from __future__ import annotations

from pathlib import Path


def small_index(tmp_path_factory) -> tuple[Path, Path]:
    """(index folder, indexed folder) of the digits sample's test split, built on first use."""
    from tests.conftest import tiny_digits_index

    root = tmp_path_factory.getbasetemp() / "serve-index"
    index, data = root / "edge.index", root / "world" / "test"
    if not (root / "READY").exists():
        tiny_digits_index(root)
        (root / "READY").write_text("ok")
    return index, data


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """The real uvicorn server on a free loopback port, in a thread of the test process.

    Example::

        with RunningServer(create_app(service)) as url:
            urllib.request.urlopen(url + "/health")
    """

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.thread = None

    def __enter__(self) -> str:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start within 20 s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
