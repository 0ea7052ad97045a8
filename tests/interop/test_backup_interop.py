"""Backups made by sqlitedos are storage folders aiida-core 2.9.4 opens, reads and writes; their config.json is an
aiida configuration aiida reads."""

from __future__ import annotations

import json
from pathlib import Path

from sqlitedos import SqliteDosStorage
from sqlitedos.backup import backup
from sqlitedos.cli import build_demo_graph
from sqlitedos.verify import verify

EMAIL = 'me@lab.org'


def demo_storage(folder: Path) -> SqliteDosStorage:
    profile = SqliteDosStorage.create_profile('source', filepath=folder, default_user_email=EMAIL)
    SqliteDosStorage.initialise(profile)
    return SqliteDosStorage(profile)


def test_backup_opens_in_aiida(tmp_path: Path, open_in_aiida, load_in_aiida) -> None:
    with demo_storage(tmp_path / 'source') as storage:
        graph = build_demo_graph(storage)
        calc_uuid, retrieved_uuid = graph['calc'].uuid, graph['retrieved'].uuid
        first = backup(storage, tmp_path / 'dest')
        storage.maintain()  # pack the loose objects: the second backup copies a pack, links nothing new
        second = backup(storage, tmp_path / 'dest', keep=1)
    for folder in (first, second, tmp_path / 'dest' / 'last-backup'):
        with open_in_aiida(folder) as aiida_storage:
            info = aiida_storage.get_info()
            assert info['entities']['Nodes'] == {'count': 6}
            assert info['entities']['Links'] == {'count': 8}
            assert aiida_storage.get_unreferenced_keyset() == set()
    with load_in_aiida(second, default_user_email=EMAIL):
        from aiida import orm

        calc = orm.load_node(calc_uuid)
        assert calc.base.repository.get_object_content('aiida.in') == 'echo $((3 + 4))\n'
        assert orm.load_node(retrieved_uuid).base.repository.get_object_content('aiida.out') == '7\n'
        assert {link.link_label for link in calc.base.links.get_outgoing().all()} == {'retrieved', 'sum'}
        new = orm.Str('written by aiida into a restored backup').store()
        new_uuid = new.uuid
    # ... and what aiida wrote is sound for sqlitedos.
    assert verify(second).ok
    with SqliteDosStorage(SqliteDosStorage.create_profile('restored', filepath=second)) as restored:
        assert restored.get_session().execute(
            'SELECT COUNT(*) FROM db_dbnode WHERE uuid = ?', (new_uuid,)
        ).fetchone() == (1,)


def test_backup_of_an_aiida_made_storage(
    tmp_path: Path, fixture_profile_path: Path, open_in_aiida, manifest: dict
) -> None:
    with open_in_aiida(fixture_profile_path) as aiida_storage:
        expected = aiida_storage.get_info()['entities']
    with SqliteDosStorage(SqliteDosStorage.create_profile('fixture', filepath=fixture_profile_path)) as storage:
        folder = storage.backup(tmp_path / 'dest')
    with open_in_aiida(folder) as aiida_storage:
        assert aiida_storage.get_info()['entities'] == expected
        # aiida checks that every key the nodes reference is in the container (it raises otherwise).
        assert aiida_storage.get_unreferenced_keyset(check_consistency=True) == set()


def test_backup_config_is_an_aiida_configuration(tmp_path: Path) -> None:
    from aiida.manage.configuration.config import Config

    with demo_storage(tmp_path / 'source') as storage:
        backup(storage, tmp_path / 'dest')
        profile_uuid = storage.profile.uuid
    config = Config.from_file(str(tmp_path / 'dest' / 'config.json'))
    (profile,) = config.profiles
    assert profile.storage_backend == 'core.sqlite_dos'
    assert profile.uuid == profile_uuid
    assert Path(profile.storage_config['filepath']) == (tmp_path / 'source').absolute()
    assert json.loads((tmp_path / 'dest' / 'config.json').read_text())['CONFIG_VERSION']['CURRENT'] >= 9
