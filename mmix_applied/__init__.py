"""mmix_applied: Manifold Mixup for applied deep learning.

One mixing core for unmodified timm classifiers, smp and MONAI encoder-decoders and CRNN text
recognizers (Verma et al., "Manifold Mixup: Better Representations by Interpolating Hidden
States", ICML 2019), task adapters that mix targets or losses per output type, and recipes.
"""

import os as _os

_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from . import adapters  # noqa: E402
from .functional import box_mask, mix, mix_value  # noqa: E402
from .mixer import ManifoldMixup  # noqa: E402
from .plan import MixPlan  # noqa: E402
from .points import default_points, register_point_resolver  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ManifoldMixup",
    "MixPlan",
    "adapters",
    "mix",
    "mix_value",
    "box_mask",
    "default_points",
    "register_point_resolver",
    "__version__",
]
