"""Tiny models and hand-written mixed forward passes shared by the core tests."""

from __future__ import annotations

from torch import nn


def mixf(h, lam, perm, dim=0):
    """Independent mix: lam * h + (1 - lam) * h[perm] along ``dim``, written with plain indexing."""
    partner = h[perm] if dim == 0 else h[:, perm]
    if lam.dim() == 1:
        shape = [1] * h.dim()
        shape[dim] = -1
        lam = lam.view(shape)
    return lam * h + (1 - lam) * partner


class SeqRNN(nn.Module):
    """Returns only the BiLSTM's output sequence (T, B, 2H)."""

    def __init__(self, d_in: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, num_layers=2, bidirectional=True)

    def forward(self, x):
        return self.lstm(x)[0]


class TinyCRNN(nn.Module):
    """A 2-stage CNN, height collapsed, a 2-layer BiLSTM over width, a linear head; (T, B, C) log-probs."""

    mix_points = ["conv1", "conv2", "rnn"]
    mix_batch_dims = {"rnn": 1}

    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d((2, 1)))
        self.rnn = SeqRNN(8 * 4, 8)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        f = self.conv2(self.conv1(x))                 # (B, 8, 4, W/2)
        seq = f.flatten(1, 2).permute(2, 0, 1)        # (T, B, 32)
        return self.head(self.rnn(seq)).log_softmax(-1)

    def reference(self, x, point, lam, perm):
        if point == "input":
            x = mixf(x, lam, perm)
        f = self.conv1(x)
        if point == "conv1":
            f = mixf(f, lam, perm)
        f = self.conv2(f)
        if point == "conv2":
            f = mixf(f, lam, perm)
        seq = self.rnn(f.flatten(1, 2).permute(2, 0, 1))
        if point == "rnn":
            seq = mixf(seq, lam, perm, dim=1)
        return self.head(seq).log_softmax(-1)


def timm_resnet_reference(m, x, point, lam, perm):
    """timm ResNet forward written out stage by stage, mixing after ``point``."""
    if point == "input":
        x = mixf(x, lam, perm)
    h = m.act1(m.bn1(m.conv1(x)))
    if point == "act1":
        h = mixf(h, lam, perm)
    h = m.maxpool(h)
    for name in ("layer1", "layer2", "layer3", "layer4"):
        h = getattr(m, name)(h)
        if point == name:
            h = mixf(h, lam, perm)
    return m.forward_head(h)


def smp_unet_reference(u, x, point, lam, perm):
    """smp Unet with a ResNet encoder: every feature saved up to the cut is mixed, deeper ones
    are computed from the mixed state, then the decoder and head run unchanged."""
    e = u.encoder
    stages = [("encoder.relu", lambda h: e.relu(e.bn1(e.conv1(h)))),
              ("encoder.layer1", lambda h: e.layer1(e.maxpool(h))),
              ("encoder.layer2", e.layer2), ("encoder.layer3", e.layer3), ("encoder.layer4", e.layer4)]
    stages = stages[: e._depth]
    names = ["input"] + [n for n, _ in stages]
    k = names.index(point)
    features = [x]
    h = x
    for _, stage in stages[:k]:
        h = stage(h)
        features.append(h)
    features = [mixf(f, lam, perm) for f in features]  # everything crossing the cut
    h = features[-1]
    for _, stage in stages[k:]:
        h = stage(h)
        features.append(h)
    return u.segmentation_head(u.decoder(features))
