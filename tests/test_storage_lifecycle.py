"""Creating, opening, checking, closing and deleting storages; bad folders give clear errors and stay untouched."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from sqlitedos import Profile, SqliteDosStorage, SqliteTempBackend
from sqlitedos.exceptions import (
    ClosedStorage,
    CorruptStorage,
    IncompatibleStorageSchema,
    NotExistentKeyError,
    UnreachableStorage,
)
from tests.querydicts import node_query


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``folder``: its sha256 and its modification time in nanoseconds."""
    state = {}
    for path in sorted(folder.rglob('*')):
        if path.is_file():
            state[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return state


def profile_for(folder: Path, email: str | None = None) -> Profile:
    return SqliteDosStorage.create_profile('test', filepath=folder, default_user_email=email)


# --- the aiida-made storage folder -------------------------------------------------------------------------------


def test_fixture_storage_opens_without_writing(fixture_profile_path: Path, manifest) -> None:
    before = snapshot(fixture_profile_path)
    profile = profile_for(fixture_profile_path)
    assert SqliteDosStorage.version_profile(profile) == 'main_0002'
    storage = SqliteDosStorage(profile)  # validates the version and the repository uuid
    assert storage.get_global_variable('repository|uuid') == storage.get_container().container_id
    (count,) = storage.get_session().execute('SELECT count(*) FROM db_dbnode').fetchone()
    assert count == len(manifest['nodes'])
    # Reading takes locks and opens the container: still nothing may be written.
    repository = storage.get_repository()
    keys = list(repository.list_objects())
    assert keys and all(repository.get_object_content(key) for key in keys)
    assert storage.query().count(node_query({'node_type': {'like': 'data.%'}})) > 0
    storage.close()
    assert snapshot(fixture_profile_path) == before


def test_version_profile_of_an_empty_folder_creates_nothing(tmp_path: Path) -> None:
    assert SqliteDosStorage.version_profile(profile_for(tmp_path)) is None
    assert list(tmp_path.iterdir()) == []


# --- a storage sqlitedos creates ---------------------------------------------------------------------------------


def test_initialise_creates_a_complete_storage(tmp_path: Path) -> None:
    folder = tmp_path / 'new' / 'storage'
    profile = profile_for(folder, 'me@lab.org')
    assert SqliteDosStorage.initialise(profile) is True
    assert sorted(path.name for path in folder.iterdir()) == ['container', 'database.sqlite']
    config = json.loads((folder / 'container' / 'config.json').read_text())
    # aiida's container defaults (SPEC 1.3).
    assert config['hash_type'] == 'sha256'
    assert config['compression_algorithm'] == 'zlib+1'
    assert config['pack_size_target'] == 4 * 1024**3
    assert config['loose_prefix_len'] == 2

    with SqliteDosStorage(profile) as storage:
        assert storage.version() == SqliteDosStorage.version_profile(profile) == SqliteDosStorage.version_head()
        assert storage.get_global_variable('repository|uuid') == config['container_id']
        connection = storage.get_session()
        assert connection.execute('SELECT email FROM db_dbuser').fetchall() == [('me@lab.org',)]
        assert connection.execute('SELECT version_num FROM alembic_version').fetchall() == [('main_0002',)]
        assert connection.execute('PRAGMA journal_mode').fetchone() == ('wal',)
        assert storage.filepath_root == folder
        assert storage.filepath_database == folder / 'database.sqlite'
        assert storage.filepath_container == folder / 'container'
        assert storage.get_container().container_id == config['container_id']
        assert str(storage) == f'SqliteDosStorage[{folder}]: open,'
        assert not storage.is_closed
    assert storage.is_closed
    assert str(storage) == f'SqliteDosStorage[{folder}]: closed,'


def test_initialise_again_keeps_the_data_and_reset_erases_it(tmp_path: Path) -> None:
    profile = profile_for(tmp_path / 'storage')
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        storage.set_global_variable('kept', 'yes')
        old_uuid = storage.get_global_variable('repository|uuid')
    assert SqliteDosStorage.initialise(profile) is False
    with SqliteDosStorage(profile) as storage:
        assert storage.get_global_variable('kept') == 'yes'
    assert SqliteDosStorage.initialise(profile, reset=True) is True
    with SqliteDosStorage(profile) as storage:
        with pytest.raises(NotExistentKeyError):
            storage.get_global_variable('kept')
        assert storage.get_global_variable('repository|uuid') != old_uuid


def test_global_variables(storage) -> None:
    storage.set_global_variable('answer', {'x': [1, 2]}, description='the answer')
    assert storage.get_global_variable('answer') == {'x': [1, 2]}
    with pytest.raises(ValueError, match='already exists'):
        storage.set_global_variable('answer', 1, overwrite=False)
    storage.set_global_variable('answer', 42)
    assert storage.get_global_variable('answer') == 42
    with pytest.raises(KeyError):
        storage.get_global_variable('missing')


def test_closed_storage_refuses_work(storage) -> None:
    storage.close()
    storage.close()  # idempotent
    assert storage.is_closed
    with pytest.raises(ClosedStorage, match='closed'):
        storage.get_global_variable('x')
    with pytest.raises(ClosedStorage), storage.transaction():
        pass


def test_close_leaves_a_complete_database_file(tmp_path: Path) -> None:
    """After close the WAL is checkpointed into the main file, so copying ``database.sqlite`` alone is enough."""
    profile = profile_for(tmp_path / 'storage')
    SqliteDosStorage.initialise(profile)
    storage = SqliteDosStorage(profile)
    storage.set_global_variable('written', True)
    storage.close()
    assert not (tmp_path / 'storage' / 'database.sqlite-wal').exists()
    shutil.copyfile(tmp_path / 'storage' / 'database.sqlite', tmp_path / 'copy.sqlite')
    connection = sqlite3.connect(tmp_path / 'copy.sqlite')
    assert connection.execute("SELECT val FROM db_dbsetting WHERE key = 'written'").fetchone() == ('true',)
    connection.close()


def test_delete_removes_the_folder_with_wal_files(tmp_path: Path) -> None:
    folder = tmp_path / 'storage'
    profile = profile_for(folder)
    SqliteDosStorage.initialise(profile)
    storage = SqliteDosStorage(profile)
    storage.set_global_variable('x', 1)
    assert (folder / 'database.sqlite-wal').exists()
    storage.delete()
    assert storage.is_closed
    assert not folder.exists()


def test_create_profile_shape(tmp_path: Path) -> None:
    profile = SqliteDosStorage.create_profile('p', filepath=tmp_path / 'a' / '..' / 'b', default_user_email='x@y')
    assert profile.name == 'p'
    assert profile.storage_backend == 'core.sqlite_dos'
    assert profile.storage_config == {'filepath': str(tmp_path / 'b')}
    assert profile.default_user_email == 'x@y'
    with pytest.raises(ValueError, match='filepath'):
        SqliteDosStorage.create_profile('p')
    relative = SqliteDosStorage.Model('relative/path')
    assert Path(relative.filepath).is_absolute()


# --- bad input -----------------------------------------------------------------------------------------------------


def test_initialise_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / 'thesis.tex').write_text('precious')
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match='not empty.*choose an empty or new folder'):
        SqliteDosStorage.initialise(profile_for(tmp_path))
    assert snapshot(tmp_path) == before


def test_a_file_is_not_a_storage_folder(tmp_path: Path) -> None:
    path = tmp_path / 'file'
    path.write_text('data')
    profile = profile_for(path)
    with pytest.raises(ValueError, match='is a file.*choose a folder'):
        SqliteDosStorage.initialise(profile)
    with pytest.raises(UnreachableStorage, match='does not exist'):
        SqliteDosStorage(profile)
    assert path.read_text() == 'data'


def test_missing_folder_and_missing_database(tmp_path: Path) -> None:
    with pytest.raises(UnreachableStorage, match='initialise'):
        SqliteDosStorage(profile_for(tmp_path / 'nowhere'))
    assert not (tmp_path / 'nowhere').exists()
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UnreachableStorage, match='no database.sqlite.*initialise'):
        SqliteDosStorage(profile_for(tmp_path / 'empty'))
    assert list((tmp_path / 'empty').iterdir()) == []


def test_unknown_revision(fixture_profile_path: Path) -> None:
    connection = sqlite3.connect(fixture_profile_path / 'database.sqlite', isolation_level=None)
    connection.execute("UPDATE alembic_version SET version_num = 'main_0099'")
    connection.close()
    before = snapshot(fixture_profile_path)
    with pytest.raises(IncompatibleStorageSchema, match="'main_0099'.*'main_0002'.*newer"):
        SqliteDosStorage(profile_for(fixture_profile_path))
    assert snapshot(fixture_profile_path) == before


def test_container_of_another_storage(tmp_path: Path) -> None:
    first, second = tmp_path / 'first', tmp_path / 'second'
    SqliteDosStorage.initialise(profile_for(first))
    SqliteDosStorage.initialise(profile_for(second))
    shutil.rmtree(first / 'container')
    shutil.copytree(second / 'container', first / 'container')
    before = snapshot(first)
    with pytest.raises(CorruptStorage, match='different storages.*backup'):
        SqliteDosStorage(profile_for(first))
    assert snapshot(first) == before


def test_truncated_database(fixture_profile_path: Path) -> None:
    database = fixture_profile_path / 'database.sqlite'
    database.write_bytes(database.read_bytes()[:3000])
    before = snapshot(fixture_profile_path)
    with pytest.raises(CorruptStorage, match='backup'):
        SqliteDosStorage(profile_for(fixture_profile_path))
    assert snapshot(fixture_profile_path) == before


def test_a_database_that_is_not_sqlite(fixture_profile_path: Path) -> None:
    (fixture_profile_path / 'database.sqlite').write_bytes(b'\0' * 8192 + b'garbage')
    with pytest.raises(CorruptStorage):
        SqliteDosStorage(profile_for(fixture_profile_path))


@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root may write to read-only folders')
def test_read_only_folder_opens_read_only(tmp_path: Path) -> None:
    from sqlitedos.exceptions import ReadOnlyError

    folder = tmp_path / 'storage'
    profile = profile_for(folder)
    SqliteDosStorage.initialise(profile)
    for path in [folder, folder / 'database.sqlite']:
        path.chmod(0o555)
    try:
        with SqliteDosStorage(profile) as storage:
            assert storage.get_global_variable('repository|uuid')
            with pytest.raises(ReadOnlyError):
                storage.set_global_variable('x', 1)
    finally:
        for path in [folder, folder / 'database.sqlite']:
            path.chmod(0o755)


# --- the temp backend --------------------------------------------------------------------------------------------


def test_temp_backend_lifecycle(tmp_path: Path) -> None:
    profile = SqliteTempBackend.create_profile()
    assert profile.name == 'temp'
    assert profile.default_user_email == 'user@email.com'
    assert profile.storage_backend == 'core.sqlite_temp'
    assert SqliteTempBackend.initialise(profile) is False
    assert SqliteTempBackend.migrate(profile) is None
    assert SqliteTempBackend.version_profile(profile) == SqliteTempBackend.version_head()
    assert SqliteTempBackend.cli_exposed is False

    storage = SqliteTempBackend(SqliteTempBackend.create_profile(default_user_email='a@b.c'))
    assert str(storage) == 'SqliteTemp storage [open]'
    users = storage.get_session().execute('SELECT email FROM db_dbuser').fetchall()
    assert users == [('a@b.c',)]
    storage.set_global_variable('x', [1])
    assert storage.get_global_variable('x') == [1]
    storage.close()
    assert storage.is_closed
    assert str(storage) == 'SqliteTemp storage [closed]'


def test_temp_backends_are_independent_and_vanish() -> None:
    first = SqliteTempBackend(SqliteTempBackend.create_profile())
    second = SqliteTempBackend(SqliteTempBackend.create_profile())
    first.set_global_variable('only-here', 1)
    with pytest.raises(KeyError):
        second.get_global_variable('only-here')
    connection = first.get_session()
    del first
    gc.collect()
    with pytest.raises(sqlite3.ProgrammingError, match='closed'):
        connection.execute('SELECT 1')
    second.close()


def test_temp_model_defaults_to_a_new_folder() -> None:
    one, two = SqliteTempBackend.Model(), SqliteTempBackend.Model()
    assert Path(one.filepath).is_absolute()
    assert one.filepath != two.filepath


def test_temp_backend_transactions_take_turns_across_threads() -> None:
    """The temp backend's one connection serves every thread; their transactions must not interleave."""
    import threading

    storage = SqliteTempBackend(SqliteTempBackend.create_profile())
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for index in range(100):
                with storage.transaction():
                    storage.set_global_variable(f'w{worker}-{index}', index)
                    with storage.transaction():  # a savepoint inside, as stores inside user transactions do
                        storage.set_global_variable(f'w{worker}-{index}-inner', index)
                    assert storage.in_transaction
                assert not storage.in_transaction
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (count,) = storage.get_session().execute('SELECT count(*) FROM db_dbsetting').fetchone()
    assert count == 4 * 100 * 2
    storage.close()


def test_the_base_class_declares_what_the_backends_share() -> None:
    """Every public method two backends define is declared on ``StorageBackend`` with a docstring, and ``maintain``
    answers one type (a report dict) on each backend that can be maintained."""
    import inspect

    from sqlitedos import SqliteDosStorage, SqliteTempBackend, SqliteZipBackend
    from sqlitedos.storage.base import StorageBackend

    backends = (SqliteDosStorage, SqliteTempBackend, SqliteZipBackend)

    def methods(cls: type) -> set[str]:
        kinds = (staticmethod, classmethod, property)
        return {
            name
            for name, value in vars(cls).items()
            if not name.startswith('_') and (inspect.isfunction(value) or isinstance(value, kinds))
        }

    own = [methods(cls) for cls in backends]
    shared = {name for name in set().union(*own) if sum(name in names for names in own) >= 2}
    assert {'get_repository', 'maintain', 'delete', 'version_head', 'initialise', 'migrate'} <= shared
    missing = sorted(name for name in shared if name not in vars(StorageBackend))
    assert missing == []
    undocumented = sorted(name for name in shared if not inspect.getdoc(getattr(StorageBackend, name)))
    assert undocumented == []
    returns = {inspect.signature(cls.maintain).return_annotation for cls in (StorageBackend, *backends)}
    assert returns == {'dict[str, Any]'}
