"""Backups: complete, consistent under concurrent writes, incremental (hard links), rotated, in aiida's layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sqlitedos import SqliteDosStorage
from sqlitedos.backup import BackupManager, backup
from sqlitedos.exceptions import StorageBackupError
from sqlitedos.verify import verify
from tests.test_verify import add_node, small_graph


def open_folder(path: Path) -> SqliteDosStorage:
    return SqliteDosStorage(SqliteDosStorage.create_profile('restored', filepath=path))


def count_nodes(storage: SqliteDosStorage) -> int:
    return storage.get_session().execute('SELECT COUNT(*) FROM db_dbnode').fetchone()[0]


def container_files(folder: Path) -> dict[str, os.stat_result]:
    root = folder / 'container'
    return {str(p.relative_to(root)): p.stat() for p in root.rglob('*') if p.is_file()}


def test_backup_layout_and_content(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    small_graph(dos_storage)
    dest = tmp_path / 'backups'
    folder = backup(dos_storage, dest)
    assert folder.parent == dest and folder.name.startswith('backup_')
    _, stamp, suffix = folder.name.split('_')
    assert len(stamp) == 14 and stamp.isdigit() and len(suffix) == 4
    assert sorted(p.name for p in dest.iterdir()) == sorted([folder.name, 'config.json', 'last-backup'])
    assert os.readlink(dest / 'last-backup') == folder.name
    assert sorted(p.name for p in folder.iterdir()) == ['container', 'database.sqlite']
    config = json.loads((dest / 'config.json').read_text())
    (profile,) = config['profiles'].values()
    assert profile['storage']['backend'] == 'core.sqlite_dos'
    with open_folder(folder) as restored:
        assert count_nodes(restored) == 3
        assert verify(restored).ok
    assert not (folder / 'database.sqlite-wal').exists()


def test_backup_is_a_storage_folder_of_the_same_repository(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    small_graph(dos_storage)
    folder = dos_storage.backup(tmp_path / 'dest')
    assert folder is not None
    source_id = json.loads((dos_storage.filepath_container / 'config.json').read_text())['container_id']
    assert json.loads((folder / 'container' / 'config.json').read_text())['container_id'] == source_id


def test_second_backup_hard_links_unchanged_files(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    small_graph(dos_storage)
    container = dos_storage.get_container()
    try:
        container.add_objects_to_pack([b'packed one', b'packed two'])
    finally:
        container.close()
    dest = tmp_path / 'dest'
    first = backup(dos_storage, dest)
    add_node(dos_storage, files={'new.txt': b'new content'})
    second = backup(dos_storage, dest)
    assert first != second
    before, after = container_files(first), container_files(second)
    new = set(after) - set(before)
    assert len(new) == 1 and new.pop().startswith('loose/')
    immutable = [name for name in before if name.startswith(('loose/', 'packs/'))]
    assert immutable and any(name.startswith('packs/') for name in immutable)
    for name in immutable:
        assert after[name].st_ino == before[name].st_ino, name
        assert after[name].st_nlink == 2
    for name in ('packs.idx', 'config.json'):
        assert after[name].st_ino != before[name].st_ino  # copied, never shared
    with open_folder(second) as restored:
        assert count_nodes(restored) == 4
        assert verify(restored).ok
    with open_folder(first) as restored:
        assert count_nodes(restored) == 3


def test_grown_pack_is_copied_not_linked(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    container = dos_storage.get_container()
    try:
        container.add_objects_to_pack([b'first'])
        dest = tmp_path / 'dest'
        first = backup(dos_storage, dest)
        container.add_objects_to_pack([b'second'])
    finally:
        container.close()
    second = backup(dos_storage, dest)
    assert container_files(second)['packs/0'].st_ino != container_files(first)['packs/0'].st_ino
    assert verify(second).unreferenced == sorted(verify(dos_storage).unreferenced)


@pytest.mark.parametrize(('keep', 'expected'), [(None, 4), (0, 1), (1, 2), (2, 3)])
def test_keep_rotation(dos_storage: SqliteDosStorage, tmp_path: Path, keep: int | None, expected: int) -> None:
    dest = tmp_path / 'dest'
    made = []
    for _ in range(4):
        add_node(dos_storage, files={'f': os.urandom(8)})
        made.append(backup(dos_storage, dest, keep=keep))
    left = sorted(p for p in dest.iterdir() if p.name.startswith('backup_'))
    assert sorted(left) == sorted(made[-expected:])  # the newest ones stay
    assert os.readlink(dest / 'last-backup') == made[-1].name
    for folder in left:
        with open_folder(folder) as restored:
            assert count_nodes(restored) == made.index(folder) + 1


def test_interrupted_backup_leaves_no_backup_folder(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    dest = tmp_path / 'dest'
    manager = BackupManager(dest)
    dest.mkdir()

    def crash(path: Path, previous: Path | None) -> None:
        path.mkdir()
        (path / 'database.sqlite').write_bytes(b'half')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        manager.backup_auto_folders(crash)
    assert list(dest.iterdir()) == []
    (dest / 'live-backup').mkdir()  # as a killed process would leave it
    folder = backup(dos_storage, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted([folder.name, 'config.json', 'last-backup'])


def test_destination_checks(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    busy = tmp_path / 'busy'
    busy.mkdir()
    (busy / 'something').write_text('x')
    with pytest.raises(StorageBackupError, match='not empty'):
        backup(dos_storage, busy)
    with pytest.raises(ValueError, match='keep'):
        backup(dos_storage, tmp_path / 'dest', keep=-1)
    (tmp_path / 'file').write_text('x')
    with pytest.raises(StorageBackupError, match='is a file'):
        backup(dos_storage, tmp_path / 'file')
    with pytest.raises(FileNotFoundError):
        backup(dos_storage, tmp_path / 'missing' / 'parent')


def test_destination_of_another_storage_is_refused(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    dest = tmp_path / 'dest'
    backup(dos_storage, dest)
    other_profile = SqliteDosStorage.create_profile('other', filepath=tmp_path / 'other', default_user_email='a@b.c')
    SqliteDosStorage.initialise(other_profile)
    with SqliteDosStorage(other_profile) as other, pytest.raises(StorageBackupError, match='another storage'):
        backup(other, dest)


def test_profile_uuid_is_kept_across_runs(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    dest = tmp_path / 'dest'
    backup(dos_storage, dest)
    first = json.loads((dest / 'config.json').read_text())
    with open_folder(dos_storage.filepath_root) as again:  # a new profile object, as each command run makes
        backup(again, dest)
    second = json.loads((dest / 'config.json').read_text())
    assert [p['PROFILE_UUID'] for p in first['profiles'].values()] == [
        p['PROFILE_UUID'] for p in second['profiles'].values()
    ]


def test_backup_of_the_fixture_profile(fixture_storage: SqliteDosStorage, tmp_path: Path, manifest: dict) -> None:
    folder = backup(fixture_storage, tmp_path / 'dest')
    with open_folder(folder) as restored:
        assert count_nodes(restored) == count_nodes(fixture_storage)
        assert verify(restored).ok


def test_progress_callback(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    small_graph(dos_storage)
    calls: list[tuple[str, int, int]] = []
    backup(dos_storage, tmp_path / 'dest', progress=lambda *args: calls.append(args))
    assert ('Copying database', 1, 1) in calls
    stages = [c for c in calls if c[0] == 'Copying container']
    assert stages and stages[-1][1] == stages[-1][2]


WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path[:0] = [{root!r}]
    from sqlitedos import SqliteDosStorage
    from tests.test_verify import add_node
    storage = SqliteDosStorage(SqliteDosStorage.create_profile('w', filepath={path!r}))
    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline and not os.path.exists({stop!r}):
        add_node(storage, files={{'f.bin': os.urandom(64), 'g.txt': str(n).encode()}})
        n += 1
        if {pack} and n % 7 == 0:
            storage.maintain()  # live: pack the loose objects and delete their loose copies while we copy
        if n == 20:
            open({ready!r}, 'w').close()
    storage.close()
    print(n)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize('pack', [False, True], ids=['writes', 'writes-and-packs'])
def test_backup_while_another_process_writes(dos_storage: SqliteDosStorage, tmp_path: Path, pack: bool) -> None:
    small_graph(dos_storage)
    stop, ready = tmp_path / 'stop', tmp_path / 'ready'
    script = WRITER.format(
        root=str(Path(__file__).parent.parent),
        path=str(dos_storage.filepath_root),
        stop=str(stop),
        ready=str(ready),
        pack=pack,
    )
    writer = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists() and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), 'the writer did not start'
        folders = [backup(dos_storage, tmp_path / 'dest') for _ in range(3)]
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=30)
    assert writer.returncode == 0
    written = int(out)
    counts = []
    for folder in folders:
        report = verify(folder)
        assert report.ok, report.render()
        with open_folder(folder) as restored:
            counts.append(count_nodes(restored))
    assert 3 < counts[0] <= counts[1] <= counts[2] <= 3 + written


def test_private_backup_methods(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    small_graph(dos_storage)
    dest = tmp_path / 'dest'
    dest.mkdir()
    folder = dos_storage._backup(dest, keep=0)
    assert os.readlink(dest / 'last-backup') == folder.name
    second = dos_storage._backup(dest, keep=0)
    assert [p for p in dest.iterdir() if p.name.startswith('backup_')] == [second]
    assert verify(second).ok


def test_unreadable_pack_index_is_a_backup_error(dos_storage: SqliteDosStorage, tmp_path: Path) -> None:
    (dos_storage.filepath_container / 'packs.idx').write_bytes(b'not a database')
    with pytest.raises(StorageBackupError, match='packs.idx'):
        backup(dos_storage, tmp_path / 'dest')
    assert [p.name for p in (tmp_path / 'dest').iterdir()] == ['config.json']  # no half backup left
