"""``create_archive``: write a storage's content (or a traversal-closed part of it) as an aiida ``.aiida`` archive.

The rows are copied with ``INSERT ... SELECT`` from the storage's connection into an attached, fresh archive
database (primary keys kept, as aiida does); the repository objects are then streamed into the zip in batches, so
memory does not grow with the number of nodes or files. The zip is written to a temporary file that is moved into
place at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlitedos import migrate
from sqlitedos.archive.format import (
    AIIDA_VERSION,
    ARCHIVE_VERSION,
    ArchiveWriter,
    Progress,
    open_database_readonly,
    report,
    use_rollback_journal,
)
from sqlitedos.archive.repo_access import open_repository, read_objects
from sqlitedos.db import Session, connect, decode_json, encode_json, translate_errors
from sqlitedos.exceptions import ExportValidationError, InvalidOperation
from sqlitedos.graph import TRAVERSE, resolve_rules
from sqlitedos.links import EXPORT_RULES
from sqlitedos.repository.tree import SELECT_REFERENCED_KEYS
from sqlitedos.tables import TABLE_ORDER, TABLES, quote_identifier

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = ('create_archive',)

#: Rows per ``executemany`` and keys per repository read.
BATCH_SIZE = 1000
#: Entity kinds that may start an export, and their tables.
START_TABLES = {'node': 'db_dbnode', 'group': 'db_dbgroup', 'computer': 'db_dbcomputer', 'user': 'db_dbuser'}

#: The hidden work folder of an export, made beside the target (the archive is renamed out of it at the end).
WORKDIR_PREFIX = '.sqlitedos-export-'
#: A work folder without an owner in its name (older sqlitedos) is taken as abandoned after this long untouched.
STALE_WORKDIR_SECONDS = 24 * 3600

ATTACH = 'ATTACH DATABASE ? AS archive'
DETACH = 'DETACH DATABASE archive'
# The archive database is a private temporary file until it is zipped: no journal needed for it.
ARCHIVE_PRAGMAS = ('PRAGMA archive.journal_mode = MEMORY', 'PRAGMA archive.synchronous = OFF')

SELECTION_TABLES = ('x_node', 'x_group', 'x_computer', 'x_user')
CREATE_SELECTION = 'CREATE TEMP TABLE IF NOT EXISTS {name} (id INTEGER PRIMARY KEY)'
DROP_SELECTION = 'DROP TABLE IF EXISTS temp.{name}'

# What goes with the selected nodes and groups (SPEC 6.4 step 1), in this order.
SELECT_ALL = {
    'x_node': 'INSERT INTO x_node SELECT id FROM main.db_dbnode',
    'x_group': 'INSERT INTO x_group SELECT id FROM main.db_dbgroup',
    'x_computer': 'INSERT INTO x_computer SELECT id FROM main.db_dbcomputer',
    'x_user': 'INSERT INTO x_user SELECT id FROM main.db_dbuser',
}
ADD_GROUP_MEMBERS = """
INSERT OR IGNORE INTO x_node SELECT dbnode_id FROM main.db_dbgroup_dbnodes WHERE dbgroup_id IN (SELECT id FROM x_group)
"""
ADD_COMPUTERS = """
INSERT OR IGNORE INTO x_computer
SELECT DISTINCT dbcomputer_id FROM main.db_dbnode
WHERE id IN (SELECT id FROM x_node) AND dbcomputer_id IS NOT NULL
"""
ADD_USERS = (
    'INSERT OR IGNORE INTO x_user SELECT DISTINCT user_id FROM main.db_dbnode WHERE id IN (SELECT id FROM x_node)',
    'INSERT OR IGNORE INTO x_user SELECT DISTINCT user_id FROM main.db_dbgroup WHERE id IN (SELECT id FROM x_group)',
)
ADD_COMMENT_USERS = """
INSERT OR IGNORE INTO x_user SELECT DISTINCT user_id FROM main.db_dbcomment WHERE dbnode_id IN (SELECT id FROM x_node)
"""
ADD_AUTHINFO_USERS = """
INSERT OR IGNORE INTO x_user
SELECT DISTINCT aiidauser_id FROM main.db_dbauthinfo WHERE dbcomputer_id IN (SELECT id FROM x_computer)
"""
UNSEALED_PROCESS = """
SELECT uuid FROM main.db_dbnode
WHERE id IN (SELECT id FROM x_node) AND node_type LIKE 'process.%'
  AND coalesce(json_extract(attributes, '$.sealed'), 0) != 1
LIMIT 1
"""
#: Which rows of each table go into the archive, as a condition on the source table.
ROW_FILTERS = {
    'db_dbuser': 'id IN (SELECT id FROM x_user)',
    'db_dbcomputer': 'id IN (SELECT id FROM x_computer)',
    'db_dbauthinfo': 'dbcomputer_id IN (SELECT id FROM x_computer) AND aiidauser_id IN (SELECT id FROM x_user)',
    'db_dbgroup': 'id IN (SELECT id FROM x_group)',
    'db_dbnode': 'id IN (SELECT id FROM x_node)',
    'db_dbcomment': 'dbnode_id IN (SELECT id FROM x_node) AND user_id IN (SELECT id FROM x_user)',
    'db_dblog': 'dbnode_id IN (SELECT id FROM x_node)',
    'db_dblink': 'input_id IN (SELECT id FROM x_node) AND output_id IN (SELECT id FROM x_node)',
    'db_dbgroup_dbnodes': 'dbgroup_id IN (SELECT id FROM x_group) AND dbnode_id IN (SELECT id FROM x_node)',
}
#: Tables whose archive rows get new ids (aiida's writer inserts them with defaults).
NEW_ID_TABLES = frozenset({'db_dblink', 'db_dbgroup_dbnodes'})
PROCESS_CHECKPOINTS = """
SELECT id, attributes FROM archive.db_dbnode
WHERE node_type LIKE 'process.%' AND json_type(attributes, '$.checkpoints') IS NOT NULL
"""
UPDATE_ATTRIBUTES = 'UPDATE archive.db_dbnode SET attributes = ? WHERE id = ?'
#: Repository keys referenced by the archive's nodes: the ``k`` strings of their ``repository_metadata`` trees.
SELECT_KEYS = SELECT_REFERENCED_KEYS + 'ORDER BY tree.value\n'
COUNT_KEYS = f'SELECT count(*) FROM ({SELECT_REFERENCED_KEYS})'


def create_archive(
    storage: StorageBackend,
    filename: str | os.PathLike[str],
    entities: Iterable[Any] | None = None,
    *,
    include_comments: bool = True,
    include_logs: bool = True,
    include_authinfos: bool = False,
    overwrite: bool = False,
    compression: int = 6,
    test_run: bool = False,
    progress: Progress | None = None,
    strip_checkpoints: bool = True,
    **traversal_rules: bool,
) -> Path:
    """Write an aiida-core compatible archive of ``entities`` (everything if None) to ``filename``; return its path.

    :param entities: backend entities (nodes, groups, computers, users) or ``(entity type, pk)`` pairs with the
        type one of ``'node'``, ``'group'``, ``'computer'``, ``'user'``. The nodes, plus the members of the groups,
        are expanded with aiida's EXPORT traversal rules (``traversal_rules`` toggles them, e.g.
        ``input_calc_forward=True``); then their computers, users, comments, logs (and authinfos) go with them.
    :param test_run: select and check the entities, write nothing.
    :param progress: ``progress(stage, done, total)``.
    """
    target = Path(filename).absolute()
    check_archive_target(target, overwrite)
    if isinstance(compression, bool) or not isinstance(compression, int) or not 0 <= compression <= 9:
        raise ValueError(f'compression must be an integer from 0 to 9, got {compression!r}')
    resolve_rules(EXPORT_RULES, **traversal_rules)  # check the toggles before doing anything
    start = _resolve_entities(storage, entities)
    if storage.in_transaction:
        raise InvalidOperation('create_archive cannot run inside an open transaction: commit it first')
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_workdirs(target.parent)
    with tempfile.TemporaryDirectory(prefix=_workdir_prefix(), dir=target.parent) as workdir:
        database = Path(workdir) / 'db.sqlite3'
        _create_archive_database(database)
        starting_set = _write_rows(
            storage,
            database,
            start,
            include_comments,
            include_logs,
            include_authinfos,
            strip_checkpoints,
            traversal_rules,
            progress,
        )
        if test_run:
            return target
        use_rollback_journal(database)
        partial = Path(workdir) / 'archive.partial'
        writer = ArchiveWriter(partial, compression)
        try:
            writer.start_database(database)
            _write_objects(storage, writer, database, progress)
            report(progress, 'Writing database', 0, 1)
            writer.write_database(database)
            report(progress, 'Writing database', 1, 1)
            writer.write_metadata(
                _metadata(compression, starting_set, include_comments, include_logs, include_authinfos, traversal_rules)
            )
            writer.close()
        except BaseException:
            writer.abort()
            raise
        check_archive_target(target, overwrite)  # again: something may have appeared there meanwhile
        os.replace(partial, target)
    return target


def check_archive_target(target: Path, overwrite: bool) -> None:
    """Refuse an output path that holds anything but a regular file, and a regular file unless ``overwrite``.

    The archive is written beside the target and renamed over it, which would replace a symlink, a FIFO or a
    device node with a regular file instead of writing through it.
    """
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f'{str(target)!r} is a folder: give the path of an archive file')
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in SPECIAL_FILES if test(mode)), 'special file')
        raise FileExistsError(
            f'{str(target)!r} is a {kind}, not a regular file: an archive replaces only a regular file; '
            'choose another path'
        )
    if not overwrite:
        raise FileExistsError(f'the archive {str(target)!r} already exists: pass overwrite=True to replace it')


SPECIAL_FILES = (
    (stat.S_ISLNK, 'symbolic link'),
    (stat.S_ISFIFO, 'FIFO'),
    (stat.S_ISCHR, 'character device'),
    (stat.S_ISBLK, 'block device'),
    (stat.S_ISSOCK, 'socket'),
)


def _workdir_prefix() -> str:
    """``.sqlitedos-export-<host>-<pid>-``: the work folder names its owner, so a later export can tell it is stale."""
    return f'{WORKDIR_PREFIX}{socket.gethostname()}-{os.getpid()}-'


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def remove_stale_workdirs(folder: Path) -> list[Path]:
    """Delete the work folders of exports into ``folder`` that were killed (their process on this host is gone), and
    unowned ones (older naming) untouched for ``STALE_WORKDIR_SECONDS``; return what was deleted."""
    removed = []
    host = socket.gethostname()
    for entry in folder.glob(WORKDIR_PREFIX + '*'):
        try:
            if not entry.is_dir() or entry.is_symlink():
                continue
            owner_host, _, rest = entry.name[len(WORKDIR_PREFIX) :].rpartition('-')[0].rpartition('-')
            if rest.isdigit() and owner_host:
                stale = owner_host == host and not _is_alive(int(rest))
            else:
                stale = time.time() - entry.stat().st_mtime > STALE_WORKDIR_SECONDS
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _resolve_entities(storage: StorageBackend, entities: Iterable[Any] | None) -> dict[str, list[int]] | None:
    """``{kind: [pk, ...]}`` from entities or ``(kind, pk)`` pairs; None for everything."""
    if entities is None:
        return None
    start: dict[str, list[int]] = {kind: [] for kind in START_TABLES}
    by_table = {table: kind for kind, table in START_TABLES.items()}
    for entity in entities:
        if isinstance(entity, tuple) and len(entity) == 2:
            kind, pk = str(getattr(entity[0], 'value', entity[0])), entity[1]
        else:
            table = getattr(getattr(type(entity), 'TABLE', None), 'name', '')
            kind, pk = by_table.get(table, ''), getattr(entity, 'pk', None)
        if kind not in START_TABLES or not isinstance(pk, int):
            raise ExportValidationError(
                f'cannot export {entity!r}: give nodes, groups, computers or users (backend entities, or '
                f'(kind, pk) pairs with kind one of {sorted(START_TABLES)})'
            )
        start[kind].append(pk)
    connection = storage.get_session()
    for kind, pks in start.items():
        table = quote_identifier(START_TABLES[kind])
        for pk in pks:
            if connection.execute(f'SELECT 1 FROM {table} WHERE id = ?', (pk,)).fetchone() is None:
                raise ExportValidationError(f'cannot export {kind} {pk}: it does not exist in {storage}')
    return start


def _create_archive_database(path: Path) -> None:
    path.touch()
    connection = connect(path)
    try:
        with Session(connection, file_backed=False).transaction() as conn:
            migrate.create_schema(conn, until=ARCHIVE_VERSION, version_table=False)
    finally:
        connection.close()


def _write_rows(
    storage: StorageBackend,
    database: Path,
    start: dict[str, list[int]] | None,
    include_comments: bool,
    include_logs: bool,
    include_authinfos: bool,
    strip_checkpoints: bool,
    traversal_rules: dict[str, bool],
    progress: Progress | None,
) -> dict[str, list[str]] | None:
    """Select the rows to export and copy them into the archive database; return the starting set by uuid/email."""
    connection = storage.get_session()
    with translate_errors():
        connection.execute(ATTACH, (str(database),))
    try:
        for pragma in ARCHIVE_PRAGMAS:
            connection.execute(pragma)
        with storage.transaction() as conn, translate_errors():
            for name in SELECTION_TABLES:
                conn.execute(CREATE_SELECTION.format(name=name))
                conn.execute(f'DELETE FROM temp.{name}')
            try:
                report(progress, 'Collecting entities', 0, 1)
                starting_set = _select(conn, start, include_comments, include_authinfos, traversal_rules)
                row = conn.execute(UNSEALED_PROCESS).fetchone()
                if row is not None:
                    raise ExportValidationError(
                        f'the process node {row[0]} is not sealed: only sealed processes can be exported; seal it '
                        'or wait for it to finish'
                    )
                report(progress, 'Collecting entities', 1, 1)
                _copy_rows(conn, include_comments, include_logs, include_authinfos, progress)
                if strip_checkpoints:
                    _strip_checkpoints(conn)
            finally:
                for name in SELECTION_TABLES:
                    conn.execute(DROP_SELECTION.format(name=name))
    finally:
        with contextlib.suppress(sqlite3.Error):
            connection.execute(DETACH)
    return starting_set


def _select(
    conn: sqlite3.Connection,
    start: dict[str, list[int]] | None,
    include_comments: bool,
    include_authinfos: bool,
    traversal_rules: dict[str, bool],
) -> dict[str, list[str]] | None:
    if start is None:
        for sql in SELECT_ALL.values():
            conn.execute(sql)
        return None
    for kind in ('group', 'computer', 'user'):
        conn.executemany(f'INSERT OR IGNORE INTO x_{kind} VALUES (?)', [(pk,) for pk in start[kind]])
    conn.executemany('INSERT OR IGNORE INTO x_node VALUES (?)', [(pk,) for pk in start['node']])
    conn.execute(ADD_GROUP_MEMBERS)
    # graph.py's traversal query with its rule resolution, run straight into the selection table: the reached set
    # stays inside SQLite.
    directions = resolve_rules(EXPORT_RULES, **traversal_rules)
    (seeds,) = conn.execute('SELECT json_group_array(id) FROM x_node').fetchone()
    params = {
        'start': seeds,
        'forward': encode_json(sorted(link_type.value for link_type in directions['forward'])),
        'backward': encode_json(sorted(link_type.value for link_type in directions['backward'])),
    }
    conn.execute('INSERT OR IGNORE INTO x_node ' + TRAVERSE, params)
    conn.execute(ADD_COMPUTERS)
    for sql in ADD_USERS:
        conn.execute(sql)
    if include_comments:
        conn.execute(ADD_COMMENT_USERS)
    if include_authinfos:
        conn.execute(ADD_AUTHINFO_USERS)
    starting_set: dict[str, list[str]] = {}
    for kind, pks in start.items():
        column = 'email' if kind == 'user' else 'uuid'
        table = quote_identifier(START_TABLES[kind])
        values = [conn.execute(f'SELECT {column} FROM main.{table} WHERE id = ?', (pk,)).fetchone()[0] for pk in pks]
        if values:
            starting_set[kind] = values
    return starting_set


def _copy_rows(
    conn: sqlite3.Connection,
    include_comments: bool,
    include_logs: bool,
    include_authinfos: bool,
    progress: Progress | None,
) -> None:
    skipped = {'db_dbcomment'} if not include_comments else set()
    skipped |= {'db_dblog'} if not include_logs else set()
    skipped |= {'db_dbauthinfo'} if not include_authinfos else set()
    tables = [table for table in TABLE_ORDER if table not in skipped]
    for done, name in enumerate(tables):
        report(progress, 'Writing rows', done, len(tables))
        table = TABLES[name]
        columns = [column for column in table.column_names if column != 'id' or name not in NEW_ID_TABLES]
        column_list = ', '.join(quote_identifier(column) for column in columns)
        quoted = quote_identifier(name)
        conn.execute(
            f'INSERT INTO archive.{quoted} ({column_list}) SELECT {column_list} FROM main.{quoted} '
            f'WHERE {ROW_FILTERS[name]} ORDER BY id'
        )
    report(progress, 'Writing rows', len(tables), len(tables))


def _strip_checkpoints(conn: sqlite3.Connection) -> None:
    """Remove the ``checkpoints`` attribute of process nodes in the archive, as aiida's exporter does."""
    updates = []
    for pk, cell in conn.execute(PROCESS_CHECKPOINTS).fetchall():
        attributes = decode_json(cell)
        attributes.pop('checkpoints', None)
        updates.append((encode_json(attributes), pk))
    conn.executemany(UPDATE_ATTRIBUTES, updates)


def _write_objects(storage: StorageBackend, writer: ArchiveWriter, database: Path, progress: Progress | None) -> None:
    """Stream every repository object the archive's nodes reference into ``repo/<key>``, in batches."""
    archive = open_database_readonly(database)
    try:
        (total,) = archive.execute(COUNT_KEYS).fetchone()
        if not total:
            return
        done = 0
        report(progress, 'Writing files', 0, total)
        with open_repository(storage) as repository:
            if getattr(repository, 'key_format', 'sha256') != 'sha256':
                raise NotImplementedError('only repositories with sha256 keys can be exported')
            cursor = archive.execute(SELECT_KEYS)
            while True:
                batch = [key for (key,) in cursor.fetchmany(BATCH_SIZE)]
                if not batch:
                    break
                for key, stream, size in read_objects(repository, batch):
                    writer.write_object(key, stream, size)
                done += len(batch)
                report(progress, 'Writing files', done, total)
    finally:
        archive.close()


def _metadata(
    compression: int,
    starting_set: dict[str, list[str]] | None,
    include_comments: bool,
    include_logs: bool,
    include_authinfos: bool,
    traversal_rules: dict[str, bool],
) -> dict[str, Any]:
    from sqlitedos import __version__

    rules = {name: traversal_rules.get(name, rule.default) for name, rule in EXPORT_RULES.items()}
    return {
        'export_version': ARCHIVE_VERSION,
        'aiida_version': AIIDA_VERSION,
        'key_format': 'sha256',
        'compression': compression,
        'ctime': dt.datetime.now().isoformat(),
        'creation_parameters': {
            'entities_starting_set': starting_set,
            'include_authinfos': include_authinfos,
            'include_comments': include_comments,
            'include_logs': include_logs,
            'graph_traversal_rules': rules,
        },
        'creator': f'sqlitedos {__version__}',
    }
