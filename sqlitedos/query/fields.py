"""Field paths of a query dict: parsed once into a ``Field`` (a column and its JSON path), rendered against an alias
when the query is compiled."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlitedos.db import Fragment
from sqlitedos.exceptions import InputValidationError
from sqlitedos.query import joins as joins_module
from sqlitedos.query.operators import JsonRef, concat
from sqlitedos.tables import COLUMN_ALIASES, Table, quote_identifier

__all__ = ('MAX_INDEX_COMPONENTS', 'Field', 'Scope', 'json_path', 'parse_field')

#: Characters refused in JSON keys of a field path: they have a meaning in SQLite JSON paths or in SQL, and
#: aiida never writes them (https://www.sqlite.org/json1.html#path_arguments).
_BAD_JSON_KEY = re.compile(r'["\'\\;\[\]$*]|--|[\x00-\x1f]')
#: An index component (``attributes.a.0``) may select an array element; each one doubles the path expression.
MAX_INDEX_COMPONENTS = 4


@dataclass(frozen=True)
class Scope:
    """What a tag's fields are checked against: a table, or (``table`` None) the recursive edge's columns."""

    tag: str
    table: Table | None
    orm_base: str = ''

    @property
    def column_names(self) -> tuple[str, ...]:
        return self.table.column_names if self.table is not None else tuple(joins_module.RECURSIVE_EDGE_COLUMNS)

    def column(self, name: str) -> tuple[str, str]:
        """The real name and kind of the column (or alias) ``name``."""
        if self.table is None:
            if name not in joins_module.RECURSIVE_EDGE_COLUMNS:
                raise _unknown_field(self.tag, name, tuple(joins_module.RECURSIVE_EDGE_COLUMNS))
            return name, joins_module.RECURSIVE_EDGE_COLUMNS[name]
        real = COLUMN_ALIASES.get(self.table.name, {}).get(name, name)
        if real == '_metadata' and self.table.has_column('metadata'):
            real = 'metadata'
        if not self.table.has_column(real):
            aliases = tuple(COLUMN_ALIASES.get(self.table.name, {}))
            raise _unknown_field(self.tag, name, self.table.column_names + aliases)
        return real, self.table.column(real).kind


@dataclass(frozen=True)
class Field:
    """A checked field path: ``column`` (the real name) of kind ``kind``, and inside a JSON column ``path``."""

    tag: str
    name: str
    column: str
    kind: str
    path: tuple[str, ...] = ()
    recursive: bool = False  # a column of a recursive edge (constants of ``joins.py``, not schema identifiers)

    @property
    def is_json(self) -> bool:
        return self.kind == 'json'

    @property
    def is_whole_column(self) -> bool:
        return not self.path

    def column_sql(self, alias: str) -> str:
        """The column under ``alias`` (identifiers from ``tables.py``; recursive edge columns are constants)."""
        if self.recursive:
            return f'{alias}.{self.column}'
        return f'{alias}.{quote_identifier(self.column)}'

    def ref(self, alias: str) -> JsonRef:
        """The JSON value this field names, under ``alias`` (only for JSON columns)."""
        column_sql = self.column_sql(alias)
        return JsonRef(column_sql, json_path(list(self.path), column_sql, self.tag))


def _unknown_field(tag: str, name: str, allowed: tuple[str, ...]) -> InputValidationError:
    return InputValidationError(f'unknown field {name!r} of tag {tag!r}; expected one of: {", ".join(allowed)}')


def check_json_keys(components: list[str] | tuple[str, ...], tag: str) -> None:
    """Refuse JSON keys that have a meaning in SQLite JSON paths, and too many index components."""
    for component in components:
        if not isinstance(component, str) or not component or _BAD_JSON_KEY.search(component):
            raise InputValidationError(
                f'invalid JSON key {component!r} in a field of tag {tag!r}: keys must be non-empty and contain none '
                'of " \' \\ ; [ ] $ * -- or control characters'
            )
    if sum(component.isdigit() for component in components) > MAX_INDEX_COMPONENTS:
        raise InputValidationError(f'at most {MAX_INDEX_COMPONENTS} numeric components are supported in a JSON path')


def parse_field(scope: Scope, field_name: object) -> Field:
    """A field path of ``scope`` -> its ``Field``; ``InputValidationError`` for an unknown column or a bad key."""
    if not isinstance(field_name, str) or not field_name:
        raise InputValidationError(f'a field of tag {scope.tag!r} must be a non-empty str, not {field_name!r}')
    head, *rest = field_name.split('.')
    column, kind = scope.column(head)
    if kind != 'json':
        if rest:
            raise InputValidationError(f'field {field_name!r} of tag {scope.tag!r}: column {head!r} is not JSON')
        return Field(scope.tag, field_name, column, kind, recursive=scope.table is None)
    check_json_keys(rest, scope.tag)
    return Field(scope.tag, field_name, column, kind, tuple(rest), recursive=scope.table is None)


def json_path(components: list[str], column_sql: str, tag: str) -> Fragment:
    """The SQLite JSON path of ``components`` as a fragment; an all-digit component is an array index where the
    value is an array and an object key otherwise (PostgreSQL's ``#>``)."""
    check_json_keys(components, tag)
    if not any(component.isdigit() for component in components):
        return Fragment('?', ('$' + ''.join(f'."{c}"' for c in components),))
    path: Fragment | None = None
    pending = '$'
    for component in components:
        if not component.isdigit():
            pending += f'."{component}"'
            continue
        prefix = concat(path, ' || ?', Fragment('', (pending,))) if path else Fragment('?', (pending,))
        path = concat(
            '(',
            prefix,
            f' || (CASE json_type({column_sql}, ',
            prefix,
            ") WHEN 'array' THEN ? ELSE ? END))",
            Fragment('', (f'[{int(component)}]', f'."{component}"')),
        )
        pending = ''
    assert path is not None
    return concat(path, ' || ?', Fragment('', (pending,))) if pending else path
