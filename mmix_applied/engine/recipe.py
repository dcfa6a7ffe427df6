"""The recipe interface and the recipe registry.

A *recipe* is everything task-specific about a training run: which data, which model, how the
targets mix (the adapter) and what is measured. The engine (:mod:`mmix_applied.engine`) owns the
rest — mixing schedule, optimizer, scheduler, checkpoints, loggers, DDP — and calls a recipe only
through the methods below.

Writing a recipe:

1. Two dataclasses for the config sections the recipe owns: ``data`` and ``options``. Every field
   has a default; field types are checked strictly by :mod:`mmix_applied.config` (``int``,
   ``float``, ``bool``, ``str``, ``X | None``, ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``,
   ``dict[str, X]``, nested dataclasses). Subclass :class:`DataConfig` to get the shared
   ``batch_size``/``eval_batch_size``/``num_workers`` keys.
2. A :class:`Recipe` subclass setting ``name``, ``data_schema``, ``options_schema`` and
   ``range_rules`` (a :class:`~mmix_applied.utils.rules.Rule` for every numeric key of its two
   sections; a test fails on a numeric key without one), overriding ``check_config`` when keys
   bound each other, and implementing ``build_datamodule``, ``build_model``, ``build_adapter``, ``build_metrics`` and
   ``write_predictions``. Override ``split_batch``, ``update_metrics`` and ``predict_step`` when
   the batch or the outputs are not plain ``(input, target)`` / tensors.
3. An entry in :data:`RECIPES` (``"name": "module:attr"``, imported on first use: recipes sit in
   the layer above the engine, so the registry names them instead of importing them) or a call to
   :func:`register_recipe`.
4. For portable runs (:mod:`mmix_applied.deploy`): ``path_keys`` (config keys naming files, stored
   absolute by ``fit``), ``inference_metadata`` (class names or charset and preprocessing, stored
   in every checkpoint) and ``from_inference_metadata`` (``test``/``predict`` take them back from
   the checkpoint instead of the training data).

A new recipe is one file in ``tasks/`` and one YAML in ``configs/``. Exact resume (same batches,
same augmentation after a kill) comes with :class:`mmix_applied.engine.datamodule.DataModule`:
its training loader draws its order from ``(seed, epoch)``, and training data sets that augment
derive from :class:`mmix_applied.data.seeding.SeededAugmentation` (``set_epoch``, which the engine
calls at every epoch start, and one seed per ``(seed, epoch, index)``).

What the engine does with a recipe, per step::

    x, y = recipe.split_batch(batch)                 # train / val / test
    out, plan = mixer(x)  (or model(x), plan=None)   # training only; val/test never mix
    loss = adapter.loss(out, y, plan)
    recipe.update_metrics(metrics, out, y)           # val / test, unmixed passes only
    rows = recipe.predict_step(model, batch)         # predict; collected in a list, then
    recipe.write_predictions(rows, path)             # written once (rank 0)
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from mmix_applied.engine.modelzoo import build_model
from mmix_applied.errors import MmixWarning
from mmix_applied.utils.hints import did_you_mean
from mmix_applied.utils.rules import Rule

if TYPE_CHECKING:  # pragma: no cover
    import lightning.pytorch as pl
    import torchmetrics

    from mmix_applied.engine.config.schema import Config

__all__ = [
    "RECIPES",
    "DataConfig",
    "NoOptions",
    "Recipe",
    "get_recipe",
    "list_recipes",
    "register_recipe",
]


@dataclasses.dataclass
class DataConfig:
    """Keys every recipe's ``data`` section shares (subclass it and add your own).

    Attributes:
        batch_size: Training batch size per process (per GPU under DDP).
        eval_batch_size: Batch size for validation, test and predict; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes (0 loads in the main process).
    """

    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0


@dataclasses.dataclass
class NoOptions:
    """An empty config section, for a recipe without ``options``."""


class Recipe:
    """Base class of all recipes: task-specific data, model, adapter, metrics and predictions.

    Args:
        config: The resolved, validated :class:`mmix_applied.config.Config`; ``config.data`` and
            ``config.options`` are instances of this recipe's ``data_schema`` and ``options_schema``.
    """

    #: Registry name, e.g. ``"classification"``.
    name: ClassVar[str] = ""
    #: Dataclass of the ``data`` section.
    data_schema: ClassVar[type] = DataConfig
    #: Dataclass of the ``options`` section.
    options_schema: ClassVar[type] = NoOptions
    #: The range of each numeric key of ``data_schema`` and ``options_schema`` (the shared
    #: :class:`DataConfig` keys excepted: the engine owns them), by dotted key, e.g.
    #: ``{"data.image_size": at_least(1, " (e.g. 224)")}`` (helpers in :mod:`mmix_applied.utils.rules`);
    #: a list field's rule applies to each entry. Checked before anything runs; the error names the
    #: key, the rule's text and the value received.
    range_rules: ClassVar[dict[str, Rule]] = {}

    @classmethod
    def check_config(cls, config: Config) -> None:
        """Check rules that tie keys of this recipe's sections together (e.g. shares that must sum
        to < 1); runs after the single-key ranges, before anything runs. Default: none.

        Raises:
            ConfigError: naming the keys, the values received and the fix.
        """

    def __init__(self, config: Config) -> None:
        self.config = config

    @property
    def data(self) -> Any:
        """The validated ``data`` section (an instance of ``data_schema``)."""
        return self.config.data

    @property
    def options(self) -> Any:
        """The validated ``options`` section (an instance of ``options_schema``)."""
        return self.config.options

    # ----------------------------------------------------------------- required
    def build_datamodule(self, *, predict_input: str | None = None) -> pl.LightningDataModule:
        """Return the data module (train/val/test/predict dataloaders).

        Args:
            predict_input: What ``predict`` runs on (a folder, CSV or file, recipe-defined);
                ``None`` predicts on the test split.
        """
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """Return the network (usually via :meth:`create_model` from the ``model`` section)."""
        raise NotImplementedError

    def build_adapter(self) -> Any:
        """Return the adapter (``mmix_applied.adapters``) whose ``loss(out, y, plan)`` trains."""
        raise NotImplementedError

    def build_metrics(self, stage: str) -> torchmetrics.Metric | torchmetrics.MetricCollection:
        """Return fresh metrics for ``stage`` (``"val"`` or ``"test"``).

        ``compute()`` must return a tensor or a ``dict[str, tensor]``; the engine logs them as
        ``"{stage}/{key}"``, synchronised across processes by torchmetrics.
        """
        raise NotImplementedError

    def write_predictions(self, predictions: list[Any], path: Path) -> Path:
        """Write everything ``predict_step`` returned (in batch order) under ``path``.

        Args:
            predictions: The list of ``predict_step`` results of this process.
            path: The file to write (e.g. ``run_dir / "predictions.csv"``); write it atomically.

        Returns:
            The path written.
        """
        raise NotImplementedError

    # ----------------------------------------------------------------- overridable
    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """Split a train/val/test batch into ``(model_input, target)``; default ``batch[0], batch[1]``."""
        if not isinstance(batch, Sequence) or len(batch) < 2:
            raise TypeError(
                f"recipe {self.name!r}: expected a batch (input, target), received {type(batch).__name__}; "
                "override Recipe.split_batch for other batch structures"
            )
        return batch[0], batch[1]

    def update_metrics(self, metrics: Any, output: Any, target: Any) -> None:
        """Update ``metrics`` with one unmixed batch; default ``metrics.update(output, target)``."""
        metrics.update(output, target)

    def predict_step(self, model: nn.Module, batch: Any) -> Any:
        """Run the model (in eval mode, no grad) on a predict batch; default ``model(batch[0])``."""
        x = batch[0] if isinstance(batch, Sequence) and not isinstance(batch, torch.Tensor) else batch
        return model(x)

    def describe_data(self, datamodule: Any) -> Any:
        """What the data is, for the summary ``fit`` prints and the split record a resume checks: a
        :class:`mmix_applied.engine.data_summary.DataDescription`, or ``None`` (the split sizes alone)."""
        return None

    def check_prediction_output(self, path: Path) -> None:
        """Refuse, before anything is computed, an output whose side files would land among the user's
        (default: nothing beside the table; segmentation checks its masks folder)."""

    def callbacks(self) -> list[Any]:
        """Extra Lightning callbacks this recipe wants (default none)."""
        return []

    # ----------------------------------------------------------------- calibration (engine.calibrate)
    #: The temperature ``predict_step`` divides the logits by, set by the engine before ``predict``
    #: (``None``: raw probabilities).
    temperature: float | None = None

    def calibration_scaler(self) -> Any:
        """A fresh :class:`mmix_applied.metrics.temperature.TemperatureScaler` for this recipe's logits, or ``None``.

        The engine feeds it the unmixed validation outputs through :meth:`update_metrics` after
        ``fit`` and stores the fitted temperature in every checkpoint. ``None`` (the default)
        means the recipe has no temperature (e.g. CTC).
        """
        return None

    def build_scaled_metrics(self, stage: str) -> Any:
        """Metrics whose value moves under a temperature (NLL, ECE, Brier), fed ``logits / T``; or ``None``.

        The engine logs them as ``"{stage}/{key}_scaled"`` beside the raw ones.
        """
        return None

    def ood_inputs(self) -> torch.Tensor | None:
        """Out-of-distribution inputs for ``test`` (preprocessed like the test split), or ``None``."""
        return None

    # ----------------------------------------------------------------- portable runs (mmix_applied.deploy)
    #: Dotted config keys naming files or folders (``"data.path"``); ``fit`` stores them absolute.
    path_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def absolute_paths(cls, config: Config) -> list[str]:
        """Make the relative paths of ``config`` (``model.pretrained`` and :attr:`path_keys`) absolute, in place.

        Only values naming an existing file or folder change, so a run folder's config works from
        any working directory. Returns the keys changed.
        """
        changed = []
        for key in ("model.pretrained", *cls.path_keys):
            section, _, field = key.rpartition(".")
            owner = getattr(config, section, None)
            value = getattr(owner, field, None)
            if isinstance(value, str) and value and not Path(value).is_absolute() and Path(value).exists():
                setattr(owner, field, str(Path(value).resolve()))
                changed.append(key)
        return changed

    def inference_metadata(self) -> dict[str, Any]:
        """What a prediction needs without the training data; stored in every checkpoint.

        The engine writes it as ``ckpt["mmix"]["inference"]`` (:mod:`mmix_applied.deploy.info`
        lists the keys): here ``task`` and the ``model`` :meth:`create_model` built; recipes add
        their ``classes`` or ``charset`` and ``preprocessing``. Call after :meth:`build_model`.
        """
        return {"task": self.name, "model": dict(getattr(self, "_model_record", None) or {})}

    def from_inference_metadata(self, metadata: dict[str, Any]) -> None:
        """Take class names, charset (...) from a checkpoint's record instead of the training data.

        ``test`` and ``predict`` call it before :meth:`build_model`, so a run whose training data
        is gone (a copied run folder) still builds its model. The default takes nothing.
        """

    # ----------------------------------------------------------------- helpers
    def create_model(self, *, num_classes: int, in_channels: int, **extra: Any) -> nn.Module:
        """Build the network named by the ``model`` section through ``mmix_applied.models``.

        Args:
            num_classes: Output classes (or characters, for CTC) the recipe derived from its data.
            in_channels: Input channels of the recipe's data.
            **extra: Further builder options; they override ``model.options`` from the config.
        """
        model_cfg = self.config.model
        self._model_record = {"family": model_cfg.family, "name": model_cfg.name, "num_classes": num_classes,
                              "in_channels": in_channels, "options": {**model_cfg.options, **extra}}
        return build_model(model_cfg, num_classes=num_classes, in_channels=in_channels, **extra)


# --------------------------------------------------------------------- registry
#: Recipe name -> ``"module:attr"`` (imported on first use) or the recipe class.
RECIPES: dict[str, str | type[Recipe]] = {
    "classification": "mmix_applied.tasks.classification:ClassificationRecipe",
    "segmentation": "mmix_applied.tasks.segmentation:SegmentationRecipe",
    "handwriting": "mmix_applied.tasks.handwriting:HandwritingRecipe",
}


def register_recipe(name: str, target: str | type[Recipe], *, overwrite: bool = False) -> None:
    """Register a recipe class (or a lazy ``"module:attr"`` string) under ``name``.

    Raises:
        ValueError: If ``name`` is taken and ``overwrite`` is False.
    """
    if name in RECIPES and not overwrite:
        raise ValueError(f"recipe {name!r} is already registered ({RECIPES[name]!r}); pass overwrite=True")
    if name in RECIPES:
        warnings.warn(f"overwriting recipe {name!r}", MmixWarning, stacklevel=2)
    RECIPES[name] = target


def list_recipes() -> list[str]:
    """Names of the registered recipes, sorted."""
    return sorted(RECIPES)


def get_recipe(name: str) -> type[Recipe]:
    """Return the recipe class registered as ``name``, importing it on first use.

    Raises:
        KeyError: For an unknown name (the message lists the registered ones).
        ImportError: If the recipe's module cannot be imported.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}{did_you_mean(name, RECIPES)}; registered recipes: "
                       f"{', '.join(list_recipes())}")
    target = RECIPES[name]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(f"recipe {name!r}: cannot import {module_name!r} ({err})") from err
        if not hasattr(module, attr):
            raise ImportError(f"recipe {name!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(module, attr)
        RECIPES[name] = target
    return target
