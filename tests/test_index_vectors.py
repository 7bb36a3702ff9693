"""Issue 29: the named vectors an index declares. A zero-training index declares no `proxy` (its bridge
has no G, so no point would ever hold one: about 9 KiB of empty slot per unindexed point on the offline
preset); a bridge with G that extends it adds one, rebuilding each partition with its points kept bit
for bit, crash-safely; an index made before, which declared a `proxy` it never wrote, still opens,
searches and extends."""
from __future__ import annotations

import signal

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("qdrant_edge")

from bridge.config import TrainConfig  # noqa: E402
from bridge.encoders import load_preset  # noqa: E402
from bridge.pairs import ModalityData  # noqa: E402
from bridge.space import Bridge  # noqa: E402
from bridge.train import train  # noqa: E402
from indexer import index_directory  # noqa: E402
from indexer.index import PAYLOAD_INDEXES  # noqa: E402
from indexer.store import CollectionSpec, open_store  # noqa: E402
from indexer.store.edge_partitioned import PartitionedEdgeStore  # noqa: E402
from indexer.vectors import raw_vectors  # noqa: E402
from query import Index  # noqa: E402
from tests.test_pretrained import PRESET, _folder  # noqa: E402
from tests.test_robustness import cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_fresh_cache")


def bind_audio(out):
    """A bridge with G that binds audio to the tiny-labels space from audio-image pairs: it extends a
    zero-training index of that preset (test_pretrained's binding, saved to `out`)."""
    rng = np.random.default_rng(1)
    imgs = rng.standard_normal((40, 64)).astype(np.float32)
    pairs = [f"p{i}" for i in range(40)]
    data = {"image": ModalityData(ids=[f"i{i}" for i in range(40)], features=imgs, labels=[None] * 40, pairs=pairs),
            "audio": ModalityData(ids=[f"a{i}" for i in range(40)],
                                  features=imgs + 0.1 * rng.standard_normal((40, 64)).astype(np.float32),
                                  labels=[None] * 40, pairs=pairs)}
    cfg = TrainConfig(preset=PRESET, steps=20, proxy_steps=20, eval_every=10, batch_size=16)
    bound, _ = train(cfg, data, preset=load_preset(PRESET))
    assert bound.has_proxy
    return bound.save(out)


def declared(idx) -> tuple[set[str], dict[str, set[str]]]:
    """The store's declared vectors, and each partition's, as the engine's own shard configs say."""
    with open_store(idx) as store:
        return set(store.spec.vectors), {name: set(cfg["vectors"]) for name, cfg in store.engine_config().items()}


def stored(idx) -> dict[str, dict[str, np.ndarray]]:
    with open_store(idx) as store:
        return {rec.id: rec.vectors for rec in store.scroll(with_vectors=True)}


def assert_extended(idx, before: dict[str, dict[str, np.ndarray]]) -> None:
    """Every point of the zero-training index kept its vectors bit for bit and got G's view of its
    bridged vector; the partitions all declare `proxy`, with no rebuild folder left behind."""
    names, parts = declared(idx)
    assert "proxy" in names and all("proxy" in vecs for vecs in parts.values()), parts
    assert not [p.name for p in (idx / "modalities").iterdir() if p.name.startswith(".")]
    after = stored(idx)
    with Index.open(idx) as index:
        for pid, vecs in before.items():
            for name, v in vecs.items():
                np.testing.assert_array_equal(after[pid][name], v)
            view = index.bridge.proxy_view(np.asarray(vecs["bridged"], np.float32)[None])[0]
            np.testing.assert_allclose(after[pid]["proxy"], view, atol=1e-6)
        hits = index.search("zero", target="image", k=3, route="proxy")
        assert hits and {h.route for h in hits} == {"proxy"}


def test_a_zero_training_index_declares_no_proxy_and_a_bridge_with_g_adds_it(tmp_path):
    root, idx = _folder(tmp_path / "data"), tmp_path / "idx"
    index_directory(root, idx, preset=PRESET, progress=False)
    names, parts = declared(idx)
    assert "proxy" not in names and set(parts) == {"image", "text"}
    assert all("proxy" not in vecs and "bridged" in vecs for vecs in parts.values())
    before = stored(idx)

    summary = index_directory(root, idx, bridge=bind_audio(tmp_path / "bound"), progress=False)
    assert summary.by_modality == {"audio": 2}
    assert_extended(idx, before)
    with Index.open(idx) as index:
        assert index.store.count() == len(before) + 2
        assert index.search("zero", target="audio", k=2)[0].modality == "audio"


def test_an_index_that_declared_a_proxy_still_opens_searches_and_extends(tmp_path):
    """The layout every index had before issue 29: `proxy` declared beside `bridged` and the raw
    vectors, whatever the bridge. A zero-training run keeps it (nothing recreated, nothing re-embedded)."""
    root, idx = _folder(tmp_path / "data"), tmp_path / "idx"
    space = Bridge.from_preset(PRESET)
    old = {"bridged": space.dim, "proxy": space.dim, **raw_vectors(space)}
    with PartitionedEdgeStore(idx) as store:
        store.create(CollectionSpec(vectors=old, payload_indexes=dict(PAYLOAD_INDEXES)))
    first = index_directory(root, idx, preset=PRESET, progress=False)
    assert first.indexed == 9
    names, parts = declared(idx)
    assert names == set(old) and all("proxy" in vecs for vecs in parts.values())
    with Index.open(idx) as index:
        assert index.search("a dog", target="text", k=2)
    before = stored(idx)
    assert not any("proxy" in vecs for vecs in before.values())  # declared, never written
    again = index_directory(root, idx, preset=PRESET, progress=False)
    assert again.indexed == 0 and again.unchanged == 9

    index_directory(root, idx, bridge=bind_audio(tmp_path / "bound"), progress=False)
    assert_extended(idx, before)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage", ["store", "partition-grow", "partition-swap"])
def test_an_extension_killed_midway_loses_no_point_and_resumes(tmp_path, stage):
    """Killed after the index's bridge copy became the new bridge (`store`), with a rebuilt partition whole
    beside the old one, or with the old one moved aside and the new one not yet in place: the store opens
    with every point as it was (the old partition stands or is put back), the bridge the extension started
    from is kept beside the copy, and a plain re-run (no --reembed; after `store`, not even --bridge)
    finishes the extension: every old point keeps its vectors bit for bit."""
    root, idx = _folder(tmp_path / "data"), tmp_path / "idx"
    index_directory(root, idx, preset=PRESET, progress=False)
    before = stored(idx)
    args = ("index", str(root), "--index", str(idx), "--bridge", str(bind_audio(tmp_path / "bound")),
            "--no-progress", "--workers", "1", "--decode", "threads")
    killed = cli(*args, env={"EBRIDGE_TEST_KILL_AT": stage})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    aside = {p.name for p in (idx / "modalities").iterdir() if p.name.startswith(".")}
    assert aside == {"store": set(), "partition-grow": {".image.tmp"},
                     "partition-swap": {".image.old", ".image.tmp"}}[stage]
    assert (idx / ".bridge.extends" / "config.json").is_file()
    after = stored(idx)
    assert set(after) == set(before)
    for pid, vecs in before.items():
        assert set(after[pid]) == set(vecs)
        for name, v in vecs.items():
            np.testing.assert_array_equal(after[pid][name], v)
    assert not (idx / "modalities" / ".image.old").exists()

    rerun = cli(*(args[:4] + args[6:] if stage == "store" else args))
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr[-3000:]
    assert "finishing the extension" in rerun.stderr
    assert_extended(idx, before)
    assert not (idx / ".bridge.extends").exists()
    with open_store(idx) as store:
        assert store.count() == len(before) + 2
