"""mmix_applied: Manifold Mixup for applied deep learning.

One mixing core for unmodified timm classifiers, smp and MONAI encoder-decoders and CRNN text
recognizers (Verma et al., "Manifold Mixup: Better Representations by Interpolating Hidden
States", ICML 2019), adapters that mix targets or losses per output type, and recipes.

Importing the package loads the core, the adapters and the model registry (which registers the
timm, smp and MONAI point resolvers, so ``default_points(model)`` knows those families); it
imports none of Lightning, timm, smp or MONAI. ``load_run`` and ``export_run`` (trained runs out of
the library, :mod:`mmix_applied.deploy`) load on first use. The layers are described in
docs/architecture.md.
"""

import os as _os

# The one place this is set: every submodule import runs this file first, so no albumentations
# import anywhere in the package can happen before it. It stops albumentations' update check (a
# request to pypi.org at import): forced, since albumentations checks unless the value is "1" or
# "true", so a user's "0" or empty value would let the import reach the network.
_os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"

from mmix_applied import adapters  # noqa: E402
from mmix_applied._version import __version__  # noqa: E402
from mmix_applied.core.functional import box_mask, mix, mix_value  # noqa: E402
from mmix_applied.core.mixer import ManifoldMixup  # noqa: E402
from mmix_applied.core.plan import MixPlan  # noqa: E402
from mmix_applied.core.points import default_points, register_point_resolver  # noqa: E402
from mmix_applied.errors import MmixError, MmixWarning  # noqa: E402
from mmix_applied.models import create_model, list_models  # noqa: E402  (registers the point resolvers)
from mmix_applied.utils import moved as _moved  # noqa: E402

_moved.install()  # old import paths (mmix_applied.mixer, mmix_applied.calibration, ...) keep working

#: Names served by mmix_applied.deploy, imported on first use (it loads the image readers).
_DEPLOY = ("LoadedRun", "export_run", "load_run")


def __getattr__(name: str) -> object:
    """``mmix_applied.load_run`` (and ``LoadedRun``, ``export_run``) from :mod:`mmix_applied.deploy`, on first use."""
    if name in _DEPLOY:
        import importlib

        return getattr(importlib.import_module("mmix_applied.deploy"), name)
    raise AttributeError(f"module 'mmix_applied' has no attribute {name!r}")

__all__ = [
    "LoadedRun",
    "ManifoldMixup",
    "MixPlan",
    "MmixError",
    "MmixWarning",
    "__version__",
    "adapters",
    "box_mask",
    "create_model",
    "default_points",
    "export_run",
    "list_models",
    "load_run",
    "mix",
    "mix_value",
    "register_point_resolver",
]
