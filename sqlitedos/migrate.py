"""The schema migration runner: ``schema/*.sql`` files named after aiida's revisions, recorded in ``alembic_version``.

A revision file is named ``<revision>_<slug>.sql`` (``main_0001_initial.sql``) and the files are applied in revision
order. ``plan()`` reads and checks every pending file before anything is written; ``apply()`` runs each file and the
``alembic_version`` update in one transaction, as alembic does for aiida.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlitedos.db import Session
from sqlitedos.exceptions import IncompatibleStorageSchema, StorageMigrationError

if TYPE_CHECKING:
    import logging
    from importlib.resources.abc import Traversable

__all__ = (
    'Step',
    'apply',
    'create_schema',
    'plan',
    'read_version',
    'revisions',
    'schema_files',
    'stamp',
    'version_head',
)


_REVISION_FILE = re.compile(r'^(?P<revision>main_\d{4}[a-z]?)_[a-z0-9_]+\.sql$')
VERSION_TABLE_FILE = 'alembic_version.sql'

READ_VERSION = 'SELECT version_num FROM alembic_version'
HAS_VERSION_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
SET_VERSION = 'UPDATE alembic_version SET version_num = ?'
INSERT_VERSION = 'INSERT INTO alembic_version (version_num) VALUES (?)'
DELETE_VERSION = 'DELETE FROM alembic_version'
COUNT_CALCJOBS_WITH_HASH = """
SELECT count(*) FROM db_dbnode
WHERE node_type = 'process.calculation.calcjob.CalcJobNode.' AND json_type(extras, '$._aiida_hash') IS NOT NULL
"""


@dataclass(frozen=True)
class Step:
    """One pending revision: its name and its SQL statements, split and checked."""

    revision: str
    statements: tuple[str, ...]


def schema_files() -> Traversable:
    """The folder of the schema files, found as ``importlib.resources`` finds package data (so a zip works too).

    ``sqlitedos/schema`` inside the package (a wheel, or a copy made by ``python -m sqlitedos vendor``) comes first;
    in a source checkout or an editable install, the repository's top-level ``schema/`` (the source of truth).
    """
    package = Path(__file__).parent
    if (package / '__init__.py').is_file():
        # A package on the file system: importlib.resources would return this same folder, at the cost of importing
        # importlib.resources, importlib.readers, zipfile and tempfile (~4 ms of every cold start).
        packaged: Traversable = package / 'schema'
    else:
        from importlib import resources

        packaged = resources.files('sqlitedos') / 'schema'
    if packaged.is_dir():
        return packaged
    checkout = package.resolve().parent / 'schema'
    if checkout.is_dir():
        return checkout
    raise StorageMigrationError(
        f'the schema files are missing: neither {packaged} nor {checkout} is a folder; a copy of the package made '
        "by hand must include them: make it with `python -m sqlitedos vendor DIR` (or copy a wheel's sqlitedos/)"
    )


@functools.lru_cache(maxsize=1)
def _revisions() -> tuple[tuple[str, Traversable], ...]:
    found = []
    for entry in schema_files().iterdir():
        match = _REVISION_FILE.match(entry.name)
        if match:
            found.append((match['revision'], entry))
    if not found:
        raise StorageMigrationError(f'no schema files (main_NNNN_*.sql) found in {schema_files()}')
    return tuple(sorted(found, key=lambda item: item[0]))


def revisions() -> list[tuple[str, Traversable]]:
    """All revisions ``(name, file)`` in the order they apply."""
    return list(_revisions())


def version_head() -> str:
    """The newest revision this code knows."""
    return revisions()[-1][0]


def read_version(connection: sqlite3.Connection) -> str | None:
    """The revision recorded in the database, or None if it has no ``alembic_version`` table."""
    if connection.execute(HAS_VERSION_TABLE).fetchone() is None:
        return None
    row = connection.execute(READ_VERSION).fetchone()
    return row[0] if row else None


def split_statements(text: str) -> tuple[str, ...]:
    """Split SQL text into complete statements, using SQLite's own notion of a complete statement."""
    statements, pending = [], ''
    for line in text.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statement = _strip_comments(pending)
            if statement:
                statements.append(statement)
            pending = ''
    if _strip_comments(pending):
        raise StorageMigrationError(f'incomplete SQL statement at the end of a schema file: {pending.strip()[:80]!r}')
    return tuple(statements)


def _strip_comments(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith('--')]
    return '\n'.join(lines).strip()


def read_steps(after: str | None = None, until: str | None = None) -> list[Step]:
    """The revisions after ``after`` (all if None) up to and including ``until`` (the head if None)."""
    names = [name for name, _ in revisions()]
    start = names.index(after) + 1 if after is not None else 0
    stop = names.index(until) + 1 if until is not None else len(names)
    return [Step(name, split_statements(path.read_text('utf-8'))) for name, path in revisions()[start:stop]]


def plan(connection: sqlite3.Connection) -> list[Step]:
    """The steps that bring the database to the head; reads only. Raises if the version is missing or unknown."""
    current = read_version(connection)
    known = [name for name, _ in revisions()]
    if current is None:
        raise IncompatibleStorageSchema('The database has no known version: it has no alembic_version table.')
    if current not in known:
        raise IncompatibleStorageSchema(
            f'The database is at revision {current!r}, which this version of sqlitedos does not know (its head is '
            f'{known[-1]!r}); it was probably written by a newer aiida-core or sqlitedos: use that version.'
        )
    return read_steps(after=current)


def apply(session: Session, steps: list[Step]) -> None:
    """Run each step and record its revision, one transaction per step."""
    for step in steps:
        try:
            with session.transaction() as connection:
                before = PYTHON_STEPS.get(step.revision)
                if before is not None:
                    before(connection)
                for statement in step.statements:
                    connection.execute(statement)
                connection.execute(SET_VERSION, (step.revision,))
        except sqlite3.Error as exc:
            raise StorageMigrationError(
                f'migrating to {step.revision} failed: {exc}; the database was left as it was before that step'
            ) from exc
        _logger().info('migrated the database to %s', step.revision)


def stamp(connection: sqlite3.Connection, revision: str) -> None:
    """Record ``revision`` as the database's version without running anything (inside the caller's transaction)."""
    if connection.execute(HAS_VERSION_TABLE).fetchone() is None:
        for statement in split_statements((schema_files() / VERSION_TABLE_FILE).read_text('utf-8')):
            connection.execute(statement)
    connection.execute(DELETE_VERSION)
    connection.execute(INSERT_VERSION, (revision,))


def create_schema(connection: sqlite3.Connection, *, until: str | None = None, version_table: bool = True) -> None:
    """Create the schema of revision ``until`` (head) in an empty database, inside the caller's transaction.

    The data migrations on the way have nothing to change in an empty database, so this equals replaying them.
    """
    steps = read_steps(until=until)
    for step in steps:
        for statement in step.statements:
            connection.execute(statement)
    if version_table:
        stamp(connection, steps[-1].revision)


def _warn_calcjob_hashes(connection: sqlite3.Connection) -> None:
    (count,) = connection.execute(COUNT_CALCJOBS_WITH_HASH).fetchone()
    if count:
        _logger().warning(
            'migration main_0002 removes the hash extras of %d CalcJobNodes; recompute them with '
            '`verdi node rehash -e aiida.node:process.calculation.calcjob` if you use caching',
            count,
        )


def _logger() -> logging.Logger:
    import logging  # imported when there is something to say: opening a storage stays free of it

    return logging.getLogger(__name__)


#: Python that runs before a revision's SQL, in the same transaction.
PYTHON_STEPS: dict[str, Callable[[sqlite3.Connection], None]] = {'main_0002': _warn_calcjob_hashes}
