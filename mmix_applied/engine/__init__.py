"""The training engine (PyTorch Lightning): module, trainer, checkpoints, run directories.

``from mmix_applied.engine import fit`` trains a :class:`mmix_applied.config.Config`; see
:mod:`mmix_applied.engine.runner`. Importing this package imports Lightning; the mixing core does not.
"""

from mmix_applied.engine.io import AtomicCheckpointIO, CheckpointError, load_checkpoint
from mmix_applied.engine.module import MixupModule, NonFiniteLossError, build_mixer
from mmix_applied.engine.runner import build_trainer, fit, predict, resolve_checkpoint, test
from mmix_applied.engine.sampling import SeededRandomSampler, make_loader

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "MixupModule",
    "NonFiniteLossError",
    "SeededRandomSampler",
    "build_mixer",
    "build_trainer",
    "fit",
    "load_checkpoint",
    "make_loader",
    "predict",
    "resolve_checkpoint",
    "test",
]
