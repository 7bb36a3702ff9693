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


def test_nearest_neighbour_recall_at_1_is_the_ranked_r1():
    """bridge.validation.recall_at_1 (validation, scripts) and the ranked metrics agree on R@1,
    leave-one-out included: two computations of one definition."""
    from bridge.validation import recall_at_1

    rng = np.random.default_rng(4)
    q, c = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(60, 8)).astype(np.float32)
    ql, cl = list(rng.integers(0, 5, 40)), list(rng.integers(0, 5, 60))
    assert recall_at_1(q, ql, c, cl) == pytest.approx(retrieval_metrics(q, ql, c, cl, ks=(1,))["r1"])
    n = list(range(60))
    assert recall_at_1(c, cl, c, cl, query_groups=n, corpus_groups=n) == pytest.approx(
        retrieval_metrics(c, cl, c, cl, ks=(1,), exclude_self=True)["r1"])


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


# ------------------------------------------------------------------------------ qrels-shaped metrics


def _qrels_reference(q, q_ids, c, c_ids, qrels, ks):
    """Every score, every row sorted in pure Python; R@k, AP, RR@10 and nDCG@10 counted by hand."""
    import math

    sums = {**{f"r{k}": 0.0 for k in ks}, "map": 0.0, "mrr10": 0.0, "ndcg10": 0.0}
    for i, qid in enumerate(q_ids):
        scores = [(float(np.dot(q[i], c[j])), j) for j in range(len(c))]
        order = [c_ids[j] for _, j in sorted(scores, key=lambda t: (-t[0], t[1]))]
        rel = [cid in qrels[qid] for cid in order]
        for k in ks:
            sums[f"r{k}"] += any(rel[:k])
        hits, ap = 0, 0.0
        for rank, r in enumerate(rel, start=1):
            if r:
                hits += 1
                ap += hits / rank
        sums["map"] += ap / len(qrels[qid]) if qrels[qid] else 0.0
        first = next((rank for rank, r in enumerate(rel[:10], start=1) if r), None)
        sums["mrr10"] += 1 / first if first else 0.0
        dcg = sum(1 / math.log2(rank + 1) for rank, r in enumerate(rel[:10], start=1) if r)
        idcg = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(qrels[qid]), 10) + 1))
        sums["ndcg10"] += dcg / idcg if idcg else 0.0
    return {k: v / len(q_ids) for k, v in sums.items()}


def _random_qrels(seed=0, nq=30, nc=80, dim=8, per_query=(1, 6)):
    rng = np.random.default_rng(seed)
    q, c = rng.normal(size=(nq, dim)).astype(np.float32), rng.normal(size=(nc, dim)).astype(np.float32)
    q_ids, c_ids = [f"q{i}" for i in range(nq)], [f"c{j}" for j in range(nc)]
    qrels = {qid: {c_ids[j] for j in rng.choice(nc, rng.integers(*per_query), replace=False)} for qid in q_ids}
    return q, q_ids, c, c_ids, qrels


@pytest.mark.parametrize("corpus_chunk,query_chunk", [(1, 1), (7, 5), (50_000, 256)])
def test_search_metrics_match_loop_reference(corpus_chunk, query_chunk):
    from query.eval.metrics import search_metrics

    q, q_ids, c, c_ids, qrels = _random_qrels()
    qrels["q0"] = set()  # a query with nothing relevant counts as zero
    got = search_metrics(q, q_ids, c, c_ids, qrels, corpus_chunk=corpus_chunk, query_chunk=query_chunk)
    want = _qrels_reference(q, q_ids, c, c_ids, qrels, (1, 5, 10))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_search_metrics_break_ties_by_corpus_order_across_chunks():
    from query.eval.metrics import search_metrics

    c = np.ones((6, 2), np.float32)  # every item scores the same
    for chunk in (1, 4, 100):
        got = search_metrics(np.ones((1, 2)), ["q"], c, list("abcdef"), {"q": {"e"}}, ks=(1, 5), corpus_chunk=chunk)
        assert got["r1"] == 0.0 and got["r5"] == 1.0 and got["mrr10"] == pytest.approx(1 / 5)


def test_search_metrics_agree_with_trec_eval():
    """A maintained library as second oracle: trec_eval (pytrec_eval) on the same run."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from query.eval.metrics import search_metrics

    q, q_ids, c, c_ids, qrels = _random_qrels(seed=3, nq=40, nc=120)
    got = search_metrics(q, q_ids, c, c_ids, qrels, corpus_chunk=33)
    scores = q @ c.T  # random floats: no ties, so trec_eval's tie order does not matter
    run = {qid: {cid: float(scores[i, j]) for j, cid in enumerate(c_ids)} for i, qid in enumerate(q_ids)}
    run10 = {qid: dict(sorted(docs.items(), key=lambda t: -t[1])[:10]) for qid, docs in run.items()}
    judged = {qid: {cid: 1 for cid in rel} for qid, rel in qrels.items()}
    full = pytrec_eval.RelevanceEvaluator(judged, {"success.1,5,10", "map", "ndcg_cut.10"}).evaluate(run)
    top10 = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(run10)  # MRR@10
    mean = lambda table, key: float(np.mean([table[qid][key] for qid in q_ids]))  # noqa: E731
    assert got["r1"] == pytest.approx(mean(full, "success_1"))
    assert got["r5"] == pytest.approx(mean(full, "success_5"))
    assert got["r10"] == pytest.approx(mean(full, "success_10"))
    assert got["map"] == pytest.approx(mean(full, "map"), abs=1e-4)
    assert got["ndcg10"] == pytest.approx(mean(full, "ndcg_cut_10"), abs=1e-4)
    assert got["mrr10"] == pytest.approx(mean(top10, "recip_rank"), abs=1e-4)


def test_ranked_lists_and_exact_search_agree_when_the_list_is_complete():
    from query.eval.metrics import ranked_list_metrics, search_metrics

    q, q_ids, c, c_ids, qrels = _random_qrels(seed=5)
    order = np.argsort(-(q @ c.T), axis=1, kind="stable")
    ranked = [[c_ids[j] for j in row] for row in order]
    assert ranked_list_metrics(q_ids, ranked, qrels) == pytest.approx(search_metrics(q, q_ids, c, c_ids, qrels))
    cut = ranked_list_metrics(q_ids, [r[:3] for r in ranked], qrels)  # a cut list: missed items count as misses
    assert cut["r1"] == pytest.approx(search_metrics(q, q_ids, c, c_ids, qrels)["r1"])
    assert cut["map"] <= search_metrics(q, q_ids, c, c_ids, qrels)["map"]


def test_qrels_by_key_and_zero_shot_from_ranked_hits():
    from query.eval.metrics import qrels_by_key, zero_shot_from_ranked

    assert qrels_by_key(["a", "b"], ["k1", None], ["x", "y"], ["k1", None]) == {"a": {"x"}, "b": set()}
    got = zero_shot_from_ranked(["cat", "dog"], [["cat", "cat", "dog"], ["cat", None, "dog"]], ks=(1, 2))
    assert got == {"top1": 0.5, "top2": 1.0}
