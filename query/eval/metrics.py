"""Retrieval and zero-shot metrics, computed in query chunks so large corpora fit in memory.

Conventions (those of cross-modal retrieval papers):
- R@k is the fraction of queries with at least one relevant item in the top k
  (relevant = same label), not the fraction of relevant items retrieved.
- mAP is the mean over queries of average precision over the full ranking.
- zero-shot top-k: a query is classified by its similarity to one embedding per class
  (the mean of that class's prompt embeddings); correct if its label is in the top k.
Ties in score are broken by corpus order (stable sort), so results are deterministic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def rank_corpus(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Corpus indices sorted by descending cosine/dot score, one row per query."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(corpus, dtype=np.float32).T
    return np.argsort(-scores, axis=1, kind="stable")


def retrieval_metrics(queries: np.ndarray, query_labels: Sequence, corpus: np.ndarray,
                      corpus_labels: Sequence, ks: Sequence[int] = (1, 5, 10), chunk: int = 1024,
                      exclude_self: bool = False) -> dict[str, float]:
    """R@k for each k and mAP by exact search over the full matrix, relevant = same label.

    `exclude_self` drops corpus item i from query i's ranking (same-modality retrieval).

    Example:
        >>> e = np.eye(3, dtype=np.float32)
        >>> retrieval_metrics(e, [0, 1, 2], e, [0, 1, 2], ks=(1,))
        {'r1': 1.0, 'map': 1.0}
    """
    q_labels = list(query_labels)
    c_labels = np.asarray(corpus_labels, dtype=object)
    if not q_labels:
        raise ValueError("no queries to evaluate")
    ranked: list[np.ndarray] = []
    for start in range(0, len(q_labels), chunk):
        for row, ranking in enumerate(rank_corpus(queries[start : start + chunk], corpus)):
            ranked.append(c_labels[ranking[ranking != start + row]] if exclude_self else c_labels[ranking])
    return ranking_metrics(q_labels, ranked, ks)


def ranking_metrics(query_labels: Sequence, ranked_labels: Sequence[Sequence], ks: Sequence[int] = (1, 5, 10),
                    relevant_counts: Sequence[int] | None = None) -> dict[str, float]:
    """R@k and mAP from ranked result lists (e.g. what a search engine returned).

    `ranked_labels[i]` holds the labels of query i's hits, best first. AP divides by the
    number of relevant hits found, or by `relevant_counts[i]` when given (relevant items
    the list may have missed count as misses).

    Example:
        >>> ranking_metrics(["a"], [["b", "a"]], ks=(1, 2))
        {'r1': 0.0, 'r2': 1.0, 'map': 0.5}
    """
    if not len(query_labels):
        raise ValueError("no queries to evaluate")
    hits = {k: 0.0 for k in ks}
    ap_sum = 0.0
    for i, (label, ranked) in enumerate(zip(query_labels, ranked_labels)):
        relevant = np.asarray([x == label for x in ranked], dtype=bool)
        for k in ks:
            hits[k] += float(relevant[:k].any())
        positions = np.flatnonzero(relevant)
        total = relevant_counts[i] if relevant_counts is not None else positions.size
        if positions.size and total:
            ap_sum += float(np.sum(np.arange(1, positions.size + 1) / (positions + 1)) / total)
    n = len(query_labels)
    out = {f"r{k}": hits[k] / n for k in ks}
    out["map"] = ap_sum / n
    return out


def zero_shot_accuracy(queries: np.ndarray, query_labels: Sequence, class_embeddings: np.ndarray,
                       class_names: Sequence, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of classifying each query by its nearest class embedding.

    Example:
        >>> zero_shot_accuracy(np.eye(2), ["a", "b"], np.eye(2), ["a", "b"], ks=(1,))
        {'top1': 1.0}
    """
    names = np.asarray(class_names, dtype=object)
    order = rank_corpus(queries, class_embeddings)
    labels = np.asarray(query_labels, dtype=object)
    return {f"top{k}": float(np.mean([(names[o[:k]] == y).any() for o, y in zip(order, labels)])) for k in ks}


def class_embeddings(embeddings: np.ndarray, labels: Sequence) -> tuple[np.ndarray, list]:
    """One unit vector per class: the normalised mean of its prompts' embeddings."""
    labels = list(labels)
    names = sorted(set(labels), key=str)
    rows = []
    for name in names:
        mean = embeddings[[i for i, x in enumerate(labels) if x == name]].mean(0)
        rows.append(mean / max(np.linalg.norm(mean), 1e-12))
    return np.stack(rows).astype(np.float32), names
