"""The names and kinds of every table and column of aiida's schema.

This module is the only source of identifiers that may be spliced into SQL text: everything else is a ``?``
parameter. A test checks it against ``PRAGMA table_info`` of a freshly migrated database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from sqlitedos.exceptions import InputValidationError

__all__ = ('COLUMN_ALIASES', 'TABLES', 'Column', 'EntityTypes', 'Table', 'quote_identifier', 'table_for')

Kind = Literal['int', 'text', 'json', 'datetime', 'uuid', 'bool', 'fk']


@dataclass(frozen=True)
class Column:
    """One column: its name, kind, whether it may be NULL, and the table a foreign key points to."""

    name: str
    kind: Kind
    nullable: bool = False
    references: str | None = None


@dataclass(frozen=True)
class Table:
    """One table and its columns, in declaration order."""

    name: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise InputValidationError(
            f'unknown column {name!r} of table {self.name}; expected one of: {self.column_names}'
        )

    def has_column(self, name: str) -> bool:
        return any(column.name == name for column in self.columns)


def _table(name: str, *columns: Column) -> Table:
    return Table(name, (Column('id', 'int'), *columns))


TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        _table(
            'db_dbuser',
            Column('email', 'text'),
            Column('first_name', 'text'),
            Column('last_name', 'text'),
            Column('institution', 'text'),
        ),
        _table(
            'db_dbcomputer',
            Column('uuid', 'uuid'),
            Column('label', 'text'),
            Column('hostname', 'text'),
            Column('description', 'text'),
            Column('scheduler_type', 'text'),
            Column('transport_type', 'text'),
            Column('metadata', 'json'),
        ),
        _table(
            'db_dbauthinfo',
            Column('aiidauser_id', 'fk', references='db_dbuser'),
            Column('dbcomputer_id', 'fk', references='db_dbcomputer'),
            Column('metadata', 'json'),
            Column('auth_params', 'json'),
            Column('enabled', 'bool'),
        ),
        _table(
            'db_dbgroup',
            Column('uuid', 'uuid'),
            Column('label', 'text'),
            Column('type_string', 'text'),
            Column('time', 'datetime'),
            Column('description', 'text'),
            Column('extras', 'json'),
            Column('user_id', 'fk', references='db_dbuser'),
        ),
        _table(
            'db_dbnode',
            Column('uuid', 'uuid'),
            Column('node_type', 'text'),
            Column('process_type', 'text', nullable=True),
            Column('label', 'text'),
            Column('description', 'text'),
            Column('ctime', 'datetime'),
            Column('mtime', 'datetime'),
            Column('attributes', 'json', nullable=True),
            Column('extras', 'json', nullable=True),
            Column('repository_metadata', 'json'),
            Column('dbcomputer_id', 'fk', nullable=True, references='db_dbcomputer'),
            Column('user_id', 'fk', references='db_dbuser'),
        ),
        _table(
            'db_dbcomment',
            Column('uuid', 'uuid'),
            Column('dbnode_id', 'fk', references='db_dbnode'),
            Column('ctime', 'datetime'),
            Column('mtime', 'datetime'),
            Column('user_id', 'fk', references='db_dbuser'),
            Column('content', 'text'),
        ),
        _table(
            'db_dbgroup_dbnodes',
            Column('dbnode_id', 'fk', references='db_dbnode'),
            Column('dbgroup_id', 'fk', references='db_dbgroup'),
        ),
        _table(
            'db_dblink',
            Column('input_id', 'fk', references='db_dbnode'),
            Column('output_id', 'fk', references='db_dbnode'),
            Column('label', 'text'),
            Column('type', 'text'),
        ),
        _table(
            'db_dblog',
            Column('uuid', 'uuid'),
            Column('time', 'datetime'),
            Column('loggername', 'text'),
            Column('levelname', 'text'),
            Column('dbnode_id', 'fk', references='db_dbnode'),
            Column('message', 'text'),
            Column('metadata', 'json'),
        ),
        _table(
            'db_dbsetting',
            Column('key', 'text'),
            Column('val', 'json', nullable=True),
            Column('description', 'text'),
            Column('time', 'datetime'),
        ),
    )
}

#: Tables in an order in which each row's references are inserted before it (archive writing, dumps).
TABLE_ORDER: tuple[str, ...] = (
    'db_dbuser',
    'db_dbcomputer',
    'db_dbauthinfo',
    'db_dbgroup',
    'db_dbnode',
    'db_dbcomment',
    'db_dblog',
    'db_dblink',
    'db_dbgroup_dbnodes',
)


class EntityTypes(str, enum.Enum):
    """The entity types of ``bulk_insert``/``bulk_update`` (aiida's ``EntityTypes``)."""

    AUTHINFO = 'authinfo'
    COMMENT = 'comment'
    COMPUTER = 'computer'
    GROUP = 'group'
    LOG = 'log'
    NODE = 'node'
    USER = 'user'
    LINK = 'link'
    GROUP_NODE = 'group_node'


ENTITY_TABLES: dict[EntityTypes, str] = {
    EntityTypes.AUTHINFO: 'db_dbauthinfo',
    EntityTypes.COMMENT: 'db_dbcomment',
    EntityTypes.COMPUTER: 'db_dbcomputer',
    EntityTypes.GROUP: 'db_dbgroup',
    EntityTypes.LOG: 'db_dblog',
    EntityTypes.NODE: 'db_dbnode',
    EntityTypes.USER: 'db_dbuser',
    EntityTypes.LINK: 'db_dblink',
    EntityTypes.GROUP_NODE: 'db_dbgroup_dbnodes',
}

#: Field names the query language accepts in place of a column name, per table (aiida's aliases).
COLUMN_ALIASES: dict[str, dict[str, str]] = {
    name: {
        alias: column
        for alias, column in (('pk', 'id'), ('user', 'user_id'), ('computer', 'dbcomputer_id'), ('node', 'dbnode_id'))
        if table.has_column(column)
    }
    for name, table in TABLES.items()
}
COLUMN_ALIASES['db_dbauthinfo'].update(user='aiidauser_id', aiidauser='aiidauser_id', dbcomputer='dbcomputer_id')


def table_for(entity_type: EntityTypes | str) -> Table:
    """Return the table of an entity type, raising ``InputValidationError`` for an unknown one."""
    try:
        return TABLES[ENTITY_TABLES[EntityTypes(entity_type)]]
    except ValueError:
        allowed = ', '.join(member.value for member in EntityTypes)
        raise InputValidationError(f'unknown entity type {entity_type!r}; expected one of: {allowed}') from None


def quote_identifier(name: str) -> str:
    """Quote a table or column name known to ``TABLES``; anything else raises ``InputValidationError``."""
    if name not in _KNOWN_IDENTIFIERS:
        raise InputValidationError(f'{name!r} is not a table or column of the schema')
    return '"' + name + '"'


_KNOWN_IDENTIFIERS = frozenset(TABLES) | {column.name for table in TABLES.values() for column in table.columns}
