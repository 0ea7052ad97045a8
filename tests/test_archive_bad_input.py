"""Bad archives: each is refused with a clear exception of ``sqlitedos.exceptions`` and the storage is unchanged."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sqlitedos.archive import import_archive
from sqlitedos.exceptions import (
    AiidaException,
    CorruptStorage,
    ImportUniquenessError,
    ImportValidationError,
    IncompatibleStorageSchema,
)
from tests.test_archive_export import build_graph
from tests.test_archive_import import full_dump, storage_dump

Transform = Callable[[str, bytes], 'tuple[str, bytes] | None']


def rewrite(
    source: Path, target: Path, transform: Transform | None = None, extra: tuple[tuple[str, bytes], ...] = ()
) -> Path:
    """A copy of the archive ``source`` with members changed by ``transform`` (None drops one) plus ``extra``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, 'w', zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            result = (info.filename, old.read(info.filename))
            if transform is not None:
                result = transform(*result)
            if result is not None:
                new.writestr(result[0], result[1])
        for name, data in extra:
            new.writestr(name, data)
    return target


def with_database(source: Path, target: Path, tmp_path: Path, sql: str) -> Path:
    """A copy of the archive whose ``db.sqlite3`` had ``sql`` run on it."""
    database = tmp_path / 'edit.sqlite3'
    with zipfile.ZipFile(source) as archive:
        database.write_bytes(archive.read('db.sqlite3'))
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.executescript(sql)
    finally:
        connection.close()
    data = database.read_bytes()
    return rewrite(source, target, lambda name, old: (name, data if name == 'db.sqlite3' else old))


def first_key(archive: Path) -> str:
    with zipfile.ZipFile(archive) as handle:
        return next(name[5:] for name in handle.namelist() if name.startswith('repo/'))


@pytest.fixture
def populated(storage: Any) -> Any:
    """A storage with some content of its own, so "unchanged" means something."""
    build_graph(storage)
    return storage


def assert_refused(storage: Any, path: Path, error: type[AiidaException], match: str, objects: bool = True) -> None:
    before = storage_dump(storage) if objects else full_dump(storage.get_session())
    with pytest.raises(error, match=match):
        import_archive(storage, path, include_authinfos=True)
    after = storage_dump(storage) if objects else full_dump(storage.get_session())
    assert after == before


def test_not_a_zip(populated: Any, tmp_path: Path) -> None:
    path = tmp_path / 'junk.aiida'
    path.write_bytes(b'this is not a zip file at all' * 100)
    assert_refused(populated, path, CorruptStorage, 'not a readable')


def test_truncated_zip(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    path = tmp_path / 'truncated.aiida'
    data = fixture_archive_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_refused(populated, path, CorruptStorage, 'not a readable')


def test_missing_archive(populated: Any, tmp_path: Path) -> None:
    assert_refused(populated, tmp_path / 'nothing.aiida', CorruptStorage, 'does not exist')


def test_wrong_export_version(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    def old_version(name: str, data: bytes) -> tuple[str, bytes]:
        if name == 'metadata.json':
            data = json.dumps({**json.loads(data), 'export_version': '0.9'}).encode()
        return name, data

    path = rewrite(fixture_archive_path, tmp_path / 'old.aiida', old_version)
    assert_refused(populated, path, IncompatibleStorageSchema, "'0.9'")


@pytest.mark.parametrize(
    'name',
    ['../evil', 'repo/../../evil', '/etc/evil', 'repo/' + 'a' * 63, 'other.txt', 'C:/evil', '__MACOSX/../../evil'],
)
def test_unsafe_or_unknown_member_names(populated: Any, fixture_archive_path: Path, tmp_path: Path, name: str) -> None:
    path = rewrite(fixture_archive_path, tmp_path / 'evil.aiida', extra=((name, b'x'),))
    assert_refused(populated, path, CorruptStorage, 'unsafe|unexpected')
    assert not (tmp_path.parent / 'evil').exists()


def test_directory_entries_and_macosx_are_ignored(storage: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    path = rewrite(fixture_archive_path, tmp_path / 'mac.aiida', extra=(('repo/', b''), ('__MACOSX/._x', b'junk')))
    import_archive(storage, path)
    assert storage.get_session().execute('SELECT count(*) FROM db_dbnode').fetchone() == (65,)


def test_missing_metadata_or_database(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    for member in ('metadata.json', 'db.sqlite3'):
        path = rewrite(
            fixture_archive_path,
            tmp_path / f'no-{member}.aiida',
            lambda name, data, member=member: None if name == member else (name, data),
        )
        assert_refused(populated, path, CorruptStorage, f'has no {member}')


def test_object_whose_content_does_not_match_its_key(
    populated: Any, fixture_archive_path: Path, tmp_path: Path
) -> None:
    key = first_key(fixture_archive_path)
    path = rewrite(
        fixture_archive_path,
        tmp_path / 'bad-object.aiida',
        lambda name, data: (name, b'tampered' if name == f'repo/{key}' else data),
    )
    assert_rows_unchanged_and_objects_unreferenced(populated, path, ImportValidationError, f'repo/{key} is corrupt')


def test_missing_object_that_a_node_references(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    key = first_key(fixture_archive_path)
    path = rewrite(
        fixture_archive_path,
        tmp_path / 'no-object.aiida',
        lambda name, data: None if name == f'repo/{key}' else (name, data),
    )
    assert_refused(populated, path, ImportValidationError, f'lacks the repository object repo/{key}')


def test_duplicate_uuid_in_the_archive(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    # Rebuild db_dbnode without its unique constraint, then add a second row with an existing uuid.
    sql = """
    PRAGMA legacy_alter_table = ON;
    ALTER TABLE db_dbnode RENAME TO old_node;
    CREATE TABLE db_dbnode AS SELECT * FROM old_node;
    DROP TABLE old_node;
    INSERT INTO db_dbnode SELECT 1000, uuid, node_type, process_type, 'other label', description, ctime, mtime,
        attributes, extras, repository_metadata, dbcomputer_id, user_id FROM db_dbnode WHERE id = 1;
    """
    path = with_database(fixture_archive_path, tmp_path / 'dup.aiida', tmp_path, sql)
    assert_refused(populated, path, ImportValidationError, 'same uuid')


def test_uuid_of_an_existing_node_with_different_content(
    populated: Any, fixture_archive_path: Path, tmp_path: Path
) -> None:
    (uuid,) = populated.get_session().execute("SELECT uuid FROM db_dbnode WHERE label = 'x'").fetchone()
    sql = f"UPDATE db_dbnode SET uuid = '{uuid}' WHERE id = (SELECT min(id) FROM db_dbnode WHERE node_type LIKE 'data.core.dict%')"
    path = with_database(fixture_archive_path, tmp_path / 'clash.aiida', tmp_path, sql)
    assert_refused(populated, path, ImportValidationError, 'duplicated with different content')


def test_reference_to_a_missing_row(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    path = with_database(
        fixture_archive_path, tmp_path / 'orphan.aiida', tmp_path, 'UPDATE db_dbnode SET user_id = 999 WHERE id = 1;'
    )
    assert_refused(populated, path, ImportValidationError, 'user_id=999')


def assert_rows_unchanged_and_objects_unreferenced(
    storage: Any, path: Path, error: type[AiidaException], match: str
) -> None:
    """For errors found in the rows, after the files went in: rows unchanged, new objects unreferenced."""
    objects_before = sorted(storage.get_repository().list_objects())
    assert_refused(storage, path, error, match, objects=False)
    if hasattr(storage, 'filepath_container'):
        storage.maintain(full=True)
        assert sorted(storage.get_repository().list_objects()) == objects_before


def test_link_breaking_the_rules(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    sql = """
    INSERT INTO db_dblink (input_id, output_id, label, type)
    SELECT a.id, b.id, 'bad', 'create' FROM db_dbnode a, db_dbnode b
    WHERE a.node_type LIKE 'data.%' AND b.node_type LIKE 'data.%' AND a.id != b.id LIMIT 1;
    """
    path = with_database(fixture_archive_path, tmp_path / 'badlink.aiida', tmp_path, sql)
    assert_rows_unchanged_and_objects_unreferenced(
        populated, path, ImportValidationError, "Cannot add a 'create' link from data"
    )


def test_link_breaking_uniqueness(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    # a second `create` link into a data node that already has one
    sql = """
    INSERT INTO db_dblink (input_id, output_id, label, type)
    SELECT c.id, l.output_id, 'second', 'create' FROM db_dblink l, db_dbnode c
    WHERE l.type = 'create' AND c.node_type LIKE 'process.calculation.%' AND c.id != l.input_id LIMIT 1;
    """
    path = with_database(fixture_archive_path, tmp_path / 'twice.aiida', tmp_path, sql)
    assert_rows_unchanged_and_objects_unreferenced(
        populated, path, ImportUniquenessError, "already has an incoming 'create' link"
    )


def test_not_a_database(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    path = rewrite(
        fixture_archive_path,
        tmp_path / 'nodb.aiida',
        lambda name, data: (name, b'garbage' * 1000 if name == 'db.sqlite3' else data),
    )
    assert_refused(populated, path, CorruptStorage, 'not a SQLite database|cannot be')


def test_bad_options_are_refused(populated: Any, fixture_archive_path: Path) -> None:
    with pytest.raises(ValueError):
        import_archive(populated, fixture_archive_path, merge_extras=('x', 'c', 'l'))
    with pytest.raises(ValueError):
        import_archive(populated, fixture_archive_path, merge_extras=('', 'c', 'l'))
    with pytest.raises(ValueError):
        import_archive(populated, fixture_archive_path, merge_comments='sometimes')  # type: ignore[arg-type]


def test_import_group_needs_a_default_user(tmp_path: Path, fixture_archive_path: Path) -> None:
    from sqlitedos import SqliteDosStorage

    profile = SqliteDosStorage.create_profile('nouser', filepath=tmp_path / 'nouser')
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        assert_refused(storage, fixture_archive_path, ImportValidationError, 'no default user')
        with pytest.raises(ImportValidationError, match='does not exist'):
            import_archive(storage, fixture_archive_path, group=999)
        assert sorted(storage.get_repository().list_objects()) == []
        import_archive(storage, fixture_archive_path, create_group=False)
        assert storage.get_session().execute('SELECT count(*) FROM db_dbnode').fetchone() == (65,)


@pytest.mark.parametrize(
    'sql',
    [
        'CREATE TRIGGER sneaky AFTER INSERT ON db_dbnode BEGIN DELETE FROM db_dbuser; END;',
        'CREATE VIEW extra AS SELECT * FROM db_dbnode;',
    ],
)
def test_archive_database_with_code_is_refused(
    populated: Any, fixture_archive_path: Path, tmp_path: Path, sql: str
) -> None:
    path = with_database(fixture_archive_path, tmp_path / 'code.aiida', tmp_path, sql)
    assert_refused(populated, path, CorruptStorage, 'triggers or views')
