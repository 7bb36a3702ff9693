"""The training loop's parts that know nothing of stages: batches of pairs, and AdamW with warm-up,
cosine decay and selection on validation (`optimise`). `bridge.train` runs its stages with them.

Example:
    >>> sampler = PairSampler(data["audio"], data["image"], np.random.default_rng(0), "audio<->image")  # doctest: +SKIP
    >>> rows, cols, positives = sampler.batch(256)                                                     # doctest: +SKIP
"""
from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, Callable

import numpy as np

from bridge.config import TrainConfig
from bridge.pairs import ModalityData, pair_keys
from bridge.validation import PairCheck
from core.deps import require

torch = require("torch", "training")
nn = torch.nn
F = torch.nn.functional
log = logging.getLogger(__name__)


class PairSampler:
    """Draws batches of (row of a, a random partner row of b) pairs, with the positives mask.

    Keys are turned into integer codes and partners into one sorted array with per-key
    offsets, so a batch is drawn with a few vectorised numpy calls (a Python loop per row
    cost as much as the training step itself)."""

    def __init__(self, a: ModalityData, b: ModalityData, rng: np.random.Generator, what: str):
        keys_a, keys_b, self.how = pair_keys(a, b)
        codes = {k: c for c, k in enumerate(sorted({k for k in keys_b if k is not None}))}
        self.n_codes = len(codes)
        self.code_a = np.array([codes.get(k, -1) if k is not None else -1 for k in keys_a])
        self.code_b = np.array([codes.get(k, -1) if k is not None else -1 for k in keys_b])
        self.rows = np.flatnonzero(self.code_a >= 0)
        if not self.rows.size:
            raise ValueError(f"no paired data for {what}: the items share neither pair keys nor labels")
        has_key = np.flatnonzero(self.code_b >= 0)
        self.partners = has_key[np.argsort(self.code_b[has_key], kind="stable")]  # b rows grouped by key
        counts = np.bincount(self.code_b[has_key], minlength=len(codes))
        self.start, self.count = np.concatenate([[0], np.cumsum(counts)[:-1]]), counts
        self.rng = rng

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, "torch.Tensor"]:
        rows = self.rng.choice(self.rows, size=min(size, self.rows.size), replace=False)
        key = self.code_a[rows]
        cols = self.partners[self.start[key] + (self.rng.random(rows.size) * self.count[key]).astype(int)]
        return rows, cols, torch.as_tensor(key[:, None] == self.code_b[cols][None, :])

    def partner_means(self, z_b: "torch.Tensor") -> tuple[np.ndarray, "torch.Tensor"]:
        """(rows of a that have partners, the normalised mean of each one's partners' vectors)."""
        sums = torch.zeros(self.n_codes, z_b.shape[1])
        has_key = self.code_b >= 0
        sums.index_add_(0, torch.as_tensor(self.code_b[has_key]), z_b[torch.as_tensor(np.flatnonzero(has_key))])
        return self.rows, F.normalize(sums[torch.as_tensor(self.code_a[self.rows])], dim=-1)


class TopClassPairs:
    """G's training pairs when the proxy is the label space's class prompts: each anchor item with
    the prompt of its most probable class (the largest of its label-space vector's first `classes`
    coordinates: in a concept space the classes come first, then the concepts above them)."""

    def __init__(self, head: nn.Module, anchor: ModalityData, rng: np.random.Generator, classes: int):
        with torch.no_grad():
            self.top = head(torch.as_tensor(anchor.features))[:, :classes].argmax(1).cpu().numpy()
        self.rng = rng

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, "torch.Tensor"]:
        rows = self.rng.choice(len(self.top), size=min(size, len(self.top)), replace=False)
        cols = self.top[rows]
        return rows, cols, torch.as_tensor(cols[:, None] == cols[None, :])


def optimise(params: list, steps: int, cfg: TrainConfig, loss_fn: Callable[[int], "torch.Tensor"], name: str,
              curves: dict[str, Any], keep: list[nn.Module] | None = None, check: Callable[[], float] | None = None,
              anchored: list | None = None) -> dict[str, Any]:
    """AdamW with warm-up and cosine decay, a progress bar, and selection on validation; returns
    what was kept (`steps`, and with a check `start_r1`, `best_r1`, `best_step`...).

    `anchored` parameters are pulled towards their starting values (`start_decay`, L2-SP) rather
    than towards zero. With `check`, the modules in `keep` are scored at the start and every
    `eval_every` steps, the best state is restored at the end, and the stage stops early after
    `patience` checks without progress. A check may return (trained pair's R@1, score): a state
    is only kept if the first is not below its start value.
    """
    from tqdm.auto import tqdm

    if steps <= 0:  # nothing to train: the start is what is kept
        start = _evaluate(check, keep)[1] if check is not None and cfg.select else None
        return {"steps": 0, **({"start_r1": start, "best_r1": start, "best_step": 0} if start is not None else {})}
    anchored = anchored or []
    starts = [p.detach().clone() for p in anchored]
    anchored_ids = {id(p) for p in anchored}
    groups = [{"params": [p for p in params if id(p) not in anchored_ids], "weight_decay": cfg.weight_decay}]
    if anchored:
        groups.append({"params": anchored, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    curve = curves.setdefault(name, [])
    selecting = check is not None and cfg.select
    result: dict[str, Any] = {"steps": steps}
    if selecting:
        floor, best = _evaluate(check, keep)
        result["start_r1"], result["start_pair_r1"] = best, floor
        best_step, best_state, stale = 0, [copy.deepcopy(m.state_dict()) for m in keep], 0
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=name, leave=False, mininterval=1.0, disable=None)
    for step in bar:
        loss = loss_fn(step)
        if anchored and cfg.start_decay > 0:
            loss = loss + cfg.start_decay * sum(((p - s) ** 2).sum() for p, s in zip(anchored, starts))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            curve.append([step, round(loss.item(), 6)])
        if selecting and ((step + 1) % cfg.eval_every == 0 or step == steps - 1):
            primary, score = _evaluate(check, keep)
            if score > best and primary >= floor - 1e-9:  # never below the start on the trained pair
                best, best_step, best_state, stale = score, step + 1, [copy.deepcopy(m.state_dict()) for m in keep], 0
            else:
                stale += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", val_r1=f"{score:.3f}", best=f"{best:.3f}")
            if stale >= cfg.patience:
                log.debug("%s: no better validation R@1 for %d checks; stopping at step %d", name, stale, step + 1)
                break
        elif step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    log.info("%s: %d steps, loss %.4f (%.1fs)", name, step + 1, loss.item(), time.perf_counter() - t0)
    if selecting:
        for module, state in zip(keep, best_state):
            module.load_state_dict(state)
        result.update(best_r1=best, best_step=best_step, stopped_at=step + 1)
    return result


def pair_and_mean(checks: list[PairCheck], embed: Callable[[str, np.ndarray], np.ndarray]) -> tuple[float, float]:
    """(the first check's R@1, the mean over all checks): the selection score of a head judged on several pairs."""
    scores = [c.score(embed) for c in checks]
    return scores[0], float(np.mean(scores))


def _evaluate(check: Callable[[], float | tuple[float, float]], modules: list[nn.Module]) -> tuple[float, float]:
    """(the trained pair's R@1, the selection score): equal unless the check scores more than one pair."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            value = check()
        return value if isinstance(value, tuple) else (value, value)
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def rows_tensor(data: ModalityData, rows: np.ndarray) -> "torch.Tensor":
    """The features of `rows` as a float32 batch."""
    return torch.as_tensor(data.features[rows], dtype=torch.float32)
