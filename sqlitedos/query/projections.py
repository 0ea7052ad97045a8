"""Projections (``*``, columns, JSON sub-paths, ``cast``, ``func``) and ``order_by`` terms of a query dict."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlitedos.db import Fragment, decode_datetime, decode_json
from sqlitedos.exceptions import InputValidationError
from sqlitedos.query.fields import Target, resolve
from sqlitedos.query.operators import JsonRef, concat

__all__ = ('CASTS', 'FUNCS', 'Projection', 'cast_sql', 'compile_projection', 'order_terms', 'projection_entries')

FUNCS = frozenset({'count', 'max', 'min'})
CASTS = frozenset({'f', 'i', 'b', 't', 'j', 'd'})


Decoder = Callable[[Any], Any]


def _decode_bool(cell: Any) -> Any:
    return None if cell is None else bool(cell)


def _decode_json_text(cell: Any) -> Any:
    return None if cell is None else json.loads(cell)


def _cell(row: tuple, index: int) -> Any:
    return row[index]


#: json_type values whose json_extract value is already the Python value.
_NATIVE_JSON_TYPES = frozenset({'text', 'integer', 'real', 'null', None})
_JSON_BOOLEANS = {'true': True, 'false': False}


def _decode_typed(row: tuple, index: int) -> Any:
    """(json_type, json_extract) -> the Python value, keeping JSON booleans (json_extract gives 1/0 for them)."""
    json_type = row[index]
    if json_type in _NATIVE_JSON_TYPES:
        return row[index + 1]
    if json_type in _JSON_BOOLEANS:
        return _JSON_BOOLEANS[json_type]
    return json.loads(row[index + 1])


def _decode_json_datetime(cell: Any) -> Any:
    if cell is None:
        return None
    try:
        value = dt.datetime.fromisoformat(str(cell))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _identity(cell: Any) -> Any:
    return cell


COLUMN_DECODERS: dict[str, Decoder] = {
    'json': decode_json,
    'datetime': decode_datetime,
    'bool': _decode_bool,
}


def cast_sql(ref: JsonRef, cast: str | None) -> tuple[Fragment, Decoder]:
    """A JSON value projected with a cast code (None: the decoded JSON value, keeping JSON types)."""
    if cast is None:
        return ref.json(), _decode_json_text
    if cast == 'j':
        return ref.json(), _decode_json_text
    if cast == 'f':
        return concat('CAST(', ref.extract(), ' AS REAL)'), _identity
    if cast == 'i':
        return concat('CAST(', ref.extract(), ' AS INTEGER)'), _identity
    if cast == 't':
        return concat(
            '(CASE ', ref.type(), " WHEN 'text' THEN ", ref.extract(), ' ELSE ', ref.json(), ' END)'
        ), _identity
    if cast == 'b':
        return concat(
            '(CASE ',
            ref.type(),
            " WHEN 'true' THEN 1 WHEN 'false' THEN 0 WHEN 'integer' THEN ",
            ref.extract(),
            " != 0 WHEN 'real' THEN ",
            ref.extract(),
            ' != 0 END)',
        ), _decode_bool
    if cast == 'd':
        return ref.extract(), _decode_json_datetime
    raise InputValidationError(f'unknown cast {cast!r}; expected one of: {", ".join(sorted(CASTS))}')


@dataclass
class Projection:
    """One projected value: its output key, its SQL expressions, and ``decode(row, start)``, which turns the cells
    from ``row[start]`` on into the value; ``plain`` when that is the cell itself."""

    tag: str
    key: str
    sql: list[Fragment]
    decode: Callable[[tuple, int], Any]
    plain: bool = False


def projection_entries(tag: str, spec: Any) -> list[tuple[str, dict]]:
    if spec in (None, []):
        return []
    if isinstance(spec, (str, dict)):
        spec = [spec]
    if not isinstance(spec, (list, tuple)):
        raise InputValidationError(f'the projections of tag {tag!r} must be a list, not {spec!r}')
    entries = []
    for entry in spec:
        if isinstance(entry, str):
            entries.append((entry, {}))
        elif isinstance(entry, dict):
            for key, options in entry.items():
                options = options or {}
                if not isinstance(options, dict) or set(options) - {'func', 'cast'}:
                    raise InputValidationError(
                        f'projection {key!r} of tag {tag!r}: options must be a dict with keys func and cast only'
                    )
                entries.append((key, options))
        else:
            raise InputValidationError(f'invalid projection {entry!r} of tag {tag!r}')
    return entries


def compile_projection(target: Target, key: str, options: dict, builder: Callable | None) -> Projection:
    """One projection (``*``, ``**``, a column, a JSON sub-path), with its ``func`` and ``cast``."""
    func, cast = options.get('func'), options.get('cast')
    if func is not None and func not in FUNCS:
        raise InputValidationError(
            f'unknown func {func!r} on {key!r} of tag {target.tag!r}; expected one of: {sorted(FUNCS)}'
        )
    if cast is not None and cast not in CASTS:
        raise InputValidationError(
            f'unknown cast {cast!r} on {key!r} of tag {target.tag!r}; expected one of: {sorted(CASTS)}'
        )
    if key == '*':
        if func is not None:
            raise InputValidationError(f'func {func!r} cannot be applied to "*" (tag {target.tag!r})')
        if builder is None or target.table is None or not target.orm_base or target.orm_base == 'link':
            raise InputValidationError(f'"*" cannot be projected on tag {target.tag!r}; project "**" or columns')
        names = list(target.table.column_names)
        sqls = [Fragment(target.column(name)[0]) for name in names]
        width = len(names)
        return Projection(
            target.tag,
            key,
            sqls,
            lambda row, i, n=names, b=builder, o=target.orm_base, w=width: b(o, dict(zip(n, row[i : i + w]))),
        )
    column_sql, kind, ref = resolve(target, key)
    if ref is not None and ref.path.params != ('$',) and cast is None and func is None:
        # Two cheap columns instead of the JSON text: json.loads per row costs more than the query itself.
        return Projection(target.tag, key, [ref.type(), ref.extract()], _decode_typed)
    if ref is not None and (ref.path.params != ('$',) or cast is not None):
        expression, decoder = cast_sql(ref, cast)
        if func is not None:
            expression = concat(func.upper(), '(', ref.extract() if cast in (None, 'j') else expression, ')')
            decoder = int if func == 'count' else (_identity if cast in (None, 'j') else decoder)
    else:
        expression, decoder = Fragment(column_sql), COLUMN_DECODERS.get(kind, _identity)
        if func is not None:
            expression = Fragment(f'{func.upper()}({column_sql})')
            decoder = int if func == 'count' else decoder
    if decoder is _identity:
        return Projection(target.tag, key, [expression], _cell, plain=True)
    return Projection(target.tag, key, [expression], lambda row, i, d=decoder: d(row[i]))


# --- ordering -----------------------------------------------------------------------------------------------------


_JSON_TYPE_RANK = (
    "(CASE {t} WHEN 'null' THEN 0 WHEN 'text' THEN 1 WHEN 'integer' THEN 2 WHEN 'real' THEN 2 "
    "WHEN 'false' THEN 3 WHEN 'true' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 END)"
)


def order_terms(target: Target, key: str, options: Any) -> list[Fragment]:
    """ORDER BY terms for one field; NULLs last ascending and first descending, as PostgreSQL sorts."""
    if isinstance(options, str):
        options = {'order': options}
    if not isinstance(options, dict) or set(options) - {'order', 'cast'}:
        raise InputValidationError(f'order_by on {key!r} of tag {target.tag!r}: expected a dict with order and cast')
    order = options.get('order', 'asc')
    if order not in ('asc', 'desc'):
        raise InputValidationError(f'order {order!r} on {key!r} of tag {target.tag!r}; expected "asc" or "desc"')
    cast = options.get('cast')
    column_sql, kind, ref = resolve(target, key)
    suffix = ' ASC NULLS LAST' if order == 'asc' else ' DESC NULLS FIRST'
    if ref is None:
        return [Fragment(column_sql + suffix)]
    if cast is None or cast == 'j':
        rank = concat(*_split_rank(ref))
        return [concat(rank, suffix), concat(ref.extract(), suffix)]
    if cast == 'd':
        return [concat('julianday(', ref.extract(), ')', suffix)]
    expression, _ = cast_sql(ref, cast)
    return [concat(expression, suffix)]


def _split_rank(ref: JsonRef) -> list[Any]:
    before, after = _JSON_TYPE_RANK.split('{t}')
    return [before, ref.type(), after]
