"""Retrieval and zero-shot metrics in the shape of sentence-transformers' InformationRetrievalEvaluator:
queries, a corpus and the relevant corpus ids of each query (qrels), computed in corpus chunks.

Conventions (those of cross-modal retrieval papers):
- R@k is the fraction of queries with at least one relevant item in the top k (trec_eval's
  `success@k`), not the fraction of relevant items retrieved.
- mAP is the mean over queries of average precision over the full ranking; a relevant item
  the ranking never reaches (a result list cut short) counts as a miss.
- MRR@10: reciprocal rank of the first relevant item within the top 10, else 0.
- nDCG@10: binary gains, log2 discount, ideal = all relevant items first.
- zero-shot top-k: a query is classified by its similarity to one embedding per class
  (the mean of that class's prompt embeddings); correct if its label is in the top k. It is
  R@k with the classes as the corpus and the query's class as its one relevant id.
- A query with no relevant item in the corpus scores 0 everywhere (it is not skipped).
Ties in score are broken by corpus order (stable), so results are deterministic.

Every metric is a function of the 1-based ranks of each query's relevant items, so exact
search needs no full sort: a relevant item's rank is one plus the number of corpus items
that score higher (or equal and earlier), counted one corpus chunk at a time.

Example:
    >>> e = np.eye(3, dtype=np.float32)
    >>> m = search_metrics(e, ["q0", "q1", "q2"], e, ["c0", "c1", "c2"],
    ...                    {"q0": {"c0"}, "q1": {"c1"}, "q2": {"c0"}})
    >>> round(m["r1"], 3), round(m["mrr10"], 3)
    (0.667, 0.833)
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Hashable, Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Collection[str]]  # query id -> ids of its relevant corpus items
DEFAULT_KS = (1, 5, 10)
CUTOFF = 10  # for MRR@10 and nDCG@10


# ------------------------------------------------------------------------------ qrels


def qrels_by_key(query_ids: Sequence[str], query_keys: Sequence[Hashable | None], corpus_ids: Sequence[str],
                 corpus_keys: Sequence[Hashable | None]) -> dict[str, set[str]]:
    """Qrels where a corpus item is relevant to a query when their keys (a label or a pair
    key) are equal; None matches nothing.

    Example:
        >>> sorted(qrels_by_key(["q"], ["dog"], ["a", "b", "c"], ["dog", "cat", "dog"])["q"])
        ['a', 'c']
    """
    by_key: dict[Hashable, set[str]] = defaultdict(set)
    for cid, key in zip(corpus_ids, corpus_keys):
        if key is not None:
            by_key[key].add(cid)
    return {qid: set(by_key.get(key, ())) if key is not None else set() for qid, key in zip(query_ids, query_keys)}


# ------------------------------------------------------------------------------ core


def metrics_from_ranks(ranks: Sequence[Sequence[float]], n_relevant: Sequence[int],
                       ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """R@k, mAP, MRR@10 and nDCG@10 from each query's 1-based ranks of its relevant items
    (`inf` for a relevant item the ranking does not reach) and its number of relevant items.

    Example:
        >>> metrics_from_ranks([[2.0]], [1], ks=(1, 2))["map"]
        0.5
    """
    if not len(ranks):
        raise ValueError("no queries to evaluate")
    hits = {k: 0.0 for k in ks}
    ap = rr = ndcg = 0.0
    for found, total in zip(ranks, n_relevant):
        r = np.sort(np.asarray(found, dtype=np.float64))
        r = r[np.isfinite(r)]
        if not total or not r.size:
            continue
        for k in ks:
            hits[k] += float(r[0] <= k)
        ap += float(np.sum(np.arange(1, r.size + 1) / r)) / total
        rr += float(1.0 / r[0]) if r[0] <= CUTOFF else 0.0
        top = r[r <= CUTOFF]
        ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(total, CUTOFF) + 1))
        ndcg += float(np.sum(1.0 / np.log2(top + 1))) / ideal
    n = len(ranks)
    out = {f"r{k}": hits[k] / n for k in ks}
    out.update({"map": ap / n, "mrr10": rr / n, "ndcg10": ndcg / n})
    return out


def search_metrics(queries: np.ndarray, query_ids: Sequence[str], corpus: np.ndarray, corpus_ids: Sequence[str],
                   qrels: Qrels, ks: Sequence[int] = DEFAULT_KS, corpus_chunk: int = 50_000,
                   query_chunk: int = 256, ignore_identical_ids: bool = False) -> dict[str, float]:
    """Exact dot-product search of `queries` over `corpus`, scored against `qrels`.

    The score matrix is never held whole: queries go in chunks of `query_chunk`, and each
    chunk meets the corpus `corpus_chunk` rows at a time (twice: once to read the relevant
    items' scores, once to count what beats them, so both come from the same products).
    `ignore_identical_ids` leaves corpus item `x` out of query `x`'s ranking (a corpus
    searched with its own items).

    Example:
        >>> e = np.eye(2, dtype=np.float32)
        >>> search_metrics(e, ["a", "b"], e, ["a", "b"], {"a": {"a"}, "b": {"a"}}, ks=(1,))["r1"]
        0.5
    """
    queries = np.asarray(queries, dtype=np.float32)
    corpus = np.asarray(corpus, dtype=np.float32)
    if len(query_ids) != len(queries) or len(corpus_ids) != len(corpus):
        raise ValueError("ids and vectors must have the same length")
    if not len(query_ids):
        raise ValueError("no queries to evaluate")
    position = {cid: j for j, cid in enumerate(corpus_ids)}
    ranks: list[np.ndarray] = []
    totals: list[int] = []
    for qs in range(0, len(query_ids), query_chunk):
        ids = list(query_ids[qs : qs + query_chunk])
        block = queries[qs : qs + query_chunk]
        rel = [np.array(sorted(position[c] for c in qrels.get(q, ()) if c in position), dtype=np.int64) for q in ids]
        skip = [position.get(q, -1) if ignore_identical_ids else -1 for q in ids]
        rel = [r[r != s] for r, s in zip(rel, skip)]
        rel_scores = [np.empty(r.size, np.float32) for r in rel]
        for cs in range(0, len(corpus), corpus_chunk):  # pass 1: the relevant items' own scores
            scores = block @ corpus[cs : cs + corpus_chunk].T
            for i, r in enumerate(rel):
                inside = (r >= cs) & (r < cs + len(scores[i]))
                rel_scores[i][inside] = scores[i, r[inside] - cs]
        better = [np.zeros(r.size, np.int64) for r in rel]
        for cs in range(0, len(corpus), corpus_chunk):  # pass 2: how many items beat each of them
            scores = block @ corpus[cs : cs + corpus_chunk].T
            cols = np.arange(cs, cs + scores.shape[1])
            for i, r in enumerate(rel):
                if not r.size:
                    continue
                s, mine = scores[i][None, :], rel_scores[i][:, None]
                beats = (s > mine) | ((s == mine) & (cols[None, :] < r[:, None]))
                if cs <= skip[i] < cs + scores.shape[1]:
                    beats[:, skip[i] - cs] = False
                better[i] += beats.sum(1)
        ranks += [b + 1.0 for b in better]
        totals += [int(r.size) for r in rel]
    return metrics_from_ranks(ranks, totals, ks)


def ranked_list_metrics(query_ids: Sequence[str], ranked_ids: Sequence[Sequence[str]], qrels: Qrels,
                        ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """The same metrics from result lists a search engine returned (best first); relevant
    items missing from a list count as misses (mAP still divides by all of them).

    Example:
        >>> ranked_list_metrics(["q"], [["x", "a"]], {"q": {"a", "b"}}, ks=(1, 2))["map"]
        0.25
    """
    ranks, totals = [], []
    for qid, ranked in zip(query_ids, ranked_ids):
        relevant = set(qrels.get(qid, ()))
        ranks.append([i + 1.0 for i, cid in enumerate(ranked) if cid in relevant])
        totals.append(len(relevant))
    return metrics_from_ranks(ranks, totals, ks)


def zero_shot_from_ranked(query_labels: Sequence[Hashable], ranked_labels: Sequence[Sequence[Hashable | None]],
                          ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Zero-shot top-k from ranked prompt hits: a query's class ranking is the order in which
    class labels first appear among its hits (each class scored by its nearest prompt).

    Example:
        >>> zero_shot_from_ranked(["b"], [["a", "a", "b"]], ks=(1, 2))
        {'top1': 0.0, 'top2': 1.0}
    """
    if not len(query_labels):
        raise ValueError("no queries to evaluate")
    classes = [[c for c in dict.fromkeys(r) if c is not None] for r in ranked_labels]
    return {f"top{k}": float(np.mean([y in c[:k] for y, c in zip(query_labels, classes)])) for k in ks}


# ------------------------------------------------------------------------------ label-based helpers


def rank_corpus(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Corpus indices sorted by descending cosine/dot score, one row per query."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(corpus, dtype=np.float32).T
    return np.argsort(-scores, axis=1, kind="stable")


def retrieval_metrics(queries: np.ndarray, query_labels: Sequence, corpus: np.ndarray,
                      corpus_labels: Sequence, ks: Sequence[int] = (1, 5, 10), chunk: int = 1024,
                      exclude_self: bool = False) -> dict[str, float]:
    """R@k for each k and mAP by exact search, relevant = same label (through `search_metrics`).

    `exclude_self` drops corpus item i from query i's ranking (same-modality retrieval).

    Example:
        >>> e = np.eye(3, dtype=np.float32)
        >>> retrieval_metrics(e, [0, 1, 2], e, [0, 1, 2], ks=(1,))
        {'r1': 1.0, 'map': 1.0}
    """
    if not len(query_labels):
        raise ValueError("no queries to evaluate")
    q_ids = [str(i) for i in range(len(query_labels))]
    c_ids = [str(i) for i in range(len(corpus_labels))]
    qrels = qrels_by_key(q_ids, list(query_labels), c_ids, list(corpus_labels))
    m = search_metrics(queries, q_ids, corpus, c_ids, qrels, ks, corpus_chunk=chunk, query_chunk=chunk,
                       ignore_identical_ids=exclude_self)
    return {**{f"r{k}": m[f"r{k}"] for k in ks}, "map": m["map"]}


def ranking_metrics(query_labels: Sequence, ranked_labels: Sequence[Sequence], ks: Sequence[int] = (1, 5, 10),
                    relevant_counts: Sequence[int] | None = None) -> dict[str, float]:
    """R@k and mAP from ranked label lists (relevant = same label as the query).

    AP divides by the number of relevant hits found, or by `relevant_counts[i]` when given.

    Example:
        >>> ranking_metrics(["a"], [["b", "a"]], ks=(1, 2))
        {'r1': 0.0, 'r2': 1.0, 'map': 0.5}
    """
    if not len(query_labels):
        raise ValueError("no queries to evaluate")
    ranks = [[i + 1.0 for i, x in enumerate(r) if x == y] for y, r in zip(query_labels, ranked_labels)]
    totals = list(relevant_counts) if relevant_counts is not None else [len(r) for r in ranks]
    m = metrics_from_ranks(ranks, totals, ks)
    return {**{f"r{k}": m[f"r{k}"] for k in ks}, "map": m["map"]}


def zero_shot_accuracy(queries: np.ndarray, query_labels: Sequence, class_embeddings: np.ndarray,
                       class_names: Sequence, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of classifying each query by its nearest class embedding: R@k over the
    classes as a corpus, each query's class its one relevant id.

    Example:
        >>> zero_shot_accuracy(np.eye(2), ["a", "b"], np.eye(2), ["a", "b"], ks=(1,))
        {'top1': 1.0}
    """
    names = [str(n) for n in class_names]
    q_ids = [str(i) for i in range(len(query_labels))]
    qrels = {q: {str(y)} for q, y in zip(q_ids, query_labels)}
    m = search_metrics(queries, q_ids, class_embeddings, names, qrels, ks)
    return {f"top{k}": m[f"r{k}"] for k in ks}


def class_embeddings(embeddings: np.ndarray, labels: Sequence) -> tuple[np.ndarray, list]:
    """One unit vector per class: the normalised mean of its prompts' embeddings."""
    labels = list(labels)
    names = sorted(set(labels), key=str)
    rows = []
    for name in names:
        mean = embeddings[[i for i, x in enumerate(labels) if x == name]].mean(0)
        rows.append(mean / max(np.linalg.norm(mean), 1e-12))
    return np.stack(rows).astype(np.float32), names
