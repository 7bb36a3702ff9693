"""A small real index for the server tests: the shipped digits sample, tiny preset, as in test_search.

Built once per test session (test_serve and test_browser share it) under pytest's base temp folder.
"""
from __future__ import annotations

from pathlib import Path


def small_index(tmp_path_factory) -> tuple[Path, Path]:
    """(index folder, indexed folder) of the digits sample's test split, built on first use."""
    from bridge.encoders import load_preset
    from bridge.features import FeatureCache
    from bridge.pairs import in_split, read_manifest, training_set
    from bridge.train import TrainConfig, train
    from indexer.index import index_directory
    from query.eval.digits import build_digits_world

    root = tmp_path_factory.getbasetemp() / "serve-index"
    index, data = root / "edge.index", root / "world" / "test"
    if (root / "READY").exists():
        return index, data
    world = build_digits_world(root / "world", scale="sample")
    preset = load_preset("tiny")
    train_set = training_set(in_split(read_manifest(world / "manifest.csv"), "train"), preset, FeatureCache(root / "cache"))
    cfg = TrainConfig(preset="tiny", dim=32, hidden=64, steps=120, proxy_steps=150, batch_size=64,
                      diffusion_timesteps=100, diffusion_steps=4, seed=0)
    bridge, _ = train(cfg, train_set, preset_info=preset.info())
    index_directory(data, index, bridge=bridge.save(root / "bridge"), progress=False)
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
