"""Old import paths keep working: each module that moved in 0.2 is found under its old name.

``import mmix_applied.mixer`` (or ``from mmix_applied.calibration import TemperatureScaler``)
still works and gives the object from its new home, with a ``FutureWarning`` that names the new
import. The package root installs :class:`MovedModuleFinder` once; the old names go away in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

__all__ = ["MOVED", "MovedModuleFinder", "install"]

#: Old module -> the modules that now hold its names (the first is its main new home).
MOVED: dict[str, tuple[str, ...]] = {
    "mmix_applied._io": ("mmix_applied.utils.atomic",),
    "mmix_applied._hints": ("mmix_applied.utils.hints",),
    "mmix_applied.functional": ("mmix_applied.core.functional",),
    "mmix_applied.plan": ("mmix_applied.core.plan",),
    "mmix_applied.points": ("mmix_applied.core.points",),
    "mmix_applied.graph": ("mmix_applied.core.graph",),
    "mmix_applied.mixer": ("mmix_applied.core.mixer",),
    "mmix_applied.routing": ("mmix_applied.core.attachment",),
    "mmix_applied.calibration": ("mmix_applied.metrics.temperature", "mmix_applied.metrics.calibration"),
    "mmix_applied.ood": ("mmix_applied.metrics.ood", "mmix_applied.data.ood"),
    "mmix_applied.spectrum": ("mmix_applied.metrics.spectrum", "mmix_applied.reports.figures"),
    "mmix_applied.plots": ("mmix_applied.reports.figures",),
    "mmix_applied.compare_report": ("mmix_applied.reports.comparison", "mmix_applied.reports.figures"),
    "mmix_applied.text": ("mmix_applied.data.charset",),
    "mmix_applied.cli_verbs": ("mmix_applied.cli.verbs",),
    "mmix_applied.engine.calibrate": ("mmix_applied.engine.posthoc",),
    "mmix_applied.engine.io": ("mmix_applied.engine.checkpoints", "mmix_applied.utils.atomic"),
    "mmix_applied.engine.errors": ("mmix_applied.errors",),
    "mmix_applied.engine.sampling": ("mmix_applied.data.sampling",),
}


class _MovedModule(types.ModuleType):
    """Stands in for a moved module: each name is looked up in the module's new homes."""

    _homes: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for home in self._homes:
            module = importlib.import_module(home)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} moved to {self._homes[0]!r}, which has no {name!r}; "
                             f"see docs/architecture.md for where each name lives now")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for home in self._homes:
            names.update(getattr(importlib.import_module(home), "__all__", ()))
        return sorted(names)


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, homes: tuple[str, ...]) -> None:
        self.homes = homes

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _MovedModule(spec.name)
        module._homes = self.homes
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(f"{module.__name__} moved to {self.homes[0]} in mmix-applied 0.2; import from there "
                      f"(the old path goes away in 0.3)", FutureWarning, stacklevel=2)


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old name of a moved module (and nothing else)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        homes = MOVED.get(fullname)
        if homes is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(homes))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (it answers only for the names in :data:`MOVED`)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
