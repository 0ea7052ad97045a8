"""An archive's database is never WAL: exporting from an aiida-made folder (rollback journal, switched to WAL by
the export's own first write) used to make the archive WAL too, and importing it then failed with
``database is locked``. Archives written that way by older versions import all the same."""

from __future__ import annotations

import zipfile
from pathlib import Path

from sqlitedos import SqliteDosStorage
from sqlitedos.archive import create_archive, import_archive
from tests.test_archive_bad_input import rewrite

EMAIL = 'fixture@example.org'


def fresh_storage(path: Path) -> SqliteDosStorage:
    profile = SqliteDosStorage.create_profile('t', filepath=path, default_user_email='t@x.org')
    SqliteDosStorage.initialise(profile)
    return SqliteDosStorage(profile)


def test_export_from_an_aiida_made_folder_is_not_wal_and_imports(fixture_profile_path: Path, tmp_path: Path) -> None:
    database = fixture_profile_path / 'database.sqlite'
    assert database.read_bytes()[18] == 1
    profile = SqliteDosStorage.create_profile('f', filepath=fixture_profile_path, default_user_email=EMAIL)
    with SqliteDosStorage(profile) as storage:
        archive = create_archive(storage, tmp_path / 'a.aiida')  # the first write of this session
        count = storage.nodes.count()
    assert database.read_bytes()[18] == 2  # the storage's own database: WAL from its first write on (documented)
    with zipfile.ZipFile(archive) as handle:
        header = handle.read('db.sqlite3')[:20]
    assert (header[18], header[19]) == (1, 1)
    with fresh_storage(tmp_path / 'target') as target:
        import_archive(target, archive)
        assert target.nodes.count() == count


def test_archive_with_a_wal_database_from_older_versions_imports(fixture_archive_path: Path, tmp_path: Path) -> None:
    def as_wal(name: str, data: bytes) -> tuple[str, bytes]:
        return name, (data[:18] + b'\x02\x02' + data[20:]) if name == 'db.sqlite3' else data

    archive = rewrite(fixture_archive_path, tmp_path / 'wal.aiida', as_wal)
    with fresh_storage(tmp_path / 'target') as target:
        import_archive(target, archive)
        assert target.nodes.count() > 0
