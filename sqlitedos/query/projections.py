"""Parsed projections (``*``, columns, JSON sub-paths, ``cast``, ``func``) and ``order_by`` terms compiled to SQL
expressions, each with the decoder of its cells. Entities are not built here: a ``*`` projection yields its row's
cells by column name, and the query backend builds the entity."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlitedos.db import Fragment, decode_datetime, decode_json
from sqlitedos.query.fields import Field
from sqlitedos.query.operators import JsonRef, concat, join_fragments
from sqlitedos.query.parse import OrderTerm, ProjectionSpec
from sqlitedos.tables import quote_identifier

__all__ = ('Projection', 'cast_sql', 'compile_projection', 'decode_json_value', 'order_terms')


Decoder = Callable[[Any], Any]


def _decode_bool(cell: Any) -> Any:
    return None if cell is None else bool(cell)


def _decode_json_text(cell: Any) -> Any:
    return None if cell is None else json.loads(cell)


def _cell(row: tuple, index: int) -> Any:
    return row[index]


_JSON_LITERALS = {'true': True, 'false': False, 'null': None}
_json_loads = json.loads


def decode_json_value(text: Any) -> Any:
    """A JSON value's text (SQLite's ``->``: minified, NULL where the path is missing) -> the Python value.

    Plain strings, numbers and literals skip ``json.loads``, which costs more per row than the query itself; the
    number text is SQLite's copy of the stored one, so integers beyond 64 bits stay exact.
    """
    if text is None:
        return None
    first = text[0]
    if first == '"':
        return text[1:-1] if '\\' not in text else _json_loads(text)
    if first == '[' or first == '{':
        return _json_loads(text)
    if first in 'tfn':
        return _JSON_LITERALS[text]
    if '.' in text or 'e' in text or 'E' in text:
        return float(text)
    return int(text)


def _decode_json_cell(row: tuple, index: int) -> Any:
    return decode_json_value(row[index])


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
    assert cast == 'd', cast  # the parser accepts only CASTS
    return ref.extract(), _decode_json_datetime


@dataclass(frozen=True)
class Projection:
    """One projected value: its output key, its SQL expressions (``cells``, one result column each), and how those cells become the value.

    ``decode(row, start)`` turns the cells from ``row[start]`` on into the value; ``plain`` when that is the cell
    itself; ``typed`` for a JSON value given as its text (``decode_json_value``); ``entity`` (an orm_base) when the cells
    are a whole row, which ``decode`` gives as a dict by column name for the backend to build the entity from."""

    tag: str
    key: str
    cells: tuple[Fragment, ...]
    decode: Callable[[tuple, int], Any]
    plain: bool = False
    typed: bool = False
    entity: str | None = None


def _row_dict(columns: tuple[str, ...]) -> Callable[[tuple, int], Any]:
    width = len(columns)

    def decode(row: tuple, index: int) -> dict[str, Any]:
        return dict(zip(columns, row[index : index + width]))

    return decode


def compile_projection(spec: ProjectionSpec, alias: str) -> Projection:
    """One parsed projection under ``alias``, with its ``func`` and ``cast``."""
    if spec.entity is not None:
        sqls = tuple(Fragment(f'{alias}.{quote_identifier(name)}') for name in spec.columns)
        return Projection(spec.tag, spec.key, sqls, _row_dict(spec.columns), entity=spec.entity)
    field = spec.field
    assert field is not None
    func, cast = spec.func, spec.cast
    if field.is_json and not field.is_whole_column and cast is None and func is None:
        # One JSON call per row (its text keeps true apart from 1), decoded without json.loads where it can be.
        return Projection(spec.tag, spec.key, (field.ref(alias).json(),), _decode_json_cell, typed=True)
    if field.is_json and (not field.is_whole_column or cast is not None):
        ref = field.ref(alias)
        expression, decoder = cast_sql(ref, cast)
        if func is not None:
            expression = concat(func.upper(), '(', ref.extract() if cast in (None, 'j') else expression, ')')
            decoder = int if func == 'count' else (_identity if cast in (None, 'j') else decoder)
    else:
        column_sql = field.column_sql(alias)
        expression, decoder = Fragment(column_sql), COLUMN_DECODERS.get(field.kind, _identity)
        if func is not None:
            expression = Fragment(f'{func.upper()}({column_sql})')
            decoder = int if func == 'count' else decoder
    if decoder is _identity:
        return Projection(spec.tag, spec.key, (expression,), _cell, plain=True)
    return Projection(spec.tag, spec.key, (expression,), _apply(decoder))


def _apply(decoder: Decoder) -> Callable[[tuple, int], Any]:
    def decode(row: tuple, index: int) -> Any:
        return decoder(row[index])

    return decode


# --- ordering -----------------------------------------------------------------------------------------------------


_JSON_TYPE_RANK = (
    '(CASE ',
    " WHEN 'null' THEN 0 WHEN 'text' THEN 1 WHEN 'integer' THEN 2 WHEN 'real' THEN 2 "
    "WHEN 'false' THEN 3 WHEN 'true' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 END)",
)


def order_terms(term: OrderTerm, alias: str) -> list[Fragment]:
    """ORDER BY terms for one parsed field; NULLs last ascending and first descending, as PostgreSQL sorts."""
    suffix = ' DESC NULLS FIRST' if term.descending else ' ASC NULLS LAST'
    field: Field = term.field
    if not field.is_json:
        return [Fragment(field.column_sql(alias) + suffix)]
    ref = field.ref(alias)
    if term.cast is None or term.cast == 'j':
        rank = join_fragments([_JSON_TYPE_RANK[0], ref.type(), _JSON_TYPE_RANK[1]])
        return [concat(rank, suffix), concat(ref.extract(), suffix)]
    if term.cast == 'd':
        return [concat('julianday(', ref.extract(), ')', suffix)]
    expression, _ = cast_sql(ref, term.cast)
    return [concat(expression, suffix)]
