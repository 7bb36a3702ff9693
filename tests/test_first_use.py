"""What a new user hits first (issue 20): the README's labelled-sound example and a manifest with a
modality missing from validation both train; the role hint never repeats the refused roles."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

TINY_TRAIN = ["--preset", "tiny", "--dim", "16", "--hidden", "32", "--steps", "40", "--proxy-steps", "20",
              "--batch-size", "16", "--diffusion-timesteps", "50", "--diffusion-steps", "2", "--eval-every", "10",
              "--threads", "1"]


def tone(path: Path, hz: float, seed: int) -> str:
    """A one-second tone with a little noise: each class its own pitch, so the set is learnable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(16_000) / 16_000
    wave = 0.4 * np.sin(2 * np.pi * hz * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), 16_000)
    return path.name


def sounds_manifest(root: Path) -> Path:
    """The README's "Train on your own pairs" example, a little larger: audio clips in train and val,
    class prompts in train only."""
    rows = ["modality,path,text,label,split"]
    for c, (label, hz) in enumerate((("dog", 300.0), ("rain", 1200.0), ("bell", 2500.0))):
        for i in range(8):
            split = "val" if i >= 6 else "train"
            name = tone(root / "clips" / f"{label}_{i:03d}.wav", hz * (1 + 0.02 * i), seed=10 * c + i)
            rows.append(f"audio,clips/{name},,{label},{split}")
        for prompt in (f"a {label}", f"the sound of a {label}", label):
            rows.append(f"text,,{prompt},{label},train")
    (root / "sounds.csv").write_text("\n".join(rows) + "\n")
    return root / "sounds.csv"


def test_readme_labelled_sound_example_trains_with_class_prompts_in_train_only(tmp_path, capsys, caplog):
    from query.cli import main

    manifest = sounds_manifest(tmp_path)
    caplog.set_level(logging.INFO)
    code = main(["train", str(manifest), "--out", str(tmp_path / "run"), "--anchor", "text", "--proxy", "audio",
                 *TINY_TRAIN])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    # Both base heads were judged: val audio queried a gallery holding the training prompts.
    for m in ("text", "audio"):
        assert out["heads"][m]["relevance"] == "label" and 0.0 <= out["heads"][m]["val_r1"] <= 1.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "validation split" in r.getMessage()]
    assert len(warnings) == 1 and "no text items" in warnings[0].getMessage()
    assert "val_only_r1" in out and "val_r1" not in out  # two figures, two names (issue 20, item 4)
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_a_modality_missing_from_val_is_judged_on_held_out_training_pairs(tmp_path, capsys, caplog):
    """image (anchor) + text (proxy) + depth paired with images by pair key; val has no depth."""
    from PIL import Image

    from query.cli import main

    rows = ["modality,path,text,label,pair,split"]
    rng = np.random.default_rng(0)
    for c, label in enumerate(("cat", "dog", "owl")):
        for i in range(10):
            split = "val" if i >= 8 else "train"
            pixels = np.clip(60 * c + rng.normal(40, 10, size=(16, 16)), 0, 255).astype(np.uint8)
            (tmp_path / "img").mkdir(exist_ok=True)
            (tmp_path / "depth").mkdir(exist_ok=True)
            Image.fromarray(pixels).convert("RGB").save(tmp_path / "img" / f"{label}{i}.png")
            rows.append(f"image,img/{label}{i}.png,,{label},{label}{i},{split}")
            if split == "train":  # depth only in train
                Image.fromarray((pixels.astype(np.uint16) * 200)).save(tmp_path / "depth" / f"{label}{i}.png")
                rows.append(f"depth,depth/{label}{i}.png,,{label},{label}{i},train")
        for split in ("train", "val"):
            rows.append(f"text,,a photo of a {label},{label},,{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    caplog.set_level(logging.INFO)
    code = main(["train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "run"), "--anchor", "image",
                 "--proxy", "text", *TINY_TRAIN])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    heads = json.loads(captured.out)["heads"]
    assert heads["depth"]["relevance"] == "pair" and 0.0 <= heads["depth"]["val_r1"] <= 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "validation split" in r.getMessage()]
    assert len(warnings) == 1 and "no depth items" in warnings[0] and "held out" in warnings[0]


def test_role_hint_never_offers_the_refused_roles_and_stays_short():
    from bridge.pairs import Row, RoleError, check_roles

    rows = [Row("text", "a dog", "dog", None, "train", True), Row("audio", "/a.wav", "dog", None, "train"),
            Row("image", "/i.png", "cat", None, "train")]  # image pairs with nothing
    with pytest.raises(RoleError) as err:
        check_roles(rows, "text", "audio")
    msg = str(err.value)
    assert "image rows share no pair key or label with the text rows" in msg
    assert "--anchor text --proxy audio" not in msg.split("It holds")[1] and len(msg.splitlines()) <= 2


def test_bench_fused_order_is_the_served_fused_ranking(tmp_path):
    """The bench chooses lambda on `fused_order`; users get `Index.search(route="fused")`: one fusion."""
    from indexer.store.types import rrf_scores
    from query.eval.bench import fused_order
    from query.search import Index
    from tests.conftest import tiny_digits_index

    tiny_digits_index(tmp_path)
    index = Index.open(tmp_path / "edge.index")
    try:
        points: dict[str, list] = {}
        for rec in index.store.scroll(with_payload=True, with_vectors=["bridged", "proxy"]):
            points.setdefault(rec.payload["modality"], []).append(rec)
        gallery = points["depth"]
        g_direct = np.stack([np.asarray(r.vectors["bridged"], np.float32) for r in gallery])
        g_proxy = np.stack([np.asarray(r.vectors["proxy"], np.float32) for r in gallery])
        compared = 0
        for k in (5, len(gallery)):  # a short list, and the whole gallery (what the bench asks)
            for rec in points["audio"][:6]:
                q = np.asarray(rec.vectors["bridged"], np.float32)[None, :]
                view = index.bridge.proxy_view(q)  # what Index.search computes for this query
                served = index.search({"id": rec.id}, target="depth", k=k, route="fused")
                ours = fused_order(q @ g_direct.T, view @ g_proxy.T, k, index.fusion)[0]
                assert len(served) == len(ours) == k
                ours_ids = [str(gallery[j].id) for j in ours]
                served_ids = [str(h.id) for h in served]
                # Equal fused scores (one side's rank r, the other's r') may come in either order: compare
                # the ranking score by score, and the items wherever the score is not tied.
                sides = [np.argsort(-s, axis=1, kind="stable")[:, :max(index.fusion.depth, k)]
                         for s in (q @ g_direct.T, view @ g_proxy.T)]
                score = dict(zip((str(r.id) for r in gallery), rrf_scores(sides, [1.0, 1.0], len(gallery))[0]))
                assert [h.score for h in served] == pytest.approx([score[i] for i in served_ids], abs=1e-6)
                assert [score[i] for i in ours_ids] == pytest.approx([score[i] for i in served_ids], abs=1e-9)
                untied = [n for n, i in enumerate(ours_ids)
                          if sum(abs(score[j] - score[i]) < 1e-9 for j in score) == 1]
                assert [ours_ids[n] for n in untied] == [served_ids[n] for n in untied]
                compared += len(untied)
        assert compared > 20
    finally:
        index.close()


BENCH_TINY = ["--preset", "tiny", "--seeds", "0", "--max-queries", "10", "--dim", "16", "--hidden", "32",
              "--steps", "20", "--proxy-steps", "20", "--batch-size", "16", "--diffusion-timesteps", "50",
              "--diffusion-steps", "2", "--threads", "1"]


@pytest.mark.usefixtures("one_thread_fresh_cache")  # the bench caches features in the user cache
def test_two_modality_bench_runs_one_variant_and_classifies_against_prompts_of_other_splits(tmp_path, capsys):
    """Audio + text, class prompts in train and val only: zero-shot still scores the test audio (the
    classes come from the prompts of any split), and with nothing bound one variant runs, saying why."""
    from query.cli import main

    manifest = sounds_manifest(tmp_path)
    rows = manifest.read_text().splitlines()
    for c, (label, hz) in enumerate((("dog", 300.0), ("rain", 1200.0), ("bell", 2500.0))):
        rows.append(f"text,,a sound of a {label},{label},val")
        for i in range(2):
            rows.append(f"audio,clips/{tone(tmp_path / 'clips' / f'{label}_t{i}.wav', hz * 1.01, 99 + c + i)},,"
                        f"{label},test")
    manifest.write_text("\n".join(rows) + "\n")
    code = main(["bench", "--dataset", "manifest", "--data", str(manifest), "--out", str(tmp_path / "out"),
                 *BENCH_TINY])
    md = capsys.readouterr().out
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["variants"]) == ["anchor"] and "nothing is bound" in report["variants_note"]
    assert report["sweep"] == {}  # lambda_proxy cannot matter here: no sweep is claimed
    assert "Sweep: none" in md and "lambda_proxy in" not in md and "nothing is bound" in md
    pair = report["variants"]["anchor"]["pairs"]["audio->text"]
    assert pair["top1"] is not None and 0.0 <= pair["r1"] <= 1.0
    assert "zero-shot against class prompts: yes" in md


def test_bench_with_nothing_to_score_says_why_and_exits_non_zero(tmp_path, capsys):
    """Test rows of one modality, no text prompts anywhere: no pair can be scored."""
    from query.cli import main

    manifest = sounds_manifest(tmp_path)
    rows = [r for r in manifest.read_text().splitlines() if not r.startswith("text,")]
    from PIL import Image

    for label in ("dog", "rain"):  # images in train and val only: the test split has audio alone
        for split in ("train", "val"):
            Image.new("RGB", (16, 16), (40 if label == "dog" else 200, 0, 0)).save(tmp_path / f"{label}_{split}.png")
            rows.append(f"image,{label}_{split}.png,,{label},{split}")
    rows.append(f"audio,clips/{tone(tmp_path / 'clips' / 'dog_t.wav', 300.0, 5)},,dog,test")
    manifest.write_text("\n".join(rows) + "\n")
    code = main(["bench", "--dataset", "manifest", "--data", str(manifest), "--out", str(tmp_path / "out"),
                 "--anchor", "image", "--proxy", "audio", *BENCH_TINY])
    err = capsys.readouterr().err
    assert code != 0
    assert "nothing to score" in err and "audio 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "report.json").exists()
