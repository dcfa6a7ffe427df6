"""What inference needs from a run, read from its checkpoint or from an exported folder.

Every checkpoint ``mmix-applied fit`` writes holds ``ckpt["mmix"]["inference"]``: the recipe's own
record of what a prediction needs without the training data (the contract is
:meth:`mmix_applied.engine.recipe.Recipe.inference_metadata`), beside the resolved config
(``ckpt["mmix"]["config"]``, data paths absolute) and the temperature fitted after ``fit``
(``ckpt["mmix"]["temperature"]``). :class:`RunInfo` is that record, typed: the network to build,
the class names or charset, the preprocessing, the temperature, the mix settings. An exported
folder keeps the same record in ``config.json`` under ``"_mmix_applied"``
(:mod:`mmix_applied.deploy.export`).

The record of a checkpoint (``inference``)::

    task            "classification" | "segmentation" | "handwriting"
    model           {"family", "name", "num_classes", "in_channels", "options"}: create_model's arguments
    classes         class names in index order (classification, segmentation)
    charset         the characters, index 1.. (handwriting; 0 is the CTC blank)
    mode            segmentation: "multiclass" | "binary" | "multilabel"
    spatial_dims    segmentation: 2 or 3
    preprocessing   the task's preprocessing (image size, channels, mean/std, resize / pad rules)
    sliding_window  3D: {"roi_size", "sw_batch_size", "overlap", "mode"} around the network
    network         the plain network inside the recipe's model ("net" in a sliding-window wrapper; "" itself)
    state_prefix    where the recipe's model sits in the checkpoint's state_dict ("model.")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mmix_applied.models import create_model
from mmix_applied.utils.safe_load import CheckpointError

__all__ = ["EXPORT_KEY", "INFERENCE_KEY", "TASKS", "RunInfo", "build_network", "network_state"]

#: Key of the inference record inside ``ckpt["mmix"]``.
INFERENCE_KEY = "inference"
#: Key of the record inside an exported ``config.json`` (the underscore keeps smp's loader from
#: passing it to the model's constructor).
EXPORT_KEY = "_mmix_applied"
#: The tasks a record can describe.
TASKS = ("classification", "segmentation", "handwriting")


@dataclasses.dataclass
class RunInfo:
    """The inference record of a run (see the module docstring for each field's meaning).

    Attributes:
        task: ``classification``, ``segmentation`` or ``handwriting``.
        family: Model family (``timm``, ``smp``, ``monai``, ``crnn``).
        name: Architecture name within the family.
        num_classes: Network outputs.
        in_channels: Network input channels.
        model_options: Builder options (``create_model(family, name, **model_options)``).
        preprocessing: The task's preprocessing.
        classes: Class names in index order (classification, segmentation).
        charset: The recognised characters (handwriting).
        mode: Segmentation mode.
        spatial_dims: Segmentation: 2 or 3.
        sliding_window: 3D sliding-window inference settings.
        temperature: The temperature fitted on the validation split (``None``: none fitted).
        mix: The ``mix`` section the run was trained with.
        config: The resolved run config.
        network: Submodule of the recipe's model that is the plain network (``""``: the model).
        state_prefix: Prefix of the recipe's model in the checkpoint's ``state_dict``.
    """

    task: str
    family: str
    name: str
    num_classes: int
    in_channels: int
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    preprocessing: dict[str, Any] = dataclasses.field(default_factory=dict)
    classes: list[str] | None = None
    charset: str | None = None
    mode: str | None = None
    spatial_dims: int | None = None
    sliding_window: dict[str, Any] | None = None
    temperature: float | None = None
    mix: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    network: str = ""
    state_prefix: str = "model."

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, temperature: float | None = None,
                    config: Mapping[str, Any] | None = None, source: str = "the checkpoint") -> RunInfo:
        """Build from a checkpoint's ``inference`` record (or an export's, which also holds the rest).

        Raises:
            CheckpointError: The record lacks what inference needs (the message names the key).
        """
        model = record.get("model") or {}
        missing = [k for k in ("task",) if not record.get(k)] + [
            f"model.{k}" for k in ("family", "name", "num_classes", "in_channels") if model.get(k) is None]
        if missing:
            raise CheckpointError(f"{source}: its inference record lacks {missing}; it was written by another "
                                  "version of mmix-applied. Export the run again with this version")
        if record["task"] not in TASKS:
            raise CheckpointError(f"{source}: unknown task {record['task']!r}; this version knows {', '.join(TASKS)}")
        config = dict(config if config is not None else record.get("config") or {})
        t = temperature if temperature is not None else record.get("temperature")
        return cls(task=str(record["task"]), family=str(model["family"]), name=str(model["name"]),
                   num_classes=int(model["num_classes"]), in_channels=int(model["in_channels"]),
                   model_options=dict(model.get("options") or {}),
                   preprocessing=dict(record.get("preprocessing") or {}),
                   classes=list(record["classes"]) if record.get("classes") is not None else None,
                   charset=record.get("charset"), mode=record.get("mode"), spatial_dims=record.get("spatial_dims"),
                   sliding_window=dict(record["sliding_window"]) if record.get("sliding_window") else None,
                   temperature=None if t is None else float(t),
                   mix=dict(record.get("mix") or config.get("mix") or {}), config=config,
                   network=str(record.get("network") or ""), state_prefix=str(record.get("state_prefix", "model.")))

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], *, source: str = "the checkpoint") -> RunInfo:
        """The record of a checkpoint written by ``mmix-applied fit``.

        Raises:
            CheckpointError: The checkpoint has no inference record (written before this version,
                or not by ``mmix-applied fit``); the message says how to get one.
        """
        mmix = checkpoint.get("mmix") or {}
        record = mmix.get(INFERENCE_KEY)
        if not record:
            kind = "a checkpoint of mmix-applied fit" if mmix else "not a checkpoint of mmix-applied fit"
            raise CheckpointError(
                f"{source} is {kind} without an inference record (class names, charset, preprocessing), which "
                "checkpoints hold since this version. `mmix-applied export --checkpoint RUN` rebuilds it from the "
                "run's config and training data; or train the run again")
        return cls.from_record(record, temperature=mmix.get("temperature"), config=mmix.get("config"), source=source)

    def to_record(self) -> dict[str, Any]:
        """The record as plain JSON-able values (what an export writes under ``"_mmix_applied"``)."""
        out = dataclasses.asdict(self)
        out["model"] = {"family": out.pop("family"), "name": out.pop("name"), "num_classes": out.pop("num_classes"),
                        "in_channels": out.pop("in_channels"), "options": out.pop("model_options")}
        return out

    @property
    def activation(self) -> str | None:
        """How logits become probabilities: ``softmax`` (classes), ``sigmoid`` (binary, multilabel), ``None`` (CTC)."""
        if self.task == "handwriting":
            return None
        return "sigmoid" if self.task == "segmentation" and self.mode in ("binary", "multilabel") else "softmax"


def build_network(info: RunInfo) -> nn.Module:
    """The plain network of ``info`` with fresh weights (``create_model``; nothing is downloaded)."""
    return create_model(info.family, info.name, num_classes=info.num_classes, in_channels=info.in_channels,
                        **info.model_options)


def network_state(state_dict: Mapping[str, Any], info: RunInfo, *, source: str = "the checkpoint") -> dict[str, Any]:
    """The plain network's tensors out of a checkpoint's ``state_dict`` (prefixes removed).

    Raises:
        CheckpointError: No tensor carries the expected prefix.
    """
    prefix = info.state_prefix + (f"{info.network}." if info.network else "")
    found = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    if not found:
        raise CheckpointError(f"{source}: no weights under {prefix!r} in its state_dict (keys such as "
                              f"{list(state_dict)[:3]}); it is not a checkpoint of mmix-applied fit")
    return found
