"""The handwriting recipe: lengths, loss mixing, CER/WER, IAM/TSV data, configs (no training)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmix_applied.adapters.lines import LineTargets, ctc_feasible
from mmix_applied.config import load_config
from mmix_applied.core.plan import MixPlan
from mmix_applied.data.charset import UnknownCharacterError
from mmix_applied.tasks.handwriting import HandwritingRecipe
from tests.helpers import ROOT

CONFIGS = ROOT / "configs"
TINY = ["model.options={hidden_size: 8, cnn_widths: [4, 8, 8, 8]}", "data.batch_size=4"]


def _recipe(*overrides: str) -> HandwritingRecipe:
    return HandwritingRecipe(load_config(CONFIGS / "handwriting.yaml", [*TINY, *overrides]))


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@pytest.mark.parametrize("name", ["handwriting.yaml", "handwriting_input.yaml", "handwriting_none.yaml"])
def test_configs_load_with_their_variant(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.recipe == "handwriting" and cfg.model.family == "crnn" and cfg.data.format == "digits"
    assert cfg.mix.variant == {"handwriting.yaml": "manifold", "handwriting_input.yaml": "input"}.get(name, "none")
    assert cfg.train.monitor == "val/cer"


def test_output_lengths_are_the_true_unpadded_lengths():
    recipe = _recipe("data.digits.train_lines=8")
    model = recipe.build_model().eval()
    batch = next(iter(recipe.build_datamodule().train_dataloader()))
    x, y = recipe.split_batch(batch)
    assert torch.equal(y.targets, batch["targets"]) and y.texts == batch["texts"]
    with torch.no_grad():
        for i, width in enumerate(batch["widths"].tolist()):
            alone = model(x[i : i + 1, :, :, :width])  # the line without any padding
            assert alone.shape[0] == int(y.output_lengths[i])
    assert int(y.output_lengths.max()) <= model(x).shape[0]


def test_mixed_ctc_loss_matches_f_ctc_loss_with_the_longer_length():
    recipe = _recipe()
    adapter = recipe.build_adapter()
    torch.manual_seed(1)
    log_probs = torch.randn(12, 3, 11).log_softmax(-1)
    targets = torch.tensor([[1, 2, 3], [4, 4, 0], [5, 0, 0]])
    target_lengths = torch.tensor([3, 2, 1])
    out_lengths = torch.tensor([12, 6, 4])
    y = LineTargets(targets, target_lengths, out_lengths, ["abc", "dd", "e"])
    ctc = lambda t, tl, ol: F.ctc_loss(log_probs, t, ol, tl, reduction="none") / tl  # noqa: E731
    assert torch.allclose(adapter.loss(log_probs, y), ctc(targets, target_lengths, out_lengths).mean())
    perm, lam = torch.tensor([2, 0, 1]), torch.tensor(0.3)
    longer = torch.maximum(out_lengths, out_lengths[perm])
    expected = lam * ctc(targets, target_lengths, longer) + (1 - lam) * ctc(targets[perm], target_lengths[perm], longer)
    got = adapter.loss(log_probs, y, MixPlan("rnn", lam, perm))
    assert torch.allclose(got, expected.mean())


def test_ctc_feasibility_counts_repeats():
    targets = torch.tensor([[1, 1, 2], [3, 4, 0], [5, 5, 5]])
    lengths = torch.tensor([3, 2, 3])
    assert ctc_feasible(targets, lengths, torch.tensor([4, 2, 5])).tolist() == [True, True, True]
    assert ctc_feasible(targets, lengths, torch.tensor([3, 1, 4])).tolist() == [False, False, False]


def test_cer_and_wer_against_hand_computed_edit_distance():
    recipe = _recipe("data.digits.space_prob=0.3")
    chars = recipe.charset.chars  # " 0123456789"
    refs = ["12 345", "678", "9 0"]
    preds = ["12 35", "6788", "9 0"]
    log_probs = torch.full((12, 3, recipe.charset.num_classes), -10.0)
    for b, text in enumerate(preds):
        path = []
        for c in text:  # a blank between characters so repeats survive CTC collapsing
            path += [chars.index(c) + 1, 0]
        for t, k in enumerate(path + [0] * (12 - len(path))):
            log_probs[t, b, k] = 0.0
    lengths = torch.tensor([12, 12, 12])
    assert recipe.decode(log_probs, lengths) == preds
    metrics = recipe.build_metrics("val")
    recipe.update_metrics(metrics, log_probs, LineTargets(None, None, lengths, refs))
    values = metrics.compute()
    cer = sum(_levenshtein(p, r) for p, r in zip(preds, refs)) / sum(len(r) for r in refs)
    assert cer == pytest.approx(2 / 12)
    assert float(values["cer"]) == pytest.approx(cer)
    words = [(p.split(), r.split()) for p, r in zip(preds, refs)]
    wer = sum(_levenshtein(p, r) for p, r in words) / sum(len(r) for _, r in words)  # words as symbols
    assert float(values["wer"]) == pytest.approx(wer) == pytest.approx(2 / 5)
    # only the first `lengths` steps count: cutting line 0 after "12" adds four deletions
    short = recipe.decode(log_probs, torch.tensor([4, 12, 12]))
    assert short[0] == "12"


def _write_line(path: Path, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((40, width), 255, np.uint8)
    image[10:30, 5 : width - 5 : 7] = 0
    cv2.imwrite(str(path), image)


def test_iam_data_charset_from_train_and_unknown_characters(tmp_path):
    lines = tmp_path / "ascii" / "lines.txt"
    lines.parent.mkdir()
    rows = ["# IAM lines", "a01-000u-00 ok 154 19 1 2 3 4 ab|ba", "a01-000u-01 err 154 19 1 2 3 4 abba",
            "b02-000-00 ok 154 19 1 2 3 4 a|b", "c03-000-00 ok 154 19 1 2 3 4 cab"]
    lines.write_text("\n".join(rows) + "\n")
    for row in rows[1:]:
        line_id = row.split()[0]
        form = "-".join(line_id.split("-")[:2])
        _write_line(tmp_path / "lines" / line_id.split("-")[0] / form / f"{line_id}.png", 80)
    (tmp_path / "train.txt").write_text("a01-000u\nb02-000-00\n")
    (tmp_path / "test.txt").write_text("c03-000\n")
    common = ["data.format=iam", f"data.train={lines}", f"data.image_root={tmp_path / 'lines'}",
              f"data.train_ids={tmp_path / 'train.txt'}", f"data.val_ids={tmp_path / 'train.txt'}",
              "data.batch_size=2", "data.height=16"]
    with pytest.raises(UnknownCharacterError, match=rf"'c'.*{lines}:5"):
        _recipe(*common, f"data.test_ids={tmp_path / 'test.txt'}").records()
    recipe = _recipe(*common, f"data.test_ids={tmp_path / 'test.txt'}", "data.on_unknown=drop",
                     "data.include_err=false")
    assert recipe.charset.chars == " ab"
    records = recipe.records()
    assert [r.text for r in records["train"]] == ["ab ba", "a b"] and records["test"] == []
    batch = next(iter(recipe.build_datamodule().val_dataloader()))
    assert batch["images"].shape == (2, 1, 16, 32) and batch["widths"].tolist() == [32, 32]
    assert batch["targets"].tolist() == [[2, 3, 1, 3, 2], [2, 1, 3, 0, 0]]


def test_tsv_data_holds_out_validation_and_requires_a_train_list(tmp_path):
    rows = []
    for i in range(10):
        _write_line(tmp_path / "img" / f"{i}.png", 40 + 8 * i)
        rows.append(f"img/{i}.png\t{'xy'[i % 2] * (1 + i % 3)}")
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    recipe = _recipe("data.format=tsv", f"data.train={tmp_path / 'train.tsv'}", "data.val_fraction=0.3")
    records = recipe.records()
    assert len(records["train"]) == 7 and len(records["val"]) == 3 and records["test"] == records["val"]
    assert not {r.source for r in records["train"]} & {r.source for r in records["val"]}
    assert recipe.charset.chars == "xy"
    # the held-out lines per seed, as computed before the splits became one module (#21)
    for seed, held in ((0, [2, 5, 8]), (7, [1, 4, 6])):
        records = _recipe("data.format=tsv", f"data.train={tmp_path / 'train.tsv'}", "data.val_fraction=0.3",
                          f"seed={seed}").records()
        assert [r.source for r in records["val"]] == [f"{tmp_path / 'train.tsv'}:{i}" for i in held]
    with pytest.raises(ValueError, match="needs data.train"):
        _recipe("data.format=tsv").records()


def test_split_batch_warns_once_naming_lines_too_narrow_for_ctc():
    from mmix_applied.data.text_lines import LineCollate

    recipe = _recipe()
    recipe.build_model().train()
    items = [{"image": torch.zeros(1, 32, w), "text": t, "source": f"l.tsv:{i + 1}"}
             for i, (w, t) in enumerate([(64, "12"), (12, "1234"), (64, "11")])]
    batch = LineCollate(recipe.charset.encode)(items)
    with pytest.warns(UserWarning, match=r"too narrow.*\['l.tsv:2'\]"):
        _, y = recipe.split_batch(batch)
    assert y.output_lengths.tolist() == [16, 3, 16]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recipe.split_batch(batch)  # once per run, not per step


def test_digit_test_lines_do_not_depend_on_the_run_seed():
    sets = {}
    for seed in (0, 1):
        dm = _recipe(f"seed={seed}", "data.digits.train_lines=5", "data.digits.test_lines=5").build_datamodule()
        sets[seed] = {name: [dm.dataset(name)[i]["text"] for i in range(5)] for name in ("train", "test")}
    assert sets[0]["test"] == sets[1]["test"]
    assert sets[0]["train"] != sets[1]["train"]


def test_default_points_include_the_recurrent_sequence_mixed_along_its_batch_dim():
    from mmix_applied import ManifoldMixup

    model = _recipe("model.options={hidden_size: 8, cnn_widths: [4, 8, 8, 8], dropout: 0.0}").build_model()
    mixer = ManifoldMixup(model, points="auto", alpha=1.0, seed=0)
    assert mixer.points[0] == "input" and mixer.points[-1] == "rnn" and len(mixer.points) == 6
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()  # batch statistics would differ between the two passes
    x = torch.rand(4, 1, 32, 40)
    lam, perm = torch.tensor(0.3), torch.tensor([2, 3, 0, 1])
    with mixer.apply(MixPlan("rnn", lam, perm)):
        out = model(x)
    with torch.no_grad():
        seq = model.rnn(model.features(x))  # (T, B, D): the batch is dim 1
        expected = F.log_softmax(model.head(lam * seq + (1 - lam) * seq[:, perm]), dim=-1)
    assert torch.allclose(out, expected, atol=1e-5)
    mixer.close()
