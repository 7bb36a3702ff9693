"""How heads are judged: validation R@1 against a gallery that also holds the training items (what a
user's index holds), the raw-feature baseline beside it, a held-out share of the training pairs
where the user's validation split lacks a modality (`complete_val`), and the R@1 between every two
modalities of a validation set that a trained bridge reports (`validate`).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from bridge.pairs import ModalityData, TrainingSet, pair_keys

if TYPE_CHECKING:
    from bridge.space import Bridge

log = logging.getLogger(__name__)


HITS_BLOCK = 1024  # queries scored at once by `hits_at_1`


def hits_at_1(queries: np.ndarray, query_keys: Sequence, corpus: np.ndarray, corpus_keys: Sequence, *,
              query_groups: Sequence | None = None, corpus_groups: Sequence | None = None) -> np.ndarray:
    """Per query: does its nearest corpus item share its key? (`recall_at_1` is their mean.)

    Queries are scored in blocks, so a leave-one-out check over a large gallery (every validation
    item against validation + training items) never holds the whole similarity matrix."""
    if (query_groups is None) != (corpus_groups is None):
        raise ValueError("give both query_groups and corpus_groups, or neither")
    queries, corpus = np.asarray(queries, np.float32), np.asarray(corpus, np.float32)
    q_groups = None if query_groups is None else np.asarray(list(query_groups))
    c_groups = None if corpus_groups is None else np.asarray(list(corpus_groups))
    top = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), HITS_BLOCK):
        scores = queries[start:start + HITS_BLOCK] @ corpus.T
        if q_groups is not None:  # a query never finds an item of its own group (itself, its pair)
            scores = np.where(q_groups[start:start + HITS_BLOCK, None] == c_groups[None, :], -np.inf, scores)
        top[start:start + HITS_BLOCK] = np.argmax(scores, axis=1)
    return np.array([query_keys[i] is not None and query_keys[i] == corpus_keys[j] for i, j in enumerate(top)], bool)


def clearly_better(wins: int, losses: int) -> bool:
    """A sign test at about two standard errors on the queries only one of two routes gets right:
    the trained space replaces the encoder's own features for search by example only where it wins
    clearly, never on a tie or on noise (validation cannot see the classes a head will collapse
    later, so the encoder is the safe side).

    Example:
        >>> clearly_better(30, 5), clearly_better(6, 3), clearly_better(0, 0)
        (True, False, False)
    """
    return wins + losses > 0 and wins - losses > 2 * (wins + losses) ** 0.5


def recall_at_1(queries: np.ndarray, query_keys: Sequence, corpus: np.ndarray, corpus_keys: Sequence, *,
                query_groups: Sequence | None = None, corpus_groups: Sequence | None = None) -> float:
    """Top-1 recall: the fraction of queries whose nearest corpus item (by dot product: cosine for
    unit vectors; ties go to the first in corpus order) shares their key. A None key is never right.

    The one definition of R@1 by nearest neighbour: validation, the benchmark scripts and the tests
    use it; `query.eval.metrics` computes the same figure from full rankings (tested equal).
    With groups, a query never finds a corpus item of its own group: leave-one-out is
    `query_groups=corpus_groups=range(n)`, leave-one-speaker-out passes the speakers.

    Example:
        >>> e = np.eye(3, dtype=np.float32)
        >>> recall_at_1(e, ["a", "b", "c"], e, ["a", "b", "x"])
        0.6666666666666666
        >>> recall_at_1(e, ["a", "a", "b"], e, ["a", "a", "b"], query_groups=range(3), corpus_groups=range(3))
        0.6666666666666666
    """
    return float(np.mean(hits_at_1(queries, query_keys, corpus, corpus_keys, query_groups=query_groups,
                                   corpus_groups=corpus_groups)))


class PairCheck:
    """Validation R@1 of one pair, averaged over the directions that have queries, against
    galleries that hold the validation items *and* the training items, as the user's index will.

    Relevance is the explicit pair key where the two modalities have them, else the label. A
    modality with no validation items is still judged: the other side's validation items query
    its training items (e.g. val audio against the training class prompts). Only queries with
    at least one right answer in the gallery count (a val image whose thermal partner is not in
    the gallery says nothing about the thermal head).
    """

    def __init__(self, a: str, b: str, train: TrainingSet, val: TrainingSet):
        self.a, self.b = a, b
        ta, tb = train[a], train[b]
        va, vb = val.get(a) or _empty(ta), val.get(b) or _empty(tb)
        # Relevance as training pairs them (pair keys when the two share any, else labels), over
        # validation and training items together: a held-out pair's partner may be a training item.
        _, _, first = pair_keys(_joined(va, ta), _joined(vb, tb))
        self.how, self.queries, self.gallery = "none", {}, {}
        for how in [first, "label"] if first == "pair" else [first]:
            if how == "none":
                break
            field = "pairs" if how == "pair" else "labels"
            keys = {m: (list(getattr(v, field)), list(getattr(t, field))) for m, v, t in ((a, va, ta), (b, vb, tb))}
            self.gallery = {m: (np.concatenate([v.features, t.features]), keys[m][0] + keys[m][1])
                            for m, v, t in ((a, va, ta), (b, vb, tb))}
            queries: dict[str, tuple[np.ndarray, list]] = {}
            for s, t, v in ((a, b, va), (b, a, vb)):
                answers = {k for k in self.gallery[t][1] if k is not None}
                rows = [i for i, k in enumerate(keys[s][0]) if k is not None and k in answers]
                if rows:
                    queries[s] = (v.features[rows], [keys[s][0][i] for i in rows])
            if queries:  # pair keys that reach no partner fall back to labels
                self.how, self.queries = how, queries
                break
        self.usable = bool(self.queries)

    def score(self, embed: Callable[[str, np.ndarray], np.ndarray],
              gallery_embed: Callable[[str, np.ndarray], np.ndarray] | None = None) -> float:
        """Mean R@1 over the directions with queries, `embed(modality, features)` giving unit vectors
        (the gallery's too, unless `gallery_embed` places it: a route whose two sides differ)."""
        return float(np.mean([self.hits(s, embed, gallery_embed).mean() for s in self.queries])) \
            if self.queries else 0.0

    def hits(self, source: str, embed: Callable[[str, np.ndarray], np.ndarray],
             gallery_embed: Callable[[str, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Per validation query of `source` (in order): is its nearest gallery item of the other side right?"""
        q, q_keys = self.queries[source]
        g, g_keys = self.gallery[self.b if source == self.a else self.a]
        target = self.b if source == self.a else self.a
        return hits_at_1(embed(source, q), q_keys, (gallery_embed or embed)(target, g), g_keys)

    def raw(self) -> float:
        """The same check on the raw frozen features, L2-normalised (no bridge at all)."""
        return self.score(unit_rows)


def unit_rows(_modality: str, x: np.ndarray) -> np.ndarray:
    """Features as unit rows: the raw route's vectors (an `embed` for `PairCheck`)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _empty(like: ModalityData) -> ModalityData:
    return ModalityData(ids=[], features=np.zeros((0, like.features.shape[1]), np.float32))


def _joined(a: ModalityData, b: ModalityData) -> ModalityData:
    return ModalityData(ids=a.ids + b.ids, features=np.concatenate([a.features, b.features]),
                        labels=list(a.labels) + list(b.labels), pairs=list(a.pairs) + list(b.pairs))


def hold_out(data: TrainingSet, fraction: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
    """Split training data into (train, validation) when the user gave no validation split.

    Explicit pair keys are held out together across modalities (a pair is never split); items
    paired by label are held out per label, only from groups of at least 5 (class prompts stay)."""
    rng = np.random.default_rng([seed, 7])
    all_pairs = sorted({p for d in data.values() for p in d.pairs if p is not None})
    held_pairs = set(rng.choice(all_pairs, size=int(len(all_pairs) * fraction), replace=False)) if all_pairs else set()
    train, val = {}, {}
    for m, d in data.items():
        held = np.zeros(len(d.ids), bool)
        if held_pairs:
            held |= np.array([p in held_pairs for p in d.pairs])
        for label in sorted({x for x, p in zip(d.labels, d.pairs) if x is not None and p is None}):
            idx = [i for i, (x, p) in enumerate(zip(d.labels, d.pairs)) if x == label and p is None]
            if len(idx) >= 5:
                held[rng.choice(idx, size=int(len(idx) * fraction), replace=False)] = True
        train[m], val[m] = subset(d, ~held), subset(d, held)
    return train, {m: v for m, v in val.items() if len(v.ids)}


def subset(d: ModalityData, mask: np.ndarray) -> ModalityData:
    """The rows of `d` where `mask` is true."""
    idx = np.flatnonzero(mask)
    return ModalityData(ids=[d.ids[i] for i in idx], features=d.features[idx], labels=[d.labels[i] for i in idx],
                        pairs=[d.pairs[i] for i in idx])


def complete_val(data: TrainingSet, val: TrainingSet | None, fraction: float,
                 seed: int) -> tuple[TrainingSet, TrainingSet]:
    """Validation for every modality: where the user's split lacks one, a share of its training
    pairs is held out (`hold_out`); what cannot be held out (class prompts: a few per class) stays
    in training and is judged as the gallery the other side's validation items query. Returns
    (training set, validation set). Never refuses: one log line says what was done."""
    missing = [m for m in data if not val or m not in val]
    held_train, held_val = hold_out({m: data[m] for m in missing}, fraction, seed)
    out: TrainingSet = {**(val or {}), **held_val}
    gallery_only = [m for m in missing if m not in out]
    what = f"{', '.join(m for m in missing if m in out)}: {100 * fraction:.0f}% of the training pairs are " \
           "held out to judge each head" if len(gallery_only) < len(missing) else ""
    if gallery_only:
        what += ("; " if what else "") + f"{', '.join(gallery_only)}: too few to hold out (e.g. class prompts), " \
                "so the other modalities' validation items are judged against its training items"
    if val is None:  # the user gave no validation split at all: the documented default
        log.info("no validation split; %s", what)
    else:
        log.warning("the validation split has no %s items; %s", " or ".join(missing), what)
    return {**data, **held_train}, out


def validate(bridge: Bridge, val: TrainingSet) -> dict[str, float]:
    """R@1 between every two modalities of `val` that relate (same pair key, else same label)."""
    emb = {m: bridge.embed_features(m, d.features) for m, d in val.items() if m in bridge.modalities}
    out: dict[str, float] = {}
    for s in emb:
        for t in emb:
            keys_s, keys_t, how = pair_keys(val[s], val[t])
            if s == t or how == "none":
                continue
            r1 = recall_at_1(emb[s], keys_s, emb[t], keys_t)
            out[f"{s}->{t}"] = round(r1, 4)
            kind = "paired" if bridge.is_paired(s, t) else "unpaired"
            log.debug("val %-8s R@1 %.3f  %s->%s", kind, r1, s, t)
    return out
