"""The rule of a declared config option, and the one-line problem of a value that breaks it.

A rule is None (any value of the field's type), a tuple of allowed values, or a range written as
the message says it: ``"> 0"``, ``">= 1 and <= 1024"``, ``"in [0, 1)"``. ``training.config``
checks every ``CONFIG_OPTIONS`` rule with it and the data registry its ``config.data`` options,
so a message reads the same whichever module owns the field. Imports no JAX.
"""

from __future__ import annotations

import difflib
import numbers
import operator
from typing import Any

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def problem(path: str, value: Any, rule: Any, noun: str) -> str | None:
  """Why ``value`` at ``path`` breaks ``rule`` (``noun`` names a value: "is not a known
  <noun>"), or None; None values pass (an unset optional field)."""
  if rule is None or value is None:
    return None
  if isinstance(rule, tuple):
    close = difflib.get_close_matches(str(value), rule, n=1, cutoff=0.5)
    return None if value in rule else (
        f"{path}={value!r} is not a known {noun}{f' (did you mean {close[0]}?)' if close else ''}"
        f": use one of {', '.join(rule)}")
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    return f"{path}={value!r} is not a number: it must be {rule}"
  if rule.startswith("in "):
    low, high = (float(x) for x in rule[4:-1].split(","))
    failed = [] if (_OPS[">=" if rule[3] == "[" else ">"](value, low) and
                    _OPS["<=" if rule[-1] == "]" else "<"](value, high)) else [rule]
  else:
    failed = [c for c in rule.split(" and ") if not _OPS[c.split()[0]](value, float(c.split()[1]))]
  return f"{path}={value!r} is out of range: it must be {' and '.join(failed)}" if failed else None
