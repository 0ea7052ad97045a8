"""Storage folders cross over: sqlitedos-made folders open in aiida-core 2.9.4, and aiida-made ones in sqlitedos."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlitedos import SqliteDosStorage
from tests.test_migrate import normalised_schema


def test_sqlitedos_storage_opens_in_aiida(tmp_path: Path, open_in_aiida, load_in_aiida) -> None:
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    folder = tmp_path / 'made-by-sqlitedos'
    profile = SqliteDosStorage.create_profile('made', filepath=folder, default_user_email='me@lab.org')
    assert SqliteDosStorage.initialise(profile) is True

    with open_in_aiida(folder) as aiida_storage:
        assert aiida_storage.version_profile(aiida_storage.profile) == AiidaSqliteDosStorage.version_head()
        info = aiida_storage.get_info()
        assert info['entities']['Users'] == {'count': 1}
        assert info['entities']['Nodes'] == {'count': 0}

    # aiida can go on writing to it with its ORM, as the profile's default user.
    with load_in_aiida(folder, default_user_email='me@lab.org'):
        from aiida import orm

        node = orm.Int(5).store()
        assert orm.load_node(node.pk).value == 5
        assert node.user.email == 'me@lab.org'
        uuid = node.uuid

    with SqliteDosStorage(profile) as storage:
        rows = storage.get_session().execute('SELECT uuid, attributes FROM db_dbnode').fetchall()
    assert rows == [(uuid, '{"value": 5}')]


def test_aiida_storage_opens_in_sqlitedos(tmp_path: Path, make_aiida_profile) -> None:
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    folder = tmp_path / 'made-by-aiida'
    AiidaSqliteDosStorage.initialise(make_aiida_profile(folder))

    profile = SqliteDosStorage.create_profile('aiida-made', filepath=folder)
    assert SqliteDosStorage.version_profile(profile) == SqliteDosStorage.version_head()
    with SqliteDosStorage(profile) as storage:
        assert storage.get_global_variable('repository|uuid') == storage.get_container().container_id


def test_initialised_schemas_are_identical(tmp_path: Path, make_aiida_profile) -> None:
    """The schema sqlitedos creates equals the one aiida-core creates today (not only the fixture's)."""
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    AiidaSqliteDosStorage.initialise(make_aiida_profile(tmp_path / 'aiida'))
    SqliteDosStorage.initialise(SqliteDosStorage.create_profile('ours', filepath=tmp_path / 'ours'))

    schemas = []
    for name in ('aiida', 'ours'):
        connection = sqlite3.connect(tmp_path / name / 'database.sqlite')
        try:
            schemas.append(normalised_schema(connection))
        finally:
            connection.close()
    assert schemas[0] == schemas[1]
