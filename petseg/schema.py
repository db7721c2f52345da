"""Rules for one params value: each checks a value and returns it normalised, or says what is allowed.

The params schema (petseg.params) attaches these to its fields with
``Annotated[type, rule]``; a failed check is a ParamsError of the form
``<key> = <value> is invalid; allowed: <what is allowed>``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from petseg.errors import ParamsError


class Rule:
    """What one key accepts; ``allowed`` says it in words."""

    allowed = ""

    def check(self, key: str, value: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self, key: str, value: Any, why: str | None = None) -> ParamsError:
        return ParamsError(f"{key} = {value!r} is invalid; {why or f'allowed: {self.allowed}'}")

    def or_null(self) -> Nullable:
        return Nullable(self)


class Int(Rule):
    def __init__(self, min: int | None = None, max: int | None = None, multiple_of: int | None = None):
        self.min, self.max, self.multiple_of = min, max, multiple_of
        parts = ["an integer"]
        if min is not None:
            parts.append(f">= {min}")
        if max is not None:
            parts.append(f"<= {max}")
        if multiple_of is not None:
            parts.append(f"and a multiple of {multiple_of}")
        self.allowed = " ".join(parts)

    def check(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise self.fail(key, value)
            value = int(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self.fail(key, value)
        if self.multiple_of is not None and value % self.multiple_of:
            raise self.fail(key, value)
        return value


class Float(Rule):
    def __init__(
        self, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None
    ):
        self.gt, self.ge, self.lt, self.le = gt, ge, lt, le
        bounds = [
            f"{sign} {limit}" for sign, limit in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if limit is not None
        ]
        self.allowed = "a number" + (" " + " and ".join(bounds) if bounds else "")

    def check(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, value)
        value = float(value)
        if not math.isfinite(value):
            raise self.fail(key, value)
        if (self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge):
            raise self.fail(key, value)
        if (self.lt is not None and not value < self.lt) or (self.le is not None and not value <= self.le):
            raise self.fail(key, value)
        return value


class Bool(Rule):
    allowed = "true or false"

    def check(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value)
        return value


class Str(Rule):
    def __init__(self, pattern: str | None = None, allowed: str = "a non-empty string"):
        self.pattern = re.compile(pattern) if pattern else None
        self.allowed = allowed

    def check(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise self.fail(key, value)
        return value


class Choice(Rule):
    def __init__(self, *choices: Any):
        self.choices = choices
        self.allowed = "one of " + ", ".join("null" if c is None else str(c) for c in choices)

    def check(self, key: str, value: Any) -> Any:
        if not any(type(value) is type(choice) and value == choice for choice in self.choices):
            raise self.fail(key, value)
        return value


class Nullable(Rule):
    def __init__(self, inner: Rule):
        self.inner = inner
        self.allowed = f"null or {inner.allowed}"

    def check(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.inner.check(key, value)
        except ParamsError:
            raise self.fail(key, value) from None


class ListOf(Rule):
    """A list of ``length`` items (or at least ``min_length``), read as a tuple."""

    def __init__(self, item: Rule, length: int | None = None, min_length: int = 1):
        self.item, self.length, self.min_length = item, length, min_length
        count = f"{length}" if length is not None else f"at least {min_length}"
        self.allowed = f"a list of {count} items, each {item.allowed}"

    def check(self, key: str, value: Any) -> tuple:
        if not isinstance(value, list):
            raise self.fail(key, value)
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_length:
            raise self.fail(key, value)
        return tuple(self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value))


class OneOrMore(Rule):
    """One value or a non-empty list of them, read as a tuple (one item for a single value)."""

    def __init__(self, item: Rule):
        self.item = item
        self.allowed = f"{item.allowed}, or a non-empty list of them"

    def check(self, key: str, value: Any) -> tuple:
        items = value if isinstance(value, list) else [value]
        try:
            if not items:
                raise self.fail(key, value)
            return tuple(self.item.check(key, item) for item in items)
        except ParamsError:
            raise self.fail(key, value) from None


URL = Str(r"(https?|file)://\S+", "an http(s):// or file:// URL")
