"""Journal modes across the two programs: an aiida-made folder (rollback journal) becomes WAL on sqlitedos' first
write, and aiida-core 2.9.4 keeps reading, writing and maintaining it; archives exported from such a folder are
never WAL, and aiida-core imports them."""

from __future__ import annotations

import sqlite3
import zipfile
from pathlib import Path

from sqlitedos import QueryBuilder, SqliteDosStorage
from sqlitedos.archive import create_archive, import_archive
from sqlitedos.verify import verify

EMAIL = 'fixture@example.org'


def write_version(data: bytes) -> int:
    """Byte 18 of a SQLite file: 1 for a rollback journal, 2 for WAL (https://www.sqlite.org/fileformat.html)."""
    return data[18]


def test_aiida_made_folder_after_a_sqlitedos_write(
    tmp_path: Path, fixture_profile_path: Path, make_aiida_profile, load_in_aiida
) -> None:
    database = fixture_profile_path / 'database.sqlite'
    assert write_version(database.read_bytes()[:100]) == 1
    profile = SqliteDosStorage.create_profile('f', filepath=fixture_profile_path, default_user_email=EMAIL)
    with SqliteDosStorage(profile) as storage:
        # The export is this session's first write (its temporary tables), with the archive database attached.
        archive = create_archive(storage, tmp_path / 'from-aiida-folder.aiida')
        (sample,) = storage.get_session().execute('SELECT uuid FROM db_dbnode ORDER BY id LIMIT 1').fetchone()
    with zipfile.ZipFile(archive) as handle:
        assert write_version(handle.read('db.sqlite3')[:100]) == 1  # the archive's database is never WAL
    with SqliteDosStorage(profile) as storage:
        ours = storage.nodes.create(node_type='data.core.int.Int.', user=storage.default_user, label='ours')
        ours.set_attribute('value', 7)
        ours.store()
    assert write_version(database.read_bytes()[:100]) == 2  # persistent: the folder is WAL from now on

    # aiida-core on the now-WAL folder: reads our node, stores its own, runs its live maintenance.
    with load_in_aiida(fixture_profile_path, EMAIL) as aiida_storage:
        from aiida import orm

        assert orm.load_node(ours.uuid).value == 7
        theirs = orm.Int(11).store().uuid
        aiida_storage.maintain(full=False)
    assert write_version(database.read_bytes()[:100]) == 2  # aiida kept WAL
    with SqliteDosStorage(profile) as storage:
        found = QueryBuilder(backend=storage).append(
            entity_type='data.core.int.Int.', orm_base='node', filters={'uuid': theirs}, project='attributes.value'
        )
        assert found.all() == [[11]]
    assert verify(fixture_profile_path).ok

    # The archive imports into aiida-core and into sqlitedos.
    target = tmp_path / 'aiida-target'
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    AiidaSqliteDosStorage.initialise(make_aiida_profile(target, 'aiida@example.org'))
    with load_in_aiida(target, 'aiida@example.org'):
        from aiida import orm
        from aiida.tools.archive import import_archive as aiida_import

        aiida_import(archive, create_group=False)
        assert orm.load_node(sample).uuid == sample
    other = SqliteDosStorage.create_profile('o', filepath=tmp_path / 'ours', default_user_email=EMAIL)
    SqliteDosStorage.initialise(other)
    with SqliteDosStorage(other) as storage:
        import_archive(storage, archive)
        assert storage.nodes.get(uuid=sample).uuid == sample
    connection = sqlite3.connect(target / 'database.sqlite')
    try:
        assert connection.execute('SELECT count(*) FROM db_dbnode WHERE uuid = ?', (sample,)).fetchone() == (1,)
    finally:
        connection.close()
