"""The library's errors: one root, :class:`MmixError`, and the config errors.

Every exception the library defines derives from :class:`MmixError` and from the built-in type
it stands for (``ConfigError`` is a ``ValueError``, ``RunWriteError`` an ``OSError``...), so both
``except MmixError`` and the usual ``except ValueError`` catch it. The CLI catches
:class:`MmixError` once and prints it as one line. Every warning the library defines derives from
:class:`MmixWarning`, so ``warnings.filterwarnings("ignore", category=MmixWarning)`` silences them
all. Messages say what was received, what is valid and how to fix it.

A leaf module (it imports nothing of the package), so any module, from the core up, can derive
from these without importing the config machinery.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ConfigKeyError", "ConfigTypeError", "MmixError", "MmixWarning"]


class MmixError(Exception):
    """Root of every error raised by mmix_applied; each subclass also derives from a built-in type.

    Example:
        >>> from mmix_applied import MmixError
        >>> from mmix_applied.config import ConfigError
        >>> issubclass(ConfigError, MmixError) and issubclass(ConfigError, ValueError)
        True
    """


class MmixWarning(UserWarning):
    """Root of every warning issued by mmix_applied (e.g. ``CalibrationWarning``)."""


class ConfigError(MmixError, ValueError):
    """A config is invalid (the message names the key, what was received and the fix)."""


class ConfigKeyError(ConfigError, KeyError):
    """An unknown or misspelled config key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigTypeError(ConfigError, TypeError):
    """A config value of the wrong type."""
