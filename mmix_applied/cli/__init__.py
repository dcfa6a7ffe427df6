"""The ``mmix-applied`` command line (:func:`main`); also runnable as ``python -m mmix_applied.cli``."""

from mmix_applied.cli.main import main

__all__ = ["main"]
