"""Strict, typed run configuration (the public face of :mod:`mmix_applied.engine.config`).

A config has fixed sections (``run``, ``model``, ``mix``, ``optim``, ``scheduler``, ``train``) and
two owned by the recipe (``data``, ``options``: the dataclasses ``Recipe.data_schema`` and
``Recipe.options_schema``). Validation is strict: an unknown key is an error that names it, lists
the valid keys and suggests the closest one; a value of the wrong type names the key and the
expected type. Every key and its default is documented in ``docs/configs.md``.

The implementation lives in the engine layer (it resolves the recipe's sections through the
engine's recipe registry); this module sits above it, beside the CLI.
"""

from mmix_applied.engine import config as _impl
from mmix_applied.engine.config import *  # noqa: F403  (the public face re-exports exactly the engine's names)

__all__ = list(_impl.__all__)
