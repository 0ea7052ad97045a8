"""The Python twins of the filter operators: each operator's meaning on a decoded stored value, three-valued (None
is SQL NULL). The differential tests check the SQL of ``operators.py`` against these; nothing else runs them."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from sqlitedos.db import _contains, json_values_equal

__all__ = (
    'MISSING',
    'like_to_regex',
    'twin_compare',
    'twin_contains',
    'twin_eq',
    'twin_has_key',
    'twin_in',
    'twin_length',
    'twin_like',
    'twin_of_type',
)


class _Missing:
    def __repr__(self) -> str:
        return 'MISSING'


#: The twin's stand-in for a JSON path that does not exist in the stored document.
MISSING = _Missing()


def twin_compare(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any, bool], bool | None]:
    def matches(stored: Any, value: Any, on_json: bool = True) -> bool | None:
        if stored is MISSING or stored is None:
            return False if on_json else None
        if isinstance(value, bool):
            return isinstance(stored, bool) and test(int(stored), int(value))
        if isinstance(value, (int, float)):
            ok = isinstance(stored, (int, float)) and not isinstance(stored, bool)
            return ok and test(stored, value)
        if isinstance(value, str):
            return isinstance(stored, str) and test(stored, value)
        if isinstance(value, dt.datetime):
            return isinstance(stored, (str, dt.datetime)) and test(_as_datetime(stored), value)
        return False

    return matches


def _as_datetime(stored: Any) -> dt.datetime:
    return stored if isinstance(stored, dt.datetime) else dt.datetime.fromisoformat(stored)


def twin_eq(stored: Any, value: Any, on_json: bool = True) -> bool | None:
    if value is None:
        return False if on_json else stored is None
    if stored is MISSING:
        return False
    if stored is None:
        return False if on_json else None
    if isinstance(value, (list, tuple, dict)):
        return json_values_equal(stored, value)
    return twin_compare(lambda a, b: a == b)(stored, value, on_json)


def like_to_regex(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """The regular expression equivalent to a SQL ``LIKE`` pattern with escape character ``\\``."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == '\\' and index + 1 < len(pattern):
            out.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        out.append('.*' if char == '%' else '.' if char == '_' else re.escape(char))
        index += 1
    # SQLite's lower() folds ASCII letters only.
    return re.compile(''.join(out), re.DOTALL | (re.IGNORECASE | re.ASCII if ignore_case else 0))


def twin_like(ignore_case: bool) -> Callable[[Any, Any, bool], bool | None]:
    def matches(stored: Any, value: Any, on_json: bool = True) -> bool | None:
        if stored is MISSING or stored is None:
            return False if on_json else None
        if not isinstance(stored, str):
            return False if on_json else like_to_regex(value, ignore_case).fullmatch(str(stored)) is not None
        return like_to_regex(value, ignore_case).fullmatch(stored) is not None

    return matches


def twin_in(stored: Any, value: Any, on_json: bool = True) -> bool | None:
    results = [twin_eq(stored, item, on_json) for item in value]
    if any(result is True for result in results):
        return True
    return None if any(result is None for result in results) else False


def _json_type_name(stored: Any) -> str | None:
    if stored is MISSING:
        return None
    if stored is None:
        return 'null'
    if isinstance(stored, bool):
        return 'boolean'
    if isinstance(stored, (int, float)):
        return 'number'
    if isinstance(stored, str):
        return 'string'
    return 'array' if isinstance(stored, list) else 'object'


def twin_of_type(stored: Any, value: Any, on_json: bool = True) -> bool | None:
    name = _json_type_name(stored)
    if name is None:
        return True if value == 'null' else None
    return name == value


def twin_contains(stored: Any, value: Any, on_json: bool = True) -> bool | None:
    return None if stored is MISSING else _contains(stored, value)


def twin_has_key(stored: Any, value: Any, on_json: bool = True) -> bool | None:
    if stored is MISSING:
        return None
    if isinstance(stored, dict):
        return value in stored
    if isinstance(stored, list):
        return any(isinstance(item, str) and item == value for item in stored)
    return isinstance(stored, str) and stored == value


def twin_length(test: Callable[[int, int], bool]) -> Callable[[Any, Any, bool], bool | None]:
    def matches(stored: Any, value: Any, on_json: bool = True) -> bool | None:
        if not on_json:
            return None if stored is None else test(len(stored), value)
        return isinstance(stored, list) and test(len(stored), value)

    return matches
