"""Task adapters: how targets (or losses) mix for each output type, reading the step's MixPlan."""

from .base import TaskAdapter
from .classification import Classification, MultiLabel
from .ctc import CTC
from .regression import Regression
from .segmentation import Segmentation

__all__ = ["TaskAdapter", "Classification", "MultiLabel", "Regression", "Segmentation", "CTC"]
from .lines import *  # noqa: E402,F403  (LineCTC, LineTargets, ctc_feasible: text lines for the CTC adapter)
