"""The folder is shared with a real, unmodified aiida-core 2.9.4 process: neither side deletes the other's files.

- aiida-core's live maintenance (what `verdi storage maintain` runs) while sqlitedos holds unstored node files:
  aiida exits 0, then sqlitedos stores the node and `verify` is clean (the files waited outside the container);
- `sqlitedos maintain --full` and `verify --repair` refuse while an aiida-core process has the profile loaded
  (aiida takes no sqlitedos lock), both on a sqlitedos-made (WAL) and an aiida-made (rollback journal) database.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlitedos import SqliteDosStorage
from sqlitedos.exceptions import LockedProfileError
from sqlitedos.verify import verify

EMAIL = 'safety@lab.org'
FOLDER = 'data.core.folder.FolderData.'

#: Load the folder as aiida-core's profile in a fresh process (private AIIDA_PATH), as `verdi` would.
AIIDA_PRELUDE = """
import os, sys, tempfile, warnings
os.environ['AIIDA_PATH'] = tempfile.mkdtemp(prefix='aiida-config-')
warnings.simplefilter('ignore')
from aiida.manage import get_manager
from aiida.manage.configuration.profile import Profile
profile = Profile('shared', {
    'default_user_email': None,
    'storage': {'backend': 'core.sqlite_dos', 'config': {'filepath': sys.argv[1]}},
    'process_control': {'backend': None, 'config': {}},
})
manager = get_manager()
manager.load_profile(profile, allow_switch=True)
storage = manager.get_profile_storage()
"""
AIIDA_LIVE_MAINTAIN = (
    AIIDA_PRELUDE
    + """
storage.maintain(full=False, dry_run=False)
manager.unload_profile()
print('maintained')
"""
)
AIIDA_HOLDS_PROFILE = (
    AIIDA_PRELUDE
    + """
from aiida import orm
print(orm.QueryBuilder().append(orm.Node).count(), flush=True)
print('ready', flush=True)
sys.stdin.read()
manager.unload_profile()
"""
)


def run_aiida(script: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-c', script, str(folder)], capture_output=True, text=True, timeout=300)


def make_storage(folder: Path) -> SqliteDosStorage:
    profile = SqliteDosStorage.create_profile('safety', filepath=folder, default_user_email=EMAIL)
    SqliteDosStorage.initialise(profile)
    return SqliteDosStorage(profile)


def test_aiida_live_maintenance_leaves_unstored_sqlitedos_files_alone(tmp_path: Path) -> None:
    storage = make_storage(tmp_path / 'shared')
    try:
        stored = storage.nodes.create(node_type=FOLDER, user=storage.default_user)
        stored.repository.put_object_from_bytes(b'stored before', 'stored.txt')
        stored.store()
        pending = storage.nodes.create(node_type=FOLDER, user=storage.default_user)
        pending.repository.put_object_from_bytes(b'in flight while aiida maintains', 'pending.txt')
        pending.repository.put_object_from_filelike(io.BytesIO(os.urandom(100_000)), 'sub/blob.bin')
        orphan = storage.get_repository().put_object_from_filelike(io.BytesIO(b'a true orphan'))
        result = run_aiida(AIIDA_LIVE_MAINTAIN, storage.filepath_root)
        assert result.returncode == 0 and 'maintained' in result.stdout, result.stderr
        assert not storage.get_repository().has_object(orphan)  # aiida did delete what no row references
        pending.store()
        assert storage.nodes.get(pk=pending.pk).repository.get_object_content('pending.txt') == (
            'in flight while aiida maintains'
        )
        report = verify(storage.filepath_root)
        assert report.ok, report.render()
        assert report.counts['nodes with files'] == 2
    finally:
        storage.close()


@pytest.fixture(params=['sqlitedos-made', 'aiida-made'])
def shared_folder(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A storage folder made by sqlitedos (WAL database) or by aiida-core (rollback-journal database)."""
    if request.param == 'aiida-made':
        folder = request.getfixturevalue('fixture_profile_path')
        assert _journal_mode(folder) == 'delete'
        return folder
    make_storage(tmp_path / 'shared').close()
    return tmp_path / 'shared'


def _journal_mode(folder: Path) -> str:
    import sqlite3

    connection = sqlite3.connect(folder / 'database.sqlite')
    try:
        return connection.execute('PRAGMA journal_mode').fetchone()[0]
    finally:
        connection.close()


@pytest.fixture
def aiida_process(shared_folder: Path) -> Iterator[subprocess.Popen[str]]:
    """An aiida-core process with the folder loaded as its profile, idle after one query, until the test ends."""
    process = subprocess.Popen(
        [sys.executable, '-c', AIIDA_HOLDS_PROFILE, str(shared_folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = [process.stdout.readline().strip() for _ in range(2)]
    assert lines[1] == 'ready', (lines, process.stderr.read() if process.poll() is not None else '')
    yield process
    _, errors = process.communicate('', timeout=60)
    assert process.returncode == 0, errors


def test_sqlitedos_full_maintenance_refuses_while_aiida_has_the_profile_loaded(
    shared_folder: Path, aiida_process: subprocess.Popen[str]
) -> None:
    storage = SqliteDosStorage(SqliteDosStorage.create_profile('safety', filepath=shared_folder))
    try:
        orphan = storage.get_repository().put_object_from_filelike(io.BytesIO(b'could be aiida in flight'))
        with pytest.raises(LockedProfileError, match='needs the storage'):
            storage.maintain(full=True)
        with pytest.raises(LockedProfileError, match='needs the storage'):
            storage.delete_unreferenced_objects()
        assert storage.get_repository().has_object(orphan)
    finally:
        storage.close()
    for command in (['maintain', '--full'], ['verify', '--repair']):
        result = subprocess.run(
            [sys.executable, '-m', 'sqlitedos', '--progress', 'never', *command, str(shared_folder)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert 'needs the storage to itself' in result.stderr and 'Traceback' not in result.stderr, result.stderr
    storage = SqliteDosStorage(SqliteDosStorage.create_profile('safety', filepath=shared_folder))
    try:
        assert storage.get_repository().has_object(orphan)
    finally:
        storage.close()


def test_sqlitedos_full_maintenance_runs_once_aiida_is_gone(shared_folder: Path) -> None:
    storage = SqliteDosStorage(SqliteDosStorage.create_profile('safety', filepath=shared_folder))
    try:
        orphan = storage.get_repository().put_object_from_filelike(io.BytesIO(b'orphan'))
        assert run_aiida(AIIDA_PRELUDE + "\nprint('loaded')\n", shared_folder).returncode == 0
        storage.maintain(full=True)
        assert not storage.get_repository().has_object(orphan)
        assert verify(shared_folder).ok
    finally:
        storage.close()
