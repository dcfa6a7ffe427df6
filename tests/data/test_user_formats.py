"""Data in the formats people have (issue 23) and the data cases of issue 22: palette PNG masks
(Pascal VOC, CVAT), grey masks with alpha, images of mixed sizes, a 40000 x 30000 PNG, CSVs with a BOM,
padded or empty labels. Every file is written by the test itself."""

import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mmix_applied.data.image_files import OPENCV_MAX_PIXELS, ImageTooLargeError, read_header
from mmix_applied.data.images import read_image as read_class_image
from mmix_applied.data.images import read_labels_csv
from mmix_applied.data.sampling import SameSizeBatchSampler, make_loader
from mmix_applied.data.segmentation_2d import SegmentationFolder, build_2d_transforms, read_image, read_mask
from mmix_applied.data.text_lines import load_line_image

#: Pascal VOC's colour map for the first classes, and its 'void' colour at index 255.
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 251 + [224, 224, 192]


def voc_mask(path, indices):
    """A palette PNG as Pascal VOC's SegmentationClass files (and CVAT's exports) are written."""
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(VOC_PALETTE)
    image.save(path)
    return path


def _indices(seed=0, shape=(12, 16), classes=3, void=True):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, classes, shape).astype(np.uint8)
    if void:
        mask[0, :] = mask[:, 0] = 255  # VOC's void border
    return mask


def test_palette_mask_is_read_as_its_indices(tmp_path):
    indices = _indices()
    path = voc_mask(tmp_path / "2007_000032.png", indices)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (12, 16, 3)  # OpenCV sees colours
    mask = read_mask(path, mode="multiclass", num_classes=3, ignore_index=255)
    assert mask.dtype == np.int64 and np.array_equal(mask, indices)  # the palette indices, 255 kept as void


def test_palette_mask_with_void_and_no_ignore_index_says_to_set_it(tmp_path):
    path = voc_mask(tmp_path / "m.png", _indices())
    with pytest.raises(ValueError, match=r"\[255\].*data.ignore_index: 255") as err:
        read_mask(path, mode="multiclass", num_classes=3)
    assert "multilabel" not in str(err.value)  # the old, wrong advice


def test_palette_binary_mask_keeps_255_as_void_not_foreground(tmp_path):
    indices = _indices(classes=2)
    mask = read_mask(voc_mask(tmp_path / "b.png", indices), mode="binary", num_classes=1, ignore_index=255)
    assert np.array_equal(mask[:, :, 0], indices)


def test_palette_mask_in_multilabel_mode_says_multiclass(tmp_path):
    path = voc_mask(tmp_path / "m.png", _indices(void=False))
    with pytest.raises(ValueError, match="palette image.*data.mode: multiclass"):
        read_mask(path, mode="multilabel", num_classes=3)


def test_grey_mask_with_alpha_is_read_without_the_alpha(tmp_path):
    indices = _indices(void=False)
    alpha = np.where(indices > 0, 255, 128).astype(np.uint8)  # an alpha that differs from the classes
    Image.fromarray(np.stack([indices, alpha], axis=-1), mode="LA").save(tmp_path / "la.png")
    assert np.array_equal(read_mask(tmp_path / "la.png", mode="multiclass", num_classes=3), indices)
    rgba = np.dstack([indices, indices, indices, alpha])  # grey saved as RGBA
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert np.array_equal(read_mask(tmp_path / "rgba.png", mode="multiclass", num_classes=3), indices)


def test_colour_mask_advice_names_palette_and_class_indices(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[:2, :, 2] = 128  # VOC's dark red (RGB 128, 0, 0) in BGR
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    with pytest.raises(ValueError, match="colour image.*palette PNG.*class indices") as err:
        read_mask(tmp_path / "c.png", mode="multiclass", num_classes=3)
    assert "data.mode: multilabel" in str(err.value)  # the right key, as the last option


def _huge_png(path, width=40000, height=30000):
    """A PNG whose header says 40000 x 30000 (1.2e9 pixels); the data is a few rows only."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (width + 1) * 2)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("reader", ["segmentation image", "segmentation mask", "classification", "line"])
def test_huge_png_is_refused_by_name_with_the_limit(tmp_path, reader):
    path = _huge_png(tmp_path / "scan.png")
    assert 40000 * 30000 > OPENCV_MAX_PIXELS
    read = {"segmentation image": lambda: read_image(path),
            "segmentation mask": lambda: read_mask(path, mode="multiclass", num_classes=2),
            "classification": lambda: read_class_image(path),
            "line": lambda: load_line_image(path)}[reader]
    with pytest.raises(ImageTooLargeError, match=r"scan\.png.*40000 x 30000.*1,073,741,824 pixels.*tiles"):
        read()


def test_header_is_read_without_decoding_and_ignores_pillows_bomb_limit(tmp_path):
    header = read_header(_huge_png(tmp_path / "big.png"))
    assert (header.height, header.width, header.mode) == (30000, 40000, "L")
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's global limit is left as it was
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert read_header(tmp_path / "junk.png") is None


def _mixed_size_folder(root, sizes=((20, 28), (33, 40), (20, 28), (33, 40), (64, 30))):
    (root / "img").mkdir(parents=True)
    (root / "msk").mkdir()
    for i, (h, w) in enumerate(sizes):
        mask = (np.arange(h * w).reshape(h, w) % 3).astype(np.uint8)
        cv2.imwrite(str(root / "img" / f"c{i}.png"), mask * 80)
        cv2.imwrite(str(root / "msk" / f"c{i}.png"), mask)
    return root / "img", root / "msk"


def test_images_of_mixed_sizes_are_evaluated_in_batches_of_one_size(tmp_path):
    img, msk = _mixed_size_folder(tmp_path)
    ds = SegmentationFolder(img, msk, num_classes=3, in_channels=1,
                            transform=build_2d_transforms(train=False, pad_divisor=1))
    assert ds.item_sizes() == [(20, 28), (33, 40), (20, 28), (33, 40), (64, 30)]
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        next(iter(make_loader(ds, batch_size=4, train=False)))  # the old loader
    loader = make_loader(ds, batch_size=4, train=False, sizes=ds.item_sizes())
    batches = [(tuple(x.shape), y.shape[0]) for x, y in loader]
    assert batches == [((2, 1, 20, 28), 2), ((2, 1, 33, 40), 2), ((1, 1, 64, 30), 1)]
    assert len(loader) == 3


def test_same_size_batch_sampler_yields_every_index_once_and_plain_batches_for_one_size():
    sizes = [(1, 1), (2, 2), (1, 1), (1, 1), (2, 2), (3, 3), (1, 1)]
    batches = list(SameSizeBatchSampler(range(7), 2, sizes=sizes))
    assert batches == [[0, 2], [1, 4], [3, 6], [5]]
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert list(SameSizeBatchSampler(range(5), 2, sizes=[0] * 5)) == [[0, 1], [2, 3], [4]]
    assert len(SameSizeBatchSampler(range(7), 2, drop_last=True, sizes=sizes)) == 3


def test_same_size_batches_survive_lightnings_distributed_sampler():
    """Under DDP Lightning re-creates a custom batch sampler around its DistributedSampler."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DistributedSampler

    data = [torch.zeros(1, h, h) for h in (2, 3, 2, 3, 2, 3, 2, 3)]
    with _replace_dunder_methods(BatchSampler):
        loader = make_loader(data, batch_size=2, train=False, sizes=[tuple(t.shape) for t in data])
    rank1 = _update_dataloader(loader, DistributedSampler(data, num_replicas=2, rank=1, shuffle=False))
    assert isinstance(rank1.batch_sampler, SameSizeBatchSampler)
    assert [tuple(b.shape) for b in rank1] == [(2, 1, 3, 3), (2, 1, 3, 3)]  # indices 1, 3, 5, 7


def _csv(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def test_csv_with_a_bom_reads_its_first_column(tmp_path):
    csv_file = _csv(tmp_path / "labels.csv", "path,label\na.png,cat\n", encoding="utf-8-sig")
    items, classes = read_labels_csv(csv_file)
    assert classes == ["cat"] and items == [(str(tmp_path / "a.png"), 0)]


def test_csv_labels_with_spaces_are_stripped_and_empty_labels_named(tmp_path):
    csv_file = _csv(tmp_path / "labels.csv", "path, label\na.png,cat \nb.png, cat\nc.png,dog\n")
    items, classes = read_labels_csv(csv_file)
    assert classes == ["cat", "dog"] and [lab for _, lab in items] == [0, 0, 1]
    empty = _csv(tmp_path / "empty.csv", "path,label\na.png,cat\nb.png,\nc.png,  \n")
    with pytest.raises(ValueError, match=r"empty\.csv.*empty label on lines? 3, 4"):
        read_labels_csv(empty)


def test_csv_source_at_a_folder_says_it_is_a_folder(tmp_path):
    (tmp_path / "data").mkdir()
    _csv(tmp_path / "data" / "train.csv", "path,label\n")
    with pytest.raises(ValueError, match=r"is a folder.*CSV.*train\.csv.*data\.source: folder"):
        read_labels_csv(tmp_path / "data")


def test_same_size_batches_in_order_keep_the_order():
    sizes = [(1, 1), (1, 1), (2, 2), (1, 1), (1, 1), (1, 1)]
    assert list(SameSizeBatchSampler(range(6), 2, sizes=sizes, in_order=True)) == [[0, 1], [2], [3, 4], [5]]
