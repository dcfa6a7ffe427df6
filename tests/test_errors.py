"""One error root: every exception the package defines derives from ``MmixError`` and from the
built-in type it stands for; every warning from ``MmixWarning``.

The classes are found by importing every module of the package and its recipes and walking the
subclasses of ``BaseException``, so a new error class that forgets the root fails here.
"""

from __future__ import annotations

import builtins
import importlib
import pkgutil

import pytest

import mmix_applied
import mmix_applied.tasks
from mmix_applied import MmixError, MmixWarning


def _package_modules() -> list[str]:
    names = []
    for root in (mmix_applied, mmix_applied.tasks):
        names += [m.name for m in pkgutil.walk_packages(root.__path__, f"{root.__name__}.")]
    return sorted(n for n in names if not n.endswith(".__main__"))  # __main__ runs the CLI on import


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def _defined_in(package: str) -> dict[str, type]:
    """Every exception and warning class whose module is ``package`` or below, by qualified name."""
    return {f"{c.__module__}.{c.__qualname__}": c for c in _subclasses(BaseException)
            if c.__module__ == package or c.__module__.startswith(f"{package}.")}


def _strays(classes: dict[str, type]) -> list[str]:
    """The classes outside the roots, or under a root without a built-in exception type beside it."""
    bad = []
    for name, cls in sorted(classes.items()):
        if not issubclass(cls, Exception):  # a stop, like KeyboardInterrupt (utils.interrupts.Stopped): not an error
            continue
        if issubclass(cls, Warning):
            if not issubclass(cls, MmixWarning):
                bad.append(f"{name}: a warning that does not derive from MmixWarning")
        elif cls is not MmixError and not issubclass(cls, MmixError):
            bad.append(f"{name}: an error that does not derive from MmixError")
        elif cls is not MmixError and not any(
                getattr(builtins, b.__name__, None) is b and b not in (Exception, BaseException, object)
                for b in cls.__mro__):
            bad.append(f"{name}: derives from MmixError but from no built-in type (ValueError, OSError...)")
    return bad


@pytest.fixture(scope="module")
def package_classes() -> dict[str, type]:
    for name in _package_modules():
        importlib.import_module(name)
    return _defined_in("mmix_applied")


def test_every_error_and_warning_of_the_package_derives_from_a_root(package_classes):
    assert _strays(package_classes) == []


def test_the_walk_finds_the_known_classes(package_classes):
    """Guards the walk itself: classes from the core up to the engine, warnings included, are found."""
    for name in ("mmix_applied.errors.ConfigKeyError", "mmix_applied.core.graph.TraceFailed",
                 "mmix_applied.data.charset.UnknownCharacterError", "mmix_applied.engine.rundir.RunWriteError",
                 "mmix_applied.engine.guards.NonFiniteWeightsError",
                 "mmix_applied.metrics.temperature.CalibrationWarning"):
        assert name in package_classes, name
    assert len(_package_modules()) > 60


def test_the_check_names_a_class_that_forgets_the_root():
    """The control: classes made to look like the package's are reported, each with its reason."""
    forgot = type("Forgot", (ValueError,), {"__module__": "control_pkg.sub"})
    bare = type("Bare", (MmixError,), {"__module__": "control_pkg"})
    noisy = type("Noisy", (UserWarning,), {"__module__": "control_pkg"})
    fine = type("Fine", (MmixError, KeyError), {"__module__": "control_pkg"})
    calm = type("Calm", (MmixWarning,), {"__module__": "control_pkg"})
    found = _defined_in("control_pkg")
    assert set(found.values()) == {forgot, bare, noisy, fine, calm}
    assert _strays(found) == [
        "control_pkg.Bare: derives from MmixError but from no built-in type (ValueError, OSError...)",
        "control_pkg.Noisy: a warning that does not derive from MmixWarning",
        "control_pkg.sub.Forgot: an error that does not derive from MmixError",
    ]


@pytest.mark.parametrize(("path", "builtin"), [
    ("mmix_applied.errors.ConfigError", ValueError),
    ("mmix_applied.errors.ConfigKeyError", KeyError),
    ("mmix_applied.errors.ConfigTypeError", TypeError),
    ("mmix_applied.engine.checkpoints.CheckpointError", ValueError),
    ("mmix_applied.engine.rundir.RunLockedError", FileExistsError),
    ("mmix_applied.engine.rundir.RunWriteError", OSError),
    ("mmix_applied.engine.module.NonFiniteLossError", FloatingPointError),
    ("mmix_applied.engine.guards.NonFiniteWeightsError", FloatingPointError),
    ("mmix_applied.data.charset.UnknownCharacterError", ValueError),
    ("mmix_applied.core.graph.TraceFailed", RuntimeError),
    ("mmix_applied.metrics.temperature.CalibrationWarning", UserWarning),
])
def test_each_class_keeps_the_builtin_type_it_replaces(path, builtin):
    """``except ValueError`` (or ``OSError``...) written before the root existed still catches them."""
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    root = MmixWarning if issubclass(cls, Warning) else MmixError
    assert issubclass(cls, root) and issubclass(cls, builtin)


def test_the_roots_are_public():
    assert {"MmixError", "MmixWarning"} <= set(mmix_applied.__all__)
    from mmix_applied import errors

    assert mmix_applied.MmixError is errors.MmixError and mmix_applied.MmixWarning is errors.MmixWarning
    assert issubclass(MmixError, Exception) and not issubclass(MmixError, (ValueError, OSError, RuntimeError))


def _uncategorised_warnings(source: str, path: str) -> list[str]:
    """``warnings.warn`` calls in ``source`` that give no category (a plain ``UserWarning``)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "warn"
                and getattr(node.func.value, "id", None) == "warnings"):
            if len(node.args) < 2 and not any(k.arg == "category" for k in node.keywords):
                found.append(f"{path}:{node.lineno}")
    return found


def test_every_warning_the_package_issues_names_its_category():
    """A category is what users filter on (``warnings.filterwarnings("ignore", category=MmixWarning)``);
    a call without one issues a plain ``UserWarning`` that no filter on the root reaches."""
    from pathlib import Path

    roots = [Path(mmix_applied.__file__).parent, Path(mmix_applied.tasks.__file__).parent]
    found = [hit for root in roots for path in sorted(root.rglob("*.py"))
             for hit in _uncategorised_warnings(path.read_text(), str(path))]
    assert found == []


def test_the_warning_scan_finds_a_call_without_a_category():
    source = "import warnings\nwarnings.warn('a', stacklevel=2)\nwarnings.warn('b', UserWarning)\n"
    assert _uncategorised_warnings(source, "x.py") == ["x.py:2"]


def test_every_public_error_is_in_the_api_table(package_classes):
    """docs/api/errors.md lists each public error and warning class by its module path."""
    from tests.helpers import ROOT

    table = (ROOT / "docs" / "api" / "errors.md").read_text()
    public = [name for name, cls in package_classes.items()
              if issubclass(cls, (MmixError, MmixWarning)) and cls not in (MmixError, MmixWarning)
              and not any(part.startswith("_") for part in name.split("."))]
    assert len(public) > 10
    assert [name for name in public if f"`{name}`" not in table] == []
