"""Connections, transactions, SQL fragments and the value codecs of aiida's on-disk text formats.

``connect()`` is the only place that calls ``sqlite3.connect`` and sets pragmas; ``Session.transaction()`` is the
only place that issues ``BEGIN``/``SAVEPOINT``/``COMMIT``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import sys
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

from sqlitedos.exceptions import (
    CorruptStorage,
    IncompatibleExternalDependencies,
    IntegrityError,
    ReadOnlyError,
    UnreachableStorage,
    ValidationError,
)

__all__ = (
    'Fragment',
    'Params',
    'SQLValue',
    'Session',
    'connect',
    'decode_datetime',
    'decode_json',
    'encode_datetime',
    'encode_json',
    'new_uuid',
    'now',
    'translate_errors',
)

SQLValue = str | int | float | bytes | None
Params = tuple[SQLValue, ...]

#: ``INSERT ... RETURNING`` needs SQLite 3.35.0, the minimum aiida checks for too.
MINIMUM_SQLITE_VERSION = (3, 35, 0)
#: How long a connection waits for another process's write lock before giving up (milliseconds).
BUSY_TIMEOUT_MS = 60_000
#: aiida's DATETIME text: naive UTC, space separator, always six fraction digits. aiida compares these as text.
DATETIME_FORMAT = '%Y-%m-%d %H:%M:%S.%f'

TransactionMode = Literal['DEFERRED', 'IMMEDIATE', 'EXCLUSIVE']
_TRANSACTION_MODES = frozenset({'DEFERRED', 'IMMEDIATE', 'EXCLUSIVE'})


class Fragment(NamedTuple):
    """A piece of SQL text and the parameters for its ``?`` placeholders."""

    sql: str
    params: Params = ()


# --- value codecs -------------------------------------------------------------------------------------------------


def encode_json(value: Any) -> str:
    """Encode a value as aiida does: ``json.dumps`` defaults (ASCII only, ``', '`` and ``': '`` separators)."""
    return json.dumps(value)


def decode_json(cell: SQLValue) -> Any:
    """Decode a JSON cell. Columns declared JSON have NUMERIC affinity, so a scalar may come back as a number."""
    if cell is None or isinstance(cell, (int, float)):
        return cell
    return json.loads(cell)


def encode_datetime(value: dt.datetime) -> str:
    """Encode a datetime as aiida's naive-UTC text; a naive value is taken as local time, as aiida does."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f'expected a datetime, got {type(value).__name__}: {value!r}')
    return value.astimezone(dt.timezone.utc).strftime(DATETIME_FORMAT)


def decode_datetime(cell: SQLValue) -> dt.datetime | None:
    """Decode aiida's DATETIME text (leniently, any ISO form) into an aware UTC datetime."""
    if cell is None:
        return None
    value = dt.datetime.fromisoformat(str(cell))
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def now() -> dt.datetime:
    """The current time as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


def new_uuid() -> str:
    """A new uuid4 in aiida's text form: 36 lowercase characters with dashes."""
    return str(uuid_module.uuid4())


# --- connections --------------------------------------------------------------------------------------------------


def check_sqlite_version() -> None:
    """Raise ``IncompatibleExternalDependencies`` if the SQLite library is older than the storage needs."""
    if sqlite3.sqlite_version_info < MINIMUM_SQLITE_VERSION:
        needed = '.'.join(map(str, MINIMUM_SQLITE_VERSION))
        raise IncompatibleExternalDependencies(
            f'SQLite {sqlite3.sqlite_version} is too old: sqlitedos needs {needed} or newer (for INSERT ... RETURNING); '
            'install a Python built against a newer SQLite.'
        )


def sqlite_uri(path: str | os.PathLike[str]) -> str:
    """The ``file:`` URI of a database path for ``sqlite3.connect(uri=True)``, without a query part.

    SQLite decodes ``%HH`` escapes and ends the path at ``?`` or ``#``, so only those three are escaped
    (https://www.sqlite.org/uri.html); ``Path.as_uri()`` would do, but imports ``urllib.parse`` on Python 3.13.
    """
    text = str(Path(path).absolute())
    return 'file:' + text.replace('%', '%25').replace('?', '%3F').replace('#', '%23')


def connect(path: str | os.PathLike[str], *, read_only: bool = False) -> sqlite3.Connection:
    """Open a connection with every pragma set, before any transaction can start.

    ``path`` is a database file, which must exist (opening never creates one), or ``':memory:'``. The connection
    is in autocommit mode (``isolation_level=None``): transactions are opened only by ``Session.transaction()``.
    """
    check_sqlite_version()
    if str(path) == ':memory:':
        connection = sqlite3.connect(':memory:', isolation_level=None, check_same_thread=False)
    else:
        mode = 'ro' if read_only else 'rw'
        uri = f'{sqlite_uri(path)}?mode={mode}'
        try:
            connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise UnreachableStorage(f'cannot open the database {str(path)!r}: {exc}') from exc
    try:
        _set_pragmas(connection)
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise CorruptStorage(
            f'{str(path)!r} is not a readable SQLite database ({exc}); restore it from a backup.'
        ) from exc
    connection.create_function('json_contains', 2, json_contains, deterministic=True)
    return connection


def _set_pragmas(connection: sqlite3.Connection) -> None:
    # foreign_keys is silently ignored inside a transaction, so it must be set first.
    # https://www.sqlite.org/pragma.html#pragma_foreign_keys
    connection.execute('PRAGMA foreign_keys = ON')
    connection.execute(f'PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}')
    # aiida's LIKE is case-sensitive; it also lets SQLite use the BINARY index of node_type for prefix LIKE.
    connection.execute('PRAGMA case_sensitive_like = ON')
    if sys.version_info >= (3, 12):
        # Double-quoted strings are identifiers only: a typo in a column name fails instead of matching a string.
        connection.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DML, False)  # type: ignore[attr-defined]
        connection.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DDL, False)  # type: ignore[attr-defined]
    (journal_mode,) = connection.execute('PRAGMA journal_mode').fetchone()
    if journal_mode == 'wal':
        # In WAL mode NORMAL is durable against process crashes; only an OS crash may lose the last commits.
        connection.execute('PRAGMA synchronous = NORMAL')


def json_contains(container_text: SQLValue, contained_text: SQLValue) -> int | None:
    """SQL function ``json_contains(a, b)``: 1 if JSON ``a`` contains JSON ``b`` (PostgreSQL's ``@>``), else 0."""
    if container_text is None or contained_text is None:
        return None
    try:
        return int(_contains(decode_json(container_text), decode_json(contained_text)))
    except (TypeError, ValueError):
        return 0


def _contains(container: Any, contained: Any) -> bool:
    if isinstance(container, dict):
        return isinstance(contained, dict) and all(
            key in container and _contains(container[key], value) for key, value in contained.items()
        )
    if isinstance(container, list):
        if not isinstance(contained, list):
            # PostgreSQL: an array contains a primitive value that is one of its elements.
            return not isinstance(contained, dict) and any(_same_scalar(item, contained) for item in container)
        return all(any(_contains(item, wanted) for item in container) for wanted in contained)
    return _same_scalar(container, contained)


def _same_scalar(left: Any, right: Any) -> bool:
    if isinstance(left, (dict, list)) or isinstance(right, (dict, list)):
        return False
    if isinstance(left, bool) or isinstance(right, bool):
        # JSON true is not the number 1, although Python says True == 1.
        return left is right
    return left == right


# --- errors -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Map ``sqlite3`` errors raised inside the block onto the exceptions of ``sqlitedos.exceptions``."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(f'the write breaks an integrity rule of the storage: {exc}') from exc
    except sqlite3.OperationalError as exc:
        message = str(exc)
        if 'readonly' in message or 'read-only' in message:
            raise ReadOnlyError(f'the storage is read-only: {message}') from exc
        raise
    except sqlite3.DataError as exc:
        # SQLITE_TOOBIG: a value longer than SQLITE_MAX_LENGTH (1e9 bytes by default); the database itself is fine.
        # https://www.sqlite.org/limits.html#max_length
        raise ValidationError(
            f'a value is too big for the database ({exc}): store large data as a file instead'
        ) from exc
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.ProgrammingError) and 'closed' in str(exc):
            raise
        raise CorruptStorage(f'the database is damaged: {exc}; run `sqlitedos verify` or restore a backup') from exc


# --- sessions and transactions ------------------------------------------------------------------------------------


class Session:
    """A connection plus its transaction state: the depth of nested ``transaction()`` blocks.

    At depth 0 ``transaction()`` opens a real transaction (``BEGIN IMMEDIATE`` by default, so a writer takes the
    write lock up front and never fails half way with SQLITE_BUSY); nested blocks are ``SAVEPOINT``s. A block that
    raises is rolled back to where it started and the exception propagates; the enclosing blocks carry on.
    """

    def __init__(self, connection: sqlite3.Connection, *, file_backed: bool, read_only: bool = False) -> None:
        self.connection = connection
        self.read_only = read_only
        self.depth = 0
        self.wrote = False
        self._wal_checked = not file_backed or read_only

    @property
    def in_transaction(self) -> bool:
        return self.depth > 0

    def close(self) -> None:
        """Close the connection (idempotent); optimise the query planner's statistics if this session wrote."""
        with contextlib.suppress(sqlite3.ProgrammingError):
            if self.wrote and not self.read_only:
                with contextlib.suppress(sqlite3.Error):
                    self.connection.execute('PRAGMA optimize')
            self.connection.close()

    @contextlib.contextmanager
    def transaction(self, mode: TransactionMode = 'IMMEDIATE') -> Iterator[sqlite3.Connection]:
        """All-or-nothing block: ``BEGIN <mode>`` at depth 0, a ``SAVEPOINT`` when nested."""
        if mode not in _TRANSACTION_MODES:
            raise ValueError(f'unknown transaction mode {mode!r}; expected one of: {sorted(_TRANSACTION_MODES)}')
        if self.depth == 0:
            yield from self._outer(mode if not self.read_only else 'DEFERRED')
        else:
            yield from self._savepoint()

    def _outer(self, mode: str) -> Iterator[sqlite3.Connection]:
        self._switch_to_wal()
        with translate_errors():
            self.connection.execute(f'BEGIN {mode}')
        self.depth = 1
        try:
            yield self.connection
        except BaseException as exc:
            self.depth = 0
            with contextlib.suppress(sqlite3.Error):
                self.connection.execute('ROLLBACK')
            if self.read_only and isinstance(exc, sqlite3.OperationalError) and 'readonly' in str(exc):
                raise ReadOnlyError(
                    f'the storage is opened read-only (its folder is not writable), so it cannot be changed: {exc}'
                ) from exc
            raise
        self.depth = 0
        try:
            with translate_errors():
                self.connection.execute('COMMIT')
        except BaseException:
            if self.connection.in_transaction:
                self.connection.execute('ROLLBACK')
            raise
        if mode != 'DEFERRED':
            self.wrote = True

    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        name = f'sp_{self.depth}'
        self.connection.execute(f'SAVEPOINT {name}')
        self.depth += 1
        try:
            yield self.connection
        except BaseException:
            self.depth -= 1
            self.connection.execute(f'ROLLBACK TO {name}')
            self.connection.execute(f'RELEASE {name}')
            raise
        self.depth -= 1
        self.connection.execute(f'RELEASE {name}')

    def _switch_to_wal(self) -> None:
        """Switch a file database to WAL on its first write (persistent; aiida reads WAL databases fine)."""
        if self._wal_checked:
            return
        self._wal_checked = True
        try:
            (mode,) = self.connection.execute('PRAGMA journal_mode').fetchone()
            if mode != 'wal':
                (mode,) = self.connection.execute('PRAGMA journal_mode = WAL').fetchone()
            if mode == 'wal':
                self.connection.execute('PRAGMA synchronous = NORMAL')
        except sqlite3.OperationalError:
            # Another process holds the database open in a way that prevents the switch: stay in the current mode.
            pass
