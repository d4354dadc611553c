"""``Registry``: a name -> factory table that refuses duplicates and suggests close names.

One helper for every table of named things in bnlab: normalization kinds
(:func:`bnlab.nn.make_norm`), model presets, datasets, study engines and executors. It is a
``dict`` (so it reads, iterates and can be patched in tests like one) whose
:meth:`Registry.register` refuses a name already taken and whose :meth:`Registry.lookup`
raises one :class:`~bnlab.errors.ConfigError` naming the parameter, the value, the known
names and the closest one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError

T = TypeVar("T")


class Registry(dict):
    """Named entries of one kind. ``param`` names the setting that selects an entry (it
    starts the error message: ``"norm: 'btach' is not one of ..."``)."""

    def __init__(self, param: str, entries: dict[str, Any] | None = None):
        super().__init__()
        self.param = param
        for name, value in (entries or {}).items():
            self.register(name, value)

    def register(self, name: str, value: Any = None) -> Any:
        """Add ``value`` under ``name``; without ``value``, a decorator. A name already
        registered is a ConfigError (two things under one name is always a mistake)."""
        if value is None:

            def decorate(v: T) -> T:
                self.register(name, v)
                return v

            return decorate
        if not isinstance(name, str) or not name:
            raise ConfigError.invalid(self.param, name, "a non-empty name")
        if name in self:
            raise ConfigError(
                f"{self.param}: {name!r} is already registered ({self[name]!r}); "
                "choose another name",
                param=self.param,
                value=name,
                allowed="a name not yet registered",
            )
        self[name] = value
        return value

    def hint(self, name: Any) -> str:
        """``" (did you mean 'x'?)"`` for the closest registered name, or ``""``."""
        return did_you_mean(name, self) if isinstance(name, str) else ""

    def lookup(self, name: Any, *, message: Callable[[Any], str] | None = None) -> Any:
        """The entry ``name``, or a ConfigError ``"<param>: <name!r> is not one of ..."``
        (``message(name)`` gives another text for the same error)."""
        try:
            if name in self:
                return self[name]
        except TypeError:  # unhashable
            pass
        allowed = "one of " + ", ".join(repr(n) for n in self)
        if message is not None:
            raise ConfigError(message(name), param=self.param, value=name, allowed=allowed)
        raise ConfigError.invalid(self.param, name, allowed, self.hint(name))

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self)


__all__ = ["Registry"]
