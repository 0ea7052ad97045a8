"""Read-only media and read-only commands: a real read-only bind mount, ``chattr +i``, a backup on a read-only disk.

Every command that only reads works there and leaves a writable folder byte- and mtime-identical (paths, sizes,
hashes and mtimes of every file and folder); a command that must write says "read-only".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sqlitedos.cli import build_demo_graph, cli
from sqlitedos.db import connect
from sqlitedos.exceptions import ReadOnlyError
from sqlitedos.storage.sqlite_dos import SqliteDosStorage
from tests.conftest import unpack_fixture_profile

EMAIL = 'demo@sqlitedos.org'


def run(*args: Any, exit_code: int = 0) -> Result:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == exit_code, (args, result.output, result.stderr, result.exception)
    return result


def snapshot(root: Path) -> dict[str, tuple[int, int, str | None]]:
    """Every path below and including ``root``: size, mtime (ns) and sha256 (files), folders included."""
    state = {}
    for path in [root, *sorted(root.rglob('*'))]:
        status = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        state[str(path.relative_to(root))] = (status.st_size if digest else 0, status.st_mtime_ns, digest)
    return state


def make_sqlitedos_folder(path: Path) -> Path:
    """A sqlitedos-made folder (WAL database) with packed and loose objects, closed cleanly: no -wal/-shm files."""
    profile = SqliteDosStorage.create_profile('t', filepath=path, default_user_email=EMAIL)
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        build_demo_graph(storage)
    run('maintain', path)
    with SqliteDosStorage(profile) as storage:
        node = storage.nodes.create(node_type='data.core.folder.FolderData.', user=storage.default_user, label='loose')
        node.repository.put_object_from_bytes(b'a loose object\n', 'loose.txt')
        node.store()
    assert not [p for p in path.rglob('*') if p.name.endswith(('-wal', '-shm'))]
    assert (path / 'database.sqlite').read_bytes()[18:20] == b'\x02\x02'  # WAL
    return path


@pytest.fixture(scope='module')
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pristine copies: the aiida-made fixture folder (rollback-journal database) and a sqlitedos-made one (WAL)."""
    base = tmp_path_factory.mktemp('pristine')
    return {'aiida': unpack_fixture_profile(base / 'aiida'), 'sqlitedos': make_sqlitedos_folder(base / 'sqlitedos')}


@pytest.fixture(params=['aiida', 'sqlitedos'])
def folder(request: pytest.FixtureRequest, folders: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(folders[request.param], tmp_path / request.param, symlinks=True))


def a_node_with_a_file(path: Path) -> tuple[str, str, str]:
    """(uuid, file name, sha256 of the content) of a node with a file, found through the CLI."""
    for row in json.loads(run('query', path, '--json', '--project', 'uuid').output):
        shown = json.loads(run('node', 'show', path, row['uuid'], '--json').output)
        if shown['files']:
            name = min(shown['files'])
            return row['uuid'], name, shown['files'][name]
    raise AssertionError('no node with files')


def read_commands(path: Path, out: Path, node: tuple[str, str, str]) -> list[tuple[Any, ...]]:
    uuid, name, _ = node
    return [
        ('info', path),
        ('info', path, '--detailed', '--json'),
        ('query', path, '--json'),
        ('node', 'show', path, uuid),
        ('node', 'cat', path, uuid, name),
        ('verify', path),
        ('archive', 'create', path, out / 'all.aiida', '--all'),
        ('backup', path, out / 'backups'),
    ]


def check_outputs(out: Path, node_count: int) -> None:
    """The archive and the backup written from the read-only storage are complete."""
    inspected = json.loads(run('archive', 'inspect', out / 'all.aiida', '--json').output)
    assert inspected['entities']['Nodes']['count'] == node_count
    assert run('verify', out / 'backups' / 'last-backup').output.split('\n')[0].endswith(': OK')


# --- a real read-only mount -------------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only_mount(source: Path, target: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only at ``target`` (inside the test's tmp_path); unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which('mount') is None:
        pytest.skip('a read-only bind mount needs root and mount(8)')
    target.mkdir()
    done = subprocess.run(['mount', '--bind', str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f'cannot bind-mount here: {done.stderr.strip()}')
    try:
        subprocess.run(['mount', '-o', 'remount,bind,ro', str(target)], check=True)
        with pytest.raises(OSError, match='Read-only file system'):
            (target / 'probe').write_text('x')
        yield target
    finally:
        subprocess.run(['umount', str(target)], check=True)


@contextlib.contextmanager
def immutable(folder: Path) -> Iterator[Path]:
    """``chattr -R +i`` on ``folder`` (even root cannot change it), undone afterwards."""
    if os.geteuid() != 0 or shutil.which('chattr') is None:
        pytest.skip('chattr +i needs root and chattr(1)')
    done = subprocess.run(['chattr', '-R', '+i', str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(['chattr', '-R', '-i', str(folder)], capture_output=True)
        pytest.skip(f'this file system has no immutable flag: {done.stderr.strip()}')
    try:
        with pytest.raises(OSError, match='Operation not permitted'):
            (folder / 'probe').write_text('x')
        yield folder
    finally:
        subprocess.run(['chattr', '-R', '-i', str(folder)], check=True)


@pytest.mark.parametrize('medium', ['mount', 'chattr'])
def test_read_commands_work_on_read_only_media(
    folder: Path, tmp_path: Path, medium: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = a_node_with_a_file(folder)
    count = json.loads(run('info', folder, '--json').output)['entities']['Nodes']['count']
    before = snapshot(folder)
    out = tmp_path / 'out'
    out.mkdir()
    media = read_only_mount(folder, tmp_path / 'ro') if medium == 'mount' else immutable(folder)
    with media as path:
        for command in read_commands(path, out, node):
            result = run(*command)
            if command[0] == 'node' and command[1] == 'cat':
                assert hashlib.sha256(result.stdout_bytes).hexdigest() == node[2]
            if command[0] == 'verify':
                assert result.output.split('\n')[0].endswith(': OK'), result.output
        for command, what in [
            (('maintain', path), 'maintenance'),
            (('archive', 'import', path, out / 'all.aiida'), 'import'),
        ]:
            result = run(*command, exit_code=1)
            assert 'read-only' in result.stderr and 'restore' not in result.stderr, (what, result.stderr)
        with SqliteDosStorage(SqliteDosStorage.create_profile('ro', filepath=path)) as storage:
            assert storage.get_info(detailed=True)['repository']['Objects']['packed'] >= 0
            with pytest.raises(ReadOnlyError, match='read-only'):
                storage.set_global_variable('key', 'value')
    check_outputs(out, count)
    assert snapshot(folder) == before
    # a read-only bind mount of a writable file system can still change through the original path: said so
    warned = [r for r in caplog.records if 'read-only mount of a writable file system' in r.getMessage()]
    assert bool(warned) == (medium == 'mount'), [r.getMessage() for r in warned]  # both have a WAL packs.idx


def test_a_backup_on_a_read_only_disk(folder: Path, tmp_path: Path) -> None:
    """A backup folder on read-only media is a storage: verify, info, query, and a backup of it work."""
    run('backup', folder, tmp_path / 'dest')
    count = json.loads(run('info', folder, '--json').output)['entities']['Nodes']['count']
    with read_only_mount(tmp_path / 'dest', tmp_path / 'ro') as disk:
        backup = disk / 'last-backup'
        assert run('verify', backup).output.split('\n')[0].endswith(': OK')
        assert json.loads(run('info', backup, '--json').output)['entities']['Nodes']['count'] == count
        assert len(json.loads(run('query', backup, '--json').output)) == count
        run('backup', backup, tmp_path / 'again')
    assert run('verify', tmp_path / 'again' / 'last-backup').output.split('\n')[0].endswith(': OK')


def unclean_copy(source: Path, target: Path) -> Path:
    """A copy of the folder taken while a writer had a commit in ``-wal`` only (a crash, or a copy of a live folder)."""
    live = Path(shutil.copytree(source, target.with_name(target.name + '-live')))
    writer = sqlite3.connect(live / 'database.sqlite', isolation_level=None)
    try:
        writer.execute('PRAGMA wal_autocheckpoint = 0')
        writer.execute("UPDATE db_dbnode SET label = 'changed in the wal' WHERE id = (SELECT min(id) FROM db_dbnode)")
        copied = Path(shutil.copytree(live, target))
    finally:
        writer.close()
    assert (copied / 'database.sqlite-wal').stat().st_size > 32 and (copied / 'database.sqlite-shm').exists()
    return copied


def test_wal_files_on_read_only_media(folders: dict[str, Path], tmp_path: Path) -> None:
    """An empty -wal is ignored; -wal with -shm is read; -wal with frames but no -shm is explained, not 'restore'."""
    empty = Path(shutil.copytree(folders['sqlitedos'], tmp_path / 'empty'))
    (empty / 'database.sqlite-wal').write_bytes(b'')
    with read_only_mount(empty, tmp_path / 'ro-empty') as path:
        run('info', path)
    unclean = unclean_copy(folders['sqlitedos'], tmp_path / 'unclean')
    with read_only_mount(unclean, tmp_path / 'ro-unclean') as path:
        assert 'changed in the wal' in run('query', path).output
    (unclean / 'database.sqlite-shm').unlink()
    with read_only_mount(unclean, tmp_path / 'ro-no-shm') as path:
        stderr = run('info', path, exit_code=1).stderr
    assert 'read-only' in stderr and 'database.sqlite-shm' in stderr and 'restore' not in stderr, stderr


# --- read-only commands leave a writable folder as it was ---------------------------------------------------------


def test_read_commands_leave_the_folder_identical(folder: Path, tmp_path: Path) -> None:
    node = a_node_with_a_file(folder)
    out = tmp_path / 'out'
    out.mkdir()
    for command in read_commands(folder, out, node):
        before = snapshot(folder)
        run(*command)
        after = snapshot(folder)
        changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
        assert not changed, (command, changed)


def test_read_only_storage_api_leaves_the_folder_identical(folder: Path) -> None:
    from sqlitedos.query.builder import QueryBuilder

    before = snapshot(folder)
    with SqliteDosStorage(SqliteDosStorage.create_profile('ro', filepath=folder), read_only=True) as storage:
        nodes = QueryBuilder(backend=storage).append(orm_base='node', entity_type='', project=['id']).all()
        assert nodes
        repository = storage.get_repository()
        for key in list(repository.list_objects()):
            with repository.open(key) as handle:
                assert hashlib.sha256(handle.read()).hexdigest() == key
        with pytest.raises(ReadOnlyError, match='read-only'):
            storage.set_global_variable('key', 'value')
    assert snapshot(folder) == before


def test_a_read_only_connection_on_writable_media_sees_new_commits(folders: dict[str, Path], tmp_path: Path) -> None:
    """On writable media a cleanly closed WAL database is not opened ``immutable`` (others may write it)."""
    folder = Path(shutil.copytree(folders['sqlitedos'], tmp_path / 'storage'))
    database = folder / 'database.sqlite'
    reader = connect(database, read_only=True)
    try:
        (before,) = reader.execute('SELECT count(*) FROM db_dbsetting').fetchone()
        writer = sqlite3.connect(database, isolation_level=None)
        writer.execute("INSERT INTO db_dbsetting (key, val, description, time) VALUES ('x', '1', '', '')")
        writer.close()
        assert reader.execute('SELECT count(*) FROM db_dbsetting').fetchone() == (before + 1,)
        with pytest.raises(sqlite3.OperationalError, match='readonly'):
            reader.execute("DELETE FROM db_dbsetting WHERE key = 'x'")
    finally:
        reader.close()
    assert not [p.name for p in folder.iterdir() if p.name.endswith(('-wal', '-shm'))]


def test_verify_repair_on_read_only_media_says_read_only(folders: dict[str, Path], tmp_path: Path) -> None:
    from sqlitedos.repository.disk_objectstore import open_container

    folder = Path(shutil.copytree(folders['sqlitedos'], tmp_path / 'storage'))
    container = open_container(folder / 'container')
    try:
        stray = container.add_object(b'referenced by no node')
    finally:
        container.close()
    with read_only_mount(folder, tmp_path / 'ro') as path:
        stderr = run('verify', path, '--repair', exit_code=1).stderr
        assert 'read-only' in stderr and 'restore' not in stderr, stderr
        assert stray in run('verify', path, '--json').output  # listed as unreferenced, not deleted
    assert stray in json.loads(run('verify', folder, '--repair', '--json').output)['repaired']


def test_a_container_without_pack_index_reads_as_nothing_packed(tmp_path: Path) -> None:
    """disk-objectstore makes ``packs.idx`` on the first write; read-only commands neither need nor create it."""
    folder = tmp_path / 'storage'
    run('init', folder)
    (folder / 'container' / 'packs.idx').unlink()
    before = snapshot(folder)
    assert run('verify', folder).output.split('\n')[0].endswith(': OK')
    assert json.loads(run('info', folder, '--json').output)['repository']['Objects']['packed'] == 0
    assert snapshot(folder) == before
