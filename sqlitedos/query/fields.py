"""Field paths of a query dict: columns, aliases and JSON paths resolved against a tag's table and alias."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlitedos.db import Fragment
from sqlitedos.exceptions import InputValidationError
from sqlitedos.query import joins as joins_module
from sqlitedos.query.operators import JsonRef, concat
from sqlitedos.tables import COLUMN_ALIASES, Table, quote_identifier

__all__ = ('MAX_INDEX_COMPONENTS', 'Target', 'json_path', 'resolve')

#: Characters refused in JSON keys of a field path: they have a meaning in SQLite JSON paths or in SQL, and
#: aiida never writes them (https://www.sqlite.org/json1.html#path_arguments).
_BAD_JSON_KEY = re.compile(r'["\'\\;\[\]$*]|--|[\x00-\x1f]')
#: An index component (``attributes.a.0``) may select an array element; each one doubles the path expression.
MAX_INDEX_COMPONENTS = 4


@dataclass(frozen=True)
class Target:
    """What a tag's fields resolve against: a table (or the recursive edge's columns) under an alias."""

    tag: str
    alias: str
    table: Table | None  # None: a recursive edge
    orm_base: str = ''

    def column(self, name: str) -> tuple[str, str]:
        """The SQL text and kind of the column (or alias) ``name``."""
        if self.table is None:
            if name not in joins_module.RECURSIVE_EDGE_COLUMNS:
                raise _unknown_field(self.tag, name, tuple(joins_module.RECURSIVE_EDGE_COLUMNS))
            return f'{self.alias}.{name}', joins_module.RECURSIVE_EDGE_COLUMNS[name]
        real = self.real_name(name)
        return f'{self.alias}.{quote_identifier(real)}', self.table.column(real).kind

    def real_name(self, name: str) -> str:
        assert self.table is not None
        real = COLUMN_ALIASES.get(self.table.name, {}).get(name, name)
        if real == '_metadata' and self.table.has_column('metadata'):
            real = 'metadata'
        if not self.table.has_column(real):
            aliases = tuple(COLUMN_ALIASES.get(self.table.name, {}))
            raise _unknown_field(self.tag, name, self.table.column_names + aliases)
        return real


def _unknown_field(tag: str, name: str, allowed: tuple[str, ...]) -> InputValidationError:
    return InputValidationError(f'unknown field {name!r} of tag {tag!r}; expected one of: {", ".join(allowed)}')


def json_path(components: list[str], column_sql: str, tag: str) -> Fragment:
    """The SQLite JSON path of ``components`` as a fragment; an all-digit component is an array index where the
    value is an array and an object key otherwise (PostgreSQL's ``#>``)."""
    for component in components:
        if not isinstance(component, str) or not component or _BAD_JSON_KEY.search(component):
            raise InputValidationError(
                f'invalid JSON key {component!r} in a field of tag {tag!r}: keys must be non-empty and contain none '
                'of " \' \\ ; [ ] $ * -- or control characters'
            )
    if not any(component.isdigit() for component in components):
        return Fragment('?', ('$' + ''.join(f'."{c}"' for c in components),))
    if sum(component.isdigit() for component in components) > MAX_INDEX_COMPONENTS:
        raise InputValidationError(f'at most {MAX_INDEX_COMPONENTS} numeric components are supported in a JSON path')
    path, pending = None, '$'
    for component in components:
        if not component.isdigit():
            pending += f'."{component}"'
            continue
        prefix = concat(path, ' || ?', Fragment('', (pending,))) if path else Fragment('?', (pending,))
        step = concat(
            '(',
            prefix,
            f' || (CASE json_type({column_sql}, ',
            prefix,
            ") WHEN 'array' THEN ? ELSE ? END))",
            Fragment('', (f'[{int(component)}]', f'."{component}"')),
        )
        path, pending = step, ''
    return concat(path, ' || ?', Fragment('', (pending,))) if pending else path  # type: ignore[arg-type]


def resolve(target: Target, field_name: str) -> tuple[str, str, JsonRef | None]:
    """A field path -> (column SQL, column kind, JsonRef or None). JSON columns always resolve to a JsonRef."""
    if not isinstance(field_name, str) or not field_name:
        raise InputValidationError(f'a field of tag {target.tag!r} must be a non-empty str, not {field_name!r}')
    head, *rest = field_name.split('.')
    column_sql, kind = target.column(head)
    if kind != 'json':
        if rest:
            raise InputValidationError(f'field {field_name!r} of tag {target.tag!r}: column {head!r} is not JSON')
        return column_sql, kind, None
    return column_sql, kind, JsonRef(column_sql, json_path(rest, column_sql, target.tag))
