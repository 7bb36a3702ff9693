"""The ceiling bench's oracles on toy classifier outputs whose right answer is known."""
import numpy as np

from scripts.bench_zero_shot_ceiling import fit_class_weights, oracle_maps


def toy(n_per_class: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1000-class logits where every photo of CIFAR class c peaks on ImageNet class 7c (so a map learned
    on validation recovers it), and a validation half per class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_class)
    logits = rng.normal(0, 0.1, (len(y), 1000)).astype(np.float32)
    logits[np.arange(len(y)), 7 * y] += 5.0
    val = np.zeros(len(y), bool)
    val[np.concatenate([np.flatnonzero(y == c)[: n_per_class // 2] for c in range(10)])] = True
    return logits, y, val


def test_oracle_maps_recover_a_clean_map_on_the_held_out_photos():
    logits, y, val = toy()
    rows = oracle_maps(logits, y, val)
    assert rows["argmax map"] == {"val": 1.0, "test": 1.0}
    assert rows["mass map"]["test"] == 1.0
    assert rows["mass map + class priors"]["test"] == 1.0


def test_class_weights_undo_a_bias_toward_one_class():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 50)
    scores = np.eye(3)[y] + rng.normal(0, 0.2, (150, 3))
    biased = scores + np.array([2.0, 0.0, 0.0])  # class 0 wins every photo before the weights
    assert np.mean(biased.argmax(1) == y) < 0.4
    weights = fit_class_weights(biased, y)
    assert np.mean((biased + weights).argmax(1) == y) > 0.95
