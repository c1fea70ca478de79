"""String options as enums: plain strings still work, and a wrong one names the choices."""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A string enum for a constructor option (``class PsiMode(Choice, argument="psi")``).

    :meth:`parse` accepts a member or its string value; anything else raises a ``ValueError``
    that names the argument and lists the choices.
    """

    def __init_subclass__(cls, argument: str = "value", **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._argument = argument

    @classmethod
    def parse(cls, value: object) -> Choice:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"{cls._argument}={value!r} is not a known mode; choose one of "
                             f"{choices}") from None
