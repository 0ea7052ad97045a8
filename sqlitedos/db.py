"""Connections, transactions, SQL fragments and the value codecs of aiida's on-disk text formats.

``connect()`` is the only place that calls ``sqlite3.connect`` and sets pragmas; ``Session.transaction()`` is the
only place that issues ``BEGIN``/``SAVEPOINT``/``COMMIT``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import errno
import json
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, get_args

from sqlitedos.exceptions import (
    AiidaException,
    CorruptStorage,
    IncompatibleExternalDependencies,
    IntegrityError,
    InvalidOperation,
    ReadOnlyError,
    StorageBusyError,
    StorageFullError,
    StorageIOError,
    StoragePermissionError,
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
    'json_equal',
    'json_values_equal',
    'json_depth_exceeds',
    'json_text_depth_exceeds',
    'new_uuid',
    'now',
    'storage_error',
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


#: One encoder for every call: ``json.dumps`` with any non-default argument builds a new encoder each time.
_encode_json = json.JSONEncoder(allow_nan=False).encode


def encode_json(value: Any) -> str:
    """Encode a value as aiida does: ``json.dumps`` defaults (ASCII only, ``', '`` and ``': '`` separators).

    NaN and infinities raise ``ValueError``: ``json.dumps`` would write ``NaN``/``Infinity``, which is not JSON, and
    SQLite's JSON functions (every attribute filter) then fail with ``malformed JSON``.
    """
    return _encode_json(value)


#: The deepest nesting of JSON arrays and objects sqlitedos stores or reads from an archive. Python's ``json`` recurses
#: once per level (``RecursionError`` near the interpreter's limit of 1000 frames, minus the caller's stack) and
#: SQLite's JSON functions refuse input nested past their own JSON_MAX_DEPTH (2000, 1000 since 3.45); a value nested
#: deeper than this breaks reading it back and every attribute filter. aiida's own data nests a few levels.
JSON_MAX_DEPTH = 200
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth_exceeds(value: Any, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether a decoded JSON value nests arrays/objects deeper than ``limit`` (iterative: any depth is safe)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def json_text_depth_exceeds(text: str | bytes, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``limit``, found without parsing it (strings skipped)."""
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in '[{':
            depth += 1
            if depth > limit:
                return True
        elif token in ']}':
            depth -= 1
    return False


def decode_json(cell: SQLValue) -> Any:
    """Decode a JSON cell. Columns declared JSON have NUMERIC affinity, so a scalar may come back as a number."""
    if cell is None or isinstance(cell, (int, float)):
        return cell
    return json.loads(cell)


def encode_datetime(value: dt.datetime) -> str:
    """Encode a datetime as aiida's naive-UTC text; a naive value is taken as local time, as aiida does."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f'expected a datetime, got {type(value).__name__}: {value!r}')
    utc = value.astimezone(dt.timezone.utc)
    if utc.year < 1000:  # isoformat pads the year to 4 digits, strftime's %Y does not: keep strftime's text
        return utc.strftime(DATETIME_FORMAT)
    # The same text as DATETIME_FORMAT, ~3x faster than strftime: 'YYYY-MM-DD HH:MM:SS.ffffff' before '+00:00'.
    return utc.isoformat(' ', 'microseconds')[:26]


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
    import uuid  # here, not at the top: on 3.10/3.11 uuid imports platform (~1.5 ms of every cold start)

    return str(uuid.uuid4())


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


JournalMode = Literal['DELETE', 'TRUNCATE', 'PERSIST', 'MEMORY', 'WAL', 'OFF']
Synchronous = Literal['OFF', 'NORMAL', 'FULL', 'EXTRA']
LockingMode = Literal['NORMAL', 'EXCLUSIVE']
#: The values each pragma parameter of ``connect`` accepts (pragma values cannot be bound as parameters).
_PRAGMA_VALUES = {
    'journal_mode': frozenset(get_args(JournalMode)),
    'synchronous': frozenset(get_args(Synchronous)),
    'locking_mode': frozenset(get_args(LockingMode)),
}


def connect(
    path: str | os.PathLike[str],
    *,
    read_only: bool = False,
    create: bool = False,
    foreign_keys: bool = True,
    journal_mode: JournalMode | None = None,
    synchronous: Synchronous | None = None,
    locking_mode: LockingMode | None = None,
) -> sqlite3.Connection:
    """Open a connection with every pragma set, before any transaction can start.

    ``path`` is a database file, which must exist unless ``create`` is given (then a missing file is made), or
    ``':memory:'``. The connection is in autocommit mode (``isolation_level=None``): transactions are opened only by
    ``Session.transaction()``. With ``read_only`` the connection cannot write, and opening it leaves the folder as it
    was (``_open_read_only``).

    The pragmas beyond the fixed ones are named parameters: ``foreign_keys=False`` for a database of another
    program (an archive's, checked by its own rules); ``journal_mode``, ``synchronous`` and ``locking_mode`` are set
    as given (a private scratch file needs no journal), else left as the file has them, with ``synchronous =
    NORMAL`` in WAL mode. Unless ``journal_mode='WAL'`` is asked for, nothing here makes a database WAL (a storage
    becomes WAL in ``Session``; an archive's database must never be).
    """
    check_sqlite_version()
    for name, value in (('journal_mode', journal_mode), ('synchronous', synchronous), ('locking_mode', locking_mode)):
        if value is not None and value not in _PRAGMA_VALUES[name]:
            raise ValueError(f'{name} must be one of {sorted(_PRAGMA_VALUES[name])}, not {value!r}')
    if read_only and create:
        raise ValueError('a read-only connection cannot create its database')
    if str(path) == ':memory:':
        connection = sqlite3.connect(':memory:', isolation_level=None, check_same_thread=False)
    elif read_only:
        connection = _open_read_only(Path(path))
    else:
        connection = _open_uri(Path(path), f'{sqlite_uri(path)}?mode={"rwc" if create else "rw"}')
    try:
        _set_pragmas(connection, foreign_keys, journal_mode, synchronous, locking_mode)
    except sqlite3.OperationalError as exc:
        connection.close()
        if 'unable to open' not in str(exc) or os.access(Path(path).parent, os.W_OK):
            raise storage_error(exc, None if str(path) == ':memory:' else Path(path)) from exc
        raise UnreachableStorage(
            f'cannot read {str(path)!r} ({exc}): it is on read-only media with changes in {Path(path).name}-wal but no '
            f'{Path(path).name}-shm, which SQLite needs to read them; copy the folder to writable media and open the '
            'copy'
        ) from exc
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise storage_error(exc, None if str(path) == ':memory:' else Path(path)) from exc
    _register_functions(connection)
    return connection


def _register_functions(connection: sqlite3.Connection) -> None:
    """Every SQL function the query compiler emits, on every connection (so no caller probes for one)."""
    connection.create_function('json_contains', 2, json_contains, deterministic=True)
    connection.create_function('sqlitedos_json_equal', 2, json_equal, deterministic=True)


def _open_uri(path: Path, uri: str) -> _Connection:
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, factory=_Connection)
    except sqlite3.OperationalError as exc:
        raise storage_error(exc, path) from exc


class _Connection(sqlite3.Connection):
    """A connection that, once closed, lets go of the ``_Keeper`` of its database (``_open_read_only``)."""

    _keeper: _Keeper | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            keeper, self._keeper = self._keeper, None
            if keeper is not None:
                keeper.release()


#: The header bytes 18 and 19 of a WAL database are 2 (1 in rollback-journal mode).
#: https://www.sqlite.org/fileformat.html
WAL_HEADER_OFFSET = 18
WAL_HEADER_VERSION = 2
#: ``FS_IOC_GETFLAGS`` and ``FS_IMMUTABLE_FL`` (``chattr +i``) from ``linux/fs.h``.
FS_IOC_GETFLAGS = 0x80086601
FS_IMMUTABLE_FL = 0x00000010


#: The files read immutable on a read-only bind mount that this process has warned about.
_WARNED: set[str] = set()


def _open_read_only(path: Path) -> _Connection:
    """A ``mode=ro`` connection to ``path`` that leaves no trace in its folder.

    SQLite reads a WAL database through its ``-wal`` and ``-shm`` files; a read-only connection creates them when
    they are missing and cannot delete them afterwards (https://www.sqlite.org/wal.html#readonly). So:

    - a rollback-journal database (aiida leaves ``database.sqlite`` so), or a WAL one whose ``-wal`` exists (another
      connection is using it), opens with ``mode=ro``, which creates nothing;
    - a WAL database that nobody can change (a read-only file system, ``chattr +i``) and whose ``-wal`` is missing
      or holds no frame opens with ``immutable=1``: SQLite then needs no ``-shm`` and takes no locks, which is safe
      only because no process can write the file (https://www.sqlite.org/uri.html#uriimmutable). A read-only
      *bind* mount of a writable file system is treated the same, since SQLite has no other way to read there,
      with a warning: another mount may still write the file. With frames in the ``-wal`` it opens ``mode=ro``,
      which needs the ``-shm`` too (``connect`` explains when it is missing);
    - a WAL database without ``-wal`` on writable media may be written by another process while we read, so
      ``immutable`` would be unsafe there: a ``_Keeper`` (a read-write ``query_only`` connection) makes the
      ``-wal``/``-shm`` first, the ``mode=ro`` connections of this process share them and still take SQLite's
      locks, and when the last of them closes the keeper, the last connection, has SQLite delete the files and
      the folder's mtime is set back: the folder is left byte- and mtime-identical;
    - otherwise (a folder this process cannot write, on media others can) ``UnreachableStorage``.
    """
    absolute = path.absolute()
    uri = f'{sqlite_uri(absolute)}?mode=ro'
    with _Keeper.lock:
        keeper = _Keeper.registry.get(str(absolute))
        if keeper is None:
            wal = Path(f'{absolute}-wal')
            if not _is_wal(absolute) or (wal.exists() and not _cannot_change(absolute)):
                return _open_uri(path, uri)
            reason = _cannot_change(absolute)
            if reason is not None:
                if reason == 'read-only mount' and _no_frames(wal) and str(absolute) not in _WARNED:
                    _WARNED.add(str(absolute))
                    import logging  # only for this warning: opening a storage imports no logging

                    logging.getLogger(__name__).warning(
                        '%s is on a read-only mount of a writable file system: it is read as immutable, so writes '
                        'made meanwhile through another mount are not seen (and may give wrong results); close '
                        'the writers, or read a copy',
                        path,
                    )
                return _open_uri(path, uri + '&immutable=1' if _no_frames(wal) else uri)
            if not (os.access(absolute.parent, os.W_OK) and os.access(absolute, os.W_OK)):
                raise UnreachableStorage(
                    f'cannot read {str(path)!r} read-only: it is a WAL database without its {path.name}-wal/-shm '
                    'files, in a folder this process cannot write on media others can, and SQLite must create those '
                    'files to read it safely; run as a user who can write the folder, or read it from a read-only '
                    'mount or a copy'
                )
            keeper = _Keeper.start(absolute)
        keeper.users += 1
    try:
        connection = _open_uri(path, uri)
    except BaseException:
        keeper.release()
        raise
    connection._keeper = keeper
    return connection


class _Keeper:
    """The read-write ``query_only`` connection that holds a WAL database's ``-wal``/``-shm`` for this process's
    read-only connections to it, and the folder's state before it made them.

    When the last read-only connection closes, the keeper closes too; as the last connection SQLite then deletes the
    two files. If the folder then holds the same entries as before, its recorded times are set back; if anything
    else appeared or went meanwhile the folder did change, and its mtime is left alone.
    """

    registry: ClassVar[dict[str, _Keeper]] = {}
    lock = threading.Lock()

    def __init__(self, path: Path, connection: sqlite3.Connection, entries: list[str], times: tuple[int, int]) -> None:
        self.path = path
        self.connection = connection
        self.entries = entries
        self.times = times
        self.users = 0

    @classmethod
    def start(cls, path: Path) -> _Keeper:
        """Record the folder, open the keeper connection and register it (the caller holds ``lock``)."""
        entries = sorted(os.listdir(path.parent))
        status = os.stat(path.parent)
        connection = _open_uri(path, f'{sqlite_uri(path)}?mode=rw')
        try:
            connection.execute('PRAGMA query_only = ON')
            connection.execute('SELECT count(*) FROM sqlite_master').fetchone()  # opens the WAL: makes -wal, -shm
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise storage_error(exc, path) from exc  # a full disk here is not damage (making -wal/-shm)
        keeper = cls.registry[str(path)] = cls(path, connection, entries, (status.st_atime_ns, status.st_mtime_ns))
        return keeper

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users:
                return
            del self.registry[str(self.path)]
            self.connection.close()
            folder = self.path.parent
            with contextlib.suppress(OSError):
                if sorted(os.listdir(folder)) == self.entries and os.stat(folder).st_mtime_ns != self.times[1]:
                    os.utime(folder, ns=self.times)


#: A WAL file starts with a 32-byte header; each frame adds a 24-byte frame header and a page.
#: https://www.sqlite.org/walformat.html
WAL_HEADER_SIZE = 32


def _no_frames(wal: Path) -> bool:
    """Whether the ``-wal`` file is missing or holds no frame (so the database file alone is the whole database)."""
    try:
        return wal.stat().st_size <= WAL_HEADER_SIZE
    except FileNotFoundError:
        return True


def _is_wal(path: Path) -> bool:
    try:
        with open(path, 'rb') as handle:
            header = handle.read(WAL_HEADER_OFFSET + 2)
    except OSError:
        return False  # SQLite reports it when it opens the file
    return header[WAL_HEADER_OFFSET : WAL_HEADER_OFFSET + 2] == bytes([WAL_HEADER_VERSION] * 2)


def _cannot_change(path: Path) -> str | None:
    """Why no process can write ``path`` (an immutable file, a read-only file system or mount), or None."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return 'read-only mount' if _superblock_writable(path) else 'read-only file system'
    except OSError:
        return None
    try:
        import fcntl

        descriptor = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        flags = int.from_bytes(fcntl.ioctl(descriptor, FS_IOC_GETFLAGS, bytes(8))[:4], sys.byteorder)
    except OSError:  # a file system without inode flags
        return None
    finally:
        os.close(descriptor)
    return 'immutable file' if flags & FS_IMMUTABLE_FL else None


def _superblock_writable(path: Path) -> bool:
    """Whether the file system of ``path`` is itself writable (``rw`` in its super options), so that a read-only
    bind mount of it can still be written through another mount.

    https://man7.org/linux/man-pages/man5/proc_pid_mountinfo.5.html
    """
    device = os.stat(path).st_dev
    wanted = f'{os.major(device)}:{os.minor(device)}'
    try:
        lines = Path('/proc/self/mountinfo').read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[2] == wanted and ' - ' in line:
            super_options = line.split(' - ', 1)[1].split()[-1].split(',')
            return 'rw' in super_options
    return False


def _set_pragmas(
    connection: sqlite3.Connection,
    foreign_keys: bool = True,
    journal_mode: str | None = None,
    synchronous: str | None = None,
    locking_mode: str | None = None,
) -> None:
    """Set the pragmas of a new connection; the three texts were checked against ``_PRAGMA_VALUES`` by ``connect``."""
    # foreign_keys is silently ignored inside a transaction, so it must be set first.
    # https://www.sqlite.org/pragma.html#pragma_foreign_keys
    if foreign_keys:
        connection.execute('PRAGMA foreign_keys = ON')
    connection.execute(f'PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}')
    # aiida's LIKE is case-sensitive; it also lets SQLite use the BINARY index of node_type for prefix LIKE.
    connection.execute('PRAGMA case_sensitive_like = ON')
    if sys.version_info >= (3, 12):
        # Double-quoted strings are identifiers only: a typo in a column name fails instead of matching a string.
        connection.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DML, False)  # type: ignore[attr-defined]
        connection.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DDL, False)  # type: ignore[attr-defined]
    if journal_mode is not None:
        connection.execute(f'PRAGMA journal_mode = {journal_mode}')  # a checked name (connect)
    (mode,) = connection.execute('PRAGMA main.journal_mode').fetchone()
    if synchronous is not None:
        connection.execute(f'PRAGMA synchronous = {synchronous}')  # a checked name (connect)
    elif mode == 'wal':
        # In WAL mode NORMAL is durable against process crashes; only an OS crash may lose the last commits.
        connection.execute('PRAGMA main.synchronous = NORMAL')
    if locking_mode is not None:
        connection.execute(f'PRAGMA locking_mode = {locking_mode}')  # a checked name (connect)


def _main_database_path(connection: sqlite3.Connection) -> Path | None:
    """The file of the connection's ``main`` database (None in memory), so that errors can name it."""
    try:
        rows = connection.execute('PRAGMA database_list').fetchall()
    except sqlite3.Error:
        return None
    return next((Path(file) for _, name, file in rows if name == 'main' and file), None)


def json_contains(container_text: SQLValue, contained_text: SQLValue) -> int | None:
    """SQL function ``json_contains(a, b)``: 1 if JSON ``a`` contains JSON ``b`` (PostgreSQL's ``@>``), else 0."""
    if container_text is None or contained_text is None:
        return None
    try:
        return int(_contains(decode_json(container_text), decode_json(contained_text)))
    except (TypeError, ValueError):
        return 0


def json_equal(left_text: SQLValue, right_text: SQLValue) -> int | None:
    """SQL function ``sqlitedos_json_equal(a, b)``: 1 if JSON texts ``a`` and ``b`` are equal as JSON values (key
    order and spacing ignored, ``true`` distinct from ``1``), 0 if not, NULL if either is NULL."""
    if left_text is None or right_text is None:
        return None
    try:
        return int(json_values_equal(decode_json(left_text), decode_json(right_text)))
    except ValueError:
        return 0


def json_values_equal(stored: Any, value: Any) -> bool:
    """JSON equality of decoded values: booleans only equal booleans, numbers compare numerically, objects ignore key
    order; a tuple counts as an array."""
    if isinstance(stored, bool) or isinstance(value, bool):
        return isinstance(stored, bool) and isinstance(value, bool) and stored is value
    if isinstance(stored, dict) and isinstance(value, dict):
        return stored.keys() == value.keys() and all(json_values_equal(stored[k], value[k]) for k in stored)
    if isinstance(stored, list) and isinstance(value, (list, tuple)):
        return len(stored) == len(value) and all(json_values_equal(a, b) for a, b in zip(stored, value))
    if isinstance(stored, (dict, list)) or isinstance(value, (dict, list, tuple)):
        return False
    if isinstance(stored, (int, float)) != isinstance(value, (int, float)):
        return False
    return bool(stored == value)


def _contains(container: Any, contained: Any, top: bool = True) -> bool:
    """PostgreSQL's jsonb ``@>``: structures must match, except that a top-level array contains a primitive value
    that is one of its elements (``[1, 2] @> 1``); below the top a primitive matches only a primitive, so
    ``[[1, 0], [0, 2]] @> [2]`` is false (https://www.postgresql.org/docs/current/datatype-json.html)."""
    if isinstance(container, dict):
        return isinstance(contained, dict) and all(
            key in container and _contains(container[key], value, False) for key, value in contained.items()
        )
    if isinstance(container, list):
        if not isinstance(contained, list):
            return top and not isinstance(contained, dict) and any(_same_scalar(item, contained) for item in container)
        return all(any(_contains(item, wanted, False) for item in container) for wanted in contained)
    return _same_scalar(container, contained)


def _same_scalar(left: Any, right: Any) -> bool:
    if isinstance(left, (dict, list)) or isinstance(right, (dict, list)):
        return False
    if isinstance(left, bool) or isinstance(right, bool):
        # JSON true is not the number 1, although Python says True == 1.
        return left is right
    return left == right


# --- errors -------------------------------------------------------------------------------------------------------


#: SQLite's primary result codes (the low byte of an extended code). https://www.sqlite.org/rescode.html
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT = 3, 5, 6, 8, 10, 11
SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_TOOBIG, SQLITE_NOTADB = 13, 14, 18, 26
#: Python < 3.11 has no ``sqlite_errorcode``: the primary code from SQLite's fixed English message instead
#: (``sqlite3_errstr``, https://www.sqlite.org/c3ref/errcode.html).
_CODE_BY_MESSAGE = (
    ('database or disk is full', SQLITE_FULL),
    ('disk I/O error', SQLITE_IOERR),
    ('readonly', SQLITE_READONLY),
    ('read-only', SQLITE_READONLY),
    ('database is locked', SQLITE_BUSY),
    ('database table is locked', SQLITE_LOCKED),
    ('database disk image is malformed', SQLITE_CORRUPT),
    ('file is not a database', SQLITE_NOTADB),
    ('unable to open database file', SQLITE_CANTOPEN),
    ('access permission denied', SQLITE_PERM),
)
#: Below this many free bytes on its file system, an I/O error of a database is taken to be a full disk: SQLite
#: reports ENOSPC as SQLITE_FULL only from write(); from fsync, the WAL index or a journal it says "disk I/O error".
NEARLY_FULL_BYTES = 1024 * 1024
#: The first 16 bytes of every SQLite database file. https://www.sqlite.org/fileformat.html#the_database_header
SQLITE_MAGIC = b'SQLite format 3\x00'
#: The database file of the transaction running in this context, so that errors raised by statements can name it.
_CURRENT_DATABASE: contextvars.ContextVar[Path | None] = contextvars.ContextVar('sqlitedos_database', default=None)


def sqlite_primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``exc``: from ``sqlite_errorcode`` (3.11+) or, failing that, its message."""
    code = getattr(exc, 'sqlite_errorcode', None)
    if isinstance(code, int):
        return code & 0xFF
    message = str(exc)
    return next((code for text, code in _CODE_BY_MESSAGE if text in message), None)


def _is_full(path: Path | None) -> bool:
    folder = path.parent if path is not None else None
    if folder is None:
        return False
    try:
        import shutil  # only after an error: shutil imports bz2 and lzma

        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def _open_errno(path: Path) -> int | None:
    """The errno of opening ``path`` for reading and writing ourselves (SQLite does not report it), or None."""
    try:
        descriptor = os.open(path, os.O_RDWR if os.access(path.parent, os.W_OK) else os.O_RDONLY)
    except OSError as exc:
        return exc.errno
    os.close(descriptor)
    return None


def _has_sqlite_header(path: Path) -> bool | None:
    """Whether ``path`` starts with SQLite's magic bytes; None if it cannot be read (not a question of its bytes)."""
    try:
        with open(path, 'rb') as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return None


def storage_error(exc: sqlite3.Error, path: Path | None = None) -> AiidaException | sqlite3.Error:
    """The exception of ``sqlitedos.exceptions`` that says what ``exc`` means for the storage, with a safe remedy.

    ``CorruptStorage`` only when the bytes are wrong (SQLITE_CORRUPT, or SQLITE_NOTADB on a file that does not start
    like a SQLite database); a full disk, an I/O error, a refused permission, read-only media and a lock held too
    long each get their own class. An error that says nothing about the storage (a SQL mistake) is returned as is.
    """
    path = path if path is not None else _CURRENT_DATABASE.get()
    where = repr(str(path)) if path is not None else 'the database'
    code = sqlite_primary_code(exc)
    if code == SQLITE_CANTOPEN and path is not None:
        code = _cantopen_code(path)
        if code is None:
            return UnreachableStorage(f'cannot open the database {where}: {exc}; check that the folder exists')
    if code == SQLITE_NOTADB and path is not None and _has_sqlite_header(path) is not False:
        code = SQLITE_IOERR  # a SQLite file that could not be read as one: a read error, not damage
    if code in (SQLITE_IOERR, SQLITE_FULL) and (code == SQLITE_FULL or _is_full(path)):
        return StorageFullError(
            f'the disk holding {where} is full ({exc}): free some space and retry; nothing committed was lost and the '
            'storage needs no repair'
        )
    if code == SQLITE_IOERR:
        return StorageIOError(
            f'an I/O error occurred on {where} ({exc}): check the disk and free space (`dmesg`, `df`) and retry; the '
            'data was not found damaged, so do not restore a backup unless `sqlitedos verify` reports damage'
        )
    if code == SQLITE_PERM:
        return StoragePermissionError(
            f'access to {where} was refused ({exc}): check the owner and mode of the storage folder and its files'
        )
    if code == SQLITE_READONLY:
        return ReadOnlyError(
            f'the storage is read-only: {exc} ({where}); open it on writable media or as a user who may write it'
        )
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return StorageBusyError(
            f'{where} stayed locked by another process for more than {BUSY_TIMEOUT_MS // 1000} s ({exc}): retry when '
            'it has finished'
        )
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return CorruptStorage(f'{where} is damaged ({exc}): run `sqlitedos verify` on it, or restore it from a backup')
    return exc


def _cantopen_code(path: Path) -> int | None:
    """SQLITE_CANTOPEN refined by the errno of opening the file ourselves; None for a missing file."""
    number = _open_errno(path)
    if number in (errno.EACCES, errno.EPERM):
        return SQLITE_PERM
    if number == errno.EROFS:
        return SQLITE_READONLY
    if number == errno.ENOSPC:
        return SQLITE_FULL
    if number in (errno.ENOENT, errno.ENOTDIR):
        return None
    return SQLITE_IOERR


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Map ``sqlite3`` errors raised inside the block onto the exceptions of ``sqlitedos.exceptions``."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(f'the write breaks an integrity rule of the storage: {exc}') from exc
    except sqlite3.DataError as exc:
        # SQLITE_TOOBIG: a value longer than SQLITE_MAX_LENGTH (1e9 bytes by default); the database itself is fine.
        # https://www.sqlite.org/limits.html#max_length
        raise ValidationError(
            f'a value is too big for the database ({exc}): store large data as a file instead'
        ) from exc
    except sqlite3.ProgrammingError:
        raise  # a closed connection, a wrong number of parameters: a mistake of the caller
    except sqlite3.DatabaseError as exc:
        translated = storage_error(exc)
        if translated is exc and not isinstance(exc, sqlite3.OperationalError):
            translated = CorruptStorage(f'the database is damaged: {exc}; run `sqlitedos verify` or restore a backup')
        if translated is exc:
            raise
        raise translated from exc


# --- sessions and transactions ------------------------------------------------------------------------------------


class RollbackAware(Protocol):
    """Something written in a transaction that must forget it if the transaction does not commit."""

    def _rolled_back(self) -> None: ...


class Session:
    """A connection plus its transaction state: the depth of nested ``transaction()`` blocks.

    At depth 0 ``transaction()`` opens a real transaction (``BEGIN IMMEDIATE`` by default, so a writer takes the
    write lock up front and never fails half way with SQLITE_BUSY); nested blocks are ``SAVEPOINT``s. A block that
    raises is rolled back to where it started and the exception propagates; the enclosing blocks carry on.
    Objects given to ``on_rollback`` (entities) undo their in-memory state (a new pk) when their block is rolled back
    or its final ``COMMIT`` fails, so that nothing in memory claims rows the database does not have.
    """

    #: The write transactions open in this process, by database file (device, inode): (thread id, session).
    _writers: ClassVar[dict[tuple[int, int], tuple[int, Session]]] = {}
    _writers_lock = threading.Lock()

    def __init__(self, connection: sqlite3.Connection, *, file_backed: bool, read_only: bool = False) -> None:
        self.connection = connection
        self.read_only = read_only
        self.file_backed = file_backed
        self.depth = 0
        self.wrote = False
        self._wal_checked = not file_backed or read_only
        self._identity: tuple[int, int] | None = None
        self.path = _main_database_path(connection) if file_backed else None
        self._undo: list[list[RollbackAware]] = []

    def on_rollback(self, written: RollbackAware) -> None:
        """Call ``written._rolled_back()`` if the innermost open block is rolled back or never commits (no-op
        outside one). An object, not a new callable: thousands of stores in one transaction would otherwise keep
        thousands of fresh objects alive for the garbage collector to scan (measured: 15% of a store's time)."""
        if self._undo:
            self._undo[-1].append(written)

    @staticmethod
    def _run_undo(level: list[RollbackAware]) -> None:
        for written in reversed(level):
            written._rolled_back()

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
        token = _CURRENT_DATABASE.set(self.path)
        try:
            yield from self._outer_block(mode)
        finally:
            _CURRENT_DATABASE.reset(token)

    def _outer_block(self, mode: str) -> Iterator[sqlite3.Connection]:
        identity = None
        if mode != 'DEFERRED':  # a read never changes the file, not even its journal mode
            identity = self._file_identity()
            self._check_no_writer_in_this_thread(identity)
            self._switch_to_wal()
        with translate_errors():
            self.connection.execute(f'BEGIN {mode}')
        if identity is not None:  # BEGIN IMMEDIATE holds the file's write lock: no other writer is registered
            with self._writers_lock:
                self._writers[identity] = (threading.get_ident(), self)
        try:
            yield from self._inside(mode)
        finally:
            if identity is not None:
                with self._writers_lock:
                    if self._writers.get(identity, (0, None))[1] is self:
                        del self._writers[identity]

    def _check_no_writer_in_this_thread(self, identity: tuple[int, int] | None) -> None:
        """Refuse at once a write that would wait for ever for a write transaction of this same thread.

        A second connection to the same file (another storage object on the same folder) that starts a write while
        this thread holds a write transaction on the first would wait for the first to commit, which cannot happen
        while this thread waits: SQLite would block for ``BUSY_TIMEOUT_MS`` and then fail. Writes from other threads
        wait for their turn as usual.
        """
        with self._writers_lock:
            holder = self._writers.get(identity) if identity is not None else None
        if holder is not None and holder[0] == threading.get_ident() and holder[1] is not self:
            raise InvalidOperation(
                'another storage object on the same database file has a write transaction open in this thread, so '
                'this write would wait for it for ever: write through that storage object, or finish its '
                '`transaction()` block first'
            )

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the main database file, or None for an in-memory database."""
        if self._identity is None and self.file_backed:
            row = self.connection.execute('PRAGMA database_list').fetchone()
            if row is not None and row[2]:
                with contextlib.suppress(OSError):
                    status = os.stat(row[2])
                    self._identity = (status.st_dev, status.st_ino)
        return self._identity

    def _inside(self, mode: str) -> Iterator[sqlite3.Connection]:
        self.depth = 1
        self._undo = [[]]
        try:
            yield self.connection
        except BaseException as exc:
            self.depth = 0
            with contextlib.suppress(sqlite3.Error):
                self.connection.execute('ROLLBACK')
            self._run_undo(self._undo.pop())
            if self.read_only and isinstance(exc, sqlite3.OperationalError) and 'readonly' in str(exc):
                raise ReadOnlyError(
                    'the storage is opened read-only (asked for, or its folder is not writable), so it cannot be '
                    f'changed: {exc}'
                ) from exc
            raise
        self.depth = 0
        try:
            with translate_errors():
                self.connection.execute('COMMIT')
        except BaseException:
            if self.connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.connection.execute('ROLLBACK')
            self._run_undo(self._undo.pop())
            raise
        self._undo.clear()
        if mode != 'DEFERRED':
            self.wrote = True

    def _execute(self, sql: str) -> None:
        """Run a transaction-control statement; a failure is translated (``translate_errors`` costs only then)."""
        try:
            self.connection.execute(sql)
        except sqlite3.Error:
            self._translate()

    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        name = f'sp_{self.depth}'
        connection, undo = self.connection, self._undo
        try:
            connection.execute(f'SAVEPOINT {name}')
        except sqlite3.Error:
            self._translate()
        self.depth += 1
        undo.append([])
        try:
            yield connection
        except BaseException:
            self.depth -= 1
            self._run_undo(undo.pop())
            self._execute(f'ROLLBACK TO {name}')
            self._execute(f'RELEASE {name}')
            raise
        self.depth -= 1
        level = undo.pop()
        if level:
            undo[-1].extend(level)  # the enclosing block now decides whether these rows stay
        try:
            connection.execute(f'RELEASE {name}')
        except sqlite3.Error:
            self._translate()

    @staticmethod
    def _translate() -> None:
        """Re-raise the ``sqlite3`` error being handled as the exception ``translate_errors`` makes of it."""
        with translate_errors():
            raise

    def _switch_to_wal(self) -> None:
        """Switch a file database to WAL on its first write (persistent; aiida reads WAL databases fine)."""
        if self._wal_checked:
            return
        self._wal_checked = True
        try:
            # Qualified with ``main``: an unqualified journal_mode pragma applies to every attached database too,
            # which would turn an attached archive database into WAL (https://www.sqlite.org/pragma.html#syntax).
            (mode,) = self.connection.execute('PRAGMA main.journal_mode').fetchone()
            if mode != 'wal':
                (mode,) = self.connection.execute('PRAGMA main.journal_mode = WAL').fetchone()
            if mode == 'wal':
                self.connection.execute('PRAGMA main.synchronous = NORMAL')
        except sqlite3.OperationalError:
            # Another process holds the database open in a way that prevents the switch: stay in the current mode.
            pass
