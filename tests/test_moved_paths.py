"""Old import paths of modules that moved keep working, warn, and name the new home."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from mmix_applied.utils.moved import MOVED
from tests.helpers import ROOT


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_names_the_new_one_and_gives_the_same_objects(old):
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=MOVED[old][0].replace(".", r"\.")):
        module = importlib.import_module(old)
    home = importlib.import_module(MOVED[old][0])
    names = list(getattr(home, "__all__", []))
    assert names, f"{MOVED[old][0]} declares no __all__"
    for name in names:
        assert getattr(module, name) is getattr(home, name)
    sys.modules.pop(old, None)


def test_names_split_across_homes_are_found_in_each():
    """``mmix_applied.calibration`` held temperature scaling and the adaptive ECE; both still import."""
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "from mmix_applied.calibration import TemperatureScaler\n"
            "from mmix_applied.metrics.temperature import TemperatureScaler as T\n"
            "from mmix_applied.compare_report import render_report, plot_reliability\n"
            "from mmix_applied.reports.figures import plot_reliability as P\n"
            "assert TemperatureScaler is T and plot_reliability is P\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_name_that_is_nowhere_says_where_the_module_went():
    with pytest.warns(FutureWarning):
        module = importlib.import_module("mmix_applied.mixer")
    with pytest.raises(AttributeError, match=r"moved to 'mmix_applied\.core\.mixer'.*'no_such_name'"):
        module.no_such_name  # noqa: B018
    sys.modules.pop("mmix_applied.mixer", None)


def test_an_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mmix_applied.no_such_module")
