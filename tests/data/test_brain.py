"""The embedded brain-tissue default: labels from the MNI152 template, disjoint slabs, items."""

import numpy as np
import pytest
import torch

pytest.importorskip("nilearn")

from mmix_applied.data import brain  # noqa: E402
from mmix_applied.data.segmentation import build_2d_transforms  # noqa: E402


@pytest.fixture(scope="module")
def vol():
    return brain.load_brain_volumes(2)


def test_labels_follow_template_maps_and_affine(vol):
    """Recompute labels from nilearn's maps at world coordinates given by the crop's affine."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata()
    mask = datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0
    rng = np.random.default_rng(0)
    inside = np.argwhere(vol.labels > 0)
    picks = np.concatenate([inside[rng.choice(len(inside), 300)], rng.integers(0, vol.labels.shape, (100, 3))])
    to_orig = np.linalg.inv(t1.affine) @ vol.affine
    for ijk in picks:
        o = np.rint(to_orig[:3, :3] @ ijk + to_orig[:3, 3]).astype(int)
        if not all(0 <= o[a] < mask.shape[a] for a in range(3)):
            assert vol.labels[tuple(ijk)] == 0
            continue
        g, w = gm[tuple(o)], wm[tuple(o)]
        expected = 0 if not mask[tuple(o)] else 1 + int(np.argmax([max(0.0, 1 - g - w), g, w]))
        assert vol.labels[tuple(ijk)] == expected
        assert vol.image[tuple(ijk)] == pytest.approx(min(max(t1.get_fdata()[tuple(o)], 0), 1), abs=1e-6)
    assert vol.labels.shape[0] % 16 == 0 and vol.labels.shape[1] % 16 == 0
    assert set(np.unique(vol.labels)) == {0, 1, 2, 3}


def test_slabs_are_disjoint_with_gap_and_deterministic(vol):
    slabs = brain.brain_slabs(vol.labels, thickness=6, gap=1)
    assert slabs == brain.brain_slabs(vol.labels, thickness=6, gap=1)
    sets = {s: {z for a, b in slabs[s] for z in range(a, b)} for s in brain.SPLITS}
    assert all(sets.values())
    held = sets["val"] | sets["test"]
    assert not (sets["val"] & sets["test"]) and not (sets["train"] & held)
    assert min(abs(t - h) for t in sets["train"] for h in held) > 1  # gap of one slice each side
    with pytest.raises(ValueError, match="pattern"):
        brain.brain_slabs(vol.labels, thickness=6, pattern=("train", "holdout"))
    with pytest.raises(ValueError, match="no slab"):
        brain.brain_slabs(vol.labels, thickness=200)


@pytest.mark.parametrize("split", brain.SPLITS)
def test_2d_slices_have_all_tissues(split):
    ds = brain.BrainSlices2D(split)
    masks = np.stack([ds.raw(i)[1] for i in range(len(ds))])
    counts = np.bincount(masks.ravel(), minlength=4)
    assert (counts > 0).all() and masks.max() == 3
    x, y = ds[0]
    assert x.shape == (1, *y.shape) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, torch.from_numpy(ds.raw(0)[1]))
    with pytest.raises(ValueError, match="split"):
        brain.BrainSlices2D("training")


def test_2d_augmentation_is_seeded_and_keeps_labels():
    make = lambda: brain.BrainSlices2D("train", transform=build_2d_transforms(train=True, seed=3), seed=3)  # noqa: E731
    a, b = make(), make()
    for i in range(3):
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert set(ya.unique().tolist()) <= {0, 1, 2, 3}
        assert ya.shape[0] % 32 == 0 and ya.shape[1] % 32 == 0


def test_3d_slabs_and_patches(vol):
    ev = brain.BrainSlabs3D("test", transform=brain.build_brain_3d_transforms(train=False))
    item = ev[0]
    start, stop = ev.slabs[0]
    assert item["image"].shape == (1, vol.image.shape[0], vol.image.shape[1], stop - start)
    assert np.array_equal(item["label"][0].numpy(), vol.labels[:, :, start:stop])
    world = item["image"].affine.numpy() @ np.array([0, 0, 0, 1.0])
    assert np.allclose(world, vol.affine @ np.array([0, 0, start, 1.0]))
    tr = brain.BrainSlabs3D("train", transform=brain.build_brain_3d_transforms(train=True, num_samples=2, seed=0))
    patches = tr[0]
    assert len(patches) == 2 and all(p["image"].shape == (1, 48, 48, 8) for p in patches)
