"""A pretrained space with no training: label-space maths, a zero-training index, skipped
modalities, extension by a bound bridge (bit for bit), and the raw route for search by example."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from tests.pairs_support import thermal_pairs_folder
from PIL import Image

torch = pytest.importorskip("torch")

from bridge.config import TrainConfig  # noqa: E402
from bridge.encoders import load_preset  # noqa: E402
from bridge.labelspace import LabelSpaceSpec, class_prompt_matrix, to_label_space  # noqa: E402
from bridge.modalities import load  # noqa: E402
from bridge.model import Head  # noqa: E402
from bridge.pairs import ModalityData  # noqa: E402
from bridge.space import Bridge  # noqa: E402
from bridge.train import train  # noqa: E402
from indexer import index_directory  # noqa: E402
from indexer.ledger import ERRORS_FILE  # noqa: E402
from query import Index  # noqa: E402

PRESET = "tiny-labels"


pytestmark = pytest.mark.usefixtures("one_thread_fresh_cache")


def _folder(root, images=6, texts=3, audio=2):
    rng = np.random.default_rng(0)
    (root / "photos").mkdir(parents=True)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "photos" / f"p{i}.png")
    (root / "notes").mkdir()
    for i in range(texts):
        (root / "notes" / f"n{i}.txt").write_text(f"note number {i} about a {['cat', 'dog', 'ship'][i % 3]}")
    (root / "sounds").mkdir()
    for i in range(audio):
        with wave.open(str(root / "sounds" / f"s{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((rng.standard_normal(8000) * 3000).astype(np.int16).tobytes())
    return root


def test_label_space_toy_classifier_lands_on_its_class():
    """An image whose classifier puts all its mass on class c is e_c, and the nearest class prompt
    (a text query) of e_c is c's own; the torch map and the numpy twin agree."""
    head = Head(4, 3, kind="labelspace")
    head.labels.set(weight=np.eye(3, 4) * 50, bias=np.zeros(3), scale=1.0, cosine=False)
    x = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    z = head(x).numpy()
    np.testing.assert_allclose(z, [[1, 0, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(z, to_label_space(x.numpy() @ np.eye(3, 4).T * 50), atol=1e-6)
    prompts = np.eye(3, 5, dtype=np.float32)  # three classes' prompt embeddings, unit rows
    text = Head(5, 3, kind="labelspace")
    text.labels.set(weight=prompts, bias=np.zeros(3), scale=1 / 0.05, cosine=True)
    queries = torch.tensor(prompts + 0.1)  # each near its class's prompt
    assert (z @ text(queries).numpy().T).argmax(1).tolist() == [0, 2]  # each image finds its class's query
    assert np.allclose(np.linalg.norm(text(queries).numpy(), axis=1), 1, atol=1e-6)


def test_class_prompts_are_cached_and_templated(tmp_path):
    spec = LabelSpaceSpec(classes=["cat", "dog"], templates=["{}", "a photo of a {}"])
    assert spec.prompts("dog") == ["dog", "a photo of a dog"]
    preset = load_preset("tiny")
    m1 = class_prompt_matrix(spec, preset.encoder("text"), "fp")
    assert m1.shape == (2, 64) and np.allclose(np.linalg.norm(m1, axis=1), 1, atol=1e-5)
    assert list((tmp_path / "cache" / "labelspace").glob("prompts-*.npy"))
    np.testing.assert_array_equal(class_prompt_matrix(spec, preset.encoder("text"), "fp"), m1)


def test_zero_training_index_holds_the_presets_own_vectors(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    summary = index_directory(root, tmp_path / "idx", preset=PRESET, progress=False)
    assert summary.by_modality == {"image": 6, "text": 3}
    assert summary.skipped == {"audio": 2} and summary.errors == 0
    assert "bind audio" in caplog.text.lower() or "Bind audio" in caplog.text
    assert "ebridge train" in (tmp_path / "idx" / ERRORS_FILE).read_text()
    space = Bridge.from_preset(PRESET)
    with Index.open(tmp_path / "idx") as index:
        assert index.bridge.version == space.version and not index.bridge.has_proxy
        hits = index.search("a photo of a cat", target="image", k=6)
        assert len(hits) == 6 and {h.route for h in hits} == {"direct"}
        for h in hits:
            rec = index.store.retrieve([h.id], with_vectors=True)[0]
            expect = space.embed("image", [root / h.path])[0]
            np.testing.assert_allclose(rec.vectors["bridged"], expect, atol=1e-6)
            feats = space.encode("image", [load("image", root / h.path)])[0]
            np.testing.assert_allclose(rec.vectors["raw_image"], feats / np.linalg.norm(feats), atol=1e-6)
        for h in index.search("a dog", target="text", k=3):
            rec = index.store.retrieve([h.id], with_vectors=True)[0]
            expect = space.embed("text", [(root / h.path).read_text()])[0]
            np.testing.assert_allclose(rec.vectors["bridged"], expect, atol=1e-6)
        # Search by example takes the encoder's own features on a zero-training space.
        assert index.route_for("image", "image") == "raw"
        by_example = index.search({"id": hits[0].id}, target="image", k=6)
        assert {h.route for h in by_example} == {"raw"}
        raw = {h.id: index.store.retrieve([h.id], with_vectors=True)[0].vectors["raw_image"] for h in hits}
        expect = sorted(raw, key=lambda pid: -float(raw[pid] @ raw[hits[0].id]))
        assert [h.id for h in by_example] == expect  # the raw features' own ranking
        with pytest.raises(Exception, match="needs G"):
            index.search("cat", target="image", route="fused")


def test_binding_a_modality_extends_the_index_bit_for_bit(tmp_path):
    root = _folder(tmp_path / "data")
    index_directory(root, tmp_path / "idx", preset=PRESET, progress=False)
    with Index.open(tmp_path / "idx") as index:
        before = {r.id: r.vectors for r in index.store.retrieve(
            [p.id for p in index.store.scroll()], with_vectors=True)}
    # A bridge that binds audio to the same space from audio-image pairs alone (no text rows: the
    # label space's class prompts stand for the proxy), with the default base setting.
    rng = np.random.default_rng(1)
    preset = load_preset(PRESET)
    imgs = rng.standard_normal((40, 64)).astype(np.float32)
    pairs = [f"p{i}" for i in range(40)]
    data = {
        "image": ModalityData(ids=[f"i{i}" for i in range(40)], features=imgs, labels=[None] * 40, pairs=pairs),
        "audio": ModalityData(ids=[f"a{i}" for i in range(40)], features=imgs + 0.1 * rng.standard_normal((40, 64))
                              .astype(np.float32), labels=[None] * 40, pairs=pairs),
    }
    cfg = TrainConfig(preset=PRESET, steps=20, proxy_steps=20, eval_every=10, batch_size=16)
    bound, _ = train(cfg, data, preset=preset)
    assert bound.config["head_kinds"]["image"] == "labelspace" and bound.dim == 10
    assert bound.config["base"] == "frozen" and {"text", "video"} <= set(bound.modalities)
    ckpt = bound.save(tmp_path / "bound")
    summary = index_directory(root, tmp_path / "idx", bridge=ckpt, progress=False)
    assert summary.by_modality == {"audio": 2} and not summary.skipped
    with Index.open(tmp_path / "idx") as index:
        after = {r.id: r.vectors for r in index.store.retrieve(list(before), with_vectors=True)}
        for pid, vecs in before.items():
            np.testing.assert_array_equal(after[pid]["bridged"], vecs["bridged"])  # bit for bit
            assert "proxy" in after[pid]  # G's view, computed from the stored vector
        assert index.store.count() == 11
        assert index.search("zero", target="audio", k=2)[0].modality == "audio"
        assert index.search("zero", target="image", k=2)[0].route == "direct"


def test_a_collapsing_head_sends_search_by_example_through_raw(tmp_path):
    """A head made to collapse a modality onto its classes: training's validation picks `raw` for
    that modality's same-modality pair, and search by example returns the raw features' ranking."""
    rng = np.random.default_rng(0)
    n, classes = 80, 4
    centres = rng.standard_normal((classes, 64)).astype(np.float32)
    labels = [f"c{i % classes}" for i in range(n)]
    # Within a class, items are distinct points (their own identity is what search by example finds).
    feats = {m: centres[np.arange(n) % classes] + 0.5 * rng.standard_normal((n, 64)).astype(np.float32)
             for m in ("image", "audio")}
    data = {m: ModalityData(ids=[f"{m}{i}" for i in range(n)], features=feats[m], labels=labels, pairs=[None] * n)
            for m in ("image", "audio")}
    data["text"] = ModalityData(ids=[f"c{i}" for i in range(classes)], features=centres, labels=[f"c{i}" for i in
                                range(classes)], pairs=[None] * classes)
    cfg = TrainConfig(preset="tiny", steps=150, proxy_steps=20, eval_every=50, batch_size=32, dim=16)
    bridge, _ = train(cfg, data, preset=load_preset("tiny"))
    head = bridge.modules.heads["audio"]
    # Collapse it on purpose: every audio item lands on its class's direction.
    with torch.no_grad():
        head.net[-1].weight.zero_()
        head.net[-1].bias.zero_()
        head.skip.weight.mul_(0.0)
        head.skip.bias.copy_(torch.ones(16))
    from bridge.train import choose_same_modality_routes

    routes = choose_same_modality_routes(bridge, data)
    assert routes["audio->audio"]["route"] == "raw"
    assert routes["audio->audio"]["raw_r1"] > routes["audio->audio"]["bridge_r1"]


def test_keep_neighbours_term_trains_and_is_recorded():
    """The neighbourhood term runs in binding and is saved with the checkpoint's settings."""
    rng = np.random.default_rng(0)
    n = 40
    labels = [f"c{i % 4}" for i in range(n)]
    x = rng.standard_normal((n, 64)).astype(np.float32)
    data = {"image": ModalityData(ids=[f"i{i}" for i in range(n)], features=x, labels=labels, pairs=[None] * n),
            "text": ModalityData(ids=["c0", "c1", "c2", "c3"], features=x[:4], labels=["c0", "c1", "c2", "c3"],
                                 pairs=[None] * 4),
            "audio": ModalityData(ids=[f"a{i}" for i in range(n)], features=x + 0.1, labels=labels, pairs=[None] * n)}
    cfg = TrainConfig(preset="tiny", steps=20, proxy_steps=10, eval_every=10, batch_size=16, dim=16,
                      keep_neighbours=1.0)
    bridge, curves = train(cfg, data, preset=load_preset("tiny"))
    assert bridge.config["keep_neighbours"] == 1.0 and curves["bind/audio-image"]


def test_cli_story_index_photos_then_bind_thermal_from_image_pairs_only(tmp_path, capsys):
    """As a user would: `ebridge index` a folder with no training (thermal frames skipped), bind
    thermal with `ebridge train` from thermal-image pairs (no text rows), `ebridge index` again:
    the photos keep their vectors and the thermal frames are added."""
    from query.cli import main

    data, _ = thermal_pairs_folder(tmp_path)
    idx = tmp_path / "idx"
    assert main(["index", str(data), "--index", str(idx), "--preset", PRESET, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["by_modality"] == {"image": 12} and first["skipped"] == {"thermal": 12}
    with Index.open(idx) as index:
        before = {r.payload["path"]: r.vectors["bridged"] for r in index.store.scroll(with_vectors=True)}
    assert main(["train", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "bound"), "--preset", PRESET,
                 "--steps", "20", "--proxy-steps", "20", "--eval-every", "10", "--batch-size", "8",
                 "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["index", str(data), "--index", str(idx), "--bridge", str(tmp_path / "bound"), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["by_modality"] == {"thermal": 12} and not second["skipped"] and second["points"] == 24
    with Index.open(idx) as index:
        after = {r.payload["path"]: r.vectors["bridged"] for r in index.store.scroll(with_vectors=True)
                 if r.payload["modality"] == "image"}
        assert after.keys() == before.keys()
        assert all(np.array_equal(after[p], before[p]) for p in before)  # bit for bit
        hits = index.search(data / "thermal" / "p0_ir.png", target="image", k=3)
        assert hits and hits[0].modality == "image"


def test_search_by_example_keeps_the_encoder_unless_the_space_clearly_wins():
    """The bench's route table for a same-modality pair: `direct` only on a clear sign-test win
    over the raw features; a tie or a small edge keeps `raw`."""
    from query.eval.bench import calibrate_routes, clearly_better

    assert not clearly_better(0, 0) and not clearly_better(6, 3) and clearly_better(30, 5)
    val = {"audio->audio": {"direct": {"r1": 0.97, "map": 0.9}, "raw": {"r1": 0.96, "map": 0.9},
                            "direct_only": 6, "raw_only": 3},
           "image->image": {"direct": {"r1": 0.90, "map": 0.8}, "raw": {"r1": 0.60, "map": 0.5},
                            "direct_only": 40, "raw_only": 4}}
    assert calibrate_routes(val) == {"audio->audio": "raw", "image->image": "direct"}


def test_a_zero_training_index_is_served_and_more_like_this_takes_the_raw_route(tmp_path):
    """`ebridge serve` on an index built with no training: it warms (no G), answers text queries
    directly, and "More like this" (search by id, grouped by modality) goes through the raw features."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from query.serve.app import create_app
    from query.serve.service import SearchService, ServeSettings

    root = _folder(tmp_path / "data")
    index_directory(root, tmp_path / "idx", preset=PRESET, progress=False)
    service = SearchService.open(tmp_path / "idx", ServeSettings(workers=1))
    with TestClient(create_app(service)) as client:
        text = client.post("/search", json={"text": "a photo of a cat", "target": ["image"], "k": 3}).json()
        assert [h["route"] for h in text["hits"]] == ["direct"] * 3
        like = client.post("/search", json={"id": text["hits"][0]["id"], "k": 3, "group_by": "modality"}).json()
        assert like["groups"]["image"]["route"] == "raw" and like["groups"]["image"]["score_kind"] == "cosine"
        assert like["groups"]["image"]["hits"][0]["id"] == text["hits"][0]["id"]
        raw = client.post("/search", json={"id": text["hits"][0]["id"], "k": 3, "route": "raw",
                                           "group_by": "modality"}).json()
        assert set(raw["groups"]) == {"image"}  # the raw route compares a modality with itself only


def _labelled_pairs(images: np.ndarray, texts: np.ndarray, labels: list[str]) -> dict[str, ModalityData]:
    return {"image": ModalityData(ids=[f"i{i}" for i in range(len(images))], features=images, labels=labels,
                                  pairs=[None] * len(images)),
            "text": ModalityData(ids=[f"t{i}" for i in range(len(texts))], features=texts, labels=labels,
                                 pairs=[None] * len(texts))}


@pytest.mark.parametrize("knows_the_classes", [True, False])
def test_auto_base_starts_from_the_label_space_only_where_validation_says_so(knows_the_classes):
    """`--base auto` on a label-space preset trains the base from the label-space start and from the
    features' own axes and keeps the better on validation (ties: the label space). Images the
    classifier knows (features along its class weights) keep the label space; images of classes it
    does not know (the digits world's handwritten digits, here random clusters) get the trained base."""
    preset = load_preset(PRESET)
    spec = LabelSpaceSpec.from_preset(preset.spec["label_space"])
    names = spec.class_names()
    weight, _ = preset.encoder("image").backbone.classifier(len(names))
    prompts = class_prompt_matrix(spec, preset.encoder("text"), preset.modality_fingerprint("text"))
    rng = np.random.default_rng(3)
    centres = weight / np.linalg.norm(weight, axis=1, keepdims=True) * 8 if knows_the_classes else \
        rng.standard_normal(weight.shape) * 3

    def split(per_class: int) -> dict[str, ModalityData]:
        y = np.repeat(np.arange(len(names)), per_class)
        images = (centres[y] + 0.3 * rng.standard_normal((len(y), weight.shape[1]))).astype(np.float32)
        texts = (prompts[y] + 0.01 * rng.standard_normal((len(y), prompts.shape[1]))).astype(np.float32)
        return _labelled_pairs(images, texts, [names[c] for c in y])

    cfg = TrainConfig(preset=PRESET, steps=0, proxy_steps=5, batch_size=32)
    data, val = split(12), split(4)
    bridge, _ = train(cfg, data, val=val, preset=preset)
    choice = bridge.config["base_choice"]
    side_by_side, _ = train(cfg, data, val=val, preset=preset, jobs=2)  # the two trials in forked workers
    assert side_by_side.config["base_choice"] == choice and side_by_side.version == bridge.version
    assert set(choice) == {"chosen", "finetune", "trained"}
    assert choice["chosen"] == ("finetune" if choice["finetune"] >= choice["trained"] else "trained")
    assert choice["chosen"] == ("finetune" if knows_the_classes else "trained"), choice
    kinds = bridge.config["head_kinds"]
    assert kinds["image"] == ("labelspace" if knows_the_classes else "residual")  # a kept start is the fixed map


def test_a_zero_training_index_whose_bridge_cannot_load_is_rebuilt_by_reembed(tmp_path):
    """A zero-training copy that no longer loads (a changed concept table, a damaged file) names
    --reembed, and --reembed builds the space again from the copy's preset."""
    from bridge.errors import CheckpointError

    root = _folder(tmp_path / "data")
    index_directory(root, tmp_path / "idx", preset=PRESET, progress=False)
    (tmp_path / "idx" / "bridge" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="--reembed"):
        index_directory(root, tmp_path / "idx", progress=False)
    summary = index_directory(root, tmp_path / "idx", reembed=True, progress=False)
    assert summary.by_modality == {"image": 6, "text": 3} and summary.errors == 0
    with Index.open(tmp_path / "idx") as index:
        assert index.bridge.version == Bridge.from_preset(PRESET).version
        assert len(index.search("a photo of a cat", target="image", k=3)) == 3
