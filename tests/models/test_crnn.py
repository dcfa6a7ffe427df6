"""The CRNN: CTC output layout, output lengths, fx tracing, and mixing at its declared points."""

import pytest
import torch
import torch.fx
import torch.nn.functional as F

from mmix_applied import ManifoldMixup, MixPlan
from mmix_applied.models import CRNN, create_model

TINY = dict(in_channels=1, hidden_size=8, cnn_widths=(4, 8, 8, 8))


def _mix(h, lam, perm, dim=0):
    return lam * h + (1 - lam) * h.index_select(dim, perm)


@pytest.fixture
def crnn():
    return create_model("crnn", "crnn", num_classes=6, **TINY)


def test_output_is_ctc_log_probs(crnn):
    out = crnn(torch.randn(3, 1, 32, 48))
    assert out.shape == (12, 3, 6)  # T = W // 4
    assert torch.allclose(out.exp().sum(-1), torch.ones(12, 3), atol=1e-5)
    assert crnn.mix_points == ["backbone.stage1", "backbone.stage2", "backbone.stage3", "backbone.stage4", "rnn"]
    assert crnn.mix_batch_dims == {"rnn": 1}


@pytest.mark.parametrize("backbone", [None, "test_resnet"])
def test_output_lengths_match_the_network(backbone):
    kw = dict(TINY) if backbone is None else dict(in_channels=1, hidden_size=8, backbone=backbone)
    model = CRNN(5, **kw).eval()
    widths = list(range(29, 52))
    measured = [model(torch.zeros(1, 1, 32, w)).shape[0] for w in widths]
    assert model.output_lengths(torch.tensor(widths)).tolist() == measured
    if backbone is None:
        assert measured == [w // 4 for w in widths]
    else:
        assert measured == [-(-w // 8) for w in widths]  # resnet stem and pools round up
        assert model.mix_points == ["backbone.act1", "backbone.layer1", "backbone.layer2", "rnn"]


def test_timm_backbone_out_index():
    model = CRNN(5, in_channels=1, hidden_size=8, backbone="test_resnet", backbone_out_index=1)
    assert model.output_lengths(torch.tensor([64])).tolist() == [16]
    assert model.mix_points == ["backbone.act1", "backbone.layer1", "rnn"]
    with pytest.raises(ValueError, match="out of range"):
        CRNN(5, backbone="test_resnet", backbone_out_index=9)


def test_ctc_training_step_with_variable_widths(crnn):
    images = torch.randn(2, 1, 32, 64)
    images[1, :, :, 40:] = 0  # the second line is 40 pixels wide, padded to 64
    lengths = crnn.output_lengths(torch.tensor([64, 40]))
    log_probs = crnn(images)
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])
    loss = F.ctc_loss(log_probs, targets, lengths, torch.tensor([3, 2]))
    loss.backward()
    assert lengths.tolist() == [16, 10] and torch.isfinite(loss)
    assert crnn.backbone.stage1[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", [None, "test_resnet"])
def test_symbolic_trace_reproduces_forward(backbone):
    kw = dict(TINY) if backbone is None else dict(in_channels=1, hidden_size=8, backbone=backbone)
    model = CRNN(6, **kw)
    x = torch.randn(2, 1, 32, 40)
    traced = torch.fx.symbolic_trace(model)
    model.eval()
    traced.eval()
    assert torch.equal(traced(x), model(x))
    mixer = ManifoldMixup(model, seed=0)  # every declared point is cut on the traced graph
    assert mixer.trace_error is None and mixer.points == ["input"] + model.mix_points
    mixer.close()


def _hand_forward(model, x, point, lam, perm):
    """The CRNN forward written out, mixing at ``point``."""
    h = x
    for name, stage in model.backbone.named_children():
        h = stage(h)
        if point == f"backbone.{name}":
            h = _mix(h, lam, perm)
    seq = h.mean(dim=2).permute(2, 0, 1)
    seq = model.rnn.lstm(seq)[0]
    if point == "rnn":
        seq = _mix(seq, lam, perm, dim=1)  # (T, B, D): the batch is dim 1
    return F.log_softmax(model.head(seq), dim=-1)


@pytest.mark.parametrize("point", ["backbone.stage2", "rnn"])
def test_mixed_forward_matches_hand_computation(crnn, point):
    x = torch.randn(2, 1, 32, 40)
    lam, perm = torch.tensor(0.3), torch.tensor([1, 0])
    mixer = ManifoldMixup(crnn, seed=0)
    assert mixer.trace_error is None and point in mixer.points
    crnn.train()
    with mixer.apply(MixPlan(point=point, lam=lam, perm=perm, box=None)):
        out = crnn(x)
    expected = _hand_forward(crnn, x, point, lam, perm)
    unmixed = crnn(x)
    assert (out - expected).abs().max() < 1e-5
    assert (out - unmixed).abs().max() > 1e-3  # the plan did change the output
    mixer.close()
