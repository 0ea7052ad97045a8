"""Checks of an archive's database before anything is written: tables, unique identities, references that
resolve, and every repository object its nodes reference present in the archive.

The checks run on the private, extracted copy of ``db.sqlite3``; they also leave there the table
``sqlitedos_keys`` of the referenced repository keys, which the import streams in.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sqlitedos.archive.format import DATABASE_NAME, ArchiveReader
from sqlitedos.db import JSON_MAX_DEPTH, connect, json_text_depth_exceeds
from sqlitedos.exceptions import AiidaException, CorruptStorage, ImportValidationError
from sqlitedos.repository.tree import SELECT_REFERENCED_KEYS
from sqlitedos.tables import TABLES, quote_identifier

__all__ = ('ENTITY_TABLES', 'archive_connection', 'check_archive_database')

ENTITY_TABLES = (
    'db_dbuser',
    'db_dbcomputer',
    'db_dbauthinfo',
    'db_dbgroup',
    'db_dbnode',
    'db_dbcomment',
    'db_dbgroup_dbnodes',
    'db_dblink',
    'db_dblog',
)

# --- statements on the private archive database ---------------------------------------------------------------------

CREATE_KEYS = 'CREATE TABLE sqlitedos_keys (key TEXT PRIMARY KEY) WITHOUT ROWID'
FILL_KEYS = 'INSERT OR IGNORE INTO sqlitedos_keys (key)' + SELECT_REFERENCED_KEYS


@contextlib.contextmanager
def archive_connection(database: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to the private copy of the archive database, closed afterwards."""
    try:
        connection = connect(database, foreign_keys=False)
    except (sqlite3.Error, AiidaException) as exc:
        raise CorruptStorage(f'the archive {DATABASE_NAME} cannot be opened: {exc}') from exc
    try:
        yield connection
    finally:
        connection.close()


def check_archive_database(database: Path, reader: ArchiveReader) -> None:
    """Check the archive's rows before anything is written: tables, unique identities, references, objects."""
    with archive_connection(database) as connection:
        try:
            objects = connection.execute('SELECT type, name FROM sqlite_master').fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptStorage(f'the archive {DATABASE_NAME} is not a SQLite database: {exc}') from exc
        tables = {name for kind, name in objects if kind == 'table'}
        active = sorted(name for kind, name in objects if kind in ('trigger', 'view'))
        if active:
            # Rows are copied by SQL from this file: code in it (triggers, views) must not run with them.
            raise CorruptStorage(
                f'the archive {DATABASE_NAME} holds triggers or views {active}, which aiida never writes: refusing it'
            )
        missing = [name for name in ENTITY_TABLES if name not in tables]
        if missing:
            raise CorruptStorage(f'the archive {DATABASE_NAME} lacks the tables {missing}: it is not an aiida archive')
        try:
            _check_identities(connection)
            _check_references(connection)
            _check_json(connection)
            connection.execute(CREATE_KEYS)
            connection.execute(FILL_KEYS)
        except sqlite3.DatabaseError as exc:
            raise CorruptStorage(f'the archive {DATABASE_NAME} cannot be read: {exc}') from exc
        key = reader.first_missing_object(database, 'sqlitedos_keys')
        if key is not None:
            raise ImportValidationError(
                f'the archive lacks the repository object repo/{key} that one of its nodes references: the '
                'archive is incomplete (nothing was imported)'
            )


#: A row whose JSON text is invalid, or nested deeper than ``db.JSON_MAX_DEPTH`` (exactly, by a Python scan, only
#: for the rare texts with more opening brackets than that in all). ``{column}``/``{table}`` come from ``tables.py``.
BAD_JSON = """
SELECT id FROM {table} WHERE {column} IS NOT NULL AND (
    NOT json_valid({column})
    OR (length({column}) - length(replace(replace({column}, '[', ''), '{{', '')) > :limit
        AND sqlitedos_json_too_deep({column}))
) LIMIT 1
"""


def _check_json(connection: sqlite3.Connection) -> None:
    """Refuse an archive row whose JSON is invalid or nested too deeply to be read back or filtered on."""
    connection.create_function('sqlitedos_json_too_deep', 1, _too_deep, deterministic=True)
    for table in ENTITY_TABLES:
        for column in TABLES[table].columns:
            if column.kind != 'json':
                continue
            sql = BAD_JSON.format(table=quote_identifier(table), column=quote_identifier(column.name))
            row = connection.execute(sql, {'limit': JSON_MAX_DEPTH}).fetchone()
            if row is not None:
                raise ImportValidationError(
                    f'the archive row {row[0]} of {table} holds {column.name} that is not valid JSON or nests deeper '
                    f'than {JSON_MAX_DEPTH} levels, which aiida never writes (nothing was imported)'
                )


def _too_deep(cell: object) -> int:
    return int(isinstance(cell, (str, bytes)) and json_text_depth_exceeds(cell))


def _check_identities(connection: sqlite3.Connection) -> None:
    for table, column in (
        ('db_dbuser', 'email'),
        ('db_dbcomputer', 'uuid'),
        ('db_dbgroup', 'uuid'),
        ('db_dbnode', 'uuid'),
        ('db_dbcomment', 'uuid'),
        ('db_dblog', 'uuid'),
    ):
        quoted_table, quoted_column = quote_identifier(table), quote_identifier(column)
        row = connection.execute(
            f'SELECT {quoted_column}, count(*) FROM {quoted_table} GROUP BY {quoted_column} HAVING count(*) > 1 LIMIT 1'
        ).fetchone()
        if row is not None:
            raise ImportValidationError(
                f'the archive has {row[1]} rows of {table} with the same {column} {row[0]!r}: an archive entity '
                'must be unique (nothing was imported)'
            )


def _check_references(connection: sqlite3.Connection) -> None:
    """Every foreign key of an archive row must point at a row of the archive."""
    for table in ENTITY_TABLES:
        for column in TABLES[table].columns:
            if column.references is None:
                continue
            quoted = quote_identifier(column.name)
            row = connection.execute(
                f'SELECT id, {quoted} FROM {quote_identifier(table)} WHERE {quoted} IS NOT NULL AND {quoted} NOT IN '
                f'(SELECT id FROM {quote_identifier(column.references)}) LIMIT 1'
            ).fetchone()
            if row is not None:
                raise ImportValidationError(
                    f'the archive row {row[0]} of {table} refers to {column.name}={row[1]}, which the archive lacks '
                    '(nothing was imported)'
                )
