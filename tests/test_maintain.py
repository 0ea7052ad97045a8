"""Maintenance of the folder storage, and the fixture profile's files read back with aiida's sha256s."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sqlitedos import SqliteDosStorage
from sqlitedos.exceptions import CorruptStorage, InvalidOperation, LockedProfileError
from sqlitedos.repository.tree import flatten

SELECT_METADATA = 'SELECT uuid, repository_metadata FROM db_dbnode ORDER BY id'


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def files_by_node(storage: Any) -> dict[str, dict[str, str]]:
    """``{uuid: {path: key}}`` of every node's files, read from ``repository_metadata`` with plain SQL."""
    result = {}
    for uuid, metadata in storage.get_session().execute(SELECT_METADATA):
        tree = flatten(json.loads(metadata) if metadata else {})
        result[uuid] = {path: key for path, key in tree.items() if key is not None}
    return result


def check_fixture_files(storage: Any, manifest: dict[str, Any]) -> int:
    """Read every file of every node and compare with the manifest's sha256s; return how many files were read."""
    repository = storage.get_repository()
    files = files_by_node(storage)
    count = 0
    for node in manifest['nodes']:
        assert files[node['uuid']].keys() == node['files_sha256'].keys(), node['uuid']
        for path, expected in node['files_sha256'].items():
            content = repository.get_object_content(files[node['uuid']][path])
            assert sha256(content) == expected, (node['uuid'], path)
            count += 1
    return count


def add_node_row(storage: Any, metadata: dict[str, Any]) -> None:
    """Insert a node row referencing ``metadata`` (plain SQL keeps this test independent of the entity API)."""
    with storage.transaction() as connection:
        user_id = connection.execute('SELECT id FROM db_dbuser ORDER BY id LIMIT 1').fetchone()[0]
        connection.execute(
            'INSERT INTO db_dbnode (uuid, node_type, process_type, label, description, ctime, mtime, attributes, '
            "extras, repository_metadata, user_id) VALUES (lower(hex(randomblob(16))), 'data.core.folder.FolderData.', "
            "NULL, '', '', '2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000', '{}', '{}', ?, ?)",
            (json.dumps(metadata), user_id),
        )


def test_fixture_files_read_back_before_and_after_full_maintain(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    assert check_fixture_files(fixture_storage, manifest) > 3
    assert fixture_storage.get_unreferenced_keyset() == set()
    report = fixture_storage.maintain(full=True)
    assert report['unreferenced_objects'] == 0 and report['database_vacuumed']
    assert fixture_storage._repository_info(False)['Objects']['loose'] == 0
    check_fixture_files(fixture_storage, manifest)
    fixture_storage.maintain()  # live, on an already packed container
    check_fixture_files(fixture_storage, manifest)


def test_fixture_files_through_node_trees(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    for maintained in (False, True):
        if maintained:
            fixture_storage.maintain(full=True)
        for expected in manifest['nodes']:
            node = fixture_storage.nodes.get(uuid=expected['uuid'])
            assert sorted(map(str, node.repository.glob())) == sorted(expected['files_sha256'])
            for path, digest in expected['files_sha256'].items():
                assert sha256(node.repository.get_object_content(path, 'rb')) == digest


def test_full_maintain_deletes_only_unreferenced_objects(dos_storage: Any) -> None:
    repository = dos_storage.get_repository()
    kept = repository.put_object_from_filelike(io.BytesIO(b'kept'))
    shared = repository.put_object_from_filelike(io.BytesIO(b'shared'))
    orphan = repository.put_object_from_filelike(io.BytesIO(b'orphan'))
    add_node_row(dos_storage, {'o': {'a': {'k': kept}, 'k': {'o': {'k': {'k': shared}}}}})
    add_node_row(dos_storage, {'o': {'same': {'k': shared}}})
    assert dos_storage.get_unreferenced_keyset() == {orphan}

    live = dos_storage.maintain()  # live mode never deletes: a concurrent writer's row may not be committed yet
    assert live['repository']['loose_objects'] == 3
    assert repository.has_objects([kept, shared, orphan]) == [True, True, True]
    assert repository.get_info()['Objects']['loose'] == 0

    dry = dos_storage.maintain(full=True, dry_run=True)
    assert dry['unreferenced_objects'] == 1 and not dry['database_vacuumed']
    assert repository.has_object(orphan)

    dos_storage.maintain(full=True)
    assert repository.has_objects([kept, shared, orphan]) == [True, True, False]
    assert repository.get_object_content(shared) == b'shared'
    assert dos_storage.get_unreferenced_keyset() == set()


def test_dry_run_changes_nothing(dos_storage: Any) -> None:
    repository = dos_storage.get_repository()
    repository.put_object_from_filelike(io.BytesIO(b'orphan'))
    before = repository.get_info()
    dos_storage.maintain(dry_run=True)
    dos_storage.maintain(full=True, dry_run=True)
    assert (
        repository.get_info()
        == before
        == {
            'SHA-hash algorithm': 'sha256',
            'Compression algorithm': 'zlib+1',
            'Objects': {'packed': 0, 'loose': 1, 'pack_files': 0},
        }
    )


def test_consistency_check(dos_storage: Any) -> None:
    missing = sha256(b'never stored')
    add_node_row(dos_storage, {'o': {'gone': {'k': missing}}})
    with pytest.raises(CorruptStorage, match='missing from the repository'):
        dos_storage.get_unreferenced_keyset()
    assert dos_storage.get_unreferenced_keyset(check_consistency=False) == set()
    with pytest.raises(CorruptStorage):
        dos_storage.maintain(full=True)  # refuses to delete anything when the storage is inconsistent


def test_maintain_options(dos_storage: Any) -> None:
    with pytest.raises(ValueError, match='do_vacuum'):
        dos_storage.maintain(do_vacuum=True)
    with pytest.raises(TypeError):
        dos_storage.maintain(no_such_option=True)
    report = dos_storage.maintain(full=True, do_repack=False, compress=True)
    assert report['repository']['do_repack'] is False
    with dos_storage.transaction(), pytest.raises(InvalidOperation, match='transaction'):
        dos_storage.maintain(full=True)


def test_temp_maintain_is_a_no_op(temp_storage: Any) -> None:
    key = temp_storage.get_repository().put_object_from_filelike(io.BytesIO(b'x'))
    assert temp_storage.maintain(full=True) == {}
    assert temp_storage.get_repository().has_object(key)


def test_maintain_with_real_nodes(dos_storage: Any) -> None:
    node = dos_storage.nodes.create(node_type='data.core.folder.FolderData.', user=dos_storage.default_user)
    for index in range(10):
        node.repository.put_object_from_bytes(f'file {index}'.encode(), f'f{index}.txt')
    node.repository.put_object_from_bytes(b'dropped', 'dropped.txt')
    node.repository.delete_object('dropped.txt')
    node.store()
    dos_storage.maintain(full=True)
    assert not dos_storage.get_repository().has_object(sha256(b'dropped'))
    loaded = dos_storage.nodes.get(pk=node.pk)
    assert [loaded.repository.get_object_content(f'f{i}.txt') for i in range(10)] == [f'file {i}' for i in range(10)]


def test_full_maintain_after_deleting_nodes(dos_storage: Any) -> None:
    nodes = []
    for name in ('first', 'second'):
        node = dos_storage.nodes.create(node_type='data.core.folder.FolderData.', user=dos_storage.default_user)
        node.repository.put_object_from_bytes(name.encode(), 'own.txt')
        node.repository.put_object_from_bytes(b'common', 'common.txt')
        nodes.append(node.store())
    with dos_storage.transaction():
        dos_storage.delete_nodes_and_connections([nodes[0].pk])
    assert dos_storage.get_unreferenced_keyset() == {sha256(b'first')}
    dos_storage.maintain(full=True)
    repository = dos_storage.get_repository()
    assert repository.has_objects([sha256(b'first'), sha256(b'second'), sha256(b'common')]) == [False, True, True]
    assert dos_storage.nodes.get(pk=nodes[1].pk).repository.get_object_content('common.txt') == 'common'


WRITER = """
import sys
from sqlitedos import SqliteDosStorage

profile = SqliteDosStorage.create_profile('w', filepath=sys.argv[1], default_user_email='user@email.com')
storage = SqliteDosStorage(profile)
for index in range(int(sys.argv[2])):
    node = storage.nodes.create(node_type='data.core.folder.FolderData.', user=storage.default_user)
    node.repository.put_object_from_bytes(f'content {index}'.encode(), f'dir/{index}.txt')
    node.repository.put_object_from_bytes(b'shared by all', 'shared.txt')
    node.store()
storage.close()
"""


@pytest.mark.slow
def test_live_maintain_while_another_process_writes(dos_storage: Any, tmp_path: Path) -> None:
    script = tmp_path / 'writer.py'
    script.write_text(WRITER)
    count = 300
    writer = subprocess.Popen(
        [sys.executable, str(script), str(dos_storage.filepath_root), str(count)],
        env={'PYTHONPATH': str(Path(__file__).parent.parent), 'PATH': '/usr/bin:/bin'},
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    rounds = 0
    while writer.poll() is None:
        dos_storage.maintain()  # live: packs what the writer has put so far
        rounds += 1
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ''
    if writer.stderr:
        writer.stderr.close()
    dos_storage.maintain()
    rows = dos_storage.get_session().execute(SELECT_METADATA).fetchall()
    assert len(rows) == count and rounds > 0
    repository = dos_storage.get_repository()
    for index, (_, metadata) in enumerate(rows):
        files = flatten(json.loads(metadata))
        assert repository.get_object_content(files[f'dir/{index}.txt']) == f'content {index}'.encode()
        assert repository.get_object_content(files['shared.txt']) == b'shared by all'
    assert dos_storage.get_unreferenced_keyset() == set()
    assert repository.get_info()['Objects']['loose'] == 0


def test_full_maintain_keeps_files_of_unstored_nodes(dos_storage: Any) -> None:
    """An unstored node's files (in its sandbox, not the container) survive full maintenance until store()."""
    node = dos_storage.nodes.create(node_type='data.core.folder.FolderData.', user=dos_storage.default_user)
    node.repository.put_object_from_bytes(b'not stored yet', 'pending.txt')
    dos_storage.get_repository().put_object_from_filelike(io.BytesIO(b'true orphan'))
    report = dos_storage.maintain(full=True)
    assert report['unreferenced_objects'] == 1
    node.store()
    assert dos_storage.nodes.get(pk=node.pk).repository.get_object_content('pending.txt') == 'not stored yet'
    assert dos_storage.get_unreferenced_keyset() == set()
    del node
    gc.collect()
    assert dos_storage.get_repository().keys_held() == set()


HOLDER = """
import sys, time
from sqlitedos import SqliteDosStorage

storage = SqliteDosStorage(SqliteDosStorage.create_profile('h', filepath=sys.argv[1]))
storage.get_repository().has_object('0' * 64)  # uses the container
print('ready', flush=True)
sys.stdin.readline()
storage.close()
"""


@pytest.mark.slow
def test_full_maintain_refused_while_another_process_uses_the_storage(dos_storage: Any, tmp_path: Path) -> None:
    script = tmp_path / 'holder.py'
    script.write_text(HOLDER)
    orphan = dos_storage.get_repository().put_object_from_filelike(io.BytesIO(b'orphan'))
    holder = subprocess.Popen(
        [sys.executable, str(script), str(dos_storage.filepath_root)],
        env={'PYTHONPATH': str(Path(__file__).parent.parent), 'PATH': '/usr/bin:/bin'},
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == 'ready'
        with pytest.raises(LockedProfileError, match='another (sqlitedos )?process'):
            dos_storage.maintain(full=True)
        assert dos_storage.get_repository().has_object(orphan)
        dos_storage.maintain()  # live maintenance is fine
        assert dos_storage.get_repository().get_object_content(orphan) == b'orphan'  # still usable after refusal
    finally:
        holder.communicate('done\n', timeout=60)
    assert holder.returncode == 0
    dos_storage.maintain(full=True)
    assert not dos_storage.get_repository().has_object(orphan)


def test_full_maintain_with_two_storage_objects_in_one_process(dos_storage: Any) -> None:
    other = SqliteDosStorage(dos_storage.profile)
    try:
        key = other.get_repository().put_object_from_filelike(io.BytesIO(b'orphan'))
        # Another open connection, even of this process, may be about to commit a row naming that object: refused.
        with pytest.raises(LockedProfileError, match='another connection has its database open'):
            dos_storage.maintain(full=True)
        assert other.get_repository().has_object(key)
    finally:
        other.close()
    dos_storage.maintain(full=True)
    assert not dos_storage.get_repository().has_object(key)
