"""Damaged storage folders: each is refused or reported with an exception of ``sqlitedos.exceptions`` naming the
remedy, never a bare ``sqlite3``/``OSError``, and nothing is written. (``test_storage_lifecycle.py`` covers an empty
folder, an unknown revision, a mismatched container, a 3000-byte truncation and a non-SQLite file.)"""

from __future__ import annotations

import hashlib
import io
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import reliability_workers as workers

from sqlitedos import QueryBuilder, SqliteDosStorage
from sqlitedos.exceptions import AiidaException, CorruptStorage, ReadOnlyError, UnreachableStorage
from sqlitedos.verify import verify


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but SQLite's ``-wal``/``-shm`` companions, which a reader of a WAL database may create."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob('*'))
        if path.is_file() and not path.name.endswith(('-wal', '-shm'))
    }


def assert_verify_fails(root: Path) -> None:
    """``verify`` on the path reports a problem, or refuses the folder with one of our exceptions."""
    try:
        report = verify(root)
    except AiidaException:
        return
    assert not report.ok


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[str]]:
    """A closed storage folder holding five pairs, two of their files packed."""
    root = tmp_path / 'storage'
    profile = SqliteDosStorage.create_profile('d', filepath=root, default_user_email=workers.EMAIL)
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        uuids = [workers.store_pair(storage, str(index)) for index in range(5)]
        storage.maintain()
        uuids.append(workers.store_pair(storage, 'loose'))
    return root, uuids


def test_missing_database_with_container(filled: tuple[Path, list[str]]) -> None:
    root, _ = filled
    (root / 'database.sqlite').unlink()
    before = snapshot(root)
    with pytest.raises(UnreachableStorage, match='no database.sqlite.*initialise'):
        workers.open_storage(str(root))
    assert_verify_fails(root)
    assert snapshot(root) == before


def test_missing_container(filled: tuple[Path, list[str]]) -> None:
    root, _ = filled
    shutil.rmtree(root / 'container')
    before = snapshot(root)
    with pytest.raises(AiidaException, match='container'):
        workers.open_storage(str(root))
    assert_verify_fails(root)
    assert snapshot(root) == before


@pytest.mark.parametrize('content', [b'', b'{not json', b'[1, 2]', b'{"container_id": 5}', b'\xff\xfe'])
def test_unreadable_container_config(filled: tuple[Path, list[str]], content: bytes) -> None:
    root, _ = filled
    (root / 'container' / 'config.json').write_bytes(content)
    before = snapshot(root)
    with pytest.raises(AiidaException, match='config.json'):
        workers.open_storage(str(root))
    assert_verify_fails(root)
    assert snapshot(root) == before


@pytest.mark.parametrize('fraction', [0.25, 0.5, 0.9])
def test_database_truncated_part_way(filled: tuple[Path, list[str]], fraction: float) -> None:
    """A database cut short past its schema pages: opening, querying or verifying never leaks a sqlite3 error."""
    root, uuids = filled
    database = root / 'database.sqlite'
    content = database.read_bytes()
    database.write_bytes(content[: int(len(content) * fraction) // 4096 * 4096])
    try:
        storage = workers.open_storage(str(root))
    except CorruptStorage:
        pass
    else:
        with storage, pytest.raises(CorruptStorage):
            for uuid in uuids:
                workers.check_data_node(storage, uuid)
            QueryBuilder(backend=storage).append(entity_type='', orm_base='node', project=['*']).all()
    assert_verify_fails(root)


def test_read_only_folder(filled: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Opened read-only (as where the folder is not writable; root may write anywhere, so the detection is forced):
    queries and file reads work, every write fails with ``ReadOnlyError``, and the folder is unchanged."""
    root, uuids = filled
    monkeypatch.setattr('sqlitedos.storage.sqlite_dos._is_writable', lambda folder: False)
    before = snapshot(root)
    with workers.open_storage(str(root)) as storage:
        assert storage.nodes.count() == 12
        assert workers.half_pairs(storage) == (0, 0)
        for uuid in uuids:
            assert workers.check_data_node(storage, uuid) == []
        node = storage.nodes.get(uuid=uuids[0])
        writes = [
            lambda: storage.set_global_variable('x', 1),
            lambda: node.set_attribute('a', 1),
            lambda: node.set_extra('a', 1),
            lambda: storage.nodes.create(node_type=workers.DATA_TYPE, user=storage.default_user).store(),
            lambda: delete_in_transaction(storage, node.pk),
            lambda: storage.maintain(),
        ]
        for write in writes:
            with pytest.raises(ReadOnlyError, match='read-only'):
                write()
        assert 'a' not in storage.nodes.get(uuid=uuids[0]).extras
    assert snapshot(root) == before


def delete_in_transaction(storage: Any, pk: int) -> None:
    with storage.transaction():
        storage.delete_nodes_and_connections([pk])


def test_database_of_another_kind(filled: tuple[Path, list[str]]) -> None:
    """A valid SQLite file that is not a storage database (no tables at all)."""
    root, _ = filled
    (root / 'database.sqlite').unlink()
    sqlite3.connect(root / 'database.sqlite').close()
    with pytest.raises(AiidaException, match='no known version|not a sqlite_dos'):
        workers.open_storage(str(root))


def test_object_missing_from_container_is_reported(filled: tuple[Path, list[str]]) -> None:
    root, uuids = filled
    key = hashlib.sha256(workers.file_contents(uuids[-1])['own.txt']).hexdigest()
    (root / 'container' / 'loose' / key[:2] / key[2:]).unlink()  # the last pair's files are not packed
    assert_verify_fails(root)
    with workers.open_storage(str(root)) as storage:
        with pytest.raises(AiidaException):
            for uuid in uuids:
                node = storage.nodes.get(uuid=uuid)
                for path in workers.file_contents(uuid):
                    node.repository.get_object_content(path, 'rb')
        storage.get_repository().put_object_from_filelike(io.BytesIO(b'x'))  # the storage still works
