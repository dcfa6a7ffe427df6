"""Max-softmax OOD scores and metrics against scikit-learn; the embedded OOD batches."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from mmix_applied.data.ood import photo_patches, uci_digits
from mmix_applied.metrics.ood import ood_metrics, ood_scores


def _sklearn_fpr(pos, neg, tpr=0.95):
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, tprs, _ = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    return fpr[np.argmax(tprs >= tpr - 1e-12)]


@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True), (3, True)])
def test_auroc_and_fpr95_match_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    pos, neg = rng.normal(1.0, 1.0, 137), rng.normal(0.0, 1.0, 91)
    if ties:  # rounded scores: many ties within and across the sets
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    got = ood_metrics(torch.tensor(pos), torch.tensor(neg))
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert got["auroc"] == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)
    assert got["fpr95"] == pytest.approx(_sklearn_fpr(pos, neg), abs=1e-12)


def test_separated_and_swapped_scores():
    assert ood_metrics([0.9, 0.8, 0.95], [0.1, 0.2]) == {"auroc": 1.0, "fpr95": 0.0}
    assert ood_metrics([0.1, 0.2], [0.9, 0.8, 0.95]) == {"auroc": 0.0, "fpr95": 1.0}
    with pytest.raises(ValueError, match="out_scores is empty"):
        ood_metrics([0.5], [])


def test_max_softmax_scores():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    expected = torch.softmax(logits, 1).max(1).values
    assert torch.allclose(ood_scores(logits), expected)
    assert torch.allclose(ood_scores(logits, temperature=2.0), torch.softmax(logits / 2, 1).max(1).values)
    s2 = float(1 / (1 + np.exp(-2.0)))  # a binary logit scores max(p, 1 - p), symmetric in the sign
    assert torch.allclose(ood_scores(torch.tensor([[0.0], [2.0], [-2.0]])), torch.tensor([0.5, s2, s2]), atol=1e-6)
    with pytest.raises(ValueError, match="received \\(3,\\)"):
        ood_scores(torch.zeros(3))


def test_embedded_batches_are_normalised_seeded_and_shaped():
    x = photo_patches(32, image_size=28)
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    # normalised as the recipe does for grayscale: (v / 255 - 0.5) / 0.5 lies in [-1, 1]
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6 and x.std() > 0.1
    assert torch.equal(x, photo_patches(32, image_size=28)) and not torch.equal(x, photo_patches(32, seed=1))
    rgb = photo_patches(4, image_size=16, channels=3)
    assert rgb.shape == (4, 3, 16, 16)
    d = uci_digits(10, image_size=28)
    assert d.shape == (10, 1, 28, 28) and d.min() == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError, match="image_size must be an int >= 4; received 0"):
        photo_patches(3, image_size=0)
