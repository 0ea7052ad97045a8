"""``SqliteZipBackend``: querying an archive and reading its files in place, read-only."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlitedos import QueryBuilder, SqliteZipBackend
from sqlitedos.exceptions import IncompatibleStorageSchema, ReadOnlyError
from tests.test_archive_import import archive_dump, file_hashes, full_dump


@pytest.fixture(params=['zip', 'folder'])
def archive_location(request: pytest.FixtureRequest, fixture_archive_path: Path, tmp_path: Path) -> Path:
    """The fixture archive as a zip file, or unpacked into a folder."""
    if request.param == 'zip':
        return fixture_archive_path
    folder = tmp_path / 'unpacked'
    with zipfile.ZipFile(fixture_archive_path) as archive:
        archive.extractall(folder)
    return folder


@pytest.fixture
def zip_storage(archive_location: Path) -> Iterator[Any]:
    storage = SqliteZipBackend(SqliteZipBackend.create_profile(archive_location))
    yield storage
    storage.close()


def test_versions(zip_storage: Any) -> None:
    assert SqliteZipBackend.version_head() == 'main_0001'
    assert SqliteZipBackend.version_profile(zip_storage.profile) == 'main_0001'


def test_content_equals_the_archive(zip_storage: Any, fixture_archive_path: Path, manifest: dict[str, Any]) -> None:
    assert full_dump(zip_storage.get_session()) == archive_dump(fixture_archive_path)
    info = zip_storage.get_info()
    assert info['entities']['Nodes']['count'] == manifest['counts']['nodes']


def test_queries_and_files_work_without_importing(zip_storage: Any, manifest: dict[str, Any]) -> None:
    for name, query in manifest['queries'].items():
        assert zip_storage.query().count(query['queryhelp']) == len(query['result']), name
    qb = QueryBuilder(backend=zip_storage).append(entity_type='data.core.int.Int.', orm_base='node', project=['uuid'])
    expected = {node['uuid'] for node in manifest['nodes'] if node['node_type'] == 'data.core.int.Int.'}
    assert {uuid for (uuid,) in qb.all()} == expected
    for node in manifest['nodes']:
        assert file_hashes(zip_storage, node['repository_metadata']) == node['files_sha256']
    key = next(key for node in manifest['nodes'] for key in node['files_sha256'].values())
    assert zip_storage.get_repository().get_object_hash(key) == key


def test_node_file_tree_reads_from_the_archive(zip_storage: Any, manifest: dict[str, Any]) -> None:
    expected = next(node for node in manifest['nodes'] if node['files_sha256'])
    (pk,) = zip_storage.get_session().execute('SELECT id FROM db_dbnode WHERE uuid = ?', (expected['uuid'],)).fetchone()
    node = zip_storage.nodes.get(pk)
    path, sha = next(iter(expected['files_sha256'].items()))
    content = node.repository.get_object_content(path, mode='rb')
    assert __import__('hashlib').sha256(content).hexdigest() == sha


def test_writes_are_refused(zip_storage: Any) -> None:
    before = full_dump(zip_storage.get_session())
    with pytest.raises(ReadOnlyError):
        zip_storage.bulk_insert('user', [{'email': 'a@b.c', 'first_name': '', 'last_name': '', 'institution': ''}])
    with pytest.raises(ReadOnlyError):
        zip_storage.bulk_update('node', [{'id': 1, 'label': 'x'}])
    with pytest.raises(ReadOnlyError):
        zip_storage.delete_nodes_and_connections([1])
    with pytest.raises(ReadOnlyError):
        zip_storage.set_global_variable('a', 1)
    with pytest.raises(ReadOnlyError):
        zip_storage._clear()
    with pytest.raises(ReadOnlyError):
        zip_storage.get_repository().put_object_from_filelike(__import__('io').BytesIO(b'x'))
    with pytest.raises(ReadOnlyError):
        (user,) = zip_storage.get_session().execute('SELECT id FROM db_dbuser LIMIT 1').fetchone()
        zip_storage.nodes.create(node_type='data.core.int.Int.', user=zip_storage.users.get(user)).store()
    for call in (
        lambda: zip_storage.get_global_variable('a'),
        zip_storage.maintain,
        lambda: SqliteZipBackend.migrate(zip_storage.profile),
    ):
        with pytest.raises(NotImplementedError):
            call()
    assert full_dump(zip_storage.get_session()) == before


def _rewrite_metadata(source: Path, target: Path, **changes: Any) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, 'w') as new:
        for info in old.infolist():
            data = old.read(info.filename)
            if info.filename == 'metadata.json':
                data = json.dumps({**json.loads(data), **changes}).encode()
            new.writestr(info, data)


def test_other_archive_versions_are_incompatible(fixture_archive_path: Path, tmp_path: Path) -> None:
    old = tmp_path / 'old.aiida'
    _rewrite_metadata(fixture_archive_path, old, export_version='0.13')
    profile = SqliteZipBackend.create_profile(old)
    assert SqliteZipBackend.version_profile(profile) == '0.13'
    with pytest.raises(IncompatibleStorageSchema, match='migrate'):
        SqliteZipBackend(profile)


def test_extracted_database_is_removed_on_close(fixture_archive_path: Path) -> None:
    storage = SqliteZipBackend(SqliteZipBackend.create_profile(fixture_archive_path))
    storage.get_session()
    workdir = Path(storage._workdir)
    assert workdir.is_dir()
    storage.close()
    assert not workdir.exists()


def test_export_is_lazy_and_import_stays_light() -> None:
    code = (
        'import sys, sqlitedos; assert sqlitedos.SqliteZipBackend; '
        "print(any(name.startswith('disk_objectstore') for name in sys.modules))"
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == 'False'


def test_an_archive_storage_can_be_exported_again(zip_storage: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    from sqlitedos.archive import create_archive

    path = create_archive(zip_storage, tmp_path / 'again.aiida', include_authinfos=True)
    assert archive_dump(path) == archive_dump(fixture_archive_path)
    with zipfile.ZipFile(path) as again, zipfile.ZipFile(fixture_archive_path) as original:
        assert sorted(again.namelist()) == sorted(original.namelist())
