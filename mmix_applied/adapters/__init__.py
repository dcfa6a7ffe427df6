"""Adapters: how targets (or losses) mix for each output type, reading the step's MixPlan."""

from .base import Adapter, TaskAdapter
from .classification import Classification, MultiLabel
from .ctc import CTC
from .lines import LineCTC, LineTargets, ctc_feasible
from .regression import Regression
from .segmentation import Segmentation

__all__ = ["Adapter", "TaskAdapter", "Classification", "MultiLabel", "Regression", "Segmentation", "CTC", "LineCTC",
           "LineTargets", "ctc_feasible"]
