"""Issue 22 (round 3): importing the package never lets albumentations check pypi.org for updates,
whatever NO_ALBUMENTATIONS_UPDATE holds (it was only set when unset, so "0" or "" reached the network)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PROBE = """
import urllib.request
opened = []
def refuse(self, url, *args, **kwargs):
    opened.append(getattr(url, "full_url", url))
    raise OSError("network access attempted")
urllib.request.OpenerDirector.open = refuse
import mmix_applied.data.images  # imports albumentations
import os
print(opened, os.environ["NO_ALBUMENTATIONS_UPDATE"])
"""


@pytest.mark.parametrize("value", ["0", ""])
def test_importing_the_package_makes_no_update_request(value):
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    if value is not None:
        env["NO_ALBUMENTATIONS_UPDATE"] = value
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "1"], done.stdout
