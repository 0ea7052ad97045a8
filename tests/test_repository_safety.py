"""Repository data safety (issue 13, items 1-3): unstored files out of the container, exclusive full maintenance and
repair proven against processes that take no sqlitedos lock, pack files fsynced and no descriptor leaked.

The "other process" here is deliberately not sqlitedos: plain ``sqlite3`` and ``disk_objectstore`` in a child, as an
unmodified aiida-core uses them (``tests/interop`` repeats the important cases with aiida-core itself).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlitedos import SqliteDosStorage
from sqlitedos.exceptions import LockedProfileError
from sqlitedos.repository import disk_objectstore as adapter
from sqlitedos.storage import sqlite_dos
from sqlitedos.verify import verify

FOLDER = 'data.core.folder.FolderData.'

#: What aiida-core's ``maintain(full=False)`` does to a container (``psql_dos/backend.py``): delete every object no
#: node row references, using disk-objectstore and the database directly, with no sqlitedos lock.
FOREIGN_LIVE_MAINTAIN = """
import json, sqlite3, sys
from disk_objectstore import Container
root = sys.argv[1]
db = sqlite3.connect(root + '/database.sqlite')
referenced = set()
for (cell,) in db.execute('SELECT repository_metadata FROM db_dbnode'):
    stack = [json.loads(cell or '{}')]
    while stack:
        entry = stack.pop()
        if 'k' in entry:
            referenced.add(entry['k'])
        stack.extend(entry.get('o', {}).values())
db.close()
with Container(root + '/container') as container:
    unreferenced = set(container.list_all_objects()) - referenced
    container.delete_objects(list(unreferenced))
print(len(unreferenced))
"""

#: A process that opens the database the way aiida's SQLAlchemy pool does (one connection, kept open), reads once,
#: says it is ready and waits for its stdin to close.
FOREIGN_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1] + '/database.sqlite')
db.execute('SELECT COUNT(*) FROM db_dbnode').fetchone()
print('ready', flush=True)
sys.stdin.read()
"""


def python(script: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-c', script, *args], capture_output=True, text=True, timeout=120, **kwargs)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-m', 'sqlitedos', '--progress', 'never', *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def holder(dos_storage: Any) -> Iterator[subprocess.Popen[str]]:
    """A foreign process holding the storage's database open (see ``FOREIGN_HOLDER``)."""
    process = subprocess.Popen(
        [sys.executable, '-c', FOREIGN_HOLDER, str(dos_storage.filepath_root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == 'ready'
    yield process
    process.communicate('', timeout=30)


def file_node(storage: Any, content: bytes, name: str = 'file.txt') -> Any:
    node = storage.nodes.create(node_type=FOLDER, user=storage.default_user)
    node.repository.put_object_from_bytes(content, name)
    return node


# --- item 1: unstored files are not in the container ------------------------------------------------------------


def test_unstored_files_survive_a_foreign_live_maintenance(dos_storage: Any) -> None:
    node = file_node(dos_storage, b'in flight')
    large = os.urandom(300_000)  # waits in a sandbox folder, the small one in memory
    node.repository.put_object_from_bytes(large, 'large.bin')
    keys = node.repository.get_file_keys()
    assert not set(keys) & set(dos_storage.get_repository().list_objects())  # neither is in the container
    assert node.repository.get_object_content('file.txt') == 'in flight'  # still readable before store()
    assert node.repository.get_object_content('large.bin', 'rb') == large
    result = python(FOREIGN_LIVE_MAINTAIN, str(dos_storage.filepath_root))
    assert result.returncode == 0, result.stderr
    node.store()
    assert dos_storage.get_repository().has_objects(keys) == [True, True]
    stored = dos_storage.nodes.get(pk=node.pk).repository
    assert stored.get_object_content('file.txt') == 'in flight'
    assert stored.get_object_content('large.bin', 'rb') == large
    report = verify(dos_storage.filepath_root)
    assert report.ok, report.render()


def test_store_retry_after_a_failed_commit_and_sandbox_cleanup(
    dos_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    content = os.urandom(300_000)  # larger than what waits in memory: a sandbox folder holds it
    node = file_node(dos_storage, content)
    sandbox = node.repository._pending.folder
    real = dos_storage.transaction

    @contextlib.contextmanager
    def failing_commit() -> Iterator[Any]:
        with real() as connection:
            yield connection
            raise sqlite3.OperationalError('disk I/O error')  # as a failed COMMIT would: rolled back

    monkeypatch.setattr(dos_storage, 'transaction', failing_commit)
    with pytest.raises(Exception, match='disk I/O error'):
        node.store()
    assert not node.is_stored and sandbox.is_dir()  # the files wait on for a retry
    monkeypatch.setattr(dos_storage, 'transaction', real)
    node.store()
    assert not sandbox.exists()  # dropped once the row is committed
    assert dos_storage.nodes.get(pk=node.pk).repository.get_object_content('file.txt', 'rb') == content
    assert verify(dos_storage.filepath_root).ok


def test_clone_of_an_unstored_node_keeps_its_files(dos_storage: Any) -> None:
    node = file_node(dos_storage, b'cloned')
    large = os.urandom(300_000)
    node.repository.put_object_from_bytes(large, 'large.bin')
    clone = node.clone()
    del node
    clone.store()
    assert clone.repository.get_object_content('file.txt') == 'cloned'
    assert clone.repository.get_object_content('large.bin', 'rb') == large
    assert verify(dos_storage.filepath_root).ok


def test_unstored_node_dropped_removes_its_sandbox(dos_storage: Any) -> None:
    import gc

    node = file_node(dos_storage, os.urandom(300_000))
    sandbox = node.repository._pending.folder
    assert sandbox is not None and sandbox.is_dir()
    del node
    gc.collect()
    assert not sandbox.exists()


# --- items 1 and 2: full maintenance and repair prove they are alone --------------------------------------------


def test_full_maintenance_refuses_while_a_foreign_process_has_the_wal_database_open(
    dos_storage: Any, holder: subprocess.Popen[str]
) -> None:
    orphan = dos_storage.get_repository().put_object_from_filelike(io.BytesIO(b'orphan'))
    with pytest.raises(LockedProfileError, match='needs the storage to itself'):
        dos_storage.maintain(full=True)
    assert dos_storage.get_repository().has_object(orphan)
    mode = dos_storage.get_session().execute('PRAGMA journal_mode').fetchone()[0]
    assert mode == 'wal'  # the refused attempt left the database as it was
    file_node(dos_storage, b'still usable').store()


def test_full_maintenance_refuses_an_idle_connection_to_a_rollback_mode_database(dos_storage: Any) -> None:
    """aiida-made databases are in rollback (DELETE) mode, where an idle connection holds no lock: /proc finds it."""
    root = dos_storage.filepath_root
    dos_storage.close()
    connection = sqlite3.connect(root / 'database.sqlite')
    assert connection.execute('PRAGMA journal_mode = DELETE').fetchone()[0] == 'delete'
    connection.close()
    process = subprocess.Popen(
        [sys.executable, '-c', FOREIGN_HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == 'ready'
        assert [pid for pid, _ in sqlite_dos.processes_using(root)] == [process.pid]
        storage = SqliteDosStorage(SqliteDosStorage.create_profile('again', filepath=root))
        try:
            with pytest.raises(LockedProfileError, match=rf'pid {process.pid}'):
                storage.maintain(full=True)
        finally:
            storage.close()
        result = cli('maintain', '--full', str(root))
        assert result.returncode == 1 and 'needs the storage' in result.stderr, result.stderr
        assert 'Traceback' not in result.stderr
    finally:
        process.communicate('', timeout=30)
    assert cli('maintain', '--full', str(root)).returncode == 0


def test_full_maintenance_keeps_others_out_while_it_runs(dos_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the proof no other connection can read the database (so none can commit a row naming an object)."""
    seen: list[str] = []
    repository = dos_storage.get_repository()
    original = type(repository).maintain

    def maintain_and_probe(self: Any, *args: Any, **kwargs: Any) -> Any:
        probe = python(
            'import sqlite3, sys\n'
            'c = sqlite3.connect(sys.argv[1], timeout=0.2)\n'
            'try:\n    c.execute("SELECT COUNT(*) FROM db_dbnode").fetchone(); print("read")\n'
            'except sqlite3.OperationalError as e:\n    print(e)\n',
            str(dos_storage.filepath_database),
        )
        seen.append(probe.stdout.strip())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(repository), 'maintain', maintain_and_probe)
    dos_storage.maintain(full=True)
    assert seen == ['database is locked']
    assert dos_storage.get_session().execute('PRAGMA journal_mode').fetchone()[0] == 'wal'


def test_verify_repair_refuses_while_a_foreign_process_has_the_storage_open(
    dos_storage: Any, holder: subprocess.Popen[str]
) -> None:
    orphan = dos_storage.get_repository().put_object_from_filelike(io.BytesIO(b'about to be referenced'))
    root = dos_storage.filepath_root
    with pytest.raises(LockedProfileError, match='the repair needs the storage'):
        verify(root, repair=True)
    assert dos_storage.get_repository().has_object(orphan)
    result = cli('verify', '--repair', str(root))
    assert result.returncode == 1 and 'needs the storage to itself' in result.stderr, result.stderr
    assert dos_storage.get_repository().has_object(orphan)


def test_verify_repair_deletes_unreferenced_when_alone(dos_storage: Any) -> None:
    orphan = dos_storage.get_repository().put_object_from_filelike(io.BytesIO(b'true orphan'))
    kept = file_node(dos_storage, b'kept').store()
    root = dos_storage.filepath_root
    dos_storage.close()
    report = verify(root, repair=True)
    assert report.repaired == [orphan]
    storage = SqliteDosStorage(SqliteDosStorage.create_profile('again', filepath=root))
    try:
        assert not storage.get_repository().has_object(orphan)
        assert storage.nodes.get(pk=kept.pk).repository.get_object_content('file.txt') == 'kept'
    finally:
        storage.close()


# --- item 3: pack files fsynced, no descriptor leaked ----------------------------------------------------------


def open_descriptors() -> int:
    return len(os.listdir('/proc/self/fd'))


@pytest.mark.skipif(not Path('/proc/self/fd').is_dir(), reason='counting descriptors needs Linux /proc')
def test_no_descriptor_leaked_over_50_maintains(dos_storage: Any) -> None:
    file_node(dos_storage, b'warm up').store()
    dos_storage.maintain()
    before = open_descriptors()
    for index in range(50):
        file_node(dos_storage, f'content {index}'.encode()).store()
        dos_storage.maintain()
    assert open_descriptors() == before
    assert dos_storage.get_repository().get_info()['Objects']['packed'] == 51


STRACED_PACKING = """
import sys
from sqlitedos import SqliteDosStorage
storage = SqliteDosStorage(SqliteDosStorage.create_profile('s', filepath=sys.argv[1]))
print('PACKING', flush=True)
storage.maintain()
storage.close()
"""

OPENAT = re.compile(r'^\d+\s+openat\(AT_FDCWD, "(?P<path>[^"]+)", [^)]*\) = (?P<fd>\d+)')
SYNC = re.compile(r'^\d+\s+(?:fsync|fdatasync)\((?P<fd>\d+)\)\s+= 0')
CLOSE = re.compile(r'^\d+\s+close\((?P<fd>\d+)\)')


def synced_paths(trace: str) -> list[str]:
    """The path of each file or folder fsynced (or fdatasynced), in order, from an strace log."""
    open_files: dict[str, str] = {}
    synced = []
    for line in trace.splitlines():
        if match := OPENAT.match(line):
            open_files[match['fd']] = match['path']
        elif match := SYNC.match(line):
            synced.append(open_files.get(match['fd'], '?'))
        elif match := CLOSE.match(line):
            open_files.pop(match['fd'], None)
    return synced


@pytest.mark.skipif(shutil.which('strace') is None, reason='strace is not installed (apt-get install strace)')
def test_pack_fsynced_before_the_pack_index_commit(dos_storage: Any, tmp_path: Path) -> None:
    for index in range(3):
        file_node(dos_storage, f'packed {index}'.encode()).store()
    root = dos_storage.filepath_root
    dos_storage.close()
    log = tmp_path / 'strace.log'
    command = ['strace', '-f', '-o', str(log), '-e', 'trace=openat,close,fsync,fdatasync', sys.executable]
    result = subprocess.run([*command, '-c', STRACED_PACKING, str(root)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    synced = synced_paths(log.read_text())
    container = root / 'container'
    pack, packs, index_wal = str(container / 'packs' / '0'), str(container / 'packs'), str(container / 'packs.idx-wal')
    assert pack in synced, synced
    first_index_commit = next(i for i, path in enumerate(synced) if path == index_wal and i > synced.index(pack))
    assert synced.index(pack) < first_index_commit
    assert packs in synced[synced.index(pack) : first_index_commit]  # the new pack's name is durable too


STRACED_IMPORT = """
import sys
from sqlitedos import SqliteDosStorage
from sqlitedos.archive import import_archive
profile = SqliteDosStorage.create_profile('i', filepath=sys.argv[1], default_user_email='i@example.org')
SqliteDosStorage.initialise(profile)
storage = SqliteDosStorage(profile)
import_archive(storage, sys.argv[2])
storage.close()
"""


@pytest.mark.skipif(shutil.which('strace') is None, reason='strace is not installed (apt-get install strace)')
def test_archive_import_fsyncs_its_pack_before_the_pack_index_commit(dos_storage: Any, tmp_path: Path) -> None:
    from sqlitedos.archive import create_archive

    for index in range(3):
        file_node(dos_storage, f'exported {index}'.encode()).store()
    create_archive(dos_storage, tmp_path / 'out.aiida')
    root, log = tmp_path / 'imported', tmp_path / 'strace.log'
    command = ['strace', '-f', '-o', str(log), '-e', 'trace=openat,close,fsync,fdatasync', sys.executable]
    result = subprocess.run(
        [*command, '-c', STRACED_IMPORT, str(root), str(tmp_path / 'out.aiida')], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    synced = synced_paths(log.read_text())
    pack, index_wal = str(root / 'container' / 'packs' / '0'), str(root / 'container' / 'packs.idx-wal')
    assert pack in synced, synced
    assert index_wal in synced[synced.index(pack) :]  # the index commit naming the pack comes after its fsync
    assert verify(root).ok


def test_broken_fullsync_is_detected_on_this_disk_objectstore() -> None:
    import disk_objectstore

    if disk_objectstore.__version__ != '1.5.0' or hasattr(__import__('fcntl'), 'F_FULLFSYNC'):
        pytest.skip(f'the check is about disk-objectstore 1.5.0 on Linux (have {disk_objectstore.__version__})')
    assert adapter.fullsync_is_broken()
    from disk_objectstore import container

    adapter.open_container(Path('/nonexistent')).close()
    assert container.safe_flush_to_disk is adapter.flush_to_disk


def test_fixed_disk_objectstore_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from disk_objectstore import utils

    def fixed(fhandle: Any, real_path: Any, use_fullsync: bool = False) -> None:
        """A flush without the broken test."""
        os.fsync(fhandle.fileno())

    monkeypatch.setattr(utils, 'safe_flush_to_disk', fixed)
    assert not adapter.fullsync_is_broken()


def test_idle_helpers_do_not_list_this_process(dos_storage: Any) -> None:
    assert sqlite_dos.processes_using(dos_storage.filepath_root) == []  # its own descriptors do not count
