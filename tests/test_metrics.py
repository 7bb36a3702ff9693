"""Retrieval metrics against a full-matrix reference computed the obvious way."""
from __future__ import annotations

import numpy as np
import pytest

from query.eval.metrics import class_embeddings, retrieval_metrics, zero_shot_accuracy


def _reference(q, ql, c, cl, ks):
    """Score every pair, sort every row in pure Python, count hits and average precision."""
    out = {f"r{k}": 0.0 for k in ks}
    aps = []
    for i in range(len(q)):
        scores = [(float(np.dot(q[i], c[j])), j) for j in range(len(c))]
        order = [j for _, j in sorted(scores, key=lambda t: (-t[0], t[1]))]
        rel = [cl[j] == ql[i] for j in order]
        for k in ks:
            out[f"r{k}"] += any(rel[:k]) / len(q)
        hits, precisions = 0, []
        for rank, r in enumerate(rel, start=1):
            if r:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / len(precisions) if precisions else 0.0)
    out["map"] = sum(aps) / len(aps)
    return out


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_retrieval_metrics_match_reference(chunk):
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(60, 8)).astype(np.float32)
    ql, cl = rng.integers(0, 5, 40).tolist(), rng.integers(0, 6, 60).tolist()  # label 5: no query has it
    got = retrieval_metrics(q, ql, c, cl, ks=(1, 5, 10), chunk=chunk)
    want = _reference(q, ql, c, cl, (1, 5, 10))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_query_with_no_relevant_item_counts_as_zero():
    e = np.eye(2, dtype=np.float32)
    assert retrieval_metrics(e, ["a", "z"], e, ["a", "b"], ks=(1,)) == {"r1": 0.5, "map": 0.5}


def test_exclude_self_drops_the_query_from_its_own_ranking():
    e = np.eye(3, dtype=np.float32) + 0.1
    got = retrieval_metrics(e, [0, 0, 1], e, [0, 0, 1], ks=(1,), exclude_self=True)
    assert got["r1"] == pytest.approx(2 / 3)


def test_zero_shot_matches_argmax_reference():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(30, 6))
    prompts = rng.normal(size=(12, 6))
    prompt_labels = [f"c{i % 4}" for i in range(12)]
    classes, names = class_embeddings(prompts, prompt_labels)
    labels = [f"c{i}" for i in rng.integers(0, 4, 30)]
    got = zero_shot_accuracy(q, labels, classes, names, ks=(1, 2))
    top1 = np.mean([names[int(np.argmax(classes @ x))] == y for x, y in zip(q, labels)])
    top2 = np.mean([y in [names[j] for j in np.argsort(-(classes @ x))[:2]] for x, y in zip(q, labels)])
    assert got == {"top1": pytest.approx(top1), "top2": pytest.approx(top2)}
    # class embeddings are unit means of their prompts
    want0 = prompts[[0, 4, 8]].mean(0)
    np.testing.assert_allclose(classes[0], want0 / np.linalg.norm(want0), rtol=1e-6)


def test_ranking_metrics_with_missed_relevant_items_divides_by_all_relevant():
    from query.eval.metrics import ranking_metrics

    # one relevant found at rank 2, a second relevant item never returned
    got = ranking_metrics(["a"], [["b", "a", "c"]], ks=(1, 3), relevant_counts=[2])
    assert got == {"r1": 0.0, "r3": 1.0, "map": pytest.approx(0.25)}
