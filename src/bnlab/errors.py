"""The exceptions bnlab raises.

Every error a user can cause by passing a bad value is a :class:`ConfigError`
(for settings) or a :class:`DataError` (for data). Both subclass ``ValueError``
so generic handlers keep working, and both carry a message that names the
parameter (or field path), the value received and what is allowed.
"""

from __future__ import annotations


class BnlabError(Exception):
    """Base class of every exception raised on purpose by bnlab."""


class ConfigError(BnlabError, ValueError):
    """An invalid argument or setting: the message names it, its value and what is allowed."""


class DataError(BnlabError, ValueError):
    """Data that cannot be used: missing files, wrong shapes, bad labels, bad checksums."""


class DivergedError(BnlabError, RuntimeError):
    """A training run produced a NaN or infinite loss."""

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class UnsafeFileError(BnlabError, ValueError):
    """A model file that could only be read by unpickling arbitrary code (refused)."""
