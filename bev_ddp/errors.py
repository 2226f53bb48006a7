"""Exceptions raised for bad user input.

Every error that is the user's input's fault (a missing file, a corrupt point cloud, a malformed
config, a NaN tensor) is an :class:`InputError` whose message names the input, so the command
line can print it without a traceback.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message names the offending file, key or tensor."""


class ConfigError(InputError):
    """A config file or override that does not match the config schema."""


class OutputError(InputError):
    """An output path that cannot be written (a file in the way, read-only, full): found before the work."""
