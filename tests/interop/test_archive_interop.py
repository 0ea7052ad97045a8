"""Archives cross over: sqlitedos' archives import into aiida-core 2.9.4 and its inspect tools read them; archives that
aiida-core creates from a graph it wrote import into sqlitedos. Compared by full dumps (pks ignored)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from sqlitedos import SqliteDosStorage
from sqlitedos.archive import create_archive, import_archive
from tests.test_archive_export import build_graph
from tests.test_archive_import import full_dump


def comparable(dump: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    """A dump with aiida's private extras dropped (an import strips them from new nodes) and users as a set."""
    nodes = []
    for row in dump['nodes']:
        extras = {key: value for key, value in json.loads(row[8]).items() if not key.startswith('_aiida_')}
        nodes.append((*row[:8], json.dumps(extras, sort_keys=True), *row[9:]))
    result: dict[str, Any] = {**dump, 'nodes': sorted(nodes, key=repr)}
    result['users'] = set(dump['users'])
    return result


def folder_dump(folder: Path) -> dict[str, Any]:
    connection = sqlite3.connect(folder / 'database.sqlite')
    try:
        return full_dump(connection)
    finally:
        connection.close()


def referenced_keys(dump: dict[str, Any]) -> set[str]:
    from tests.test_archive_import import flatten

    return {key for row in dump['nodes'] for key in flatten(json.loads(row[9])).values()}


def test_sqlitedos_archive_imports_into_aiida(
    tmp_path: Path, fixture_archive_path: Path, make_aiida_profile, load_in_aiida, open_in_aiida
) -> None:
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    profile = SqliteDosStorage.create_profile('src', filepath=tmp_path / 'src', default_user_email='user@email.com')
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        import_archive(storage, fixture_archive_path, include_authinfos=True, create_group=False)
        build_graph(storage)
        with storage.transaction() as connection:  # checkpoints are never exported; leave none to compare
            connection.execute("UPDATE db_dbnode SET attributes = json_remove(attributes, '$.checkpoints')")
        archive = create_archive(storage, tmp_path / 'ours.aiida', include_authinfos=True)
        expected = full_dump(storage.get_session())

    target = tmp_path / 'aiida-target'
    AiidaSqliteDosStorage.initialise(make_aiida_profile(target, 'aiida@example.org'))
    with load_in_aiida(target, 'aiida@example.org'):
        from aiida import orm
        from aiida.tools.archive import import_archive as aiida_import
        from aiida.tools.archive.abstract import get_format

        # aiida's archive inspection reads it
        archive_format = get_format()
        assert archive_format.read_version(archive) == 'main_0001'
        with archive_format.open(archive, 'r') as reader:
            assert reader.get_metadata()['export_version'] == 'main_0001'
            backend = reader.get_backend()
            info = backend.get_info(detailed=True)
            assert info['entities']['Nodes']['count'] == len(expected['nodes'])
            assert orm.QueryBuilder(backend=backend).append(orm.Node).count() == len(expected['nodes'])
            repository = backend.get_repository()
            for key in referenced_keys(expected):
                assert repository.get_object_content(key) is not None
        from aiida.cmdline.commands.cmd_archive import archive_info, archive_version
        from click.testing import CliRunner

        result = CliRunner().invoke(archive_info, [str(archive), '--detailed'])
        assert result.exit_code == 0, result.output
        assert 'main_0001' in result.output
        result = CliRunner().invoke(archive_version, [str(archive)])
        assert result.exit_code == 0, result.output
        assert 'main_0001' in result.output

        aiida_import(archive, include_authinfos=True, create_group=False)
        node = orm.QueryBuilder().append(orm.Node, filters={'label': 'x'}).one()[0]
        assert node.base.repository.get_object_content('sub/b.txt', mode='rb') == b'nested'

    got = folder_dump(target)
    assert comparable(got)['users'] >= comparable(expected)['users']
    for name in expected:
        if name != 'users':
            assert comparable(got)[name] == comparable(expected)[name], name
    with open_in_aiida(target) as aiida_storage:
        repository = aiida_storage.get_repository()
        keys = referenced_keys(expected)
        assert all(repository.has_objects(sorted(keys)))


def test_aiida_archive_of_an_aiida_graph_imports_into_sqlitedos(
    tmp_path: Path, make_aiida_profile, load_in_aiida
) -> None:
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    source = tmp_path / 'aiida-source'
    AiidaSqliteDosStorage.initialise(make_aiida_profile(source, 'aiida@example.org'))
    archive = tmp_path / 'aiida-made.aiida'
    with load_in_aiida(source, 'aiida@example.org'):
        build_aiida_graph()
        from aiida.tools.archive import create_archive as aiida_create

        aiida_create(None, filename=archive, include_authinfos=True)
    expected = folder_dump(source)
    assert len(expected['nodes']) == 6 and expected['links'] and expected['logs'] and expected['authinfos']

    for kind in ('dos', 'temp'):
        if kind == 'dos':
            profile = SqliteDosStorage.create_profile('t', filepath=tmp_path / 'ours', default_user_email='me@x.org')
            SqliteDosStorage.initialise(profile)
            storage: Any = SqliteDosStorage(profile)
        else:
            from sqlitedos import SqliteTempBackend

            storage = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=str(tmp_path / 'sandbox')))
        try:
            import_archive(storage, archive, include_authinfos=True, create_group=False)
            got = full_dump(storage.get_session())
            assert comparable(got)['users'] >= comparable(expected)['users']
            for name in expected:
                if name != 'users':
                    assert comparable(got)[name] == comparable(expected)[name], (kind, name)
            repository = storage.get_repository()
            for key in referenced_keys(expected):
                with repository.open(key) as handle:
                    handle.read()
        finally:
            storage.close()


def build_aiida_graph() -> None:
    """A graph written by aiida-core's ORM: data, a calculation on a computer, a workflow, files, groups,
    a comment, a log and an authinfo."""
    from aiida import orm
    from aiida.common import timezone
    from aiida.common.links import LinkType

    if orm.User.collection.get_default() is None:
        orm.User(email='aiida@example.org', first_name='Ai', last_name='Ida').store()
    computer = orm.Computer(
        'interop-computer', 'localhost', transport_type='core.local', scheduler_type='core.direct', workdir='/tmp/work'
    ).store()
    computer.configure()
    x = orm.Int(3).store()
    d = orm.Dict({'a': {'b': [1, 2.5, None, True]}, 'text': 'é'}).store()
    d.base.extras.set('tag', 'mine')
    folder = orm.FolderData()
    folder.base.repository.put_object_from_bytes(b'alpha', 'sub/a.txt')
    folder.base.repository.put_object_from_bytes(b'alpha', 'copy.txt')
    folder.store()
    workflow = orm.WorkflowNode()
    workflow.base.links.add_incoming(d, LinkType.INPUT_WORK, 'd')
    workflow.store()
    calc = orm.CalcJobNode(computer=computer)
    calc.set_option('resources', {'num_machines': 1, 'num_mpiprocs_per_machine': 1})
    calc.base.links.add_incoming(x, LinkType.INPUT_CALC, 'x')
    calc.base.links.add_incoming(folder, LinkType.INPUT_CALC, 'folder')
    calc.base.links.add_incoming(workflow, LinkType.CALL_CALC, 'CALL')
    calc.base.repository.put_object_from_bytes(b'input file', 'aiida.in')
    calc.store()
    out = orm.Int(4)
    out.base.links.add_incoming(calc, LinkType.CREATE, 'result')
    out.store()
    out.base.links.add_incoming(workflow, LinkType.RETURN, 'result')
    calc.seal()
    workflow.seal()
    group = orm.Group('interop-group', description='made by aiida').store()
    group.base.extras.set('purpose', 'interop')
    group.add_nodes([x, d, out])
    orm.Comment(x, orm.User.collection.get_default(), 'a comment').store()
    orm.Log(timezone.now(), 'aiida.interop', 'WARNING', calc.pk, 'a log line', {'k': 1}).store()


def test_archive_from_the_temp_backend_reads_in_aiida(
    tmp_path: Path, fixture_archive_path: Path, make_aiida_profile, load_in_aiida
) -> None:
    """Objects from the sandbox repository have no known size: every member takes the streamed (ZIP64) path."""
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    from sqlitedos import SqliteTempBackend

    temp = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=str(tmp_path / 'sandbox')))
    try:
        import_archive(temp, fixture_archive_path, include_authinfos=True, create_group=False)
        archive = create_archive(temp, tmp_path / 'temp.aiida', include_authinfos=True, compression=9)
        expected = full_dump(temp.get_session())
    finally:
        temp.close()
    target = tmp_path / 'aiida-target'
    AiidaSqliteDosStorage.initialise(make_aiida_profile(target, 'aiida@example.org'))
    with load_in_aiida(target, 'aiida@example.org'):
        from aiida import orm
        from aiida.tools.archive import import_archive as aiida_import

        aiida_import(archive, include_authinfos=True, create_group=False)
        assert orm.QueryBuilder().append(orm.Node).count() == len(expected['nodes'])
        for node in orm.QueryBuilder().append(orm.Node).all(flat=True):
            for path in node.base.repository.list_object_names():
                node.base.repository.get_object(path)
    got = folder_dump(target)
    for name in expected:
        if name != 'users':
            assert comparable(got)[name] == comparable(expected)[name], name
