"""The classification recipe: embedded MNIST splits, image folders, CSVs, subsampling,
seeded augmentation and data order, predictions."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmix_applied.config import load_config
from mmix_applied.data.images import (
    ArrayImageDataset,
    ImageFileDataset,
    build_transforms,
    list_image_folder,
    read_image,
    read_labels_csv,
)
from mmix_applied.data.mnist import load_mnist, mnist_splits
from mmix_applied.data.sampling import SeededRandomSampler, make_loader
from mmix_applied.data.splits import subsample_per_class
from mmix_applied.engine.recipe import RECIPES, DataConfig, Recipe, get_recipe, list_recipes, register_recipe
from mmix_applied.tasks.classification import ClassificationRecipe


def _write_images(root, classes=("cat", "dog", "eel"), per_class=5, size=12, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return root


def _recipe(*overrides):
    return ClassificationRecipe(load_config(None, ["model.name=test_resnet", *overrides]))


def test_registry_is_lazy_and_strict(tmp_path, monkeypatch):
    assert {"classification", "segmentation", "handwriting"} <= set(list_recipes())
    # A recipe registered by name is not imported until first used, then the class replaces the name.
    (tmp_path / "lazy_probe_recipe.py").write_text(
        "from mmix_applied.engine.recipe import Recipe\n\nclass Probe(Recipe):\n    name = 'lazy_probe'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(RECIPES, "lazy_probe", "lazy_probe_recipe:Probe")
    assert "lazy_probe_recipe" not in sys.modules
    probe = get_recipe("lazy_probe")
    assert "lazy_probe_recipe" in sys.modules and probe.__name__ == "Probe" and RECIPES["lazy_probe"] is probe
    monkeypatch.delitem(sys.modules, "lazy_probe_recipe")
    assert get_recipe("classification") is ClassificationRecipe
    with pytest.raises(KeyError, match="registered recipes: .*classification"):
        get_recipe("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_recipe("classification", ClassificationRecipe)

    class Mine(Recipe):
        name = "mine"

    register_recipe("mine", Mine)
    try:
        assert get_recipe("mine") is Mine and issubclass(Mine.data_schema, DataConfig)
    finally:
        RECIPES.pop("mine")


def test_mnist_splits_are_fixed_disjoint_and_balanced():
    images, labels = load_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    splits = mnist_splits()
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["val"]) & set(splits["test"])
    assert np.bincount(labels[splits["test"]]).tolist() == [100] * 10
    assert np.array_equal(mnist_splits()["test"], splits["test"])


def test_labels_per_class_is_reproducible():
    labels = np.repeat(np.arange(4), 10)
    a = subsample_per_class(labels, 3, seed=1)
    assert np.array_equal(a, subsample_per_class(labels, 3, seed=1))
    assert not np.array_equal(a, subsample_per_class(labels, 3, seed=2))
    assert np.bincount(labels[a]).tolist() == [3, 3, 3, 3]
    assert len(subsample_per_class(labels, None, seed=0)) == 40
    with pytest.raises(ValueError, match="class 0 has only 10"):
        subsample_per_class(labels, 11, seed=0)
    recipe = _recipe("data.labels_per_class=5")
    train = recipe.build_datamodule().dataset("train")
    assert len(train) == 50 and np.bincount(train.labels).tolist() == [5] * 10


def test_image_folder_recipe_splits_and_batches(tmp_path):
    root = _write_images(tmp_path / "imgs", per_class=10)
    items, classes = list_image_folder(root)
    assert classes == ["cat", "dog", "eel"] and len(items) == 30
    recipe = _recipe("data.source=folder", f"data.path={root}", "data.image_size=16", "data.batch_size=4",
                     "data.val_fraction=0.2", "data.test_fraction=0.2")
    assert recipe.num_classes == 3 and recipe.channels == 3
    dm = recipe.build_datamodule()
    assert tuple(len(dm.dataset(s)) for s in ("train", "val", "test")) == (18, 6, 6)
    paths = [{p for p, _ in ds.items} for ds in (dm.dataset(s) for s in ("train", "val", "test"))]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    model = recipe.build_model()
    assert model(x).shape == (4, 3)


# The split of an image folder, per seed, as computed before the splits became one module (#21).
FOLDER_SPLIT = {
    0: {"val": ["cat/2", "cat/7", "dog/3", "dog/6", "eel/0", "eel/9"],
        "test": ["cat/4", "cat/6", "dog/2", "dog/9", "eel/4", "eel/5"]},
    7: {"val": ["cat/1", "cat/7", "dog/3", "dog/8", "eel/3", "eel/7"],
        "test": ["cat/0", "cat/8", "dog/2", "dog/4", "eel/4", "eel/6"]},
}


@pytest.mark.parametrize("seed", [0, 7])
def test_image_folder_split_is_the_pinned_one_per_seed(tmp_path, seed):
    root = _write_images(tmp_path / "imgs", per_class=10)
    recipe = _recipe("data.source=folder", f"data.path={root}", "data.val_fraction=0.2", "data.test_fraction=0.2",
                     f"seed={seed}")
    dm = recipe.build_datamodule()
    names = {s: sorted(str(Path(p).relative_to(root).with_suffix("")) for p, _ in dm.dataset(s).items)
             for s in ("train", "val", "test")}
    assert {s: names[s] for s in ("val", "test")} == FOLDER_SPLIT[seed]
    assert len(names["train"]) == 18 and not set(names["train"]) & set(names["val"] + names["test"])


def test_csv_source_relative_paths_and_errors(tmp_path):
    _write_images(tmp_path / "imgs", classes=("a", "b"), per_class=3)
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "kind"])
        for name in ("a", "b"):
            for i in range(3):
                w.writerow([f"imgs/{name}/{i}.png", name])
    items, classes = read_labels_csv(table, path_column="file", label_column="kind")
    assert classes == ["a", "b"] and items[0] == (str(tmp_path / "imgs/a/0.png"), 0)
    with pytest.raises(ValueError, match="no column 'path'"):
        read_labels_csv(table)
    with pytest.raises(ValueError, match="label 'b' is not one of"):
        read_labels_csv(table, path_column="file", label_column="kind", class_names=["a"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        list_image_folder(tmp_path / "empty")


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="broken.png.*cannot be decoded"):
        read_image(bad)
    before = bad.read_bytes()
    with pytest.raises(ValueError, match="broken.png"):
        ImageFileDataset([(str(bad), 0)])[0]
    assert bad.read_bytes() == before


def test_augmentation_seeded_by_seed_epoch_index():
    images, labels = load_mnist()
    ds = ArrayImageDataset(images[:4], labels[:4], transform=build_transforms(image_size=28, train=True,
                                                                              channels=1), seed=5)
    a0, a0_again = ds[1][0], ds[1][0]
    assert torch.equal(a0, a0_again)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], a0)
    ds.set_epoch(0)
    assert torch.equal(ds[1][0], a0)
    plain = ArrayImageDataset(images[:4], labels[:4], transform=build_transforms(image_size=28, train=False,
                                                                                 channels=1))
    expected = (torch.tensor(images[1]).float() / 255 - 0.5) / 0.5
    assert torch.allclose(plain[1][0][0], expected, atol=1e-5)


def test_sampler_order_depends_only_on_seed_and_epoch():
    s = SeededRandomSampler(range(20), seed=3)
    first = list(s)
    assert sorted(first) == list(range(20)) and list(s) == first
    s.set_epoch(1)
    assert list(s) != first
    s2 = SeededRandomSampler(range(20), seed=3)
    s2.set_epoch(1)
    assert list(s2) == list(s)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        make_loader(list(range(3)), batch_size=4, train=True)


def test_write_predictions_csv_and_reliability(tmp_path):
    recipe = _recipe()
    recipe.build_datamodule()
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(6, 10, generator=g), 1)
    outputs = [{"probs": probs[:4], "target": torch.tensor([0, 1, 2, 3]), "index": torch.arange(4)},
               {"probs": probs[4:], "target": torch.tensor([4, 5]), "index": torch.arange(4, 6)}]
    path = recipe.write_predictions(outputs, tmp_path / "p.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [f"test/{i}" for i in range(6)]
    assert [r["target"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert float(rows[2]["p_7"]) == pytest.approx(probs[2, 7].item(), abs=1e-6)
    assert (tmp_path / "reliability.png").stat().st_size > 1000


def test_local_pretrained_weights_load_and_head_resets(tmp_path):
    from safetensors.torch import save_file

    from mmix_applied.models import create_model

    source = create_model("timm", "test_resnet", num_classes=5, in_channels=1)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = _recipe(f"model.pretrained={path}").build_model()  # 10 classes: the 5-class head cannot load
    state = model.state_dict()
    assert torch.equal(state["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"])
    assert state["fc.weight"].shape == (10, source.fc.weight.shape[1])
    with pytest.raises(FileNotFoundError):
        _recipe(f"model.pretrained={tmp_path / 'missing.pth'}").build_model()
