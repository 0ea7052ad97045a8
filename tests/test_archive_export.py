"""Creating archives: aiida's layout and metadata, traversal rules, round trips through a new storage."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sqlitedos import LinkType, SqliteDosStorage, SqliteTempBackend
from sqlitedos.archive import create_archive, import_archive
from sqlitedos.exceptions import ExportValidationError
from tests.test_archive_import import archive_dump, full_dump, storage_dump

RULE_NAMES = [
    'input_calc_forward',
    'input_calc_backward',
    'create_forward',
    'create_backward',
    'return_forward',
    'return_backward',
    'input_work_forward',
    'input_work_backward',
    'call_calc_forward',
    'call_calc_backward',
    'call_work_forward',
    'call_work_backward',
]


def build_graph(storage: Any) -> dict[str, Any]:
    """A small graph written through sqlitedos' entity API: data -> calc -> output, a workflow calling the calc and
    returning the output, files, a group, a comment."""
    user = storage.default_user

    def node(node_type: str, label: str, **attributes: Any) -> Any:
        entity = storage.nodes.create(node_type=node_type, user=user, label=label)
        for key, value in attributes.items():
            entity.set_attribute(key, value)
        return entity

    x = node('data.core.int.Int.', 'x', value=1)
    x.repository.put_object_from_bytes(b'hello', 'a.txt')
    x.repository.put_object_from_bytes(b'nested', 'sub/b.txt')
    x.store()
    unrelated = node('data.core.int.Int.', 'unrelated', value=7).store()
    work = node('process.workflow.workchain.WorkChainNode.', 'work', sealed=True).store()
    work.add_incoming(x, LinkType.INPUT_WORK, 'x')
    calc = node('process.calculation.calcjob.CalcJobNode.', 'calc', sealed=True, checkpoints='saved')
    calc.repository.put_object_from_bytes(b'hello', 'same-content.txt')
    calc.store()
    calc.add_incoming(x, LinkType.INPUT_CALC, 'x')
    calc.add_incoming(work, LinkType.CALL_CALC, 'CALL')
    out = node('data.core.int.Int.', 'out', value=2).store()
    out.add_incoming(calc, LinkType.CREATE, 'result')
    out.add_incoming(work, LinkType.RETURN, 'result')
    group = storage.groups.create(label='g', user=user, type_string='core').store()
    group.add_nodes([unrelated])
    storage.comments.create(node=x, user=user, content='a comment').store()
    return {'x': x, 'unrelated': unrelated, 'work': work, 'calc': calc, 'out': out, 'group': group}


def new_dos_storage(path: Path) -> Any:
    profile = SqliteDosStorage.create_profile('other', filepath=path, default_user_email='user@email.com')
    SqliteDosStorage.initialise(profile)
    return SqliteDosStorage(profile)


def archive_uuids(path: Path) -> set[str]:
    return {row[0] for row in archive_dump(path)['nodes']}


def test_layout_and_metadata(storage: Any, tmp_path: Path) -> None:
    build_graph(storage)
    path = create_archive(storage, tmp_path / 'out.aiida')
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        assert names[:2] == ['metadata.json', 'db.sqlite3']
        assert sorted(names[2:]) == sorted(f'repo/{key}' for key in storage.get_repository().list_objects())
        assert all(not name.endswith('/') for name in names)
        assert infos[0].compress_type == zipfile.ZIP_STORED
        assert infos[1].compress_type == zipfile.ZIP_DEFLATED
        # physically: repository members first, then the database, then the metadata (as aiida writes them)
        assert infos[0].header_offset > infos[1].header_offset > max(info.header_offset for info in infos[2:])
        metadata = json.loads(archive.read('metadata.json'))
        for name in names[2:]:
            assert __import__('hashlib').sha256(archive.read(name)).hexdigest() == name[5:]
    assert metadata['export_version'] == 'main_0001'
    assert metadata['key_format'] == 'sha256'
    assert metadata['compression'] == 6
    parameters = metadata['creation_parameters']
    assert parameters['entities_starting_set'] is None
    assert (parameters['include_authinfos'], parameters['include_comments'], parameters['include_logs']) == (
        False,
        True,
        True,
    )
    assert list(parameters['graph_traversal_rules']) == RULE_NAMES


def test_archive_database_is_aiidas_archive_schema(storage: Any, tmp_path: Path) -> None:
    import sqlite3

    build_graph(storage)
    path = create_archive(storage, tmp_path / 'out.aiida')
    with zipfile.ZipFile(path) as archive:
        (tmp_path / 'db').write_bytes(archive.read('db.sqlite3'))
    connection = sqlite3.connect(tmp_path / 'db')
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert 'alembic_version' not in tables and 'db_dbsetting' in tables
        assert connection.execute('SELECT count(*) FROM db_dbsetting').fetchone() == (0,)
        assert connection.execute('PRAGMA journal_mode').fetchone() == ('delete',)
        # primary keys are the source's
        source = {row[0]: row[1] for row in storage.get_session().execute('SELECT uuid, id FROM db_dbnode')}
        assert {row[0]: row[1] for row in connection.execute('SELECT uuid, id FROM db_dbnode')} == source
        (attributes,) = connection.execute("SELECT attributes FROM db_dbnode WHERE label = 'calc'").fetchone()
        assert 'checkpoints' not in json.loads(attributes)
    finally:
        connection.close()


def test_round_trip_gives_identical_content(storage: Any, tmp_path: Path, fixture_archive_path: Path) -> None:
    import_archive(storage, fixture_archive_path, include_authinfos=True, create_group=False)
    build_graph(storage)
    with storage.transaction() as connection:  # checkpoints are not exported; leave none to compare
        connection.execute("UPDATE db_dbnode SET attributes = json_remove(attributes, '$.checkpoints')")
    path = create_archive(storage, tmp_path / 'out.aiida', include_authinfos=True)
    target = new_dos_storage(tmp_path / 'other')
    try:
        import_archive(target, path, include_authinfos=True, create_group=False, import_new_extras=True)
        assert storage_dump(target) == storage_dump(storage)
    finally:
        target.close()
    temp = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=str(tmp_path / 'sandbox')))
    try:
        import_archive(temp, path, include_authinfos=True, create_group=False)
        assert storage_dump(temp) == storage_dump(storage)
    finally:
        temp.close()


def test_default_traversal_from_a_calculation(storage: Any, tmp_path: Path) -> None:
    graph = build_graph(storage)
    path = create_archive(storage, tmp_path / 'calc.aiida', [graph['calc']])
    expected = {graph[name].uuid for name in ('x', 'calc', 'out', 'work')}
    assert archive_uuids(path) == expected
    metadata = json.loads(zipfile.ZipFile(path).read('metadata.json'))
    assert metadata['creation_parameters']['entities_starting_set'] == {'node': [graph['calc'].uuid]}


def test_default_traversal_from_data_and_toggles(storage: Any, tmp_path: Path) -> None:
    graph = build_graph(storage)
    path = create_archive(storage, tmp_path / 'x.aiida', [('node', graph['x'].pk)])
    assert archive_uuids(path) == {graph['x'].uuid}
    path = create_archive(storage, tmp_path / 'x2.aiida', [('node', graph['x'].pk)], input_calc_forward=True)
    assert archive_uuids(path) == {graph[name].uuid for name in ('x', 'calc', 'out', 'work')}
    with pytest.raises(ValueError, match='cannot be toggled'):
        create_archive(storage, tmp_path / 'x3.aiida', [('node', graph['x'].pk)], create_forward=False)


def test_group_export_takes_members_and_memberships(storage: Any, tmp_path: Path) -> None:
    graph = build_graph(storage)
    path = create_archive(storage, tmp_path / 'g.aiida', [graph['group']])
    dump = archive_dump(path)
    assert {row[0] for row in dump['nodes']} == {graph['unrelated'].uuid}
    assert dump['memberships'] == [(graph['group'].uuid, graph['unrelated'].uuid)]
    assert dump['comments'] == []


def test_excluding_comments_and_logs(storage: Any, tmp_path: Path, fixture_archive_path: Path) -> None:
    import_archive(storage, fixture_archive_path, create_group=False)
    path = create_archive(storage, tmp_path / 'out.aiida', include_comments=False, include_logs=False)
    dump = archive_dump(path)
    assert dump['comments'] == [] and dump['logs'] == [] and dump['authinfos'] == []
    assert len(dump['nodes']) == 65


def test_unsealed_process_is_refused(storage: Any, tmp_path: Path) -> None:
    storage.nodes.create(node_type='process.calculation.calcjob.CalcJobNode.', user=storage.default_user).store()
    with pytest.raises(ExportValidationError, match='not sealed'):
        create_archive(storage, tmp_path / 'out.aiida')
    assert not (tmp_path / 'out.aiida').exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith('.sqlitedos')] == []


def test_overwrite_and_test_run(storage: Any, tmp_path: Path) -> None:
    build_graph(storage)
    target = tmp_path / 'out.aiida'
    create_archive(storage, target, test_run=True)
    assert not target.exists()
    target.write_bytes(b'old')
    with pytest.raises(FileExistsError):
        create_archive(storage, target)
    assert target.read_bytes() == b'old'
    create_archive(storage, target, overwrite=True, compression=0)
    with zipfile.ZipFile(target) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_bad_entities_are_refused(storage: Any, tmp_path: Path) -> None:
    with pytest.raises(ExportValidationError):
        create_archive(storage, tmp_path / 'a.aiida', [('node', 12345)])
    with pytest.raises(ExportValidationError):
        create_archive(storage, tmp_path / 'a.aiida', [('link', 1)])


def test_progress_is_reported(storage: Any, tmp_path: Path) -> None:
    build_graph(storage)
    calls: list[tuple[str, int, int]] = []
    create_archive(storage, tmp_path / 'out.aiida', progress=lambda *args: calls.append(args))
    stages = {stage for stage, _, _ in calls}
    assert {'Collecting entities', 'Writing rows', 'Writing files', 'Writing database'} <= stages
    assert ('Writing files', 2, 2) in calls  # two distinct contents among three files


def test_empty_storage_exports_and_imports(storage: Any, tmp_path: Path) -> None:
    path = create_archive(storage, tmp_path / 'empty.aiida')
    before = full_dump(storage.get_session())
    assert import_archive(storage, path) is None
    assert full_dump(storage.get_session()) == before


def test_large_files_stream_through_and_zip_is_valid(storage: Any, tmp_path: Path) -> None:
    """Objects above the in-memory limits take the streamed paths both ways; zipfile finds no CRC error."""
    import os

    big = os.urandom(3 * 1024 * 1024 + 17)
    node = storage.nodes.create(node_type='data.core.singlefile.SinglefileData.', user=storage.default_user)
    node.repository.put_object_from_bytes(big, 'big.bin')
    node.repository.put_object_from_bytes(b'x' * (2 * 1024 * 1024), 'compressible.bin')
    node.store()
    path = create_archive(storage, tmp_path / 'big.aiida')
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.read('repo/' + __import__('hashlib').sha256(big).hexdigest()) == big
    temp = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=str(tmp_path / 'sandbox')))
    try:
        import_archive(temp, path)
        assert storage_dump(temp)['objects'] == storage_dump(storage)['objects']
        (pk,) = temp.get_session().execute('SELECT id FROM db_dbnode').fetchone()
        assert temp.nodes.get(pk).repository.get_object_content('big.bin', mode='rb') == big
    finally:
        temp.close()


def test_zip64_directory_for_more_than_65535_members(tmp_path: Path) -> None:
    """More members than the classic end record can count: a ZIP64 end record that zipfile and our index read."""
    from sqlitedos.archive.zipio import ZipIndex, ZipStreamWriter

    count = 70_000
    writer = ZipStreamWriter(tmp_path / 'many.zip', tmp_path / 'spill', 1, (2026, 1, 1, 0, 0, 0))
    for index in range(count):
        data = str(index).encode()
        writer.write_bytes(f'repo/{index:064x}', data)
    writer.write_bytes('metadata.json', b'{}', first=0)
    writer.close()
    with zipfile.ZipFile(tmp_path / 'many.zip') as archive:
        names = archive.namelist()
        assert len(names) == count + 1 and names[0] == 'metadata.json'
        assert archive.read(f'repo/{12345:064x}') == b'12345'
    index = ZipIndex(tmp_path / 'many.zip', tmp_path / 'index.sqlite3')
    try:
        assert sum(1 for _ in index.names()) == count + 1
        member = index.find(f'repo/{69999:064x}')
        assert member is not None and index.open(member).read() == b'69999'
    finally:
        index.close()


def test_bad_compression_is_refused_before_any_work(storage: Any, tmp_path: Path) -> None:
    for level in (-1, 10, 'high', True):
        with pytest.raises(ValueError, match='compression'):
            create_archive(storage, tmp_path / 'out.aiida', compression=level)  # type: ignore[arg-type]
    assert [path.name for path in tmp_path.iterdir() if 'aiida' in path.name or 'export' in path.name] == []
