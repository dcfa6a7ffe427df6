"""Issue 22 (round 3) and 23: predictions never write where an input lives, and the file checked is
the file written. Segmentation masks go to a folder named like --output without its suffix, which
must not hold other files (``--output data/x/img.csv`` replaced the images of ``data/x/img/``);
``--output NEWDIR`` is a folder (it wrote the masks, then failed with a full-disk hint); handwriting
writes quoted CSV to the path it was given (it checked ``predictions.csv``, then wrote
``predictions.tsv`` over whatever was there, unquoted). Also: ``spectrum`` takes only
classification runs and their own checkpoints."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from mmix_applied.cli import main
from mmix_applied.config import load_config
from mmix_applied.data.text_lines import read_tsv
from mmix_applied.tasks.handwriting import HandwritingRecipe
from tests.helpers import ROOT
from tests.helpers.bad_inputs import snapshot

SEG = ["data.source=folders", "data.num_classes=3", "data.in_channels=1", "data.batch_size=2", "data.pad_divisor=8",
       "model.family=smp", "model.name=unet", "model.options={encoder_name: resnet18, encoder_depth: 2, "
       "decoder_channels: [8, 8]}", "train.accelerator=cpu", "train.devices=1", "train.max_epochs=1",
       "train.limit_train_batches=2", "train.limit_val_batches=1", "train.enable_progress_bar=false",
       "train.loggers=[]"]


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    for kind in ("img", "msk"):
        (root / "data" / kind).mkdir(parents=True)
    for i in range(4):
        mask = np.zeros((24, 24), np.uint8)
        mask[4:16, 6:20] = 1 + i % 2
        cv2.imwrite(str(root / "data" / "img" / f"s{i}.png"), (mask * 90 + rng.integers(0, 60, mask.shape)).astype(
            np.uint8))
        cv2.imwrite(str(root / "data" / "msk" / f"s{i}.png"), mask)
    paths = [f"data.{s}_{k}={root / 'data' / d}" for s in ("train", "val", "test")
             for k, d in (("images", "img"), ("masks", "msk"))]
    assert main(["fit", "-c", str(ROOT / "configs" / "segmentation.yaml"), *SEG, *paths, f"run.dir={root}",
                 "run.name=seg"]) == 0
    return root / "seg", root / "data"


def test_segmentation_masks_never_go_among_the_input_images(seg_run, capsys):
    run, data = seg_run
    before = snapshot(data)
    code, _, err = _cli(capsys, "predict", "--checkpoint", run, "--input", data / "img", "--output",
                        data / "img.csv")
    assert code == 2, err
    assert f"predicted masks go to '{data / 'img'}'" in err and "no earlier prediction there wrote" in err
    assert snapshot(data) == before  # the images are untouched, and no table was written


def test_segmentation_output_to_a_new_folder_writes_there_and_a_rerun_replaces_its_own_masks(seg_run, tmp_path,
                                                                                                capsys):
    run, data = seg_run
    out = tmp_path / "preds"  # does not exist; no suffix: a folder
    for _ in range(2):  # the second run replaces the first one's masks (its table lists them)
        code, stdout, err = _cli(capsys, "predict", "--checkpoint", run, "--input", data / "img", "--output", out)
        assert code == 0, err
    table = out / "predictions.csv"
    assert f"predictions: {table}" in stdout
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [f"s{i}" for i in range(4)]
    masks = sorted((out / "predictions").iterdir())
    assert [p.name for p in masks] == [f"s{i}.png" for i in range(4)]
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape == (24, 24) for p in masks)


def test_spectrum_takes_only_classification_runs_and_their_own_checkpoints(seg_run, tmp_path, capsys):
    run, _ = seg_run
    code, _, err = _cli(capsys, "spectrum", "--checkpoint", run, "--point", "input", "--out", tmp_path / "s")
    assert code == 2 and "Traceback" not in err
    assert (f"spectrum measures class-conditional spectra (one per class label of an image), so it takes "
            f"classification runs; '{run}' is a segmentation run") in err
    # a classification run directory holding another recipe's checkpoint
    fake = tmp_path / "cls"
    assert main(["fit", "-c", str(ROOT / "configs" / "classification.yaml"), "model.name=test_resnet",
                 "data.labels_per_class=1", "data.batch_size=4", "train.max_epochs=1", "train.limit_train_batches=1",
                 "train.limit_val_batches=0", "train.accelerator=cpu", "train.devices=1", "train.loggers=[]",
                 "train.enable_progress_bar=false", f"run.dir={tmp_path}", "run.name=cls"]) == 0
    (fake / "checkpoints" / "last.ckpt").write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    capsys.readouterr()
    code, _, err = _cli(capsys, "spectrum", "--checkpoint", fake, "--point", "input", "--out", tmp_path / "s")
    assert code == 2 and "Traceback" not in err
    assert "is of another run: recipe='segmentation' (expected 'classification')" in err


def test_handwriting_predictions_are_quoted_csv_at_the_path_given(tmp_path):
    recipe = HandwritingRecipe(load_config(ROOT / "configs" / "handwriting.yaml"))
    names = ["a\tb.png", "line\nbreak.png", 'say "hi", ok.png', "plain.png"]
    rows = [[(str(tmp_path / n), t) for n, t in zip(names, ["12", "3", "", "45"])]]
    written = recipe.write_predictions(rows, tmp_path / "predictions.csv")
    assert written == tmp_path / "predictions.csv"  # was predictions.tsv, a file nobody had checked
    with open(written, newline="") as fh:
        read = list(csv.reader(fh))
    assert read == [["path", "text"], *[[str(tmp_path / n), t] for n, t in zip(names, ["12", "3", "", "45"])]]
    back = read_tsv(written, require_text=False)  # reads back as a training list
    assert [(r.image_path.name, r.text) for r in back] == list(zip(names, ["12", "3", "", "45"]))
    with pytest.raises(ValueError, match="holds a tab or a line break, which TSV cannot quote"):
        recipe.write_predictions(rows, tmp_path / "p.tsv")
    assert not (tmp_path / "p.tsv").exists()


def test_predict_never_replaces_an_input_file_even_with_overwrite(tmp_path, capsys):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"d{i}.png"), np.full((28, 28), 40 * i, np.uint8))
    assert main(["fit", "-c", str(ROOT / "configs" / "classification.yaml"), "model.name=test_resnet",
                 "data.labels_per_class=1", "data.batch_size=4", "train.max_epochs=1", "train.limit_train_batches=1",
                 "train.limit_val_batches=0", "train.accelerator=cpu", "train.devices=1", "train.loggers=[]",
                 "train.enable_progress_bar=false", f"run.dir={tmp_path}", "run.name=c"]) == 0
    capsys.readouterr()
    before = snapshot(folder)
    code, _, err = _cli(capsys, "predict", "--checkpoint", tmp_path / "c", "--input", folder, "--output",
                        folder / "d1.png", "--overwrite")
    assert code == 2
    assert f"--output '{folder / 'd1.png'}' is a file in the --input folder '{folder}'" in err
    assert snapshot(folder) == before
