"""CRNN text-line recognizer (Shi, Bai & Yao, TPAMI 2017) with declared mix points.

A convolutional backbone (a small built-in CNN, or any timm CNN used ``features_only``), the
height collapsed by averaging, a bidirectional LSTM over the width, and a linear head over the
charset plus the CTC blank (index 0). ``forward`` returns ``(T, B, C)`` log-probabilities, the
layout ``F.ctc_loss`` and the ``CTC`` adapter read. Mix points (Verma et al., ICML 2019, applied
to sequences): the input, every conv stage, and the recurrent output sequence ``rnn`` whose batch
dimension is 1 (``mix_batch_dims``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CRNN", "BiLSTM", "small_cnn", "build_crnn", "crnn_names"]


def crnn_names() -> list[str]:
    """The CRNN family has one model."""
    return ["crnn"]


def small_cnn(in_channels: int, widths: tuple[int, ...] = (32, 64, 128, 128)) -> nn.Sequential:
    """The built-in 4-stage CNN: conv3x3-BN-ReLU then pooling per stage.

    The first two stages halve height and width, the others halve the height only, so the
    sequence keeps a quarter of the input width (``T = W // 4``).
    """
    if len(widths) < 2:
        raise ValueError(f"small_cnn needs at least 2 stage widths; received {widths}.")
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = in_channels
    for i, c_out in enumerate(widths):
        pool = nn.MaxPool2d(2, 2) if i < 2 else nn.MaxPool2d((2, 1), (2, 1))
        stages[f"stage{i + 1}"] = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), pool
        )
        c_in = c_out
    return nn.Sequential(stages)


class BiLSTM(nn.Module):
    """A bidirectional LSTM that returns only its output sequence ``(T, B, 2 * hidden_size)``.

    Wrapping ``nn.LSTM`` makes the output sequence one tensor from one module call, so the mix
    point ``rnn`` is unambiguous (the LSTM's own output is a tuple with the final states).
    """

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size, hidden_size, num_layers=num_layers, bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(T, B, D)`` -> ``(T, B, 2 * hidden_size)``."""
        return self.lstm(x)[0]


class CRNN(nn.Module):
    """Conv backbone, height collapse, 2-layer BiLSTM and a linear head; CTC log-probabilities.

    Args:
        num_classes: charset size plus one (index 0 is the CTC blank).
        in_channels: input channels (1 for grey text lines).
        backbone: None for the built-in CNN, or a timm model name used ``features_only``.
        backbone_out_index: which timm feature level feeds the LSTM; default the deepest whose
            reduction is at most 8 (so a 128-pixel line gives at least 16 steps).
        hidden_size: LSTM hidden size per direction.
        num_layers: LSTM layers.
        dropout: dropout between LSTM layers and before the head.
        cnn_widths: channels of the built-in CNN's stages.
        img_height: height used once at construction to measure the width -> length map.
        backbone_options: extra ``timm.create_model`` options for a timm backbone.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 1,
        backbone: str | None = None,
        backbone_out_index: int | None = None,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.0,
        cnn_widths: tuple[int, ...] = (32, 64, 128, 128),
        img_height: int = 32,
        backbone_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the blank too, so it must be >= 2; received {num_classes}.")
        if backbone is None:
            if backbone_options:
                raise ValueError("backbone_options apply to timm backbones only; received backbone=None.")
            self.backbone = small_cnn(in_channels, tuple(cnn_widths))
            self._stage_names = [f"backbone.{n}" for n, _ in self.backbone.named_children()]
            feat_channels, reduction = cnn_widths[-1], 4
            self._returns_list = False
        else:
            self.backbone, self._stage_names, feat_channels, reduction = _timm_backbone(
                backbone, in_channels, backbone_out_index, backbone_options or {}
            )
            self._returns_list = True
        self.rnn = BiLSTM(feat_channels, hidden_size, num_layers=num_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden_size, num_classes)
        self.num_classes = num_classes
        self._stride, self._offset = self._measure_widths(in_channels, img_height, reduction)

    @property
    def mix_points(self) -> list[str]:
        """Conv stages, then the recurrent output sequence (``"input"`` is implicit)."""
        return self._stage_names + ["rnn"]

    @property
    def mix_batch_dims(self) -> dict[str, int]:
        """The recurrent sequence is ``(T, B, D)``: its batch dimension is 1."""
        return {"rnn": 1}

    @property
    def head_names(self) -> list[str]:
        """The output head, reset when weights for another charset are loaded."""
        return ["head"]

    def features(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> sequence features ``(T, B, D)`` (height averaged out)."""
        f = self.backbone(x)
        if self._returns_list:
            f = f[-1]
        return f.mean(dim=2).permute(2, 0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> log-probabilities ``(T, B, num_classes)``, blank = 0."""
        seq = self.rnn(self.features(x))
        return F.log_softmax(self.head(self.dropout(seq)), dim=-1)

    def output_lengths(self, widths: Tensor) -> Tensor:
        """Sequence length for each image width (the unpadded width of each line).

        The backbone maps a width ``W`` to ``floor((W + offset) / stride)`` steps; ``stride`` and
        ``offset`` were measured on the backbone itself at construction.
        """
        widths = torch.as_tensor(widths)
        if widths.dtype.is_floating_point:
            raise TypeError(f"widths must be integer pixel counts; received dtype {widths.dtype}.")
        return torch.div(widths.long() + self._offset, self._stride, rounding_mode="floor").clamp_min(0)

    @torch.no_grad()
    def _measure_widths(self, in_channels: int, height: int, stride: int) -> tuple[int, int]:
        """Find ``offset`` with ``T(W) = floor((W + offset) / stride)`` by probing widths."""
        modes = {m: m.training for m in self.backbone.modules()}
        self.backbone.eval()
        param = next(self.backbone.parameters())

        def steps(width: int) -> int:
            probe = torch.zeros(1, in_channels, height, width, device=param.device, dtype=param.dtype)
            try:
                f = self.backbone(probe)
            except RuntimeError as err:
                raise ValueError(
                    f"the CRNN backbone failed on a {height}x{width} probe ({err}); set img_height to the "
                    "line height you train on, and use a convolutional backbone."
                ) from err
            return int((f[-1] if self._returns_list else f).shape[-1])

        try:
            base = 8 * stride
            t0 = steps(base)
            offset = None
            for w in range(base + 1, base + stride + 1):
                t = steps(w)
                if t > t0:
                    offset = stride * t - w
                    break
            far = 23 * stride + 5
            if offset is None or steps(far) != (far + offset) // stride:
                raise ValueError(
                    "the CRNN backbone's output width is not floor((W + offset) / stride) with stride "
                    f"{stride}; output_lengths cannot be derived. Use a CNN backbone with a uniform stride."
                )
        finally:
            for m, mode in modes.items():
                m.training = mode
        return stride, offset


def _timm_backbone(
    name: str, in_channels: int, out_index: int | None, options: dict[str, Any]
) -> tuple[nn.Module, list[str], int, int]:
    """A timm ``features_only`` backbone cut at one feature level, with its stage module names."""
    import timm

    probe = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_channels, **options)
    reductions = probe.feature_info.reduction()
    if out_index is None:
        fitting = [i for i, r in enumerate(reductions) if r <= 8]
        if not fitting:
            raise ValueError(f"timm backbone {name!r} has no feature level with reduction <= 8: {reductions}.")
        out_index = fitting[-1]
    if not -len(reductions) <= out_index < len(reductions):
        raise ValueError(f"backbone_out_index {out_index} is out of range for {name!r} levels {reductions}.")
    out_index %= len(reductions)
    body = timm.create_model(
        name, pretrained=False, features_only=True, in_chans=in_channels, out_indices=(out_index,), **options
    )
    modules = dict(body.named_modules())
    stages = []
    for stage in probe.feature_info.module_name()[: out_index + 1]:
        for candidate in (stage, stage.replace(".", "_")):
            if candidate in modules:
                stages.append(f"backbone.{candidate}")
                break
    return body, stages, probe.feature_info.channels()[out_index], reductions[out_index]


def build_crnn(name: str, *, num_classes: int, in_channels: int = 1, **options: Any) -> CRNN:
    """Registry builder: ``create_model("crnn", "crnn", num_classes=len(charset) + 1, ...)``."""
    if name.lower() != "crnn":
        raise ValueError(f"the crnn family has one model, 'crnn'; received {name!r}.")
    return CRNN(num_classes, in_channels=in_channels, **options)
