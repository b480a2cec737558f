"""Option domains: what values each constructor option of a module accepts, declared once.

Every registered module declares the domain of each of its options in its ``register`` call
(``options={"rd_ratio": RD_RATIO, "groups": Integer(1), ...}``). The registry checks every
option given at construction against its domain (and ``channels`` against
:data:`CHANNELS`) before the module's ``__init__`` runs, so a bad value is a ValueError naming
the option, the value and what is allowed, never a crash inside torch. The property tests draw
option values from the same declarations, so a new module is fuzzed without new test code.

Domains check each value on its own; constraints between options (SK's ``groups`` must divide
``channels``) stay in the module and are ValueErrors there too.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHANNELS",
    "DROPOUT",
    "FLAG",
    "RD_CHANNELS",
    "RD_DIVISOR",
    "RD_OPTIONS",
    "RD_RATIO",
    "Choice",
    "Domain",
    "Flag",
    "IntTuple",
    "Integer",
    "Real",
    "check_option",
]


def _as_int(value: Any) -> int | None:
    """``value`` as an int if it is an integer (Python or NumPy, never bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


class Domain:
    """The values one option accepts. ``optional``: None is accepted too (meaning "default")."""

    optional: bool = False

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.optional
        return self._contains(value)

    def _contains(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        text = self._describe()
        return f"{text}, or None" if self.optional else text

    def _describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Integer(Domain):
    """An int in [low, high] (``high=None``: no upper bound); ``odd=True``: odd ints only."""

    low: int = 1
    high: int | None = None
    odd: bool = False
    optional: bool = False

    def _contains(self, value: Any) -> bool:
        number = _as_int(value)
        if number is None or number < self.low or (self.high is not None and number > self.high):
            return False
        return not self.odd or number % 2 == 1

    def _describe(self) -> str:
        kind = "an odd integer" if self.odd else "an integer"
        if self.high is None:
            return f"{kind} >= {self.low}"
        return f"{kind} in [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Real(Domain):
    """A finite real number between ``low`` and ``high`` (None: unbounded on that side);
    ``closed_low`` / ``closed_high`` say whether the bound itself is allowed."""

    low: float | None = 0.0
    high: float | None = None
    closed_low: bool = False
    closed_high: bool = True
    optional: bool = False

    def _contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        number = float(value)
        if not math.isfinite(number):
            return False
        if self.low is not None and (
            number < self.low or (number == self.low and not self.closed_low)
        ):
            return False
        return self.high is None or number < self.high or (number == self.high and self.closed_high)

    def _describe(self) -> str:
        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"a finite number {'>=' if self.closed_low else '>'} {self.low:g}"
        if self.low is None:
            return f"a finite number {'<=' if self.closed_high else '<'} {self.high:g}"
        left = "[" if self.closed_low else "("
        right = "]" if self.closed_high else ")"
        return f"a number in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class Choice(Domain):
    """One of a fixed set of values (compared with their type: 2.0 is not the choice 2)."""

    values: tuple[Any, ...]
    optional: bool = False

    def _contains(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def _describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Flag(Domain):
    """True or False (not 0/1, not a string)."""

    optional: bool = False

    def _contains(self, value: Any) -> bool:
        return isinstance(value, bool)

    def _describe(self) -> str:
        return "True or False"


@dataclass(frozen=True)
class IntTuple(Domain):
    """A tuple or list of ints >= ``low``: ``length`` of them (None: one or more); with
    ``scalar=True`` a single int stands for ``length`` equal values (``7`` for ``(7, 7)``)."""

    low: int = 1
    length: int | None = None
    scalar: bool = False
    optional: bool = False

    def _contains(self, value: Any) -> bool:
        single = _as_int(value)
        if self.scalar and single is not None:
            return single >= self.low
        if not isinstance(value, (tuple, list)) or not value:
            return False
        if self.length is not None and len(value) != self.length:
            return False
        items = [_as_int(v) for v in value]
        return all(n is not None and n >= self.low for n in items)

    def _describe(self) -> str:
        count = f"{self.length}" if self.length is not None else "one or more"
        text = f"a tuple of {count} integers >= {self.low}"
        return f"an integer >= {self.low} or {text}" if self.scalar else text


def check_option(owner: str, option: str, value: Any, domain: Domain) -> None:
    """Raise ValueError ``"{owner}: {option}={value!r} is not allowed; expected ..."``."""
    if not domain.contains(value):
        raise ValueError(
            f"{owner}: {option}={value!r} is not allowed; expected {domain.describe()}"
        )


# Shared declarations: the reduction options every bottleneck module takes.
CHANNELS = Integer(1)
RD_RATIO = Real(0.0, 1.0)  # C·r hidden channels, r in (0, 1]
RD_CHANNELS = Integer(1, optional=True)
RD_DIVISOR = Integer(1)
RD_OPTIONS: dict[str, Domain] = {"rd_ratio": RD_RATIO, "rd_channels": RD_CHANNELS}
FLAG = Flag()
DROPOUT = Real(0.0, 1.0, closed_low=True)
