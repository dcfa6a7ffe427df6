"""Flattening spectra on states built with a known spectrum per class; the hook collector; the plot."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from mmix_applied.metrics.spectrum import class_spectra, collect_states, directions_for
from mmix_applied.reports.figures import plot_spectra


def _class_states(sigmas, n, d, seed):
    """n states in R^d whose centred singular values are exactly ``sigmas`` (plus a class mean)."""
    g = torch.Generator().manual_seed(seed)
    coef = torch.randn(n, len(sigmas), generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(coef - coef.mean(0))  # orthonormal, zero-mean columns
    w, _ = torch.linalg.qr(torch.randn(d, len(sigmas), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(sigmas, dtype=torch.float64)) @ w.T + 5 * torch.randn(d, generator=g)


def test_known_spectra_give_known_directions():
    spec = {0: [10.0, 5.0, 1.0], 1: [1.0, 1.0, 1.0, 1.0], 2: [3.0]}
    # energies 100, 25, 1: 79 % then 99 % -> 2 directions; four equal -> 4 (75 % at 3); one -> 1
    states = torch.cat([_class_states(s, 30, 12, seed=c) for c, s in spec.items()]).reshape(90, 3, 4)
    labels = torch.arange(3).repeat_interleave(30)
    out = class_spectra(states, labels)
    assert out.directions == {0: 2, 1: 4, 2: 1} and out.mean_directions == pytest.approx(7 / 3)
    assert out.counts == {0: 30, 1: 30, 2: 30} and out.skipped == []
    for c, sig in spec.items():
        rows = states[labels == c].reshape(30, -1).numpy()
        ref = np.linalg.svd(rows - rows.mean(0), compute_uv=False)
        assert np.allclose(out.singular_values[c][: len(sig)].numpy(), sig, atol=1e-8)
        assert np.allclose(out.singular_values[c].numpy(), ref[: len(out.singular_values[c])], atol=1e-8)
    assert class_spectra(states, labels, variance=0.995).directions == {0: 3, 1: 4, 2: 1}  # 99.2 % < 99.5 %


def test_directions_edge_cases_and_errors():
    assert directions_for(torch.tensor([3.0, 0.0])) == 1
    assert directions_for(torch.tensor([1.0, 1.0]), variance=0.5) == 1
    assert directions_for(torch.zeros(3)) == 0
    states = torch.cat([torch.ones(3, 4), torch.randn(1, 4), torch.randn(5, 4)])
    out = class_spectra(states, torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 2]))
    assert out.skipped == [0, 1] and list(out.directions) == [2]  # constant class, single sample
    with pytest.raises(ValueError, match="labels must be 9 integer classes"):
        class_spectra(states, torch.zeros(9))
    with pytest.raises(ValueError, match="no class has two distinct states"):
        class_spectra(torch.ones(4, 2), torch.tensor([0, 0, 1, 1]))


def test_collect_states_at_a_named_module_in_eval_mode():
    model = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.9), nn.ReLU(), nn.Linear(5, 3))
    model.train()
    xs = torch.randn(10, 6)
    loader = [(xs[:4], torch.arange(4)), (xs[4:], torch.arange(6))]
    states, labels = collect_states(model, loader, "2")
    with torch.no_grad():
        ref = torch.relu(model[0](xs))  # dropout off: collected in eval mode
    assert torch.allclose(states, ref) and labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
    assert model.training and not model[2]._forward_hooks  # mode restored, hook removed
    inputs, _ = collect_states(model, loader, "input", max_samples=5)
    assert torch.equal(inputs, xs[:5])
    with pytest.raises(KeyError, match="point '22' is not a module"):
        collect_states(model, loader, "22")


def test_plot_overlays_runs_without_lightning(tmp_path):
    a = class_spectra(*_two_classes([4.0, 2.0, 1.0]))
    b = class_spectra(*_two_classes([4.0, 0.5, 0.1]))
    fig = plot_spectra({"none": a, "manifold": b}, tmp_path / "spectra.png")
    assert (tmp_path / "spectra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes[0].lines) == 2


@pytest.mark.slow
def test_pure_modules_do_not_import_lightning():
    code = ("import sys, mmix_applied.metrics.spectrum, mmix_applied.metrics.temperature, mmix_applied.metrics.ood; "
            "sys.exit(2 if 'lightning' in sys.modules or 'lightning.pytorch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _two_classes(sigmas):
    states = torch.cat([_class_states(sigmas, 20, 8, seed=0), _class_states(sigmas, 20, 8, seed=1)])
    return states, torch.arange(2).repeat_interleave(20)
