"""Parameters declared once: each estimator and trainer lists its parameters' constraints in a
``PARAMETERS`` table (as scikit-learn's ``_parameter_constraints``), and :func:`check_params`
checks them all with one message per kind of constraint, naming the parameter and the value
received (``lr must be a finite number > 0, got -1``)."""
from __future__ import annotations

import math
import numbers

import numpy as np


def _named(value, names) -> bool:
    """Whether ``value`` is one of ``names`` (None by identity, strings by equality)."""
    return any(value is a or (isinstance(a, str) and isinstance(value, str) and value == a) for a in names)


class Int:
    """An int (not a bool) ``>= low``, or one of the values in ``also`` (``"auto"``, None)."""

    def __init__(self, low: int, *also):
        self.low, self.also = low, also

    def ok(self, value) -> bool:
        if _named(value, self.also):
            return True
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= self.low

    def text(self) -> str:
        return _or(self.also, f"an int >= {self.low}")


class Real:
    """A finite real number ``>= low`` (``> low`` when ``strict``), or one of ``also``."""

    def __init__(self, low: float, *also, strict: bool = False):
        self.low, self.also, self.strict = low, also, strict

    def ok(self, value) -> bool:
        if _named(value, self.also):
            return True
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        return value > self.low if self.strict else value >= self.low

    def text(self) -> str:
        return _or(self.also, f"a finite number {'>' if self.strict else '>='} {self.low:g}")


class OneOf:
    """One of the listed values."""

    def __init__(self, *values):
        self.values = values

    def ok(self, value) -> bool:
        return _named(value, self.values)

    def text(self) -> str:
        return f"one of {self.values}"


class Bool:
    """True or False (numpy's bools too)."""

    def ok(self, value) -> bool:
        return isinstance(value, (bool, np.bool_))

    def text(self) -> str:
        return "True or False"


def _or(also, text: str) -> str:
    return " or ".join([repr(a) for a in also] + [text]) if also else text


def check_params(values: dict, constraints: dict) -> None:
    """Raise ``ValueError("name must be ..., got value")`` for the first of ``values`` that breaks
    its constraint in ``constraints`` (names without a constraint are not checked)."""
    for name, rule in constraints.items():
        if name in values and not rule.ok(values[name]):
            raise ValueError(f"{name} must be {rule.text()}, got {values[name]!r}")
