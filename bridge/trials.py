"""Trial runs: decisions about a training run that only a whole run can measure, made by training
trial bridges first. Each takes `train` itself as an argument: `bridge.train` passes its own
`train`, so the recursion is written at the one place that does it (`_choose_start`).

- `choose_base`: on `--base auto` with a label-space preset, whether the base starts at the label
  space or at the features' own axes (two trials, scored on validation).
- `guard_held_out_classes`: which heads starting at their label-space vector must stay there,
  because training on the manifest's classes loses classes it never showed (one trial without a
  third of the classes).

A trial fixes `base` (so it chooses no base itself); a base-choice trial may run the class guard's
trial, which turns the guard off: two levels at most.

Example:
    >>> from bridge.train import train
    >>> choice = choose_base(cfg, data, val, load_preset(cfg.preset), train=train)   # doctest: +SKIP
    >>> choice["chosen"]                                                             # doctest: +SKIP
    'finetune'
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from bridge.config import TrainConfig
from bridge.head_plan import frozen_modalities, on_label_space, preset_record
from bridge.pairs import TrainingSet
from bridge.space import Bridge
from bridge.validation import hits_at_1, subset

if TYPE_CHECKING:
    from bridge.encoders.presets import Preset

log = logging.getLogger(__name__)

Train = Callable[..., tuple[Bridge, dict[str, Any]]]  # bridge.train.train


def choose_base(cfg: TrainConfig, data: TrainingSet, val: TrainingSet, preset: Preset | None, *,
                train: Train, jobs: int = 1) -> dict[str, Any]:
    """`--base auto` on a label-space preset whose pairs hold the anchor and the proxy: which start
    the base space is trained from, chosen on validation as heads are.

    A label-space base knows the classifier's concepts, not necessarily the user's (handwritten
    digits are no ImageNet class), and a base trained from the features' own principal axes keeps
    more of the anchor's geometry, which the modalities bound to it start from. Each candidate
    base is trained with every modality of the manifest bound to it (plain binding, no G) and
    scored by the mean validation R@1 over every pair of modalities that relate, never-paired
    ones included: the base the whole manifest validates best on. The label-space start is kept
    unless the other is higher. The two trials are independent: with `jobs` >= 2 they train side
    by side in forked workers. Returns {"chosen", "finetune", "trained"} (the scores)."""
    from core.workers import fork_map

    candidates = ("finetune", "trained")
    trial = functools.partial(_base_trial, cfg, data, val, preset, train)
    scores = dict(zip(candidates, fork_map(trial, candidates, jobs)))
    chosen = "trained" if scores["trained"] > scores["finetune"] else "finetune"
    log.info("base: mean validation R@1 over the manifest's pairs from the label-space start %.3f, from the features' "
             "own axes %.3f -> training the base %s", scores["finetune"], scores["trained"],
             "from the label-space start" if chosen == "finetune" else
             "from the features' own axes (an index built with no training is re-embedded: --reembed)")
    return {"chosen": chosen, **scores}


def _base_trial(cfg: TrainConfig, data: TrainingSet, val: TrainingSet, preset: Preset | None, train: Train,
                candidate: str) -> float:
    """One candidate start's trial: its mean validation R@1 over the manifest's pairs (by its heads)."""
    log.info("base: trying the %s start, with the manifest's modalities bound to it (with jobs >= 2 the two "
             "trials' lines interleave)", "label-space" if candidate == "finetune" else "features' own axes")
    trial = dataclasses.replace(cfg, base=candidate, variant="anchor", proxy_steps=0, proxy_bank=1)
    _, curves = train(trial, data, val=val, preset=preset, instance_maps=False)  # scored by its heads
    got = list(curves.get("val", {}).values())
    return round(float(np.mean(got)), 4) if got else float("-inf")


GUARD_SCALES = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01)  # how much of a head's learned part the class guard may keep


def _largest_safe_scale(trial: Any, m: str, q: np.ndarray, q_labels: list, gallery: np.ndarray, g_labels: list,
                        start_hits: np.ndarray) -> tuple[float, np.ndarray]:
    """The largest share of the trial head's learned part (its MLP, on top of the label-space start)
    at which the held-out queries lose no more than they win against the start; 0.0 when none.
    Returns it with the hits at that share (at the full head when none is safe)."""
    def holds(hits: np.ndarray) -> bool:  # the start is the safe side: no more queries lost than won
        return int((start_hits & ~hits).sum()) <= int((hits & ~start_hits).sum())

    head = trial.modules.heads[m]
    if head.kind != "labelspace-residual":
        hits = hits_at_1(trial.embed_features(m, q), q_labels, gallery, g_labels)
        return (1.0 if holds(hits) else 0.0), hits
    learned = {k: v.clone() for k, v in head.net[-1].state_dict().items()}
    first_hits = None
    try:
        for scale in GUARD_SCALES:
            head.net[-1].load_state_dict(learned)
            head.scale_learned(scale)
            hits = hits_at_1(trial.embed_features(m, q), q_labels, gallery, g_labels)
            first_hits = hits if first_hits is None else first_hits
            if holds(hits):
                return scale, hits
    finally:
        head.net[-1].load_state_dict(learned)
    return 0.0, first_hits


def guard_held_out_classes(cfg: TrainConfig, data: TrainingSet, val: TrainingSet, preset: Preset | None,
                           as_given: tuple[TrainConfig, TrainingSet, TrainingSet | None], *,
                           train: Train) -> dict[str, dict[str, Any]]:
    """How much of what each head that starts at its label-space vector learns may be kept, because
    training on the manifest's classes can lose classes it never showed.

    Validation holds the manifest's classes only, so it cannot see a head that pulls every sound onto
    the words the pairs taught. A trial bridge is trained with a third of the classes (at least one)
    left out; each such head's items of those classes then search their partner modality (every item
    of it, all classes) through the trial bridge and through the zero-training start; the largest
    share of the trial head's learned part (`GUARD_SCALES`) at which no more of those queries are lost
    than won is its `residual_scale`, and a head with no safe share is kept at its start. Returns per
    checked modality the figures, `residual_scale` and `keep_start`; empty when no head qualifies (unlabelled pairs, fewer
    than three classes, a base trained from the features). `data` and `val` are the run's (split,
    class prompts added); `as_given` the configuration and data `train` was called with, which the
    trial is trained from."""
    preset_info = preset_record(preset, cfg.preset)
    places = set(preset_info.get("places") or [])
    if preset is None or not on_label_space(preset_info) or cfg.base == "trained" or not places:
        return {}
    frozen = frozen_modalities(cfg, preset_info, data)
    # A trained head that starts at its label-space vector, bound to a partner that stays the space's own.
    partner = {m: cfg.anchor if m != cfg.anchor else cfg.proxy for m in data if m in places and m not in frozen}
    partner = {m: p for m, p in partner.items() if p in frozen}
    classes = sorted({y for m in partner for y in data[m].labels if y is not None})
    if not partner or len(classes) < 3:
        return {}
    rng = np.random.default_rng(cfg.seed + 7)
    held = set(rng.choice(classes, size=max(1, len(classes) // 3), replace=False).tolist())

    def without(ts: TrainingSet) -> TrainingSet:
        return {m: subset(d, np.array([y not in held for y in d.labels], bool)) for m, d in ts.items()}

    log.info("class guard: training a trial bridge without %s, to see what the heads starting at their label-space "
             "vector do to classes the pairs never show", ", ".join(sorted(held)))
    # The trial trains every step (no selection): its own validation lacks the held-out classes too,
    # so what is measured is what training on the pairs does to classes they never show.
    given_cfg, given_data, given_val = as_given
    trial_cfg = dataclasses.replace(given_cfg, class_guard=False, variant="anchor", proxy_steps=0, proxy_bank=1,
                                    select=False)
    trial, _ = train(trial_cfg, without(given_data), val=without(given_val) if given_val else None,
                     preset=preset, instance_maps=False)
    start = Bridge.from_preset(preset)
    out: dict[str, dict[str, Any]] = {}
    for m, p in partner.items():
        items = [d for d in (data[m], val.get(m)) if d is not None]
        q = np.concatenate([d.features for d in items])
        q_labels = [y for d in items for y in d.labels]
        rows = [i for i, y in enumerate(q_labels) if y in held]
        gallery = [d for d in (data[p], val.get(p)) if d is not None]
        g = np.concatenate([d.features for d in gallery])
        g_labels = [y for d in gallery for y in d.labels]
        if not rows or m not in trial.modalities or m not in start.modalities:
            continue
        gallery_z = start.embed_features(p, g)  # the partner stays the space's own: one gallery for all
        start_hits = hits_at_1(start.embed_features(m, q[rows]), [q_labels[i] for i in rows], gallery_z, g_labels)
        scale, trial_hits = _largest_safe_scale(trial, m, q[rows], [q_labels[i] for i in rows], gallery_z, g_labels,
                                                start_hits)
        keep = scale == 0.0  # the start is the safe side: training must not lose what the space knew
        out[m] = {"held_out": sorted(held), "queries": len(rows), "trial_r1": round(float(trial_hits.mean()), 4),
                  "start_r1": round(float(start_hits.mean()), 4), "keep_start": bool(keep),
                  "residual_scale": scale}
        log.info("class guard %s->%s on held-out classes: R@1 %.3f after training without them (learned part at "
                 "%g), %.3f at the label-space start -> %s", m, p, out[m]["trial_r1"], scale or 1.0,
                 out[m]["start_r1"], "the head stays its label-space map" if keep else
                 f"training goes on, its learned part scaled by {scale:g}")
    return out
