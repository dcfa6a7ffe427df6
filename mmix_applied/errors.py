"""The config errors: what was received, what is valid, how to fix it.

A leaf module (it imports nothing of the package), so any engine module can raise them without
importing the config machinery.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ConfigKeyError", "ConfigTypeError"]


class ConfigError(ValueError):
    """A config is invalid (the message names the key, what was received and the fix)."""


class ConfigKeyError(ConfigError, KeyError):
    """An unknown or misspelled config key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigTypeError(ConfigError, TypeError):
    """A config value of the wrong type."""
