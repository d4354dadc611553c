"""The exceptions bnlab raises.

Every error a user can cause by passing a bad value is a :class:`ConfigError`
(for settings) or a :class:`DataError` (for data). Both subclass ``ValueError``
so generic handlers keep working, and both carry a message that names the
parameter (or field path), the value received and what is allowed.
"""

from __future__ import annotations

import re


class BnlabError(Exception):
    """Base class of every exception raised on purpose by bnlab."""


_UNSET: object = object()
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*(\[[^\]]*\])*")


class ConfigError(BnlabError, ValueError):
    """An invalid argument or setting: the message names it, its value and what is allowed.

    ``param`` (the parameter or field path), ``value`` (what was received) and ``allowed``
    (what is allowed, in words) are also fields, so a caller can re-address the error (a
    study spec puts its field path in front) without parsing the message. They are ``None``
    / unset for an error about several settings at once.
    """

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        value: object = _UNSET,
        allowed: str | None = None,
    ):
        super().__init__(message)
        if param is None:
            head = str(message).split(":", 1)[0]
            if head != str(message) and _PARAM.fullmatch(head):
                param = head
        self.param = param
        self.value = None if value is _UNSET else value
        self.has_value = value is not _UNSET
        self.allowed = allowed

    @classmethod
    def invalid(cls, param: str, value: object, allowed: str, hint: str = "") -> ConfigError:
        """``"<param>: <value!r> is not <allowed><hint>"`` with the three fields set."""
        return cls(
            f"{param}: {value!r} is not {allowed}{hint}", param=param, value=value, allowed=allowed
        )

    @property
    def detail(self) -> str:
        """The message after ``"<param>"`` (e.g. ``": 0 is not >= 1"``), or ``": <message>"``."""
        text = str(self)
        if self.param is not None and text.startswith(self.param):
            return text[len(self.param) :]
        return f": {text}"

    def at(self, path: str) -> ConfigError:
        """The same error addressed to ``path`` (``param`` replaced, e.g. by ``"train.lr"``)."""
        value = self.value if self.has_value else _UNSET
        error = type(self)(f"{path}{self.detail}", param=path, value=value, allowed=self.allowed)
        return error


class DataError(BnlabError, ValueError):
    """Data that cannot be used: missing files, wrong shapes, bad labels, bad checksums."""


class UnsafeFileError(BnlabError, ValueError):
    """A model file that could only be read by unpickling arbitrary code (refused)."""
