"""The benchmark report: report.json, report.md and the PNGs it links.

- `pair_matrix.png`: R@1 heatmap of the pair matrix per variant (and the raw features).
- `delta.png`: `emergentbridge` minus `anchor`, R@1 points per pair.
- `pairs_bar.png`: R@1 per pair and variant, with the spread over seeds (min-max and std).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from query.search import CROSS_ROUTES

log = logging.getLogger(__name__)
PLOTS = {"pair_matrix.png": "R@1 pair matrix per variant", "delta.png": "emergentbridge - anchor (R@1 points)",
         "pairs_bar.png": "R@1 per pair, spread over seeds"}


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write report.json (with where it came from: commit, versions, command, machine; see
    bridge.provenance), the PNGs (when matplotlib is installed) and report.md, which links them."""
    from bridge.provenance import provenance

    report.setdefault("provenance", provenance())
    (out / "report.json").write_text(json.dumps(report, indent=2))
    made: list[str] = []
    try:
        made = plots(report, out)
    except ImportError as exc:  # matplotlib is an optional extra
        log.warning("no plots: %s", exc)
    (out / "report.md").write_text(markdown(report, made))
    log.info("report written to %s (report.json, report.md%s)", out, "".join(f", {p}" for p in made))


def _pct(x: float | None, std: float | None = None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def _pairs(report: dict[str, Any]) -> list[str]:
    return list(next(iter(report["variants"].values()))["pairs"])


def _zero_shot(report: dict[str, Any]) -> str:
    """"yes" only where some pair was really classified against class prompts."""
    scored = any(m.get("top1") is not None for v in report["variants"].values() for m in v["pairs"].values())
    if not report["dataset"]["zero_shot"]:
        return "no"
    return "yes" if scored else "no (labelled text rows, but no test query could be classified against them)"


def markdown(report: dict[str, Any], plots_made: list[str] = ()) -> str:
    """report.md from the report: one section after another, each from its own function.

    Example:
        (out / "report.md").write_text(markdown(json.loads((out / "report.json").read_text()), ["delta.png"]))
    """
    ds = report["dataset"]
    scale = f"{ds['scale']}, " if ds.get("scale") else ""
    lines = [f"# {ds['title']} benchmark ({scale}preset `{report['preset']}`, seeds {report['seeds']})", ""]
    lines += _measured(report, plots_made)
    for section in (_pair_table, _against_anchor, _gap_closed, _zero_training, _search_by_example, _all_metrics,
                    _seen_unseen, _selection, _unpaired_routes, _encoder_routes, _system):
        lines += section(report)
    return "\n".join(lines) + "\n"


def _run_rows(report: dict[str, Any], pair: str) -> list[tuple[str, dict[str, Any]]]:
    """(run, metrics) of one pair: the raw features where scored, then every variant."""
    raw, variants = report.get("raw", {}), report["variants"]
    return ([("raw", raw[pair])] if pair in raw else []) + [(v, variants[v]["pairs"][pair]) for v in variants]


def _heading(title: str, intro: str, columns: list[str]) -> list[str]:
    """A section's title, its one-paragraph intro and the head of its table."""
    return ["", f"## {title}", "", intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _chosen_routes(report: dict[str, Any], variant: str, pair: str) -> str:
    return ", ".join(sorted(set(report["variants"][variant]["pairs"][pair]["route"])))


def _measured(report: dict[str, Any], plots_made: list[str]) -> list[str]:
    ds = report["dataset"]
    lines = ["## What is measured", "",
             f"- data: {ds['data']} ({ds['source']})",
             f"- roles: anchor **{ds['anchor']}**, proxy **{ds['proxy']}**",
             "- trained with paired data: " + ", ".join(f"{a}<->{b}" for a, b in ds["paired"]),
             "- never paired: " + (", ".join(f"{a}<->{b}" for a, b in ds["never_paired"]) or "none"),
             f"- splits: {ds['splits']}",
             f"- relevance: {ds['relevance']} (per pair in the tables: label = same class, pair = same pair key)",
             f"- zero-shot against class prompts: {_zero_shot(report)}",
             f"- gallery: {ds['gallery']}; up to {report['max_queries']} queries per source modality, "
             f"top {report['max_k']} hits per query",
             "- unseen classes (held out of train and val): " + (", ".join(ds["unseen_classes"]) or "none"),
             "- items: " + "; ".join(f"{s}: " + ", ".join(f"{m} {n}" for m, n in c.items() if n)
                                     for s, c in ds["items"].items())]
    if ds.get("notes"):
        lines.append(f"- notes: {ds['notes']}")
    if report.get("variants_note"):
        lines.append(f"- variants: {report['variants_note']}")
    lines.append("")
    lines += [f"![{PLOTS.get(png, png)}]({png})" for png in plots_made]
    return lines + ([""] if plots_made else [])


def _pair_table(report: dict[str, Any]) -> list[str]:
    variants, raw = report["variants"], report.get("raw", {})
    names = list(variants)
    lines = ["## R@1 per ordered pair (calibrated route), mean ± std over seeds", "",
             "| pair | paired | relevance | raw features | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for pair in _pairs(report):
        first = variants[names[0]]["pairs"][pair]
        cells = [_pct(variants[v]["pairs"][pair]["r1"], variants[v]["pairs"][pair].get("r1_std")) for v in names]
        lines.append(f"| {pair} | {'yes' if first['paired'] else 'no'} | {first['relevance']} | "
                     f"{_pct(raw[pair]['r1']) if pair in raw else 'n/a'} | " + " | ".join(cells) + " |")
    lines += ["", "| variant | unpaired mean R@1 | paired mean R@1 |", "|---|---|---|"]
    for v in names:
        s = variants[v]["summary"]
        lines.append(f"| {v} | {_pct(s['unpaired_mean_r1'])} | {_pct(s['paired_mean_r1'])} |")
    return lines


def _against_anchor(report: dict[str, Any]) -> list[str]:
    if not report.get("deltas_vs_anchor"):
        return []
    lines = ["", "## Against `anchor` (R@1 points)", "",
             "| variant | unpaired mean | relative gain | unpaired worst | paired worst |", "|---|---|---|---|---|"]
    for v, d in report["deltas_vs_anchor"].items():
        f = lambda x: "–" if x is None else f"{x:+.2f}"  # noqa: E731
        rel = "–" if d.get("unpaired_relative_gain") is None else f"{100 * d['unpaired_relative_gain']:+.1f}%"
        lines.append(f"| {v} | {f(d['unpaired_mean_points'])} | {rel} | {f(d['unpaired_worst_points'])} | "
                     f"{f(d['paired_worst_points'])} |")
    return lines


def _gap_closed(report: dict[str, Any]) -> list[str]:
    g = report.get("gap_closed")
    if not g:
        return []
    lines = _heading("Never-paired pairs: the gap between `anchor` and `oracle` each variant closes",
                     f"`anchor` (binding only) {_pct(g['anchor'])}, `oracle` (every pair trained with its own "
                     f"pairs) {_pct(g['oracle'])} mean R@1 over the never-paired pairs.",
                     ["variant", "never-paired mean R@1", "gap closed"])
    for v, d in g.items():
        if isinstance(d, dict):
            closed = "–" if d["gap_closed"] is None else f"{100 * d['gap_closed']:+.0f}%"
            lines.append(f"| {v} | {_pct(d['unpaired_mean_r1'])} | {closed} |")
    return lines


def _zero_training(report: dict[str, Any]) -> list[str]:
    if not report.get("zero_training"):
        return []
    z = report["zero_training"]
    lines = _heading("Zero training: the preset's pretrained space alone, nothing bound",
                     f"It places {', '.join(z['modalities'])}; never-paired mean R@1 over the pairs it can score "
                     f"({', '.join(z['never_paired_scored']) or 'none'}): {_pct(z['never_paired_mean_r1'])}."
                     + _not_placed(z), ["pair", "R@1", "zero-shot top-1"])
    return lines + [f"| {pair} | {_pct(m['r1'])} | {_pct(m.get('top1'))} |" for pair, m in z["pairs"].items()]


def _not_placed(z: dict[str, Any]) -> str:
    """What the zero-training row cannot score, and why (a modality its space does not place)."""
    out = ""
    for m, why in (z.get("not_placed") or {}).items():
        unscored = [p for p in z.get("never_paired_unscored", []) if m in p.split("->")]
        out += f" It does not place {m}: {why}; {', '.join(unscored) or 'its pairs'} go unscored here."
    return out


def _search_by_example(report: dict[str, Any]) -> list[str]:
    if not report.get("same_modality"):
        return []
    lines = ["", "## Search by example (same modality, by label, the query itself left out): R@1", "",
             "`direct` = through the space, `raw` = the encoder's own features (the zero-training baseline), "
             "`chosen` = the route the table calibrated on validation picked.", "",
             "| variant | pair | direct | raw | chosen (route) |", "|---|---|---|---|---|"]
    rows = list(report["same_modality"].items())
    if report.get("zero_training"):
        rows.append(("zero-training", {p: {**m, "route": ["raw"]} for p, m in
                                       report["zero_training"]["same_modality"].items()}))
    for v, pairs in rows:
        for pair, m in pairs.items():
            lines.append(f"| {v} | {pair} | {_pct(m.get('direct'))} | {_pct(m.get('raw'))} | {_pct(m.get('auto'))} "
                         f"({', '.join(sorted(set(m.get('route') or [])))}) |")
    return lines


def _all_metrics(report: dict[str, Any]) -> list[str]:
    lines = ["", "## All metrics (calibrated route; raw = frozen features, exact search)", "",
             "| pair | run | R@1 | R@5 | R@10 | mAP | MRR@10 | nDCG@10 | zero-shot top-1 | top-5 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keys = ("r1", "r5", "r10", "map", "mrr10", "ndcg10", "top1", "top5")
    for pair in _pairs(report):
        for name, m in _run_rows(report, pair):
            lines.append(f"| {pair} | {name} | " + " | ".join(_pct(m.get(k)) for k in keys) + " |")
    return lines


def _seen_unseen(report: dict[str, Any]) -> list[str]:
    if not report["dataset"]["unseen_classes"]:
        return []
    lines = ["", "## Seen and unseen classes (R@1 / zero-shot top-1)", "",
             "| pair | run | seen R@1 | unseen R@1 | seen top-1 | unseen top-1 |", "|---|---|---|---|---|---|"]
    for pair in _pairs(report):
        for name, m in _run_rows(report, pair):
            seen, unseen = m.get("seen") or {}, m.get("unseen") or {}
            lines.append(f"| {pair} | {name} | {_pct(seen.get('r1'))} | {_pct(unseen.get('r1'))} | "
                         f"{_pct(seen.get('top1'))} | {_pct(unseen.get('top1'))} |")
    return lines


def _selection(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Settings chosen on validation (never on test)", "",
             "Sweep: " + (", ".join(f"{k} in {v}" for k, v in report["sweep"].items()) or "none") +
             ". Criterion: mean unpaired R@1 on validation (best route per pair; exact search on the "
             "validation features), paired pairs within one point of `anchor`; "
             + ("every seed sweeps" if report.get("sweep_every_seed") else
                "the first seed sweeps, later seeds reuse its choice")
             + ". The route table is then calibrated through the real index on validation. Other settings: "
             + ", ".join(f"{k}={v}" for k, v in sorted(report["settings"].items()) if k not in report["sweep"]), "",
             "| variant | seed | setting | val unpaired R@1 | val paired R@1 | chosen |", "|---|---|---|---|---|---|"]
    edges = sorted({e for per_seed in report["selection"].values() for sel in per_seed.values()
                    for e in sel.get("at_grid_edge", [])})
    if edges:
        lines += ["", f"**Chosen at the edge of its grid: {', '.join(edges)}.** The best value may lie beyond it: "
                  "extend `--sweep` past it before comparing the variants.", ""]
    for v, per_seed in report["selection"].items():
        for seed, sel in per_seed.items():
            for t in sel["trials"]:
                setting = ", ".join(f"{k}={x}" for k, x in t["setting"].items()) or "(defaults)"
                lines.append(f"| {v} | {seed} | {setting} | {_pct(t['unpaired_r1'])} | {_pct(t['paired_r1'])} | "
                             f"{'**yes**' if t['chosen'] else ''} |")
    return lines


def _unpaired_routes(report: dict[str, Any]) -> list[str]:
    variants = report["variants"]
    names = list(variants)
    unpaired_pairs = [p for p in _pairs(report) if not variants[names[0]]["pairs"][p]["paired"]]
    if not unpaired_pairs:
        return []
    lines = ["", "## Routes (unpaired pairs, test R@1 mean over seeds)", "",
             "| variant | pair | direct | proxy | fused | calibrated |", "|---|---|---|---|---|---|"]
    for v in names:
        for pair in unpaired_pairs:
            res = variants[v]["routes"][pair]
            lines.append(f"| {v} | {pair} | " + " | ".join(_pct(res[r]["r1"]) for r in CROSS_ROUTES)
                         + f" | {_pct(res['auto']['r1'])} ({_chosen_routes(report, v, pair)}) |")
    return lines


def _encoder_routes(report: dict[str, Any]) -> list[str]:
    variants, raw = report["variants"], report.get("raw", {})
    encoder_pairs = [p for p in _pairs(report) if any("raw" in variants[v]["routes"][p] for v in variants)]
    if not encoder_pairs:
        return []
    lines = ["", "## Routes (pairs read by one encoder, searched directly; test R@1 mean over seeds)", "",
             "`raw` = the encoder's own features (the baseline column above), `instance` = the bridge's map into "
             "them; the calibrated route leaves `raw` only where another clearly beats it on validation.", "",
             "| variant | pair | raw features | direct | instance | calibrated |", "|---|---|---|---|---|---|"]
    for v in variants:
        for pair in encoder_pairs:
            res = variants[v]["routes"][pair]
            lines.append(f"| {v} | {pair} | {_pct(raw[pair]['r1']) if pair in raw else 'n/a'} | "
                         f"{_pct(res['direct']['r1'])} | {_pct((res.get('instance') or {}).get('r1'))} | "
                         f"{_pct(res['auto']['r1'])} ({_chosen_routes(report, v, pair)}) |")
    return lines


def _system(report: dict[str, Any]) -> list[str]:
    lines = ["", "## System", ""]
    stages = report.get("stages_s", {})
    lines.append("- wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in stages.items())
                 + f"; total {report['seconds']} s"
                 + (f", {report['cpu_seconds']} CPU s" if report.get("cpu_seconds") is not None else "")
                 + (f" (load average {report['provenance']['loadavg'][0]} at the start, "
                    f"{report['loadavg_end'][0]} at the end)" if report.get("loadavg_end") else ""))
    if report.get("stages_cpu_s"):
        lines.append("- CPU time per stage (s): " + ", ".join(f"{k} {v}" for k, v in report["stages_cpu_s"].items()))
    ips = [r["items_per_s"] for r in report["indexing"] if r["items"]]
    if report["indexing"]:
        lines.append(f"- indexing: first run {report['indexing'][0]['items_per_s']} items/s (cold encoders); "
                     f"median over {len(report['indexing'])} runs {np.median(ips) if ips else 0:.1f} items/s")
    lat = dict(report.get("latency_ms", {}))
    pair = lat.pop("pair", None)
    for route, ms in lat.items():
        what = "G's view of one query (part of encoding it)" if route == "proxy_view" else \
            f"query latency {pair} ({route}, top-10, encoding excluded)"
        lines.append(f"- {what}: p50 {ms['p50_ms']} ms, p95 {ms['p95_ms']} ms")
    return lines


# ------------------------------------------------------------------------------ plots


def plots(report: dict[str, Any], out: Path) -> list[str]:
    """Write the PNGs (R@1 per ordered pair as a matrix, each variant's change against `anchor`, R@1
    per pair as bars with every seed); returns their file names."""
    from core.deps import require

    require("matplotlib", "benchmark plots").use("Agg")
    from bridge.modalities import MODALITIES

    pairs = _pairs(report)
    mods = [m for m in MODALITIES if any(p.startswith(m + "->") or p.endswith("->" + m) for p in pairs)]
    unpaired = {p for p in pairs if not next(iter(report["variants"].values()))["pairs"][p]["paired"]}
    made = [_pair_matrix_png(report, mods, unpaired, out)]
    if report.get("deltas_vs_anchor"):
        made.append(_delta_png(report, mods, unpaired, out))
    made.append(_pairs_bar_png(report, pairs, unpaired, out))
    return made


def _grid(values: dict[str, float | None], mods: list[str]) -> np.ndarray:
    """An ordered-pair figure as a query x target matrix (NaN where a pair has none)."""
    grid = np.full((len(mods), len(mods)), np.nan)
    for i, s in enumerate(mods):
        for j, t in enumerate(mods):
            v = values.get(f"{s}->{t}")
            if v is not None:
                grid[i, j] = v
    return grid


def _draw(ax: Any, fig: Any, values: dict[str, float | None], mods: list[str], unpaired: set[str], title: str,
          cmap: str, lo: float, hi: float, label: str) -> None:
    """One matrix panel, each cell's figure written in it (* on a pair never paired)."""
    grid = _grid(values, mods)
    im = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi)
    for i in range(len(mods)):
        for j in range(len(mods)):
            if not np.isnan(grid[i, j]):
                dark = cmap == "viridis" and grid[i, j] < 0.6 * hi
                mark = "*" if f"{mods[i]}->{mods[j]}" in unpaired else ""
                ax.text(j, i, f"{grid[i, j]:.0f}{mark}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    ax.set_xticks(range(len(mods)), mods, rotation=45)
    ax.set_yticks(range(len(mods)), mods)
    ax.set_xlabel("target")
    ax.set_ylabel("query")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label=label)


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _pair_matrix_png(report: dict[str, Any], mods: list[str], unpaired: set[str], out: Path) -> str:
    """R@1 per ordered pair: the raw features' panel (when measured), then one per variant."""
    import matplotlib.pyplot as plt

    panels = []
    if report.get("raw"):
        panels.append(("raw features", {p: 100 * m["r1"] for p, m in report["raw"].items()}))
    panels += [(v, {p: 100 * m["r1"] for p, m in res["pairs"].items()}) for v, res in report["variants"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.2), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        _draw(ax, fig, values, mods, unpaired, title, "viridis", 0, 100, "R@1 (%)")
    fig.suptitle(f"{report['dataset']['title']}: R@1 per ordered pair (* never paired)", fontsize=11)
    return _save(fig, out / "pair_matrix.png")


def _delta_png(report: dict[str, Any], mods: list[str], unpaired: set[str], out: Path) -> str:
    """Each variant's R@1 minus `anchor`'s, per ordered pair."""
    import matplotlib.pyplot as plt

    deltas = report["deltas_vs_anchor"]
    fig, axes = plt.subplots(1, len(deltas), figsize=(4.8 * len(deltas), 4.4), squeeze=False)
    for ax, (v, d) in zip(axes[0], deltas.items()):
        values = d["pairs_r1_points"]
        span = max(5.0, max((abs(x) for x in values.values()), default=5.0))
        _draw(ax, fig, values, mods, unpaired, f"{v} - anchor", "RdBu", -span, span, "R@1 points")
    return _save(fig, out / "delta.png")


def _pairs_bar_png(report: dict[str, Any], pairs: list[str], unpaired: set[str], out: Path) -> str:
    """R@1 per pair as bars (mean and std over seeds), every seed a dot, the raw features first."""
    import matplotlib.pyplot as plt

    variants, per_seed = report["variants"], report.get("per_seed", {})
    x = np.arange(len(pairs))
    width = 0.8 / max(1, len(variants) + bool(report.get("raw")))
    fig, ax = plt.subplots(figsize=(min(18, 3 + 0.75 * len(pairs)), 5))
    offset = 0
    if report.get("raw"):
        ax.bar(x + offset * width, [100 * report["raw"][p]["r1"] if p in report["raw"] else 0 for p in pairs], width,
               label="raw features", color="lightgrey")
        offset += 1
    for v in variants:
        means = [100 * variants[v]["pairs"][p]["r1"] for p in pairs]
        stds = [100 * (variants[v]["pairs"][p].get("r1_std") or 0) for p in pairs]
        ax.bar(x + offset * width, means, width, yerr=stds, capsize=2, label=v)
        for seed, res in per_seed.get(v, {}).items():  # every seed as a dot: the spread, not only its std
            ax.scatter(x + offset * width, [100 * res[p]["r1"] for p in pairs], s=6, color="black", zorder=3)
        offset += 1
    ax.set_xticks(x + width * (offset - 1) / 2, [p + ("*" if p in unpaired else "") for p in pairs], rotation=60,
                  ha="right", fontsize=8)
    ax.set_ylabel("R@1 (%)")
    ax.set_title(f"{report['dataset']['title']}: R@1 per pair (bars: mean ± std over seeds, dots: seeds; * never paired)",
                 fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out / "pairs_bar.png")
