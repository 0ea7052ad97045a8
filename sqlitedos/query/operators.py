"""The filter operators: one row per operator, with its SQL on plain columns and on JSON paths, its value check and
a pure-Python twin of its meaning (used by the tests only).

Semantics are PostgreSQL's (aiida's ``core.psql_dos``), not those of aiida's SQLite backend: JSON ``true`` is not
the number ``1``, an array index in a path selects an element, ``of_type: 'boolean'`` matches booleans only.
``docs/query-semantics.md`` lists every operator and every difference from aiida's SQLite answers.

On JSON paths, comparisons (``==``, ``<``, ``like``, ``in``, ``of_length`` ...) are *false* (not NULL) where the
path is missing or holds another JSON type, so their negations include such rows; ``contains``, ``has_key`` and
``of_type`` are NULL on a missing path, so both they and their negations exclude it (PostgreSQL's behaviour), except
``of_type: 'null'``, which a missing path matches (as in both aiida backends).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlitedos.db import Fragment, encode_datetime
from sqlitedos.exceptions import InputValidationError
from sqlitedos.query.twins import (
    MISSING,
    like_to_regex,
    twin_compare,
    twin_contains,
    twin_eq,
    twin_has_key,
    twin_in,
    twin_length,
    twin_like,
    twin_of_type,
)

__all__ = (
    'MISSING',
    'OPERATORS',
    'JsonRef',
    'Operator',
    'check_operand',
    'concat',
    'encode_column_value',
    'join_fragments',
    'like_to_regex',
)


Part = str | Fragment


def join_fragments(parts: Sequence[Part], glue: str = '', parens: bool = False) -> Fragment:
    """The one way fragments are joined: SQL text and fragments, ``glue`` between them, in parentheses if asked,
    with the parameters kept in placeholder order."""
    sql: list[str] = ['('] if parens else []
    params: list[Any] = []
    for index, part in enumerate(parts):
        if index and glue:
            sql.append(glue)
        if isinstance(part, str):
            sql.append(part)
        else:
            sql.append(part.sql)
            params.extend(part.params)
    if parens:
        sql.append(')')
    return Fragment(''.join(sql), tuple(params))


def concat(*parts: Part) -> Fragment:
    """SQL text and fragments side by side (``join_fragments`` without glue)."""
    return join_fragments(parts)


@dataclass(frozen=True)
class JsonRef:
    """A value inside a JSON column: ``column`` is SQL text (a quoted alias and column), ``path`` a fragment
    evaluating to a SQLite JSON path (a ``?`` parameter, or an expression when an index may be an array index)."""

    column: str
    path: Fragment

    def type(self) -> Fragment:
        """``json_type``: NULL where the path is missing, else null/true/false/integer/real/text/array/object."""
        return concat(f'json_type({self.column}, ', self.path, ')')

    def guard(self, *json_types: str) -> Fragment:
        """True where the value has one of ``json_types``, false (never NULL) elsewhere, missing paths included."""
        names = ', '.join(f"'{name}'" for name in json_types)
        return concat(f'ifnull(json_type({self.column}, ', self.path, f"), '') IN ({names})")

    def extract(self) -> Fragment:
        """The SQL value (JSON true/false come out as 1/0, so always guard with ``type()``)."""
        return concat(f'json_extract({self.column}, ', self.path, ')')

    def json(self) -> Fragment:
        """The JSON text of the value (``->``, SQLite 3.38), NULL where the path is missing."""
        return concat(f'({self.column} -> ', self.path, ')')


# --- value kinds -------------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, (int, float)):
        return 'number'
    if isinstance(value, str):
        return 'str'
    if isinstance(value, dt.datetime):
        return 'datetime'
    if isinstance(value, (list, tuple)):
        return 'list'
    if isinstance(value, dict):
        return 'dict'
    return type(value).__name__


#: SQLite integers are 64-bit signed (https://www.sqlite.org/datatype3.html); larger ones cannot be parameters.
SQLITE_INT_RANGE = (-(2**63), 2**63 - 1)


def check_int_range(operator: str, value: Any) -> None:
    """Refuse an integer that SQLite cannot bind (it would raise OverflowError at execution)."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not SQLITE_INT_RANGE[0] <= value <= SQLITE_INT_RANGE[1]
    ):
        raise _reject(operator, value, 'an integer within 64 bits')


def _reject(operator: str, value: Any, expected: str) -> InputValidationError:
    return InputValidationError(
        f'invalid value {value!r} ({type(value).__name__}) for operator {operator!r}; expected {expected}'
    )


def encode_column_value(kind: str, value: Any, operator: str) -> Any:
    """A filter value as the parameter for a plain column of ``kind`` (tables.py kinds)."""
    if kind == 'datetime':
        if not isinstance(value, dt.datetime):
            raise _reject(operator, value, 'a datetime for a DATETIME column')
        return encode_datetime(value)
    if kind == 'bool':
        if not isinstance(value, (bool, int)):
            raise _reject(operator, value, 'a bool')
        return int(value)
    # A UUID object exists only if its module was imported: no import of uuid (and platform) just to test for one.
    uuid_module = sys.modules.get('uuid')
    if kind == 'uuid' and uuid_module is not None and isinstance(value, uuid_module.UUID):
        return str(value)
    if kind == 'json':
        return json.dumps(value)
    if kind in ('int', 'fk'):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _reject(operator, value, 'a number for an integer column')
        check_int_range(operator, value)
        return value
    if not isinstance(value, str):
        raise _reject(operator, value, 'a str for a text column')
    return value


_JSON_TYPE_OF_KIND = {'str': ('text',), 'number': ('integer', 'real'), 'datetime': ('text',)}


def _check_scalar(operator: str, value: Any) -> str:
    """The kind of a value compared with a JSON value: a str, number (within 64 bits), bool or datetime."""
    kind = _kind(value)
    if kind not in ('bool', 'datetime', *_JSON_TYPE_OF_KIND):
        raise _reject(operator, value, 'a str, int, float, bool or datetime')
    check_int_range(operator, value)
    return kind


def _scalar_json_compare(ref: JsonRef, sql_op: str, value: Any, operator: str) -> Fragment:
    """Typed comparison of a JSON value with a str, number, bool or datetime; false on other JSON types."""
    kind = _check_scalar(operator, value)
    if kind == 'bool':
        as_int = concat('(CASE ', ref.type(), " WHEN 'true' THEN 1 ELSE 0 END)")
        return concat('(', ref.guard('true', 'false'), ' AND ', as_int, f' {sql_op} ?)', Fragment('', (int(value),)))
    if kind == 'datetime':
        return concat(
            '(',
            ref.guard('text'),
            ' AND julianday(',
            ref.extract(),
            f') {sql_op} julianday(?))',
            Fragment('', (value.astimezone(dt.timezone.utc).isoformat(),)),
        )
    if kind in _JSON_TYPE_OF_KIND:
        # The comparison first: SQLite evaluates AND left to right, so the type check parses only the matches.
        return concat(
            '(',
            ref.extract(),
            f' {sql_op} ?',
            Fragment('', (value,)),
            ' AND ',
            ref.guard(*_JSON_TYPE_OF_KIND[kind]),
            ')',
        )
    raise AssertionError(kind)  # _check_scalar refused every other kind


# --- the operators, SQL side -------------------------------------------------------------------------------------


def _eq_column(column: str, kind: str, value: Any) -> Fragment:
    if value is None:
        return Fragment(f'{column} IS NULL')
    return Fragment(f'{column} = ?', (encode_column_value(kind, value, '=='),))


def _eq_json(ref: JsonRef, value: Any) -> Fragment:
    kind = _kind(value)
    if kind == 'null':
        # PostgreSQL (aiida's psql backend) answers no rows for ``== None`` on a JSON path, even where it holds null.
        return Fragment('0')
    if kind in ('list', 'dict'):
        json_type = 'array' if kind == 'list' else 'object'
        return concat(
            '(',
            ref.guard(json_type),
            ' AND sqlitedos_json_equal(',
            ref.json(),
            ', ?))',
            Fragment('', (json.dumps(value),)),
        )
    return _scalar_json_compare(ref, '=', value, '==')


def _compare(sql_op: str, operator: str) -> tuple[Callable, Callable]:
    def on_column(column: str, kind: str, value: Any) -> Fragment:
        if value is None or isinstance(value, (list, tuple, dict)):
            raise _reject(operator, value, 'a str, number or datetime')
        return Fragment(f'{column} {sql_op} ?', (encode_column_value(kind, value, operator),))

    def on_json(ref: JsonRef, value: Any) -> Fragment:
        return _scalar_json_compare(ref, sql_op, value, operator)

    return on_column, on_json


def _check_str(operator: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, str):
            raise _reject(operator, value, 'a str')

    return check


def _check_like_pattern(operator: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, str):
            raise _reject(operator, value, 'a str')
        trailing = len(value) - len(value.rstrip('\\'))
        if trailing % 2:
            # PostgreSQL refuses such a pattern; SQLite would silently match nothing.
            raise _reject(operator, value, 'a pattern that does not end with the escape character \\ (write \\\\)')

    return check


def like_prefix(pattern: str) -> str | None:
    """The literal prefix of a pattern of the form ``<literal>%`` (escapes resolved), else None."""
    prefix, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == '\\':
            if index + 1 == len(pattern):
                return None
            prefix.append(pattern[index + 1])
            index += 2
        elif char == '%':
            return ''.join(prefix) if index == len(pattern) - 1 and prefix else None
        elif char == '_':
            return None
        else:
            prefix.append(char)
            index += 1
    return None


def _after_prefix(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (UTF-8 byte order), or None."""
    code = ord(prefix[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:
        code = 0xE000  # surrogates cannot be encoded; the next encodable code point keeps the order
    if code > 0x10FFFF:
        return None
    return prefix[:-1] + chr(code)


def _like_column(column: str, kind: str, value: Any) -> Fragment:
    # A prefix pattern on a text column becomes a range: the same rows (LIKE is case-sensitive here, and text
    # compares by UTF-8 bytes), an index range scan, and no re-prepare: SQLite re-prepares a statement on every
    # run when a bound LIKE pattern might choose its plan (https://www.sqlite.org/optoverview.html#like_opt).
    prefix = like_prefix(value) if kind in ('text', 'uuid') else None
    upper = _after_prefix(prefix) if prefix else None
    if prefix and upper is not None:
        return Fragment(f'({column} >= ? AND {column} < ?)', (prefix, upper))
    return Fragment(f"{column} LIKE ? ESCAPE '\\'", (value,))


def _ilike_column(column: str, kind: str, value: Any) -> Fragment:
    return Fragment(f"lower({column}) LIKE lower(?) ESCAPE '\\'", (value,))


def _like_json(ref: JsonRef, value: Any) -> Fragment:
    return concat('(', ref.guard('text'), ' AND ', ref.extract(), " LIKE ? ESCAPE '\\')", Fragment('', (value,)))


def _ilike_json(ref: JsonRef, value: Any) -> Fragment:
    return concat(
        '(', ref.guard('text'), ' AND lower(', ref.extract(), ") LIKE lower(?) ESCAPE '\\')", Fragment('', (value,))
    )


def _check_in(value: Any) -> None:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, '__iter__'):
        raise _reject('in', value, 'a list or tuple of values')
    if len(list(value)) == 0:
        raise InputValidationError("the value of operator 'in' is an empty list; give at least one value")


def _in_column(column: str, kind: str, value: Any) -> Fragment:
    values = list(value)
    parts = []
    if any(item is None for item in values):
        parts.append(Fragment(f'{column} IS NULL'))
    encoded = [encode_column_value(kind, item, 'in') for item in values if item is not None]
    if encoded:
        parts.append(Fragment(f'{column} IN (SELECT value FROM json_each(?))', (json.dumps(encoded),)))
    return _or(parts)


def _in_json(ref: JsonRef, value: Any) -> Fragment:
    """Membership under the JSON equality of ``==``: numbers and strings in one ``json_each`` each."""
    values = list(value)
    by_kind: dict[str, list[Any]] = {}
    for item in values:
        by_kind.setdefault(_kind(item), []).append(item)
    parts = []
    for kind, items in by_kind.items():
        if kind in ('number', 'str'):
            parts.append(
                concat(
                    '(',
                    ref.extract(),
                    ' IN (SELECT value FROM json_each(?))',
                    Fragment('', (json.dumps(items),)),
                    ' AND ',
                    ref.guard(*_JSON_TYPE_OF_KIND[kind]),
                    ')',
                )
            )
        elif kind in ('bool', 'list', 'dict', 'datetime', 'null'):
            parts.extend(_eq_json(ref, item) for item in items)
        else:
            raise _reject('in', items[0], 'JSON values (str, number, bool, list, dict) or datetimes')
    return _or(parts)


def _or(parts: list[Fragment]) -> Fragment:
    return parts[0] if len(parts) == 1 else join_fragments(parts, ' OR ', parens=True)


_TYPE_NAMES = {
    'object': ('object',),
    'array': ('array',),
    'string': ('text',),
    'number': ('integer', 'real'),
    'boolean': ('true', 'false'),
    'null': ('null',),
}


def _check_of_type(value: Any) -> None:
    if not isinstance(value, str) or value not in _TYPE_NAMES:
        raise _reject('of_type', value, f'one of {sorted(_TYPE_NAMES)}')


def _of_type_json(ref: JsonRef, value: Any) -> Fragment:
    if value == 'null':
        # A missing path is null too, as in both aiida backends (PostgreSQL's ``jsonb_typeof`` of a missing key is
        # SQL NULL, which aiida's psql code counts as ``null`` on purpose).
        return concat('(ifnull(', ref.type(), ", 'null') = 'null')")
    names = ', '.join(f"'{name}'" for name in _TYPE_NAMES[value])
    return concat('(', ref.type(), f' IN ({names}))')


def _check_json_value(operator: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise _reject(operator, value, 'a JSON value (dict, list, str, number, bool or None)') from None

    return check


def _contains_json(ref: JsonRef, value: Any) -> Fragment:
    return concat('json_contains(', ref.json(), ', ?)', Fragment('', (json.dumps(value),)))


def _has_key_json(ref: JsonRef, value: Any) -> Fragment:
    """PostgreSQL's ``?``: a key of an object, a string element of an array, or the string itself; NULL if missing."""
    each = concat(f'json_each({ref.column}, ', ref.path, ')')
    key = Fragment('?', (value,))
    return concat(
        '(CASE ',
        ref.type(),
        " WHEN 'object' THEN EXISTS (SELECT 1 FROM ",
        each,
        ' WHERE key = ',
        key,
        ')',
        " WHEN 'array' THEN EXISTS (SELECT 1 FROM ",
        each,
        " WHERE type = 'text' AND value = ",
        key,
        ')',
        " WHEN 'text' THEN ",
        ref.extract(),
        ' = ',
        key,
        ' ELSE (CASE WHEN ',
        ref.type(),
        ' IS NULL THEN NULL ELSE 0 END) END)',
    )


def _check_length(operator: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _reject(operator, value, 'an int')
        check_int_range(operator, value)

    return check


def _length(sql_op: str) -> tuple[Callable, Callable]:  # the value is checked by _check_length
    def on_column(column: str, kind: str, value: Any) -> Fragment:
        if kind not in ('text', 'uuid'):
            raise InputValidationError(f'length operators apply to text columns and JSON arrays, not to {column}')
        return Fragment(f'length({column}) {sql_op} ?', (value,))

    def on_json(ref: JsonRef, value: Any) -> Fragment:
        return concat(
            '(',
            ref.guard('array'),
            ' AND json_array_length(',
            ref.column,
            ', ',
            ref.path,
            f') {sql_op} ?)',
            Fragment('', (value,)),
        )

    return on_column, on_json


# --- the table ----------------------------------------------------------------------------------------------------


def _no_check(value: Any) -> None:
    return None


@dataclass(frozen=True)
class Operator:
    """One filter operator: SQL for a plain column and for a JSON path (None where it has no meaning), the value
    check, and ``matches(stored, value, on_json)``, the Python reference semantics (three-valued: None is NULL)."""

    name: str
    on_column: Callable[[str, str, Any], Fragment] | None
    on_json: Callable[[JsonRef, Any], Fragment] | None
    check: Callable[[Any], None]
    matches: Callable[..., bool | None]


def _table() -> dict[str, Operator]:
    rows = [
        Operator('==', _eq_column, _eq_json, _no_check, twin_eq),
        Operator('like', _like_column, _like_json, _check_like_pattern('like'), twin_like(False)),
        Operator('ilike', _ilike_column, _ilike_json, _check_like_pattern('ilike'), twin_like(True)),
        Operator('in', _in_column, _in_json, _check_in, twin_in),
        Operator('of_type', None, _of_type_json, _check_of_type, twin_of_type),
        Operator('contains', None, _contains_json, _check_json_value('contains'), twin_contains),
        Operator('has_key', None, _has_key_json, _check_str('has_key'), twin_has_key),
    ]
    for name, sql_op, test in (
        ('<', '<', lambda a, b: a < b),
        ('<=', '<=', lambda a, b: a <= b),
        ('>', '>', lambda a, b: a > b),
        ('>=', '>=', lambda a, b: a >= b),
        ('=<', '<=', lambda a, b: a <= b),
        ('=>', '>=', lambda a, b: a >= b),
    ):
        rows.append(Operator(name, *_compare(sql_op, name), _no_check, twin_compare(test)))
    for name, sql_op, test in (
        ('of_length', '=', lambda a, b: a == b),
        ('longer', '>', lambda a, b: a > b),
        ('shorter', '<', lambda a, b: a < b),
    ):
        rows.append(Operator(name, *_length(sql_op), _check_length(name), twin_length(test)))
    return {row.name: row for row in rows}


#: Every filter operator by name. ``and``/``or`` inside an operator dict and the ``~``/``!`` negation prefix are
#: handled by the compiler, which combines these rows.
OPERATORS: dict[str, Operator] = _table()


def check_operand(operator: Operator, field_kind: str, value: Any) -> None:
    """Every error ``operator`` would raise on a field of ``field_kind`` (``'json'``: a path inside a JSON column)
    and ``value``, raised before any SQL is built."""
    operator.check(value)
    on_json = field_kind == 'json'
    if on_json and operator.on_json is None:
        raise InputValidationError(f'operator {operator.name!r} does not apply to JSON values')
    if not on_json and operator.on_column is None:
        allowed = sorted(key for key, row in OPERATORS.items() if row.on_column is not None)
        raise InputValidationError(
            f'operator {operator.name!r} does not apply to a plain column; expected one of: {", ".join(allowed)}'
        )
    base = operator.name
    if base == '==':
        if on_json and _kind(value) not in ('null', 'list', 'dict'):
            _check_scalar(base, value)
        elif not on_json and value is not None:
            encode_column_value(field_kind, value, base)
    elif base in _COMPARISONS:
        if on_json:
            _check_scalar(base, value)
        elif value is None or isinstance(value, (list, tuple, dict)):
            raise _reject(base, value, 'a str, number or datetime')
        else:
            encode_column_value(field_kind, value, base)
    elif base == 'in':
        for item in value:
            if on_json and _kind(item) in ('number', 'str'):
                check_int_range('in', item)
            elif on_json and _kind(item) not in ('bool', 'list', 'dict', 'datetime', 'null'):
                raise _reject('in', item, 'JSON values (str, number, bool, list, dict) or datetimes')
            elif not on_json and item is not None:
                encode_column_value(field_kind, item, 'in')
    elif base in _LENGTHS and not on_json and field_kind not in ('text', 'uuid'):
        raise InputValidationError(
            f'length operators apply to text columns and JSON arrays, not to a {field_kind} column'
        )


_COMPARISONS = frozenset({'<', '<=', '>', '>=', '=<', '=>'})
_LENGTHS = frozenset({'of_length', 'longer', 'shorter'})
