"""aiida's names that code written against its storage classes looks for, each with aiida's meaning (SPEC 4).

``SqliteTempBackend.delete``, ``SqliteDosMigrator.initialise_database``, and per instance ``_default_user``,
``_initialise_session`` and ``_session_factory`` (aiida's SQLAlchemy session factory: here the calling thread's
``sqlite3`` connection).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest

from sqlitedos import SqliteDosStorage, SqliteTempBackend
from sqlitedos.exceptions import ClosedStorage, InvalidOperation
from sqlitedos.storage.sqlite_dos import SqliteDosMigrator

DATA_TYPE = 'data.core.int.Int.'


def in_thread(function: Any) -> Any:
    """``function()`` run in a new thread; its result (or its exception, raised here)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome['value'] = function()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome['error'] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if 'error' in outcome:
        raise outcome['error']
    return outcome['value']


@pytest.mark.parametrize('cls', [SqliteDosStorage, SqliteTempBackend])
def test_the_names_exist_on_the_classes(cls: type) -> None:
    for name in ('_default_user', '_initialise_session', '_session_factory', 'delete', 'reset_default_user'):
        assert hasattr(cls, name), name
    assert callable(SqliteDosMigrator.initialise_database)


def test_default_user_is_cached_in_default_user_and_reset(storage: Any) -> None:
    """aiida: ``_default_user`` is None until ``default_user`` is asked for, then the user; reset empties it."""
    assert storage._default_user is None
    user = storage.default_user
    assert user is not None and user.email == 'user@email.com'
    assert storage._default_user is user
    assert storage.default_user is user  # cached: the same object
    storage.reset_default_user()
    assert storage._default_user is None
    assert storage.default_user.pk == user.pk


def test_session_factory_gives_the_thread_connection(storage: Any) -> None:
    factory = storage._session_factory
    assert factory is not None
    assert factory() is storage.get_session()
    other = in_thread(factory)
    if isinstance(storage, SqliteDosStorage):
        assert other is not storage.get_session()  # one connection per thread for a folder
    else:
        assert other is storage.get_session()  # one shared in-memory connection
    assert other.execute('SELECT count(*) FROM db_dbuser').fetchone() == (1,)
    storage.close()
    assert storage._session_factory is None


def test_initialise_session_opens_the_thread_connection_now(dos_storage: Any) -> None:
    before = len(dos_storage._sessions)
    in_thread(dos_storage._initialise_session)
    assert len(dos_storage._sessions) == before + 1
    dos_storage._initialise_session()  # this thread's connection exists: nothing new
    assert len(dos_storage._sessions) == before + 1
    dos_storage.close()
    with pytest.raises(ClosedStorage):
        dos_storage._initialise_session()


def test_initialise_session_on_a_closed_temp_backend(temp_storage: Any) -> None:
    temp_storage._initialise_session()
    temp_storage.close()
    with pytest.raises(ClosedStorage):
        temp_storage._initialise_session()


def test_temp_backend_delete_erases_the_sandbox(tmp_path: Path) -> None:
    """SPEC 4.2: ``delete()`` of the temp backend erases its sandbox (files gone); the storage goes on with a new one."""
    storage = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=str(tmp_path / 'sandbox')))
    try:
        node = storage.nodes.create(node_type=DATA_TYPE, user=storage.default_user)
        node.repository.put_object_from_filelike(io.BytesIO(b'data'), 'a.txt')
        node.store()
        key = node.repository.get_object('a.txt').key
        assert storage.get_repository().has_object(key)
        assert any(path.is_file() for path in (tmp_path / 'sandbox').rglob('*'))
        storage.delete()
        assert not any(path.is_file() for path in (tmp_path / 'sandbox').rglob('*'))
        assert not storage.is_closed
        assert not storage.get_repository().has_object(key)
        assert storage.get_repository().put_object_from_filelike(io.BytesIO(b'data')) == key  # a new sandbox
    finally:
        storage.close()
    assert not any(path.is_file() for path in (tmp_path / 'sandbox').rglob('*'))


def test_migrator_initialise_database_next_to_an_existing_container(tmp_path: Path) -> None:
    """aiida's two steps: the container first, then ``initialise_database`` (schema at head, repository uuid)."""
    profile = SqliteDosStorage.create_profile('names', filepath=tmp_path / 'store', default_user_email='me@lab.org')
    assert SqliteDosStorage.initialise(profile)
    (tmp_path / 'store' / 'database.sqlite').unlink()
    for leftover in (tmp_path / 'store').glob('database.sqlite-*'):
        leftover.unlink()
    migrator = SqliteDosMigrator(profile)
    migrator.initialise_database()
    assert SqliteDosStorage.version_profile(profile) == SqliteDosStorage.version_head()
    with SqliteDosStorage(profile) as storage:  # validates the repository uuid against the container's
        assert storage.default_user.email == 'me@lab.org'
        assert storage.nodes.count() == 0
    with pytest.raises(InvalidOperation, match='already exists'):
        migrator.initialise_database()
    with SqliteDosStorage(profile) as storage:
        assert storage.users.count() == 1  # the refused call changed nothing
