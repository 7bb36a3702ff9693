"""Any-to-any search on a small real index (shipped digits sample, tiny preset), on both backends."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from indexer.index import index_directory  # noqa: E402
from indexer.store import open_store  # noqa: E402
from query.search import CROSS_ROUTES, Index, QueryError  # noqa: E402
from tests.conftest import tiny_digits_index  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    w, bridge, ckpt = tiny_digits_index(root)
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    index_directory(w / "test", root / "server.index", bridge=ckpt, qdrant_url=client, collection="digits", progress=False)
    return {"root": root, "world": w, "bridge": bridge, "client": client}


@pytest.fixture(params=["edge", "server"])
def index(world, request):
    if request.param == "edge":
        ix = Index.open(world["root"] / "edge.index")
    else:
        store = open_store(world["root"] / "server.index", url=world["client"], collection="digits")
        ix = Index(store, Index.open(world["root"] / "edge.index").bridge)
    yield ix
    if request.param == "edge":
        ix.close()


def test_hits_are_of_the_target_modality_and_sorted(index):
    for target in ("audio", "depth", "image"):
        hits = index.search("seven", target=target, k=8)
        assert len(hits) == 8
        assert {h.modality for h in hits} == {target}
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)


def test_several_targets_and_filters(index):
    hits = index.search("three", target=["depth", "thermal"], k=10, filter={"label": "three"})
    assert hits and {h.modality for h in hits} <= {"depth", "thermal"} and {h.label for h in hits} == {"three"}
    audio = index.search("three", target="audio", k=50, filter={"path_prefix": "audio/3_"})
    assert audio and all(h.path.startswith("audio/3_") for h in audio)


def test_text_to_audio_finds_the_spoken_digit_above_chance(index):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    right = sum(h.label == w for w in words for h in index.search(w, target="audio", k=5))
    assert right / 50 > 0.3  # chance is 0.1 (tiny preset, small sample)


def test_file_and_id_queries(index, world):
    wav = sorted((world["world"] / "test" / "audio").iterdir())[0]
    by_file = index.search(wav, target="image", k=5)
    assert by_file and by_file[0].modality == "image"
    first = index.search("five", target="depth", k=1)[0]
    by_id = index.search({"id": first.id}, target="depth", k=1)
    assert by_id[0].id == first.id and by_id[0].score == pytest.approx(1.0, abs=1e-3)


def test_batch_equals_one_by_one(index):
    queries = ["one", "two", "nine"]
    for route in CROSS_ROUTES:
        batch = index.search_batch(queries, target="thermal", k=5, route=route)
        single = [index.search(q, target="thermal", k=5, route=route) for q in queries]
        for b, one in zip(batch, single):
            # the same hits with the same scores; near-ties may swap (batched maths sums in another
            # order), and so may hits tied with the k-th (fused RRF scores tie often)
            assert [h.score for h in b] == pytest.approx([h.score for h in one], abs=1e-5)
            last = one[-1].score
            assert {h.id for h in b if h.score > last + 1e-5} == {h.id for h in one if h.score > last + 1e-5}


@pytest.mark.parametrize("route", CROSS_ROUTES)
def test_every_route_works_and_reports_itself(index, route):
    hits = index.search("four", target="depth", k=5, route=route)
    assert len(hits) == 5 and {h.route for h in hits} == {route}


def test_auto_route_uses_direct_for_paired_and_fused_for_unpaired(index):
    assert index.search("four", target="image", k=1)[0].route == "direct"  # image-text: paired
    assert index.search("four", target="audio", k=1)[0].route == "fused"  # audio-text: never paired


def test_route_table_overrides_the_default(index):
    from bridge.route_table import write_route_table

    index.store.update_metadata(write_route_table({}, {"text->audio": "proxy"}))
    try:
        assert index.search("four", target="audio", k=1)[0].route == "proxy"
    finally:
        index.store.update_metadata(write_route_table({}, {}))
    with pytest.raises(ValueError, match="'text' is not a 'source->target' pair"):
        write_route_table({}, {"text": "proxy"})  # a table the router could never read


def test_proxy_route_scores_recompute_by_hand_from_stored_vectors(index):
    _, z = index.embed_query("six")
    view = index.bridge.proxy_view(z[None, :])[0]
    hits = index.search("six", target="depth", k=5, route="proxy")
    stored = index.store.retrieve([h.id for h in hits], with_vectors=["proxy"])
    for h, rec in zip(hits, stored):
        v = rec.vectors["proxy"]
        assert h.score == pytest.approx(float(view @ v / np.linalg.norm(v)), abs=1e-4)


def test_fused_route_scores_are_weighted_rrf_of_the_two_rankings(index):
    _, z = index.embed_query("six")
    view = index.bridge.proxy_view(z[None, :])[0]
    depth = index.fusion.depth
    direct = [h.id for h in index.store.search("bridged", z, k=depth, filter=_depth_only())]
    proxy = [h.id for h in index.store.search("proxy", view, k=depth, filter=_depth_only())]
    hits = index.search("six", target="depth", k=5, route="fused")
    for h in hits:
        want = sum(1.0 / (ranking.index(h.id) + 2) for ranking in (direct, proxy) if h.id in ranking)  # rrf_k = 2, weight 1
        assert h.score == pytest.approx(want, rel=1e-4)


def _depth_only():
    from indexer.store import Filter

    return Filter(must={"modality": "depth"})


@pytest.mark.parametrize("query, kwargs, message", [
    ("seven", {"target": "smell"}, "unknown modality"),
    ("   ", {"target": "audio"}, "empty text"),
    ({"id": "00000000-0000-0000-0000-000000000000"}, {"target": "audio"}, "no point"),
    ("nofile.wav", {"target": "audio", "source": "audio"}, "file not found"),
    ("seven", {"target": "audio", "route": "teleport"}, "unknown route"),
])
def test_bad_queries_give_one_clear_error(index, query, kwargs, message):
    with pytest.raises((QueryError, ValueError), match=message):
        index.search(query, **kwargs)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(QueryError, match="not found"):
        Index.open(tmp_path / "nowhere")


def test_an_index_built_in_local_mode_is_searched_where_it_was_built(world, tmp_path, capsys):
    """`--qdrant-url FOLDER` at index time: a later search without it opens the same local-mode
    store (the index record says where), instead of taking the folder for a URL."""
    import json

    from query.cli import main

    idx, local = tmp_path / "local.index", tmp_path / "qdrant-local"
    assert main(["index", str(world["world"] / "test" / "audio"), "--index", str(idx),
                 "--bridge", str(world["root"] / "bridge"), "--qdrant-url", str(local), "--collection", "clips"]) == 0
    record = json.loads((idx / "index.json").read_text())
    assert record["store"] == {"kind": "local", "path": str(local.resolve()), "collection": "clips"}
    capsys.readouterr()
    assert main(["search", "--index", str(idx), "--text", "seven", "--target", "audio", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and {h["modality"] for h in hits} == {"audio"}
