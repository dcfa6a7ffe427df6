"""The exported files: safetensors weights, ONNX and TorchScript with the temperature folded in.

Every export starts from :func:`plain_copy`: the user's module out of its DDP / ``torch.compile``
wrappers, deep-copied, in ``eval()`` mode. A copy of a model with a mixer attached is the plain
model (:mod:`mmix_applied.core.attachment`: copies leave the routing ``forward`` and the hooks
behind), so exporting right after training works without ``mixer.close()``.

The ONNX and TorchScript graphs wrap the network in :class:`CalibratedOutputs`: for a classifier
or a segmentation network they return two outputs, ``logits`` and ``probs_calibrated`` (softmax,
or sigmoid for binary / multilabel masks, of ``logits / T`` with the run's temperature ``T``
folded in as a constant; ``T = 1`` when none was fitted); a CTC recognizer has one output,
``log_probs`` ``(T, B, C)``. ONNX comes from ``torch.export`` (``torch.onnx.export(dynamo=True)``);
where that fails (an LSTM over a dynamic width, in torch 2.14) from the TorchScript-based exporter.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmix_applied.core.attachment import MixingForward, unwrap
from mmix_applied.utils.atomic import atomic_write_bytes

__all__ = ["CalibratedOutputs", "output_names", "plain_copy", "save_safetensors", "to_onnx", "to_torchscript"]

#: ONNX opset of the TorchScript-based fallback exporter.
LEGACY_OPSET = 17


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without wrappers or mixer, in ``eval()`` mode (what every export writes).

    Raises:
        ValueError: The copy still routes through a mixer (a model attached in a way this version
            does not know): the message says to call ``mixer.close()`` first.
    """
    plain = copy.deepcopy(unwrap(model)).eval()
    routed = [name or "<model>" for name, m in plain.named_modules() if isinstance(m.__dict__.get("forward"),
                                                                                MixingForward)]
    if routed:
        raise ValueError(f"the model still carries a mixer's forward on {routed[:3]}; call mixer.close() before "
                         "exporting it (or export a copy: copy.deepcopy(model))")
    return plain


class CalibratedOutputs(nn.Module):
    """``net`` with its probabilities: ``(logits, activation(logits / T))``, or the output alone.

    Args:
        net: The plain network.
        temperature: Folded in as a constant (``None``: 1).
        activation: ``"softmax"`` (over dim 1), ``"sigmoid"``, or ``None`` (return ``net(x)`` alone).
    """

    def __init__(self, net: nn.Module, *, temperature: float | None, activation: str | None) -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid", None):
            raise ValueError(f"activation must be 'softmax', 'sigmoid' or None; received {activation!r}")
        self.net = net
        self.activation = activation
        self.register_buffer("temperature", torch.tensor(float(temperature if temperature is not None else 1.0)))

    def forward(self, x: torch.Tensor) -> Any:
        """``(logits, probs_calibrated)``, or ``net(x)`` when there is no activation."""
        out = self.net(x)
        if self.activation is None:
            return out
        scaled = out / self.temperature
        probs = torch.sigmoid(scaled) if self.activation == "sigmoid" else torch.softmax(scaled, dim=1)
        return out, probs


def output_names(activation: str | None) -> list[str]:
    """The graph outputs: ``["logits", "probs_calibrated"]``, or ``["log_probs"]`` for a CTC recognizer."""
    return ["log_probs"] if activation is None else ["logits", "probs_calibrated"]


def save_safetensors(model: nn.Module, path: str | os.PathLike, *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s ``state_dict`` as safetensors (atomically); tied tensors are stored once each name."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in plain_copy(model).state_dict().items()}
    return atomic_write_bytes(path, save(state, metadata=dict(metadata or {"format": "pt"})))


@contextlib.contextmanager
def _quiet() -> Any:
    """Hide the exporters' progress lines and deprecation warnings."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def to_onnx(model: nn.Module, path: str | os.PathLike, *, example: torch.Tensor, dynamic_axes: Mapping[int, str],
            temperature: float | None = None, activation: str | None = "softmax",
            output_axes: Sequence[Mapping[int, str]] | None = None) -> str:
    """Export ``model`` (a plain copy) to ONNX at ``path``, with the temperature folded into ``probs_calibrated``.

    Args:
        model: The network (a mixer may be attached: the plain copy is exported).
        path: The ``.onnx`` file (written atomically).
        example: An input batch (batch size >= 2, so the batch dimension stays dynamic).
        dynamic_axes: Input axes that vary: ``{0: "batch", 3: "width"}``.
        temperature: The run's temperature (``None``: 1).
        activation: ``"softmax"``, ``"sigmoid"`` or ``None`` (one output, the network's own).
        output_axes: For each output, its varying axes (the fallback exporter needs them).

    Returns:
        The exporter that wrote the file: ``"dynamo"`` or ``"torchscript"``.

    Raises:
        RuntimeError: Both exporters failed (the message holds both causes).
    """
    net = CalibratedOutputs(plain_copy(model), temperature=temperature, activation=activation).eval()
    names = output_names(activation)
    example = example.detach().cpu()
    # torch.export cannot keep a recurrent layer's sequence length dynamic (torch 2.14): go straight to the fallback
    recurrent = any(isinstance(m, nn.RNNBase) for m in net.modules()) and any(a != 0 for a in dynamic_axes)
    try:
        if recurrent:
            raise NotImplementedError("a recurrent layer over a dynamic length")
        from torch.export import Dim

        shapes = {"x": {axis: (Dim(name, min=2) if axis == 0 else Dim.AUTO) for axis, name in dynamic_axes.items()}}
        with _quiet():
            program = torch.onnx.export(net, (example,), None, input_names=["input"], output_names=names,
                                        dynamic_shapes=shapes, dynamo=True, verbose=False)
        data, exporter = program.model_proto.SerializeToString(), "dynamo"
    except Exception as first:  # an LSTM over a dynamic length fails torch.export's decomposition
        axes = {"input": dict(dynamic_axes)}
        for name, out_axes in zip(names, output_axes or [{}] * len(names)):
            axes[name] = dict(out_axes)
        buffer = io.BytesIO()
        try:
            with _quiet():
                torch.onnx.export(net, (example,), buffer, input_names=["input"], output_names=names,
                                  dynamic_axes=axes, dynamo=False, opset_version=LEGACY_OPSET)
        except Exception as second:
            raise RuntimeError(f"ONNX export failed with torch.export ({type(first).__name__}: "
                               f"{str(first).splitlines()[0] if str(first) else ''}) and with the TorchScript-based "
                               f"exporter ({type(second).__name__}: {second})") from second
        data, exporter = buffer.getvalue(), "torchscript"
    atomic_write_bytes(path, data)
    return exporter


def to_torchscript(model: nn.Module, path: str | os.PathLike, *, example: torch.Tensor,
                   temperature: float | None = None, activation: str | None = "softmax") -> Path:
    """Trace ``model`` (a plain copy) with its calibrated output and save it for ``torch.jit.load``.

    The traced graph keeps the batch and spatial sizes dynamic for convolutional networks and the
    CRNN (no size is read into Python by them); it returns what :class:`CalibratedOutputs` returns.
    """
    net = CalibratedOutputs(plain_copy(model), temperature=temperature, activation=activation).eval()
    buffer = io.BytesIO()
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(net, (example.detach().cpu(),), check_trace=False)
        torch.jit.save(traced, buffer)
    return atomic_write_bytes(path, buffer.getvalue())
