"""Options with a fixed set of values, as enums: the configurations validate them, the CLI
lists them, and a checkpoint saves their plain values."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any, TypeVar

from phr_cli.errors import ConfigError

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A string option with fixed values: `Choice.parse` turns a saved or given string into one."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls: type[C], value: str | C, what: str) -> C:
        """The member named by `value`; a ConfigError listing the choices for any other value."""
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"unknown {what} {value!r}: use one of {', '.join(m.value for m in cls)}") from None


def plain_values(value: Any) -> Any:
    """A configuration (a dataclass, nested ones included) as plain values, choices by their
    values: what torch's safe unpickler reads back, and JSON writes."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_values(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    return value
