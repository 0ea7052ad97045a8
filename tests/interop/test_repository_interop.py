"""Node files cross over: written by sqlitedos and read by aiida-core 2.9.4, through both tools' maintenance."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

from sqlitedos import SqliteDosStorage

EMAIL = 'repo@lab.org'
#: path -> content of the files given to each node (nested folders, empty and binary files, shared content).
FILES: dict[str, bytes] = {
    'a.txt': b'alpha\n',
    'sub/copy.txt': b'alpha\n',
    'sub/dir/blob.bin': bytes(range(256)) * 64,
    'empty.dat': b'',
    'ünïcode näme.txt': 'ünïcode\r\n'.encode(),
    'big.bin': os.urandom(3 * 1024 * 1024),
}


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def make_storage(folder: Path) -> SqliteDosStorage:
    profile = SqliteDosStorage.create_profile('repo', filepath=folder, default_user_email=EMAIL)
    SqliteDosStorage.initialise(profile)
    return SqliteDosStorage(profile)


def write_nodes(storage: SqliteDosStorage, count: int, start: int = 0) -> list[str]:
    """Store ``count`` FolderData nodes, each with ``FILES`` plus one file of its own; return their uuids."""
    uuids = []
    for index in range(start, start + count):
        node = storage.nodes.create(node_type='data.core.folder.FolderData.', user=storage.default_user)
        for path, content in FILES.items():
            node.repository.put_object_from_filelike(io.BytesIO(content), path)
        node.repository.put_object_from_bytes(f'own {index}'.encode(), 'own.txt')
        node.repository.create_directory('emptydir')
        node.store()
        uuids.append(node.uuid)
    return uuids


def expected_files(index: int) -> dict[str, bytes]:
    return {**FILES, 'own.txt': f'own {index}'.encode()}


def check_in_aiida(uuids: list[str]) -> None:
    """Read every file of every node with aiida's ORM (a profile must be loaded)."""
    from aiida import orm

    for index, uuid in enumerate(uuids):
        node = orm.load_node(uuid)
        repository = node.base.repository
        for path, content in expected_files(index).items():
            assert repository.get_object_content(path, mode='rb') == content, (uuid, path)
        assert sorted(repository.list_object_names()) == sorted(
            ['a.txt', 'sub', 'empty.dat', 'ünïcode näme.txt', 'big.bin', 'own.txt', 'emptydir']
        )
        assert repository.list_object_names('emptydir') == []
        assert repository.get_object_content('ünïcode näme.txt') == 'ünïcode\r\n'


def check_in_sqlitedos(storage: SqliteDosStorage, uuids: list[str]) -> None:
    for index, uuid in enumerate(uuids):
        node = storage.nodes.get(uuid=uuid)
        for path, content in expected_files(index).items():
            assert node.repository.get_object_content(path, 'rb') == content, (uuid, path)


def test_files_written_by_sqlitedos_read_by_aiida_and_survive_aiida_full_maintain(
    tmp_path: Path, load_in_aiida: Any
) -> None:
    folder = tmp_path / 'storage'
    with make_storage(folder) as storage:
        uuids = write_nodes(storage, 2)
        storage.maintain()  # the first nodes' objects are packed, the later ones stay loose
        uuids += write_nodes(storage, 1, start=2)
        orphan = storage.get_repository().put_object_from_filelike(io.BytesIO(b'referenced by no node'))
        keys = set(storage.get_repository().list_objects())

    with load_in_aiida(folder, EMAIL) as aiida_storage:
        check_in_aiida(uuids)
        assert aiida_storage.get_unreferenced_keyset() == {orphan}
        aiida_storage.maintain(full=True)  # `verdi storage maintain --full`
        check_in_aiida(uuids)
        assert aiida_storage.get_repository().get_info()['Objects']['loose'] == 0

    with SqliteDosStorage(SqliteDosStorage.create_profile('again', filepath=folder)) as storage:
        check_in_sqlitedos(storage, uuids)
        assert set(storage.get_repository().list_objects()) == keys - {orphan}
        assert storage.get_unreferenced_keyset() == set()


def test_sqlitedos_full_maintain_then_aiida_reads(tmp_path: Path, load_in_aiida: Any) -> None:
    folder = tmp_path / 'storage'
    with make_storage(folder) as storage:
        uuids = write_nodes(storage, 2)
        storage.get_repository().put_object_from_filelike(io.BytesIO(b'orphan'))
        report = storage.maintain(full=True, compress=True)
        assert report['unreferenced_objects'] == 1
        check_in_sqlitedos(storage, uuids)

    with load_in_aiida(folder, EMAIL) as aiida_storage:
        check_in_aiida(uuids)
        assert aiida_storage.get_unreferenced_keyset() == set()
        aiida_storage.maintain(full=False)
        check_in_aiida(uuids)


def test_files_written_by_aiida_read_by_sqlitedos_after_its_full_maintain(tmp_path: Path, load_in_aiida: Any) -> None:
    folder = tmp_path / 'storage'
    make_storage(folder).close()
    with load_in_aiida(folder, EMAIL):
        from aiida import orm

        node = orm.FolderData()
        for path, content in FILES.items():
            node.base.repository.put_object_from_bytes(content, path)
        node.store()
        uuid = node.uuid

    with SqliteDosStorage(SqliteDosStorage.create_profile('again', filepath=folder)) as storage:
        loaded = storage.nodes.get(uuid=uuid)
        assert {path: sha256(loaded.repository.get_object_content(path, 'rb')) for path in FILES} == {
            path: sha256(content) for path, content in FILES.items()
        }
        storage.maintain(full=True)
        assert loaded.repository.get_object_content('big.bin', 'rb') == FILES['big.bin']

    with load_in_aiida(folder, EMAIL):
        from aiida import orm

        repository = orm.load_node(uuid).base.repository
        assert {path: repository.get_object_content(path, mode='rb') for path in FILES} == FILES
