"""Importing archives: aiida's fixture archive into each storage kind, with aiida's matching and merge rules."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sqlitedos.archive import import_archive
from sqlitedos.db import decode_datetime

# --- a full dump of a database's content, independent of primary keys (shared by the archive tests) ---------------

DUMP_QUERIES = {
    'users': 'SELECT email, first_name, last_name, institution FROM db_dbuser',
    'computers': 'SELECT uuid, label, hostname, description, scheduler_type, transport_type, metadata FROM db_dbcomputer',
    'authinfos': """SELECT u.email, c.uuid, a.metadata, a.auth_params, a.enabled FROM db_dbauthinfo a
                    JOIN db_dbuser u ON u.id = a.aiidauser_id JOIN db_dbcomputer c ON c.id = a.dbcomputer_id""",
    'groups': """SELECT g.uuid, g.label, g.type_string, g.time, g.description, g.extras, u.email FROM db_dbgroup g
                 JOIN db_dbuser u ON u.id = g.user_id""",
    'nodes': """SELECT n.uuid, n.node_type, n.process_type, n.label, n.description, n.ctime, n.mtime, n.attributes,
                       n.extras, n.repository_metadata, c.uuid, u.email FROM db_dbnode n
                JOIN db_dbuser u ON u.id = n.user_id LEFT JOIN db_dbcomputer c ON c.id = n.dbcomputer_id""",
    'comments': """SELECT m.uuid, n.uuid, m.ctime, m.mtime, u.email, m.content FROM db_dbcomment m
                   JOIN db_dbnode n ON n.id = m.dbnode_id JOIN db_dbuser u ON u.id = m.user_id""",
    'logs': """SELECT l.uuid, l.time, l.loggername, l.levelname, n.uuid, l.message, l.metadata FROM db_dblog l
               JOIN db_dbnode n ON n.id = l.dbnode_id""",
    'links': """SELECT i.uuid, o.uuid, l.label, l.type FROM db_dblink l
                JOIN db_dbnode i ON i.id = l.input_id JOIN db_dbnode o ON o.id = l.output_id""",
    'memberships': """SELECT g.uuid, n.uuid FROM db_dbgroup_dbnodes gn
                      JOIN db_dbgroup g ON g.id = gn.dbgroup_id JOIN db_dbnode n ON n.id = gn.dbnode_id""",
}


def _canonical(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in '{[':
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return value


def full_dump(connection: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, foreign keys replaced by uuids/emails, JSON canonicalised, sorted."""
    return {
        name: sorted((tuple(_canonical(v) for v in row) for row in connection.execute(sql)), key=repr)
        for name, sql in DUMP_QUERIES.items()
    }


def storage_dump(storage: Any) -> dict[str, Any]:
    """``full_dump`` of a storage plus the set of repository keys it holds."""
    dump = full_dump(storage.get_session())
    dump['objects'] = sorted(storage.get_repository().list_objects())
    return dump


def archive_dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """``full_dump`` of the database inside an archive file."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read('db.sqlite3')
    target = path.parent / (path.name + '.db')
    target.write_bytes(data)
    connection = sqlite3.connect(target)
    try:
        return full_dump(connection)
    finally:
        connection.close()
        target.unlink()


def flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, str]:
    """``{path: key}`` of the files of a ``repository_metadata`` tree."""
    files = {}
    for name, child in tree.get('o', {}).items():
        if 'k' in child:
            files[prefix + name] = child['k']
        else:
            files.update(flatten(child, prefix + name + '/'))
    return files


def file_hashes(storage: Any, repository_metadata: dict[str, Any]) -> dict[str, str]:
    repository = storage.get_repository()
    hashes = {}
    for path, key in flatten(repository_metadata).items():
        with repository.open(key) as handle:
            hashes[path] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


def without_private(extras: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in extras.items() if not key.startswith('_aiida_')}


# --- the fixture archive --------------------------------------------------------------------------------------------


def test_manifest_has_the_expected_structure(manifest: dict[str, Any]) -> None:
    assert set(manifest) >= {'counts', 'nodes', 'links', 'groups'}
    assert manifest['counts']['nodes'] == len(manifest['nodes']) == 65
    node = manifest['nodes'][0]
    assert set(node) >= {
        'uuid',
        'node_type',
        'attributes',
        'extras',
        'ctime',
        'mtime',
        'user_email',
        'computer_label',
        'repository_metadata',
        'files_sha256',
    }
    assert set(manifest['links'][0]) == {'input', 'output', 'label', 'type'}
    assert set(manifest['groups'][0]) >= {'uuid', 'label', 'type_string', 'extras', 'node_uuids'}
    assert any(node['files_sha256'] for node in manifest['nodes'])


def test_fixture_archive_imports_everything(storage: Any, fixture_archive_path: Path, manifest: dict[str, Any]) -> None:
    group_id = import_archive(storage, fixture_archive_path, include_authinfos=True)
    connection = storage.get_session()
    counts = manifest['counts']

    nodes = {
        row[0]: row
        for row in connection.execute(
            """SELECT n.uuid, n.node_type, n.process_type, n.label, n.description, n.attributes, n.extras, n.ctime,
                  n.mtime, u.email, c.label, n.repository_metadata FROM db_dbnode n JOIN db_dbuser u ON u.id = n.user_id
           LEFT JOIN db_dbcomputer c ON c.id = n.dbcomputer_id"""
        )
    }
    assert len(nodes) == counts['nodes']
    for expected in manifest['nodes']:
        row = nodes[expected['uuid']]
        assert row[1:5] == (expected['node_type'], expected['process_type'], expected['label'], expected['description'])
        assert json.loads(row[5]) == expected['attributes']
        assert json.loads(row[6]) == without_private(expected['extras'])
        assert decode_datetime(row[7]) == dt.datetime.fromisoformat(expected['ctime'])
        assert decode_datetime(row[8]) == dt.datetime.fromisoformat(expected['mtime'])
        assert (row[9], row[10]) == (expected['user_email'], expected['computer_label'])
        assert json.loads(row[11]) == expected['repository_metadata']
        assert file_hashes(storage, expected['repository_metadata']) == expected['files_sha256']

    dump = full_dump(connection)
    expected_links = sorted((link['input'], link['output'], link['label'], link['type']) for link in manifest['links'])
    assert dump['links'] == expected_links
    groups = {row[0]: row for row in dump['groups']}
    for expected in manifest['groups']:
        row = groups[expected['uuid']]
        assert row[1:3] == (expected['label'], expected['type_string'])
        assert json.loads(row[5]) == expected['extras']
        members = sorted(node for group, node in dump['memberships'] if group == expected['uuid'])
        assert members == sorted(expected['node_uuids'])

    # users, computers, authinfos, comments and logs: exactly the archive's rows
    archived = archive_dump(fixture_archive_path)
    for name in ('computers', 'authinfos', 'comments', 'logs'):
        assert dump[name] == archived[name], name
        assert len(dump[name]) == counts[name]
    assert set(archived['users']) <= set(dump['users'])
    assert len(archived['users']) == counts['users']

    # the import group: aiida's type and description, every archive node in it
    label, type_string, description = connection.execute(
        'SELECT label, type_string, description FROM db_dbgroup WHERE id = ?', (group_id,)
    ).fetchone()
    assert (type_string, description) == ('core.import', 'Group generated by archive import')
    assert len(label) == len('20261122-103619')
    (members,) = connection.execute(
        'SELECT count(*) FROM db_dbgroup_dbnodes WHERE dbgroup_id = ?', (group_id,)
    ).fetchone()
    assert members == counts['nodes']


def test_authinfos_only_when_asked(storage: Any, fixture_archive_path: Path) -> None:
    import_archive(storage, fixture_archive_path)
    assert storage.get_session().execute('SELECT count(*) FROM db_dbauthinfo').fetchone() == (0,)


def test_importing_twice_adds_nothing(storage: Any, fixture_archive_path: Path) -> None:
    import_archive(storage, fixture_archive_path, include_authinfos=True, create_group=False)
    before = storage_dump(storage)
    assert import_archive(storage, fixture_archive_path, include_authinfos=True, create_group=False) is None
    assert storage_dump(storage) == before


def test_importing_twice_adds_only_a_second_import_group(storage: Any, fixture_archive_path: Path) -> None:
    first = import_archive(storage, fixture_archive_path)
    before = storage_dump(storage)
    second = import_archive(storage, fixture_archive_path)
    after = storage_dump(storage)
    assert first != second
    new_groups = set(after['groups']) - set(before['groups'])
    assert [row[2] for row in new_groups] == ['core.import']
    for name in ('nodes', 'links', 'comments', 'logs', 'users', 'computers', 'objects'):
        assert after[name] == before[name]


def test_test_run_changes_nothing(storage: Any, fixture_archive_path: Path) -> None:
    before = storage_dump(storage)
    assert import_archive(storage, fixture_archive_path, test_run=True) is None
    assert storage_dump(storage) == before


def test_import_new_extras_false_gives_empty_extras(storage: Any, fixture_archive_path: Path) -> None:
    import_archive(storage, fixture_archive_path, import_new_extras=False)
    extras = {row[0] for row in storage.get_session().execute('SELECT extras FROM db_dbnode')}
    assert extras == {'{}'}


def _set_extras(storage: Any, uuid: str, extras: dict[str, Any]) -> None:
    with storage.transaction() as connection:
        connection.execute('UPDATE db_dbnode SET extras = ? WHERE uuid = ?', (json.dumps(extras), uuid))


@pytest.mark.parametrize(
    ('mode', 'expected'),
    [
        ('none', {'mine': 1, 'rank': 'local'}),
        ('keep_existing', {'mine': 1, 'rank': 'local', 'group': 'g0'}),
        ('update_existing', {'mine': 1, 'rank': 0, 'group': 'g0'}),
        ('mirror', {'rank': 0, 'group': 'g0'}),
        (('n', 'n', 'd'), {}),
        (('k', 'n', 'u'), {'mine': 1, 'rank': 0}),
    ],
)
def test_merge_extras_modes(
    storage: Any, fixture_archive_path: Path, manifest: dict[str, Any], mode: Any, expected: dict[str, Any]
) -> None:
    import_archive(storage, fixture_archive_path, create_group=False)
    node = manifest['nodes'][0]
    assert without_private(node['extras']) == {'rank': 0, 'group': 'g0'}
    _set_extras(storage, node['uuid'], {'mine': 1, 'rank': 'local'})
    import_archive(storage, fixture_archive_path, merge_extras=mode, create_group=False)
    (extras,) = storage.get_session().execute('SELECT extras FROM db_dbnode WHERE uuid = ?', (node['uuid'],)).fetchone()
    assert without_private(json.loads(extras)) == expected


@pytest.mark.parametrize(('mode', 'changed'), [('leave', False), ('overwrite', True), ('newest', False)])
def test_merge_comments(storage: Any, fixture_archive_path: Path, mode: str, changed: bool) -> None:
    import_archive(storage, fixture_archive_path, create_group=False)
    with storage.transaction() as connection:
        connection.execute("UPDATE db_dbcomment SET content = 'edited', mtime = '2099-01-01 00:00:00.000000'")
    import_archive(storage, fixture_archive_path, merge_comments=mode, create_group=False)
    contents = {row[0] for row in storage.get_session().execute('SELECT content FROM db_dbcomment')}
    assert (contents != {'edited'}) is changed


def test_import_into_given_group(storage: Any, fixture_archive_path: Path) -> None:
    with storage.transaction() as connection:
        (user,) = connection.execute('SELECT id FROM db_dbuser').fetchone()
        (group,) = connection.execute(
            'INSERT INTO db_dbgroup (uuid, label, type_string, time, description, extras, user_id) VALUES '
            "('11111111-2222-3333-4444-555555555555', 'mine', 'core', '2026-01-01 00:00:00.000000', '', '{}', ?) "
            'RETURNING id',
            (user,),
        ).fetchone()
    assert import_archive(storage, fixture_archive_path, group=group) == group
    connection = storage.get_session()
    assert connection.execute('SELECT count(*) FROM db_dbgroup_dbnodes WHERE dbgroup_id = ?', (group,)).fetchone() == (
        65,
    )
    assert connection.execute('SELECT count(*) FROM db_dbgroup').fetchone() == (3,)


def test_clashing_group_and_computer_labels_are_relabelled(storage: Any, fixture_archive_path: Path) -> None:
    with storage.transaction() as connection:
        (user,) = connection.execute('SELECT id FROM db_dbuser').fetchone()
        connection.execute(
            'INSERT INTO db_dbgroup (uuid, label, type_string, time, description, extras, user_id) VALUES '
            "('11111111-2222-3333-4444-555555555555', 'group-public-1', 'core', '2026-01-01 00:00:00.000000', '', "
            "'{}', ?)",
            (user,),
        )
    import_archive(storage, fixture_archive_path, create_group=False)
    labels = {row[0] for row in storage.get_session().execute('SELECT label FROM db_dbgroup')}
    assert labels == {'group-public-1', 'group-public-1 (Imported #0)', 'group-public-2'}


def test_progress_is_reported(storage: Any, fixture_archive_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    import_archive(storage, fixture_archive_path, progress=lambda *args: calls.append(args))
    stages = [stage for stage, _, _ in calls]
    assert 'Adding files' in stages and 'Adding nodes' in stages
    assert all(0 <= done <= total for _, done, total in calls)
    finished = {stage for stage, done, total in calls if done == total}
    assert finished == set(stages), 'every stage reports its end'
    assert calls[-1] == ('Committing', 1, 1)


def test_unpacked_folder_imports_like_the_zip(storage: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / 'unpacked'
    with zipfile.ZipFile(fixture_archive_path) as archive:
        archive.extractall(folder)
    import_archive(storage, folder, include_authinfos=True, create_group=False)
    dump = full_dump(storage.get_session())
    archived = archive_dump(fixture_archive_path)
    for name in ('nodes', 'links', 'groups', 'memberships', 'computers', 'authinfos', 'comments', 'logs'):
        if name == 'nodes':
            assert len(dump[name]) == len(archived[name])
        else:
            assert dump[name] == archived[name], name
    assert len(storage_dump(storage)['objects']) == sum(1 for _ in (folder / 'repo').iterdir())


def test_private_extras_are_stripped_from_new_nodes(storage: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    from tests.test_archive_bad_input import with_database

    sql = """
    UPDATE db_dbnode SET extras = '{"_aiida_hash": "x", "_aiida_other": 1}' WHERE id = 1;
    UPDATE db_dbnode SET extras = '{"_aiida_hash": "x", "keep": [1, 2]}' WHERE id = 2;
    UPDATE db_dbnode SET extras = '{"plain": "\\u00e9"}' WHERE id = 3;
    """
    path = with_database(fixture_archive_path, tmp_path / 'extras.aiida', tmp_path, sql)
    import_archive(storage, path, create_group=False)
    archived = {row[0]: row[8] for row in archive_dump(path)['nodes']}
    got = {row[0]: json.loads(row[8]) for row in full_dump(storage.get_session())['nodes']}
    for uuid, extras in archived.items():
        assert got[uuid] == without_private(json.loads(extras))
    assert {} in got.values() and {'keep': [1, 2]} in got.values() and {'plain': 'é'} in got.values()
