"""Transient conditions are not corruption: a full disk, an I/O error, a refused permission, read-only media and a
lock held too long each raise their own exception with a safe remedy, the data stays intact, and a failed store
leaves its objects unstored and retryable.

Faults are real: a small tmpfs that fills up, and ``strace -e inject=...`` on a child process, restricted with
``-P`` to the storage's database files so that nothing else of the child is disturbed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import reliability_workers as workers
from click.testing import CliRunner
from mounts import small_tmpfs

from sqlitedos import SqliteDosStorage
from sqlitedos.cli import cli
from sqlitedos.db import SQLITE_MAGIC, connect, storage_error
from sqlitedos.exceptions import (
    CorruptStorage,
    IntegrityError,
    LockedProfileError,
    ReadOnlyError,
    StorageBusyError,
    StorageFullError,
    StorageIOError,
    StoragePermissionError,
    UnreachableStorage,
)
from sqlitedos.verify import verify

WORKER = Path(__file__).parent / 'errors_worker.py'
STRACE = shutil.which('strace')
needs_strace = pytest.mark.skipif(STRACE is None, reason='strace is not installed: apt-get install strace')


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[str]]:
    """A closed storage folder holding three pairs."""
    root = tmp_path / 'storage'
    profile = SqliteDosStorage.create_profile('e', filepath=root, default_user_email=workers.EMAIL)
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        uuids = [workers.store_pair(storage, str(index)) for index in range(3)]
    return root, uuids


def assert_intact(root: Path, uuids: list[str]) -> None:
    """Exactly these pairs are stored, whole (links, files), and ``verify`` finds nothing wrong."""
    with workers.open_storage(str(root)) as storage:
        for uuid in uuids:
            assert workers.check_data_node(storage, uuid) == []
        assert workers.half_pairs(storage) == (0, 0)
        stored = storage.get_session().execute(
            'SELECT uuid FROM db_dbnode WHERE label = ? ORDER BY id', (workers.DATA_LABEL,)
        )
        assert sorted(uuid for (uuid,) in stored) == sorted(uuids)
    report = verify(root)
    assert report.ok, report


def run_injected(root: Path, target: str, inject: str) -> dict[str, Any]:
    """Run the worker on ``root`` with ``inject`` applied to the syscalls on ``root/target``; its JSON report."""
    command = [STRACE, '-f', '-qq', '-o', os.devnull, '-P', str(root / target), '-e', f'inject={inject}']
    process = subprocess.run(
        [*command, sys.executable, str(WORKER), str(root)], capture_output=True, text=True, timeout=300
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith('RESULT ')]
    assert lines, (process.stdout, process.stderr)
    return json.loads(lines[-1][len('RESULT ') :])


#: (file, injected fault, the exception class the worker must see, where it fails)
STORE_FAULTS = {
    'wal-write-eio': ('database.sqlite-wal', 'pwrite64:error=EIO:when=3', 'StorageIOError'),
    'wal-write-enospc': ('database.sqlite-wal', 'pwrite64:error=ENOSPC:when=3', 'StorageFullError'),
    'wal-fdatasync-eio': ('database.sqlite-wal', 'fdatasync:error=EIO:when=1', 'StorageIOError'),
    # SQLite reports no errno for a failed fsync, and the disk is not full: an I/O error is all that can be said.
    'wal-fdatasync-enospc': ('database.sqlite-wal', 'fdatasync:error=ENOSPC:when=1', 'StorageIOError'),
}
OPEN_FAULTS = {
    'open-eacces': ('database.sqlite', 'openat:error=EACCES', 'StoragePermissionError'),
    'open-eperm': ('database.sqlite', 'openat:error=EPERM', 'StoragePermissionError'),
    'read-eio': ('database.sqlite', 'pread64:error=EIO:when=2', 'StorageIOError'),
    'container-config-read-eio': ('container/config.json', 'read:error=EIO', 'StorageIOError'),
    'container-config-eacces': ('container/config.json', 'openat:error=EACCES', 'StoragePermissionError'),
}


@needs_strace
@pytest.mark.parametrize('case', sorted(STORE_FAULTS))
def test_fault_during_a_store_is_named_and_the_store_can_be_retried(filled: tuple[Path, list[str]], case: str) -> None:
    root, uuids = filled
    target, inject, expected = STORE_FAULTS[case]
    result = run_injected(root, target, inject)
    assert result['error'] == expected, result
    assert 'restore' not in result['message'] or 'do not restore' in result['message'], result
    # The failed transaction left both node objects unstored, and storing the same objects again worked.
    assert result['stored_after_failure'] == [False, False], result
    assert result.get('retried') is True and result['stored'] == [True, True], result
    assert_intact(root, [*uuids, result['uuid']])


@needs_strace
@pytest.mark.parametrize('case', sorted(OPEN_FAULTS))
def test_fault_while_opening_is_named_and_nothing_changes(filled: tuple[Path, list[str]], case: str) -> None:
    root, uuids = filled
    target, inject, expected = OPEN_FAULTS[case]
    result = run_injected(root, target, inject)
    assert (result['error'], result['stage']) == (expected, 'open'), result
    assert_intact(root, uuids)


@needs_strace
def test_read_only_reopen_refuses_writes_with_read_only_error(filled: tuple[Path, list[str]]) -> None:
    """EROFS on the read-write open: SQLite falls back to a read-only open, and the write says read-only."""
    root, uuids = filled
    result = run_injected(root, 'database.sqlite', 'openat:error=EROFS:when=1')
    assert (result['error'], result['stage']) == ('ReadOnlyError', 'store'), result
    assert result['stored_after_failure'] == [False, False]
    assert_intact(root, uuids)


# --- a real disk that fills up --------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs mounted inside the test's temporary folder, unmounted afterwards."""
    with small_tmpfs(tmp_path / 'disk', '8m') as mount:
        yield mount


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; return it."""
    filler = folder / 'filler'
    with open(filler, 'wb') as handle:
        try:
            while True:
                handle.write(b'\0' * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_full_disk_is_not_called_corruption(small_disk: Path) -> None:
    root = small_disk / 'storage'
    profile = SqliteDosStorage.create_profile('e', filepath=root, default_user_email=workers.EMAIL)
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        uuids = [workers.store_pair(storage, str(index)) for index in range(3)]
    filler = fill(small_disk)
    for command in (['info', root], ['verify', root], ['query', root]):
        result = CliRunner().invoke(cli, [str(part) for part in command])
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('Error: the disk holding'), result.stderr
        assert 'is full' in lines[0] and 'restore it from a backup' not in lines[0]
    with pytest.raises(StorageFullError, match='free some space'):
        with workers.open_storage(str(root)) as storage:
            storage.nodes.count()
    filler.unlink()
    assert_intact(root, uuids)


def test_disk_filling_during_a_store_leaves_the_node_retryable(small_disk: Path) -> None:
    root = small_disk / 'storage'
    profile = SqliteDosStorage.create_profile('e', filepath=root, default_user_email=workers.EMAIL)
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        uuids = [workers.store_pair(storage, str(index)) for index in range(3)]
        node = storage.nodes.create(node_type=workers.DATA_TYPE, user=storage.default_user, label='big')
        node.set_attribute('text', 'x' * 3_000_000)
        filler = fill(small_disk)
        with pytest.raises(StorageFullError):
            node.store()
        assert not node.is_stored
        filler.unlink()
        node.store()
        assert storage.nodes.get(node.pk).get_attribute('text') == 'x' * 3_000_000
    assert_intact(root, uuids)


# --- locks, and the classification itself --------------------------------------------------------------------------


def test_lock_held_past_the_timeout_is_busy_not_corrupt(filled: tuple[Path, list[str]]) -> None:
    root, uuids = filled
    other = sqlite3.connect(root / 'database.sqlite', isolation_level=None)
    other.execute('BEGIN IMMEDIATE')
    try:
        with workers.open_storage(str(root)) as storage:
            storage.get_session().execute('PRAGMA busy_timeout = 50')
            node = storage.nodes.create(node_type=workers.DATA_TYPE, user=storage.default_user, label='late')
            with pytest.raises(StorageBusyError, match='retry') as info:
                node.store()
            assert isinstance(info.value, LockedProfileError)
            assert not node.is_stored
            other.execute('ROLLBACK')
            node.store()
            assert storage.nodes.get(node.pk).label == 'late'
    finally:
        other.close()
    assert_intact(root, uuids)


@pytest.mark.parametrize(
    ('message', 'expected'),
    [
        ('database or disk is full', StorageFullError),
        ('disk I/O error', StorageIOError),
        ('attempt to write a readonly database', ReadOnlyError),
        ('database is locked', StorageBusyError),
        ('database disk image is malformed', CorruptStorage),
        ('access permission denied', StoragePermissionError),
    ],
)
def test_classification_without_error_codes(message: str, expected: type) -> None:
    """Python 3.10's sqlite3 errors carry no ``sqlite_errorcode``: the message decides."""
    exc = sqlite3.OperationalError(message)
    assert not hasattr(exc, 'sqlite_errorcode')
    assert type(storage_error(exc)) is expected


def test_classification_leaves_sql_mistakes_alone() -> None:
    exc = sqlite3.OperationalError('no such table: db_dbnothing')
    assert storage_error(exc) is exc


def test_not_a_database_is_corrupt_only_if_the_bytes_are_wrong(tmp_path: Path) -> None:
    garbage = tmp_path / 'garbage.sqlite'
    garbage.write_bytes(b'not sqlite at all' * 512)
    with pytest.raises(CorruptStorage):
        connect(garbage)
    # SQLITE_NOTADB for a file that starts like SQLite (a read that failed, not wrong bytes): an I/O error.
    lookalike = tmp_path / 'lookalike.sqlite'
    lookalike.write_bytes(SQLITE_MAGIC + b'\0' * 4080)
    assert type(storage_error(sqlite3.DatabaseError('file is not a database'), lookalike)) is StorageIOError
    assert type(storage_error(sqlite3.DatabaseError('file is not a database'), garbage)) is CorruptStorage
    with pytest.raises(UnreachableStorage):
        connect(tmp_path / 'missing' / 'database.sqlite')


# --- a failed store leaves nothing behind in memory ---------------------------------------------------------------


def fail_at_commit(connection: sqlite3.Connection) -> None:
    """Make the enclosing transaction's COMMIT fail: a link to nodes that do not exist, its check deferred."""
    connection.execute('PRAGMA defer_foreign_keys = ON')
    connection.execute("INSERT INTO db_dblink (input_id, output_id, label, type) VALUES (-1, -2, 'x', 'create')")


def test_failed_commit_leaves_entities_unstored_and_retryable(storage: Any) -> None:
    user = storage.default_user if storage.default_user is not None else storage.users.create('u@x.org').store()
    computer = storage.computers.create(label='c', hostname='h', transport_type='t', scheduler_type='s')
    node = storage.nodes.create(node_type='data.core.int.Int.', user=user, label='n')
    node.set_attribute('value', 1.5)
    group = storage.groups.create(label='g', user=user)
    before = storage.nodes.count()
    with pytest.raises(IntegrityError):
        with storage.transaction() as connection:
            computer.store()
            node.store()
            group.store()
            assert node.is_stored and computer.is_stored and group.is_stored
            fail_at_commit(connection)
    assert (node.is_stored, computer.is_stored, group.is_stored) == (False, False, False)
    assert (node.pk, computer.pk, group.pk) == (None, None, None)
    assert storage.nodes.count() == before
    computer.store()
    node.store()
    group.store()
    assert storage.nodes.get(node.pk).get_attribute('value') == 1.5
    assert storage.computers.get(computer.pk).label == 'c'
    assert storage.groups.get(group.pk).label == 'g'


def test_rolled_back_savepoint_unstores_only_its_own_entities(storage: Any) -> None:
    user = storage.default_user if storage.default_user is not None else storage.users.create('u@x.org').store()
    kept = storage.nodes.create(node_type='data.core.int.Int.', user=user, label='kept')
    dropped = storage.nodes.create(node_type='data.core.int.Int.', user=user, label='dropped')
    with storage.transaction():
        kept.store()
        with pytest.raises(ZeroDivisionError):
            with storage.transaction():
                dropped.store()
                1 / 0  # noqa: B018
        assert kept.is_stored and not dropped.is_stored
    assert storage.nodes.get(kept.pk).label == 'kept'
    dropped.store()
    assert storage.nodes.get(dropped.pk).label == 'dropped'
