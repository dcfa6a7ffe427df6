"""Weights from a local file: safe loading, key matching, a clear report, and head reset.

Only local files are read (``.safetensors`` through safetensors, anything else through
``torch.load(weights_only=True)``); nothing is downloaded. A hub name (``"hf-hub:timm/..."``, or a
timm name with a pretrained tag) is read from the local cache (:mod:`mmix_applied.models.hub`).
Checkpoints from other tools are accepted as they come: the state dict is found inside common containers (Lightning's
``state_dict``, ``model``, ...), and a key prefix is matched automatically (``module.`` from DDP,
``model.`` from a LightningModule, an encoder-only checkpoint loaded into ``encoder.``...).
A classifier/segmentation head whose shape does not fit ``num_classes`` is left at its fresh
initialisation and reported as reset; any other shape mismatch is an error, except an input
convolution with a different channel count, which timm's ``adapt_input_conv`` adapts. Weights
holding NaN or Inf are refused before anything is loaded.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmix_applied.utils.safe_load import unsafe_global_detail

from .hub import resolve_weights

__all__ = ["LoadReport", "read_state_dict", "load_weights", "head_prefixes", "reset_head", "unsafe_global_detail"]

log = logging.getLogger(__name__)

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights", "params")


@dataclass
class LoadReport:
    """What :func:`load_weights` did with each key.

    Attributes:
        path: the file read.
        loaded: model keys filled from the file.
        missing: model keys the file did not provide (left at their initial values).
        unexpected: file keys that match no model key (ignored).
        reset: head keys whose shape did not fit (or ``reset_head=True``): left freshly initialised.
        adapted: input-convolution weights whose channel count was adapted.
        strip_prefix: prefix removed from the file's keys.
        add_prefix: prefix added to them (the submodule the file was loaded into).
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    strip_prefix: str = ""
    add_prefix: str = ""

    @property
    def clean(self) -> bool:
        """True when every model key outside the reset head was loaded and nothing was left over."""
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        if self.strip_prefix or self.add_prefix:
            lines.append(f"  key prefix: {self.strip_prefix!r} -> {self.add_prefix!r}")
        for label, keys in (
            ("head reset (fresh init)", self.reset),
            ("input conv adapted", self.adapted),
            ("missing (kept initial values)", self.missing),
            ("unexpected (ignored)", self.unexpected),
        ):
            if keys:
                lines.append(f"  {label}: {few(keys)}")
        return "\n".join(lines)


def _pickle_detail(err: BaseException) -> str:
    """The informative line of torch's long weights-only error (e.g. ``Unsupported operand 120``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("Unsupported") or "load key" in line),
                lines[-1] if lines else "")[:200]


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a local ``.safetensors`` or ``torch.save`` file, safely.

    Args:
        path: a local file, or a hub name read from the local cache (see
            :func:`~mmix_applied.models.hub.resolve_weights`).

    Raises:
        FileNotFoundError: ``path`` does not exist, or the cache lacks the named weights.
        ValueError: the file holds no tensor mapping, or pickled objects that are not tensors.
    """
    p = resolve_weights(path).path
    path = str(p)
    damaged = ("cannot be read: it is truncated, corrupt or not a {kind} file ({error}: {detail}). Copy or "
               "export the weights again (torch.save(model.state_dict(), path) or safetensors.torch.save_file).")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except Exception as err:  # safetensors' SafetensorError: bad header, truncated data
            raise ValueError(f"weights file {str(path)!r} " + damaged.format(
                kind="safetensors", error=type(err).__name__, detail=str(err).splitlines()[0][:200])) from err
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # not an unsafe object: a damaged or foreign file
            raise ValueError(f"weights file {str(path)!r} " + damaged.format(
                kind="torch.save", error=type(err).__name__, detail=_pickle_detail(err))) from err
        raise ValueError(
            f"{str(path)!r} holds Python objects besides tensors, which are not loaded (weights_only=True "
            "runs no code from a file). Save the weights alone: torch.save(model.state_dict(), path) or "
            f"safetensors.torch.save_file. Detail: {unsafe_global_detail(err)}"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:  # truncated zip archive, empty or unreadable file
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"weights file {str(path)!r} " + damaged.format(
            kind="torch.save", error=type(err).__name__, detail=str(err).splitlines()[0][:200])) from err
    for _ in range(3):  # unwrap up to three levels of containers
        if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            if isinstance(obj.get("model"), nn.Module):  # pragma: no cover - weights_only forbids modules
                return obj["model"].state_dict()
            break
        obj = inner
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise ValueError(
        f"{str(path)!r} holds no state dict (a mapping of names to tensors); found {type(obj).__name__}"
        + (f" with keys {sorted(obj)[:10]}" if isinstance(obj, dict) else "")
        + ". Save weights with torch.save(model.state_dict(), path) or safetensors.torch.save_file."
    )


def head_prefixes(model: nn.Module) -> list[str]:
    """Qualified names of the modules that form the output head of ``model`` (may be empty).

    Read from the model's own description: a ``head_names`` attribute, timm's
    ``pretrained_cfg['classifier']``, smp's ``segmentation_head``/``classification_head``.
    """
    declared = getattr(model, "head_names", None)
    if declared is not None:
        return list(declared() if callable(declared) else declared)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        cls = cfg["classifier"]
        return [cls] if isinstance(cls, str) else list(cls)
    modules = dict(model.named_modules())
    return [n for n in ("segmentation_head", "classification_head") if modules.get(n) is not None]


def _under(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _best_prefixes(state: dict[str, Tensor], model: nn.Module, own: dict[str, Tensor]) -> tuple[str, str]:
    """Pick (strip, add) that maps the most file tensors onto model tensors of the same shape.

    A prefix to strip must be shared by at least half of the file's keys (a wrapper such as
    ``module.`` or ``model.``); a prefix to add is a submodule of depth 1 or 2 (``encoder.``,
    ``encoder.model.``). Ties prefer no change.
    """
    keys = list(state)
    counts: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        for depth in (1, 2):
            if len(parts) > depth:
                p = ".".join(parts[:depth]) + "."
                counts[p] = counts.get(p, 0) + 1
    strips = {""} | {p for p, c in counts.items() if 2 * c >= len(keys)}
    adds = {""} | {n + "." for n, _ in model.named_modules() if n and n.count(".") < 2}
    best, best_score = ("", ""), -1
    for s in sorted(strips, key=lambda x: (len(x), x)):
        stripped = [(k[len(s):], state[k].shape) for k in keys if k.startswith(s)]
        for a in sorted(adds, key=lambda x: (len(x), x)):
            score = sum(1 for k, shape in stripped if a + k in own and own[a + k].shape == shape)
            if score > best_score:
                best, best_score = (s, a), score
    return best


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    head: list[str] | None = None,
    reset_head: bool | None = None,
    strict: bool = False,
    strip_prefix: str | None = None,
    add_prefix: str | None = None,
) -> LoadReport:
    """Load a local weights file into ``model`` and report what happened to every key.

    Args:
        model: the freshly built model (its head already sized for the new task).
        path: a ``.safetensors`` or ``.pth``/``.pt``/``.bin``/``.ckpt`` file, or a hub name read from
            the local cache (``"hf-hub:timm/resnet18.a1_in1k"``, ``"resnet18.a1_in1k"``).
        head: module names of the head; default :func:`head_prefixes`.
        reset_head: None resets head tensors only when their shape differs from the file's; True
            always keeps the fresh head; False makes a head shape mismatch an error.
        strict: raise when keys are missing or unexpected (after the head is taken out).
        strip_prefix: prefix to remove from the file's keys; default: found automatically.
        add_prefix: prefix to add (the submodule to load into, e.g. ``"encoder."``); default: found
            automatically.

    Returns:
        The :class:`LoadReport`; it is also logged.

    Raises:
        FileNotFoundError: no such file, or a hub name the local cache lacks (with the fetch command).
        ValueError: a non-head shape mismatch, no key in common, NaN or Inf in a tensor to load
            (nothing is loaded then), or ``strict`` with missing or unexpected keys.
    """
    source = resolve_weights(path)
    if source.repo_id:
        log.info("weights %s: %s from the local Hugging Face cache", source.spec, source.path)
    path = source.path
    state = read_state_dict(path)
    own = model.state_dict()
    heads = head_prefixes(model) if head is None else list(head)
    keys = list(state)
    auto = _best_prefixes(state, model, own)
    s = auto[0] if strip_prefix is None else strip_prefix
    a = auto[1] if add_prefix is None else add_prefix
    report = LoadReport(path=str(path), strip_prefix=s, add_prefix=a)
    new: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    mismatched: list[str] = []
    for k in keys:
        target = a + k[len(s):] if k.startswith(s) else None
        if target is None or target not in own:
            report.unexpected.append(k)
            continue
        value, expected = state[k], own[target]
        if _under(target, heads) and (reset_head or (reset_head is None and value.shape != expected.shape)):
            report.reset.append(target)
            continue
        if value.shape != expected.shape:
            if _adaptable(value, expected):
                from timm.models import adapt_input_conv

                value = adapt_input_conv(expected.shape[1], value)
                report.adapted.append(target)
            else:
                mismatched.append(f"{target}: file {tuple(value.shape)} vs model {tuple(expected.shape)}")
                continue
        new[target] = value.to(dtype=expected.dtype)
        origin[target] = k
    if mismatched:
        raise ValueError(
            f"shape mismatch loading {str(path)!r} into {type(model).__name__}: " + "; ".join(mismatched[:8])
            + ". Only head tensors (" + (", ".join(heads) or "none known") + ") are reset on mismatch; "
            "check the architecture options, or pass head=[...] naming the modules to reset."
        )
    if not new:
        raise ValueError(
            f"no key of {str(path)!r} matches {type(model).__name__}: file keys look like {keys[:3]}, "
            f"model keys like {list(own)[:3]}. Pass strip_prefix=/add_prefix= to map them."
        )
    _check_finite(new, own, origin, path)
    report.loaded = sorted(new)
    report.missing = [k for k in own if k not in new and k not in report.reset and not _under(k, heads)]
    absent_head = [k for k in own if _under(k, heads) and k not in new and k not in report.reset]
    if reset_head is False:
        report.missing += absent_head
    else:  # head tensors absent from the file keep their fresh initialisation as well
        report.reset += absent_head
    if strict and not report.clean:
        raise ValueError(f"strict loading failed:\n{report}")
    model.load_state_dict(new, strict=False)
    log.info("%s", report)
    return report


def _check_finite(new: dict[str, Tensor], own: dict[str, Tensor], origin: dict[str, str],
                  path: str | os.PathLike) -> None:
    """Refuse NaN/Inf in tensors to load, unless the fresh model holds them there too (a mask buffer)."""
    bad = []
    for target, value in new.items():
        if not value.is_floating_point() or bool(torch.isfinite(value).all()):
            continue
        if not bool(torch.isfinite(own[target]).all()):
            continue  # the architecture itself puts non-finite values here (e.g. a -inf attention mask)
        nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
        bad.append(f"{origin[target]} ({nan} NaN, {inf} Inf of {value.numel()} values)")
    if bad:
        listed = "; ".join(bad[:5]) + (f"; ... ({len(bad)} tensors in all)" if len(bad) > 5 else "")
        raise ValueError(
            f"weights file {str(path)!r} holds non-finite values in {len(bad)} tensor(s): {listed}. Nothing was "
            "loaded. The file is damaged or was saved from a run that diverged; use weights saved before the "
            "divergence, or export them again."
        )


def _adaptable(value: Tensor, expected: Tensor) -> bool:
    """A conv weight that differs only in its input channels (an RGB stem loaded into 1 channel)."""
    return (
        value.ndim >= 3
        and value.ndim == expected.ndim
        and value.shape[0] == expected.shape[0]
        and value.shape[2:] == expected.shape[2:]
        and value.shape[1] != expected.shape[1]
    )


def reset_head(model: nn.Module, num_classes: int | None = None, *, head: list[str] | None = None) -> list[str]:
    """Re-initialise the head of ``model``; for timm models optionally resize it to ``num_classes``.

    Args:
        model: the model.
        num_classes: new output size (timm models only, through ``reset_classifier``).
        head: module names of the head; default :func:`head_prefixes`.

    Returns:
        The names of the modules that were re-initialised.

    Raises:
        ValueError: the head is unknown, or ``num_classes`` is given for a non-timm model.
    """
    if num_classes is not None:
        if not hasattr(model, "reset_classifier"):
            raise ValueError(
                f"{type(model).__name__} cannot be resized by reset_head; build it with the new num_classes "
                "and load the weights with load_weights (head tensors are reset on shape mismatch)."
            )
        model.reset_classifier(num_classes)
        return head_prefixes(model) if head is None else list(head)
    names = head_prefixes(model) if head is None else list(head)
    if not names:
        raise ValueError(f"{type(model).__name__} has no known head; pass head=[module names].")
    done = []
    for name in names:
        module = model.get_submodule(name)
        for sub_name, sub in module.named_modules():
            if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                sub.reset_parameters()
                done.append(f"{name}.{sub_name}" if sub_name else name)
    return done
