"""IAM and TSV line lists, image loading, height normalisation, padding collate, augmentation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmix_applied.data.charset import Charset, UnknownCharacterError
from mmix_applied.data.text_lines import (
    LineAugment,
    LineCollate,
    TextLineDataset,
    check_charset,
    load_line_image,
    normalise_height,
    read_iam_lines,
    read_tsv,
)

IAM_LINES = """\
#--- lines.txt ---------------------------------------------------------------#
#
# iam database line information
#
# format: a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop|Mr.|Gaitskell|from
#
a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop|Mr.|Gaitskell|from
a01-000u-01 err 156 19 395 932 1850 105 nominating|any|more|Labour|life|Peers
a01-000x-00 ok 182 23 368 721 1706 120 said|&quot;no&quot;|to|it
"""


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_iam_parsing_comments_status_words_and_paths(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text(IAM_LINES)
    records = read_iam_lines(lines)
    assert [r.text for r in records] == [
        "A MOVE to stop Mr. Gaitskell from",
        "nominating any more Labour life Peers",
        'said "no" to it',
    ]
    assert records[0].image_path == tmp_path / "lines" / "a01" / "a01-000u" / "a01-000u-00.png"
    assert records[1].source == f"{lines}:8"
    ok_only = read_iam_lines(lines, include_err=False)
    assert [r.image_path.stem for r in ok_only] == ["a01-000u-00", "a01-000x-00"]
    by_form = read_iam_lines(lines, ids=["a01-000u"], image_root=tmp_path / "imgs")
    assert [r.image_path.stem for r in by_form] == ["a01-000u-00", "a01-000u-01"]
    assert by_form[0].image_path.parent.parent.parent == tmp_path / "imgs"
    assert [r.image_path.stem for r in read_iam_lines(lines, ids=["a01-000x-00"])] == ["a01-000x-00"]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("a01-000u-00 maybe 154 19 408 746 1663 91 A|b", "status must be one of"),
        ("a01-000u-00 ok 154 19 408 746 1663", "expected 9"),
        ("a01-000u-00 ok 154 x 408 746 1663 91 A", "integers"),
    ],
)
def test_iam_malformed_line_quotes_file_and_line(tmp_path, bad, match):
    lines = tmp_path / "lines.txt"
    lines.write_text("# comment\n" + bad + "\n")
    with pytest.raises(ValueError, match=match) as info:
        read_iam_lines(lines)
    assert f"{lines}:2" in str(info.value)


def test_missing_list_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="IAM lines file not found"):
        read_iam_lines(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="TSV file not found"):
        read_tsv(tmp_path / "nope.tsv")


def test_tsv_parsing_relative_paths_tabs_in_text_and_errors(tmp_path):
    tsv = tmp_path / "lines.tsv"
    tsv.write_text("# header comment\nimg/a.png\thello world\n\n/abs/b.png\tx\ty\n")
    records = read_tsv(tsv)
    assert [(r.image_path, r.text, r.source) for r in records] == [
        (tmp_path / "img" / "a.png", "hello world", f"{tsv}:2"),
        (Path("/abs/b.png"), "x\ty", f"{tsv}:4"),
    ]
    tsv.write_text("a.png\tok\nno-tab-here\n")
    with pytest.raises(ValueError, match=rf"{tsv}:2: expected 'path<TAB>text'"):
        read_tsv(tsv)


def test_unknown_characters_reported_with_file_and_line(tmp_path):
    tsv = tmp_path / "l.tsv"
    tsv.write_text("a.png\tabc\nb.png\tabé!\nc.png\tcab\nd.png\t!a\n")
    records = read_tsv(tsv)
    with pytest.raises(UnknownCharacterError) as info:
        check_charset(records, "abc")
    assert info.value.unknown == {"é": [(f"{tsv}:2", 2)], "!": [(f"{tsv}:2", 3), (f"{tsv}:4", 0)]}
    assert f"{tsv}:2" in str(info.value) and f"{tsv}:4" in str(info.value)
    kept = check_charset(records, Charset("abc"), on_unknown="drop")
    assert [r.text for r in kept] == ["abc", "cab"]
    assert check_charset(records[:1], "abc") == records[:1]
    with pytest.raises(ValueError, match="on_unknown"):
        check_charset(records, "abc", on_unknown="ignore")


def test_image_loading_inversion_and_errors(tmp_path):
    image = np.full((10, 30), 255, np.uint8)
    image[2:8, 5:9] = 0  # dark ink on white paper
    _write_png(tmp_path / "a.png", image)
    loaded = load_line_image(tmp_path / "a.png")
    assert loaded.dtype == np.uint8 and loaded.max() == 255 and loaded[0, 0] == 0 and loaded[3, 6] == 255
    assert np.array_equal(load_line_image(tmp_path / "a.png", invert=False), image)
    with pytest.raises(FileNotFoundError, match=r"listed at l.tsv:3"):
        load_line_image(tmp_path / "missing.png", source="l.tsv:3")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read line image"):
        load_line_image(tmp_path / "broken.png")


def test_height_normalisation_keeps_aspect_ratio():
    assert normalise_height(np.zeros((64, 250), np.uint8), height=32).shape == (32, 125)
    assert normalise_height(np.zeros((16, 25), np.uint8), height=32).shape == (32, 50)
    assert normalise_height(np.zeros((64, 1), np.uint8), height=32).shape == (32, 1)
    assert normalise_height(np.zeros((64, 1000), np.uint8), height=32, max_width=300).shape == (32, 300)


def test_dataset_and_collate_pad_and_return_true_widths(tmp_path):
    widths_px = [(20, 50), (40, 30), (10, 70)]  # (h, w) -> at height 8: widths 20, 6, 56
    lines = []
    for i, (h, w) in enumerate(widths_px):
        _write_png(tmp_path / f"{i}.png", np.full((h, w), 200, np.uint8))
        lines.append(f"{i}.png\t{'ab'[: i + 1] if i < 2 else 'bba'}")
    tsv = tmp_path / "l.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    dataset = TextLineDataset(read_tsv(tsv), height=8, min_width=10)
    items = [dataset[i] for i in range(3)]
    expected_w = [max(10, round(w * 8 / h)) for h, w in widths_px]
    assert [it["width"] for it in items] == expected_w == [20, 10, 56]
    assert items[1]["image"].shape == (1, 8, 10)
    # 55/255 ink everywhere in the real image, paper (0) in the min_width padding.
    assert torch.allclose(items[1]["image"][..., :6], torch.tensor(55 / 255))
    assert torch.all(items[1]["image"][..., 6:] == 0)

    codes = {"a": 1, "b": 2}
    batch = LineCollate(lambda s: [codes[c] for c in s], pad_to_multiple=4)(items)
    assert batch["images"].shape == (3, 1, 8, 56)
    assert batch["widths"].tolist() == [20, 10, 56]
    assert batch["target_lengths"].tolist() == [1, 2, 3]
    assert batch["targets"].tolist() == [[1, 0, 0], [1, 2, 0], [2, 2, 1]]
    for i, w in enumerate(expected_w):
        assert torch.equal(batch["images"][i, :, :, :w], items[i]["image"])
        assert torch.all(batch["images"][i, :, :, w:] == 0)
    assert batch["texts"] == ["a", "ab", "bba"] and batch["sources"][2] == f"{tsv}:3"
    odd = LineCollate(lambda s: [codes[c] for c in s], pad_to_multiple=16)(items[:2])
    assert odd["images"].shape[-1] == 32 and odd["widths"].tolist() == [20, 10]


def test_collate_rejects_mixed_heights_and_empty_batches():
    collate = LineCollate(lambda s: [1] * len(s))
    items = [{"image": torch.zeros(1, 8, 5), "text": "a"}, {"image": torch.zeros(1, 9, 5), "text": "a"}]
    with pytest.raises(ValueError, match="share one height"):
        collate(items)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_augmentation_is_seeded_and_keeps_shape():
    rng = np.random.default_rng(0)
    image = (rng.random((32, 90)) > 0.8).astype(np.uint8) * 255
    a = [LineAugment(seed=3, p=1.0)(image, index=0) for _ in range(2)]
    b = LineAugment(seed=4, p=1.0)(image, index=0)
    assert a[0].shape == image.shape and a[0].dtype == np.uint8
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], b)
    with pytest.raises(ValueError, match="strength"):
        LineAugment(strength=-1)


def test_augmentation_depends_on_seed_epoch_and_index_only():
    """The one rule (mmix_applied.data.seeding): a line's draw is a function of (seed, epoch, index),
    whatever was drawn before it (so worker layout and resume points cannot change it)."""
    image = (np.random.default_rng(1).random((32, 90)) > 0.8).astype(np.uint8) * 255

    def draw(index, *, epoch=0, before=()):
        augment = LineAugment(seed=3, p=1.0)
        augment.set_epoch(epoch)
        for other in before:  # earlier lines drawn by the same object (another order, another worker)
            augment(image, index=other)
        return augment(image, index=index)

    first = draw(5)
    assert np.array_equal(first, draw(5, before=(0, 1, 9)))  # history does not matter
    assert not np.array_equal(first, draw(6))  # another line, another draw
    assert not np.array_equal(first, draw(5, epoch=1))  # another epoch, another draw


def test_tsv_without_text_for_prediction_lists(tmp_path):
    tsv = tmp_path / "todo.tsv"
    tsv.write_text("a.png\nb.png\tknown\n")
    assert [(r.image_path.name, r.text) for r in read_tsv(tsv, require_text=False)] == [("a.png", ""), ("b.png", "known")]
    with pytest.raises(ValueError, match="no tab"):
        read_tsv(tsv)
