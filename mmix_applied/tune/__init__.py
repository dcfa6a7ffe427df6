"""``tune``: find where Manifold Mixup pays on the user's data, with Optuna, on one machine or many.

:func:`tune` searches the mixing setting (:mod:`.space`) on validation figures, prunes hopeless
trials (:mod:`.pruning`), keeps the study in an Optuna storage several processes can share
(:mod:`.backend`), compares the best setting with ``none`` and input mixup on fresh seeds, and
writes a report (:mod:`.report`). Optuna is the ``tune`` extra (``pip install
'mmix-applied[tune]'``): this package imports without it and says so when used.
"""

from mmix_applied.tune.backend import INSTALL_HINT, StorageError, open_storage, require_optuna
from mmix_applied.tune.space import TUNABLE, Param, SearchSpace, SpaceError, default_space, point_choices, read_space
from mmix_applied.tune.study import OBJECTIVES, Objective, objective_of, tune

__all__ = ["INSTALL_HINT", "OBJECTIVES", "TUNABLE", "Objective", "Param", "SearchSpace", "SpaceError", "StorageError",
           "default_space", "objective_of", "open_storage", "point_choices", "read_space", "require_optuna", "tune"]
