#!/usr/bin/env python
"""Two `ebridge bench` reports of the same world side by side: did a change move the figures beyond
their seed spread? Written for issue 29 (the quick bench made faster by sharing and cutting work).

For each variant, the never-paired and paired mean R@1 and every pair's calibrated-route R@1 in
both reports (mean and std over seeds); a figure `moved` when the two means differ by more than
the larger of the two std (plus half a query: R@1 over 60 queries moves in steps of 1/60), and
`sign` when they differ by more than twice it. Summary means take their spread from the per-seed
means (`per_seed` in the report; a trimmed report without it gives none). Also copied: each run's
wall and CPU seconds, stage times, load average, and the zero-training row of the new run.

The JSON is trimmed (figures only, no vectors) for `docs/reports/`.

Usage::

    python -m scripts.compare_bench bench-out/report.json docs/reports/bench-digits-quick-cross-routes.json \
        --json docs/reports/bench-digits-quick-fast.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def seed_spread(report: dict[str, Any], variant: str, paired: bool) -> float | None:
    """Std over seeds of the mean R@1 of the (un)paired pairs, from the report's per-seed figures."""
    seeds = (report.get("per_seed") or {}).get(variant)
    if not seeds:
        return None
    means = [np.mean([p["r1"] for p in pairs.values() if p["paired"] == paired]) for pairs in seeds.values()]
    return round(float(np.std(means)), 4)


def _moved(new: float, old: float, spreads: list[float | None], queries: int) -> dict[str, Any]:
    spread = max([s for s in spreads if s is not None] or [0.0]) + 0.5 / queries
    diff = new - old
    return {"diff_points": round(100 * diff, 2), "spread_points": round(100 * spread, 2),
            "moved": abs(diff) > spread, "beyond_twice": abs(diff) > 2 * spread}


def compare(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Per variant: summary means and each pair both reports hold, with `_moved` on each."""
    queries = new.get("max_queries") or 60
    out: dict[str, Any] = {}
    for v in new["variants"]:
        if v not in old["variants"]:
            continue
        a, b = new["variants"][v], old["variants"][v]
        row: dict[str, Any] = {"summary": {}, "pairs": {}}
        for key, paired in (("unpaired_mean_r1", False), ("paired_mean_r1", True)):
            spreads = [seed_spread(new, v, paired), seed_spread(old, v, paired)]
            row["summary"][key] = {"new": a["summary"][key], "old": b["summary"][key], "seed_std": spreads,
                                   **_moved(a["summary"][key], b["summary"][key], spreads, queries)}
        for pair, m in a["pairs"].items():
            if pair in b["pairs"]:
                o = b["pairs"][pair]
                spreads = [m.get("r1_std"), o.get("r1_std")]
                row["pairs"][pair] = {"paired": m["paired"], "new": m["r1"], "old": o["r1"], "std": spreads,
                                      **_moved(m["r1"], o["r1"], spreads, queries)}
        out[v] = row
    return out


def _run(report: dict[str, Any]) -> dict[str, Any]:
    prov = report.get("provenance", {})
    return {"commit": prov.get("commit"), "dirty": prov.get("dirty"), "command": prov.get("command"),
            "seconds": report.get("seconds"), "cpu_seconds": report.get("cpu_seconds"),
            "stages_s": report.get("stages_s"), "stages_cpu_s": report.get("stages_cpu_s"), "loadavg_start": prov.get("loadavg"),
            "loadavg_end": report.get("loadavg_end"), "sweep": report.get("sweep"), "seeds": report.get("seeds")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("new", type=Path, help="the report.json of the run to check")
    p.add_argument("old", type=Path, help="the report (or trimmed report) to compare against")
    p.add_argument("--json", type=Path, default=None, help="write the comparison here")
    args = p.parse_args(argv)
    from bridge.provenance import provenance

    new, old = json.loads(args.new.read_text()), json.loads(args.old.read_text())
    rows = compare(new, old)
    out = {"what": "scripts.compare_bench: the new run's figures against the old report's, per variant and pair "
                   "(calibrated route, R@1 on test, mean and std over seeds)",
           "new": {**_run(new), "report": str(args.new)}, "old": {**_run(old), "report": str(args.old)},
           "variants": rows, "zero_training": new.get("zero_training"),
           "selection": {v: {s: {"chosen": x["chosen"], "trials": x["trials"], "base_choice": x.get("base_choice")}
                             for s, x in sel.items()} for v, sel in new.get("selection", {}).items()},
           "provenance": provenance()}
    for v, row in rows.items():
        moved = [k for k, m in {**row["summary"], **row["pairs"]}.items() if m["moved"]]
        s = row["summary"]
        print(f"{v:15s} never-paired {s['unpaired_mean_r1']['new']:.4f} (was {s['unpaired_mean_r1']['old']:.4f}), "
              f"paired {s['paired_mean_r1']['new']:.4f} (was {s['paired_mean_r1']['old']:.4f}); "
              f"beyond the seed spread: {', '.join(moved) or 'none'}")
    print(f"wall {out['new']['seconds']} s (was {out['old']['seconds']}), CPU {out['new']['cpu_seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
