"""User-facing errors: raised by library code for bad input, printed as one line by the CLI (no traceback)."""

from __future__ import annotations


class LpsctlError(Exception):
    """A problem the user can fix; the message names the problem and, where possible, the fix."""


class ConfigError(LpsctlError):
    """An unknown config key, a value of the wrong type, or an unreadable config file."""


class DataError(LpsctlError):
    """A missing folder or file, a corrupt image, an unknown label, mismatched sizes."""


class CheckpointError(LpsctlError):
    """A missing, unreadable or incompatible checkpoint."""
